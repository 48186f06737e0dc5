//! Cartridges: directories with `manifest.toml` and `bin/` hooks that teach gearshift a runtime.

use crate::node::Node;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::PathBuf;

/// A cartridge's `manifest.toml`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub display_name: Option<String>,
    /// `web` (serves the app) or `addon` (database, cron ...).
    pub kind: String,
}

/// A cartridge found on the node's search path.
#[derive(Debug, Clone)]
pub struct Cartridge {
    pub manifest: Manifest,
    pub dir: PathBuf,
}

/// Finds a cartridge by name on the node's cartridge path.
pub fn find(node: &Node, name: &str) -> Result<Cartridge> {
    crate::names::check_app_name(name)
        .map_err(|_| anyhow::anyhow!("'{}' is not a cartridge name", name.escape_default()))?;
    for dir in &node.config.cartridge_path {
        let d = dir.join(name);
        let m = d.join("manifest.toml");
        if m.is_file() {
            let text = std::fs::read_to_string(&m).with_context(|| format!("cannot read {}", m.display()))?;
            let manifest: Manifest = toml::from_str(&text).with_context(|| format!("{} is not valid", m.display()))?;
            if manifest.name != name {
                bail!("{} names cartridge '{}', expected '{name}'", m.display(), manifest.name);
            }
            return Ok(Cartridge { manifest, dir: d });
        }
    }
    let known = list(node).into_iter().map(|c| c.manifest.name).collect::<Vec<_>>();
    bail!(
        "unknown cartridge '{name}' (available: {})",
        if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        }
    )
}

/// What a gear of an app with cartridge `name` sees: that cartridge at /opt/gearshift/cartridge;
/// while the app has none (`name` empty: detected at its first push), every cartridge at
/// /opt/gearshift/cartridges/NAME.
pub fn binds(node: &Node, name: &str) -> Result<Vec<(PathBuf, PathBuf)>> {
    if name.is_empty() {
        return Ok(list(node)
            .into_iter()
            .map(|c| {
                let at = PathBuf::from(crate::ingear::detect::CARTRIDGES_DIR).join(&c.manifest.name);
                (c.dir, at)
            })
            .collect());
    }
    Ok(vec![(find(node, name)?.dir, "/opt/gearshift/cartridge".into())])
}

/// Every cartridge on the search path (first one wins for a name).
pub fn list(node: &Node) -> Vec<Cartridge> {
    let mut out: Vec<Cartridge> = Vec::new();
    for dir in &node.config.cartridge_path {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            if out.iter().any(|c| c.manifest.name == n) {
                continue;
            }
            if let Ok(c) = find_in(dir, &n) {
                out.push(c);
            }
        }
    }
    out
}

fn find_in(dir: &std::path::Path, name: &str) -> Result<Cartridge> {
    let d = dir.join(name);
    let text = std::fs::read_to_string(d.join("manifest.toml"))?;
    let manifest: Manifest = toml::from_str(&text)?;
    Ok(Cartridge { manifest, dir: d })
}

