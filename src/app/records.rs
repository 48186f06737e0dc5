//! The app records, kept parsed: listed again, a record is parsed again only when its file
//! changed (every record is written by a rename, so a change is a new inode, and its mtime and
//! size move too). The daemon's route feeder and index list `apps/` after every change to it;
//! on a node of 500 apps a wake or an idle rewrites one record, not 500.

use super::App;
use crate::node::Node;
use crate::state;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// What tells a record file's versions apart: inode, mtime (s, ns), size.
type Stamp = (u64, i64, i64, u64);

/// The parsed records, by file.
#[derive(Default)]
pub struct Records {
    parsed: HashMap<PathBuf, (Stamp, App)>,
}

impl Records {
    /// Every app record, as `app::list` reads them.
    pub fn list(&mut self, node: &Node) -> Result<Vec<App>> {
        let mut next = HashMap::new();
        let mut apps = Vec::new();
        for (_, p) in state::records(&node.apps_dir())? {
            let m = match std::fs::metadata(&p) {
                Ok(m) => m,
                // removed since the directory was read
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot stat {}", p.display())),
            };
            let stamp = (m.ino(), m.mtime(), m.mtime_nsec(), m.len());
            let app = match self.parsed.remove(&p) {
                Some((s, a)) if s == stamp => a,
                _ => state::read_toml::<App>(&p)?,
            };
            apps.push(app.clone());
            next.insert(p, (stamp, app));
        }
        self.parsed = next;
        Ok(apps)
    }

    /// Forgets what was parsed: the next list reads every record.
    pub fn forget(&mut self) {
        self.parsed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_follows_every_change_of_the_records() {
        let root = std::env::temp_dir().join(format!("gs-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let node = Node {
            config: crate::node::config::Config {
                data_root: root.clone(),
                ..Default::default()
            },
            config_path: root.join("gearshift.toml"),
        };
        std::fs::create_dir_all(node.apps_dir()).unwrap();
        let record = |name: &str, cartridge: &str| {
            let text = format!(
                "name = \"{name}\"\ncartridge = \"{cartridge}\"\nprofile = \"small\"\ncreated = 1\nstatus = \"ready\"\ngears = []\n"
            );
            state::write_atomic(&node.apps_dir().join(format!("{name}.toml")), text.as_bytes(), 0o600).unwrap();
        };
        record("a", "static");
        record("b", "python");
        let mut r = Records::default();
        let names = |apps: Vec<App>| {
            apps.iter()
                .map(|a| format!("{}:{}", a.name, a.cartridge))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(r.list(&node).unwrap()), ["a:static", "b:python"]);
        record("a", "nodejs");
        assert_eq!(names(r.list(&node).unwrap()), ["a:nodejs", "b:python"]);
        std::fs::remove_file(node.apps_dir().join("a.toml")).unwrap();
        assert_eq!(names(r.list(&node).unwrap()), ["b:python"]);
        r.forget();
        assert_eq!(names(r.list(&node).unwrap()), ["b:python"]);
        let _ = std::fs::remove_dir_all(&root);
    }
}
