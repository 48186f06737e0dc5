//! `snapshot save APP > app.tar.gz`: the app's git repository and `app-root/data` (tar in its
//! gear, as its uid), its deployments list, its record (with its env), and a dump of every
//! linked add-on, and its domains' certificates, gathered into a root-only scratch directory,
//! then written as one archive to stdout through `gzip.rs` (root holds one 4 MiB chunk of it in
//! memory). An app larger than a restore reads (`format::MAX_BYTES`) is refused.

use super::format::{self, AddonEntry, Manifest};
use super::gzip;
use super::scratch::Scratch;
use super::{in_child, in_gear};
use crate::gear::layout;
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::{addon, app};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::os::fd::AsFd;

/// What the gear's side of a save and a restore runs on: the repository without its hooks
/// (gearshift installs its own), and the data directory.
pub(super) fn repo_dir(app: &str) -> String {
    layout::inner_git_repo(app)
}

pub(super) fn data_dir(app: &str) -> String {
    format!("/home/{app}/{}", layout::DATA)
}

/// Runs ARGV in the app's gear with its stdout going to scratch file NAME.
fn capture(node: &Node, s: &Scratch, app: &str, name: &str, argv: &[&str]) -> Result<()> {
    let f = s.create(name)?;
    let code = in_gear(node, app, argv, None, Some(f.into()))?;
    if code != 0 {
        bail!(
            "cannot save {name} of app '{app}': `{}` failed in its gear (exit code {code})",
            argv.join(" ")
        );
    }
    Ok(())
}

/// Writes the snapshot of APP to stdout.
pub fn save(node: &Node, actor: &Actor, name: &str) -> Result<()> {
    let the_app = app::load_for(node, actor, name)?;
    let s = Scratch::new(node)?;
    let repo = repo_dir(name);
    let data = data_dir(name);
    capture(
        node,
        &s,
        name,
        "repo.tar",
        &["tar", "-C", &repo, "--exclude=./hooks", "-cf", "-", "."],
    )?;
    capture(node, &s, name, "data.tar", &["tar", "-C", &data, "-cf", "-", "."])?;
    capture(
        node,
        &s,
        name,
        "deployments.json",
        &["/opt/gearshift/bin/gearshift", "gear", "deployments", "--json"],
    )?;
    std::fs::write(s.path("app.json"), serde_json::to_vec_pretty(&the_app)?)?;
    let mut addons = Vec::new();
    for a in addon::list(node)? {
        let Some(l) = a.links.iter().find(|l| l.app == name) else {
            continue;
        };
        let dump = format!("addon-{}.dump", a.name);
        let f = s.create(&dump)?;
        let code = in_child(None, Some(f.into()), || addon::backup(node, &Actor::root(), &a.name))?;
        if code != 0 {
            bail!(
                "cannot save app '{name}': the backup of its add-on '{}' failed (see above)",
                a.name
            );
        }
        addons.push(AddonEntry {
            name: a.name.clone(),
            kind: a.kind.clone(),
            var: l.vars.first().cloned().unwrap_or_default(),
            dump,
        });
    }
    let certs = super::domains::save(node, &s, &the_app)?;
    let mut names = vec![
        "app.json".to_string(),
        "deployments.json".into(),
        "repo.tar".into(),
        "data.tar".into(),
    ];
    names.extend(addons.iter().map(|a| a.dump.clone()));
    names.extend(certs.iter().flat_map(|c| [c.cert.clone(), c.key.clone()]));
    let mut files = BTreeMap::new();
    for n in &names {
        files.insert(n.clone(), format::digest(&s.path(n))?);
    }
    format::check_size(name, files.values().map(|m| m.size).sum(), format::MAX_BYTES)?;
    let now = crate::clock::now();
    let manifest = Manifest {
        format: format::FORMAT,
        app: name.into(),
        created: now,
        gearshift: env!("CARGO_PKG_VERSION").into(),
        files,
        addons,
        certs,
    };
    let m = serde_json::to_vec_pretty(&manifest)?;
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot write the snapshot to stdout")?;
    let mut w = gzip::Writer::new(stdout.into());
    (|| -> Result<()> {
        format::write_member(&mut w, format::MANIFEST, &mut &m[..], m.len() as u64, now)?;
        for n in &names {
            let size = manifest.files[n].size;
            format::write_member(&mut w, n, &mut s.open(n)?, size, now)?;
        }
        format::finish(&mut w)?;
        w.finish()
    })()
    .context("cannot write the snapshot")?;
    Ok(())
}