/// `gearshift cartridges`: what can be passed to `app create --cartridge`.
pub fn print_list(node: &Node, json: bool) -> Result<()> {
    let carts = list(node);
    if json {
        let v: Vec<_> = carts
            .iter()
            .map(|c| serde_json::json!({"manifest": c.manifest, "dir": c.dir}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = carts
        .iter()
        .map(|c| {
            let m = &c.manifest;
            vec![
                m.name.clone(),
                m.version.clone(),
                m.kind.clone(),
                m.display_name.clone().unwrap_or_default(),
                c.dir.display().to_string(),
            ]
        })
        .collect();
    crate::table::print(&["NAME", "VERSION", "KIND", "DESCRIPTION", "DIR"], &rows);
    Ok(())
}

/// A small file the gear wrote under its home, read by root without following any symlink the
/// gear may have put on the way (nothing outside the home is ever read).
pub fn read_gear_file(home: &std::path::Path, rel: &str) -> Result<String> {
    read_gear_file_capped(home, rel, 256)
}

/// `read_gear_file`, reading at most `cap` bytes of it.
pub fn read_gear_file_capped(home: &std::path::Path, rel: &str, cap: u64) -> Result<String> {
    use std::io::Read;
    let f = open_beneath(home, rel, libc::O_RDONLY)?;
    if !f.metadata()?.is_file() {
        bail!("{rel} in {} is not a file", home.display());
    }
    let mut bytes = Vec::new();
    f.take(cap).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last `cap` bytes of a file the gear wrote under its home (a log), opened like
/// `read_gear_file`; cut at a line start when it was cut at all.
pub fn tail_gear_file(home: &std::path::Path, rel: &str, cap: u64) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = open_beneath(home, rel, libc::O_RDONLY)?;
    let len = f.metadata()?.len();
    if !f.metadata()?.is_file() {
        bail!("{rel} in {} is not a file", home.display());
    }
    let from = len.saturating_sub(cap);
    f.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    f.take(cap).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(match (from > 0, text.find('\n')) {
        (true, Some(i)) => text[i + 1..].to_string(),
        _ => text,
    })
}

/// The names in directory `rel` of a gear's home (at most `max` of them), opened like
/// `read_gear_file`: no symlink the gear planted is followed.
pub fn list_gear_dir(home: &std::path::Path, rel: &str, max: usize) -> Result<Vec<String>> {
    let d = open_beneath(home, rel, libc::O_RDONLY | libc::O_DIRECTORY)?;
    use std::os::fd::AsRawFd;
    // The descriptor's own directory, never a path resolved again.
    let entries = std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd()))
        .with_context(|| format!("cannot list {rel} in {}", home.display()))?;
    Ok(entries
        .flatten()
        .take(max)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// Opens `rel` beneath `home` with `flags`, refusing any symlink or `..` on the way.
fn open_beneath(home: &std::path::Path, rel: &str, flags: i32) -> Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let c = |p: &str| std::ffi::CString::new(p).context("a path with a NUL byte");
    let home_c = c(&home.display().to_string())?;
    let rel_c = c(rel)?;
    // SAFETY: open_how is plain data; zeroed is a valid value before the fields are set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: home_c is a valid NUL-terminated path; the descriptor is closed below.
    let dir = unsafe { libc::open(home_c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if dir < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot open {}", home.display()));
    }
    // SAFETY: dir is an open descriptor, rel_c a valid path, how a valid open_how of its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            rel_c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    } as i32;
    let err = std::io::Error::last_os_error();
    // SAFETY: dir is ours and not used again.
    unsafe { libc::close(dir) };
    if fd < 0 {
        return Err(err).with_context(|| format!("cannot read {rel} in {}", home.display()));
    }
    // SAFETY: fd is a fresh descriptor owned by nothing else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gear_files_tail_is_whole_lines_and_never_through_a_symlink() {
        let home = std::env::temp_dir().join(format!("gearshift-tail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join("logs")).unwrap();
        let log: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        std::fs::write(home.join("logs/service.log"), &log).unwrap();
        assert_eq!(tail_gear_file(&home, "logs/service.log", 1 << 20).unwrap(), log);
        // 20 bytes reach into "line 8": the cut line is dropped.
        assert_eq!(
            tail_gear_file(&home, "logs/service.log", 20).unwrap(),
            "line 9\nline 10\n"
        );
        std::os::unix::fs::symlink("/etc/passwd", home.join("logs/evil.log")).unwrap();
        assert!(tail_gear_file(&home, "logs/evil.log", 100).is_err());
        std::os::unix::fs::symlink("/etc", home.join("up")).unwrap();
        assert!(tail_gear_file(&home, "up/passwd", 100).is_err());
        assert!(tail_gear_file(&home, "../passwd", 100).is_err());
        std::fs::remove_dir_all(&home).unwrap();
    }
}
