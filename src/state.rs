//! Plain-file state: atomic writes (temp, fsync, rename) and advisory locks.

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Writes `data` to `path` so that readers see either the old or the new content, never a mix.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_atomic_as(path, data, mode, None)
}

/// Like `write_atomic`, with the file's group set to `gid` before it takes the path (a file
/// root writes for one gear: readable by its group, never for a moment by anyone else).
pub fn write_atomic_for_group(path: &Path, data: &[u8], mode: u32, gid: u32) -> Result<()> {
    write_atomic_as(path, data, mode, Some(gid))
}

fn write_atomic_as(path: &Path, data: &[u8], mode: u32, gid: Option<u32>) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{}.tmp.{}", name, std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let written = f
        .write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {} (disk full?)", tmp.display()))
        .and_then(|_| match gid {
            Some(g) => std::os::unix::fs::fchown(&f, Some(0), Some(g))
                .with_context(|| format!("cannot give {} to group {g}", tmp.display())),
            None => Ok(()),
        });
    drop(f);
    // A half-written file is not left behind, holding the space that was missing.
    if let Err(e) =
        written.and_then(|_| fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display())))
    {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates a log directory (and its parents) and makes it root's alone to enter (0750):
/// logs hold addresses, commands and query strings.
pub fn log_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o750))
        .with_context(|| format!("cannot restrict {}", dir.display()))
}

/// Creates a log file another program appends to (sshd's) as 0640, or restricts it to that.
pub fn log_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o640))
        .with_context(|| format!("cannot restrict {}", path.display()))
}

/// Serialises `value` as TOML and writes it atomically.
pub fn write_toml<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = toml::to_string_pretty(value).context("cannot serialise state")?;
    write_atomic(path, text.as_bytes(), 0o600)
}

/// Reads a TOML state file.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not valid: fix or remove it", path.display()))
}

/// The records in a state directory: (name, path) of every `NAME.toml`, sorted by name
/// (temporary `.NAME.toml.tmp.PID` files are skipped). A missing directory has none.
pub fn records(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if let Some(name) = file.strip_suffix(".toml").filter(|n| !n.starts_with('.')) {
            out.push((name.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// An exclusive advisory lock held until dropped.
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Blocks until the lock file at `path` is held exclusively.
    pub fn exclusive(path: &Path) -> Result<Lock> {
        Ok(Self::take(path, libc::LOCK_EX)?.expect("a blocking lock is always taken"))
    }

    /// Blocks until the lock file at `path` is held shared (many holders, no exclusive one).
    pub fn shared(path: &Path) -> Result<Lock> {
        Ok(Self::take(path, libc::LOCK_SH)?.expect("a blocking lock is always taken"))
    }

    /// The exclusive lock if nobody holds the lock now, else `None`.
    pub fn try_exclusive(path: &Path) -> Result<Option<Lock>> {
        Self::take(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    fn take(path: &Path, op: libc::c_int) -> Result<Option<Lock>> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open lock {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is touched.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        Ok(Some(Lock { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_holders_keep_the_exclusive_lock_out() {
        let dir = std::env::temp_dir().join(format!("gs-lock-{}", std::process::id()));
        let p = dir.join("x.lock");
        let a = Lock::shared(&p).unwrap();
        let b = Lock::shared(&p).unwrap();
        assert!(Lock::try_exclusive(&p).unwrap().is_none());
        drop(a);
        assert!(Lock::try_exclusive(&p).unwrap().is_none(), "one shared holder is left");
        drop(b);
        let x = Lock::try_exclusive(&p).unwrap();
        assert!(x.is_some());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = std::env::temp_dir().join(format!("gs-state-{}", std::process::id()));
        let p = dir.join("x.toml");
        write_atomic(&p, b"a = 1\n", 0o600).unwrap();
        write_atomic(&p, b"a = 2\n", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "a = 2\n");
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp files left behind");
        fs::remove_dir_all(dir).unwrap();
    }
}
