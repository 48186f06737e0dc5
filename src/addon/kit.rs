//! What an add-on's gear sees at /opt/gearshift/cartridge: `bin`, a link to the service's host
//! binaries, and, for a kind with a `template_command` (PostgreSQL's initdb, MariaDB's
//! mariadb-install-db), `template/`, a data directory initialised once per node and version
//! (by root, running the command as `nobody`; root-owned and read-only afterwards). A new
//! add-on's supervisor copies the template instead of initialising (which takes seconds).
//! Labelled `usr_t` on SELinux, as `/usr`: every gear may read it, none may change it.

use super::Kind;
use crate::gear::isolation::selinux;
use crate::node::Node;
use crate::state;
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The uid initdb runs as while the template is made.
const BUILDER_UID: u32 = 65534;

/// The kit directory of `kind` on this node, made first if missing.
pub fn ensure(node: &Node, kind: Kind) -> Result<PathBuf> {
    let install = kind.install_dir()?;
    let version = install.file_name().and_then(|v| v.to_str()).unwrap_or("host");
    let dir = node
        .root()
        .join("addon-kits")
        .join(format!("{}-{version}", kind.name()));
    // Built aside and renamed into place: a directory there is complete.
    if dir.exists() {
        // a kit made before SELinux labelling was on (or by an older gearshift) is labelled now
        selinux::label_tree_shared(&dir)?;
        return Ok(dir);
    }
    let _lock = state::Lock::exclusive(&node.run_dir().join("addon-kits.lock"))?;
    if dir.exists() {
        return Ok(dir);
    }
    build(kind, &install, &dir)
        .with_context(|| format!("cannot prepare the {} template at {}", kind.name(), dir.display()))?;
    Ok(dir)
}

fn build(kind: Kind, install: &Path, dir: &Path) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    std::os::unix::fs::symlink(install.join("bin"), tmp.join("bin"))?;
    let template = tmp.join("template");
    if let Some(cmd) = kind.template_command(install, &template) {
        fs::create_dir(&template)?;
        std::os::unix::fs::chown(&template, Some(BUILDER_UID), Some(BUILDER_UID))?;
        let mut setpriv = std::process::Command::new("setpriv");
        setpriv
            .args([
                "--reuid",
                &BUILDER_UID.to_string(),
                "--regid",
                &BUILDER_UID.to_string(),
                "--clear-groups",
                "--",
            ])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        let out = setpriv
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .output()
            .context("cannot run setpriv (install util-linux)")?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                Path::new(cmd.get_program()).display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        read_only_for_all(&template)?;
    }
    selinux::label_tree_shared(&tmp)?;
    fs::rename(&tmp, dir).with_context(|| format!("cannot move {} into place", tmp.display()))
}

/// Root-owned, directories 0755 and files 0644: every gear may copy it, none may change it.
fn read_only_for_all(p: &Path) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(0), Some(0))?;
    let meta = fs::symlink_metadata(p)?;
    if meta.is_dir() {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755))?;
        for e in fs::read_dir(p)? {
            read_only_for_all(&e?.path())?;
        }
    } else if meta.is_file() {
        fs::set_permissions(p, fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}
