//! What every quota backend shares: the backend kinds, a gear's usage, and the file and tool
//! steps (run a tool, make and own a directory, remove a tree) that the backends are made of.

use anyhow::{bail, Context, Result};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The backend in use on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// btrfs on a loop-mounted image, one subvolume and qgroup per gear.
    BtrfsLoop,
    /// ext4 user quota (`usrquota`), limits per gear uid.
    Ext4,
    /// XFS user quota (`uquota`), limits per gear uid.
    Xfs,
    /// No enforcement.
    None,
}

/// Disk use of one gear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes charged to the gear.
    pub bytes: u64,
    /// The enforced byte limit, if any.
    pub limit_bytes: Option<u64>,
    /// Inodes charged to the gear, where the backend counts them.
    pub inodes: Option<u64>,
    /// The enforced inode limit, if any.
    pub limit_inodes: Option<u64>,
}

pub(super) fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

/// Finds a tool on PATH or in the sbin directories (root's PATH may lack them).
pub(super) fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Runs an external command; a failure to start or a non-zero exit becomes an error quoting
/// the command line and its stderr. Returns stdout.
pub(super) fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let shown = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let exe = tool(program).with_context(|| format!("cannot run `{shown}`: {program} is not installed"))?;
    let out = Command::new(&exe)
        .args(&args)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        let stderr = if stderr.is_empty() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            stderr.to_string()
        };
        bail!("`{shown}` failed ({}): {stderr}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates one directory (its parent must exist); an existing directory is fine.
pub(super) fn mkdir_one(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// chown uid:uid and chmod 0700.
pub(super) fn own_private(path: &Path, uid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .with_context(|| format!("cannot chown {} to {uid}:{uid}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod 0700 {}", path.display()))
}

/// rm -rf that does not follow symlinks and accepts a missing path.
pub(super) fn remove_tree(path: &Path) -> Result<()> {
    match path.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot stat {}", path.display())),
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
        }
        Ok(_) => std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Gears may traverse the gears directory but not list the other gears' homes.
pub(super) fn private_gears_dir(gears: &Path) -> Result<()> {
    std::fs::set_permissions(gears, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot chmod 0711 {}", gears.display()))
}
