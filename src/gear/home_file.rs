//! What a gear wrote, read and shown safely: files under a gear's home read by root without
//! following any symlink the gear planted (nothing outside the home is ever read), and the last
//! lines of such output made fit for a terminal (a pusher's, root's).

use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// A small file the gear wrote under its home, read by root without following any symlink the
/// gear may have put on the way (nothing outside the home is ever read).
pub fn read_gear_file(home: &Path, rel: &str) -> Result<String> {
    read_gear_file_capped(home, rel, 256)
}

/// `read_gear_file`, reading at most `cap` bytes of it.
pub fn read_gear_file_capped(home: &Path, rel: &str, cap: u64) -> Result<String> {
    let (f, _) = open_file(home, rel)?;
    let mut bytes = Vec::new();
    f.take(cap).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last `cap` bytes of a file the gear wrote under its home (a log), opened like
/// `read_gear_file`; cut at a line start when it was cut at all.
pub fn tail_gear_file(home: &Path, rel: &str, cap: u64) -> Result<String> {
    let (mut f, len) = open_file(home, rel)?;
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
pub fn list_gear_dir(home: &Path, rel: &str, max: usize) -> Result<Vec<String>> {
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

/// The last `n` non-empty lines of `text`, control characters replaced (they would otherwise
/// reach a terminal: the pusher's, or root's at `addon create`).
pub fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.chars()
                .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
                .collect()
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// A regular file beneath `home` ([`open_beneath`]), with its length.
fn open_file(home: &Path, rel: &str) -> Result<(std::fs::File, u64)> {
    let f = open_beneath(home, rel, libc::O_RDONLY)?;
    let m = f.metadata()?;
    if !m.is_file() {
        bail!("{rel} in {} is not a file", home.display());
    }
    Ok((f, m.len()))
}

/// Opens `rel` beneath `home` with `flags`, refusing any symlink or `..` on the way.
fn open_beneath(home: &Path, rel: &str, flags: i32) -> Result<std::fs::File> {
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

    #[test]
    fn a_failed_start_shows_its_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n\n")).collect::<String>() + "bell\x07\n";
        let tail = last_lines(&text, 20);
        assert_eq!(tail.len(), 20);
        assert_eq!(tail[0], "line 12");
        assert_eq!(tail[19], "bell?");
        assert_eq!(last_lines("one\n", 20), vec!["one"]);
        assert!(last_lines("", 20).is_empty());
    }
}
