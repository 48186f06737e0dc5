//! The output of an app's processes: each process's own log (`app-root/logs/TYPE[.N].log`,
//! rotated by size), the log of every process (each line prefixed `web.1 | `, as Heroku's), lines
//! from gearshift itself, and the last lines of a log for an error, once the process's output
//! has all been copied.

use crate::gear::layout;
use crate::ingear::procenv;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The web process's log, rotated by size.
const LOG_MAX_BYTES: u64 = 5 << 20;
const LOG_KEEP: u32 = 3;
fn log_dir() -> PathBuf {
    layout::in_home(layout::LOGS)
}

/// Appends a line from gearshift itself to the web log and to the log of every process.
pub fn note(msg: &str) {
    let _ = std::fs::create_dir_all(log_dir());
    let line = format!("[gearshift {}] {msg}\n", crate::clock::iso_now());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout::in_home(layout::WEB_LOG))
    {
        let _ = f.write_all(line.as_bytes());
    }
    append_all(format!("gearshift | {line}").as_bytes());
}

/// Serializes writes to (and the rotation of) the log of every process.
static ALL_LOG: Mutex<()> = Mutex::new(());

/// Appends whole lines to the log of every process, rotating it by size.
fn append_all(lines: &[u8]) {
    let _g = ALL_LOG.lock().unwrap_or_else(|e| e.into_inner());
    let path = layout::in_home(layout::ALL_LOG);
    rotate(&path);
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = f.write_all(lines);
    }
}

/// Moves `path` to `path.1` (and so on, keeping [`LOG_KEEP`]) once it is over the size limit.
fn rotate(path: &Path) {
    if !std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_MAX_BYTES) {
        return;
    }
    let numbered = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
    for i in (1..LOG_KEEP).rev() {
        let _ = std::fs::rename(numbered(i), numbered(i + 1));
    }
    let _ = std::fs::rename(path, numbered(1));
}

/// The last `n` lines of log `name` (`worker`, `worker.2`), for an error (which reaches the
/// pusher's terminal: control characters replaced).
pub fn last_lines(name: &str, n: usize) -> String {
    let text = std::fs::read_to_string(log_dir().join(format!("{name}.log"))).unwrap_or_default();
    crate::gear::home_file::last_lines(&text, n).join("\n")
}

/// Starts `argv` in deployment `repo`, its output into `app-root/logs/LOG.log` and, each line
/// prefixed with `tag` (`worker.1`), into the log of every process.
pub fn spawn_logged(
    argv: &[String],
    repo: &Path,
    env: Vec<(String, String)>,
    log: &str,
    tag: &str,
) -> Result<std::process::Child> {
    let (rd, wr) = std::io::pipe().context("cannot create a log pipe")?;
    let child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(procenv::for_deployment(env, repo, &procenv::PathSpec::of_cartridge()))
        .current_dir(repo)
        .stdin(std::process::Stdio::null())
        .stdout(wr.try_clone()?)
        .stderr(wr)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", argv.join(" ")))?;
    let (log, tag) = (log.to_string(), tag.to_string());
    let pid = child.id() as i32;
    copying(pid, true);
    std::thread::spawn(move || {
        copy_to_log(rd, &log, &tag);
        copying(pid, false);
    });
    Ok(child)
}

/// The processes whose output is still being copied into their log (by pid), and a signal
/// for each copy that ends.
static COPYING: (Mutex<BTreeSet<i32>>, Condvar) = (Mutex::new(BTreeSet::new()), Condvar::new());

fn copying(pid: i32, on: bool) {
    let mut set = COPYING.0.lock().unwrap_or_else(|e| e.into_inner());
    if on {
        set.insert(pid);
    } else {
        set.remove(&pid);
        COPYING.1.notify_all();
    }
}

/// Waits (up to `limit`) until the output of process `pid`, which has exited, is all in its
/// log: its copy ends when the last writer of its pipe is gone (a child it left behind may
/// hold it open, hence the limit). An error quoting a log's last lines waits for this first.
pub fn wait_copied(pid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut set = COPYING.0.lock().unwrap_or_else(|e| e.into_inner());
    while set.contains(&pid) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        set = COPYING.1.wait_timeout(set, left).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// Copies a process's output into `LOG.log`, rotating by size, and its whole lines, prefixed
/// `TAG | `, into the log of every process.
fn copy_to_log(mut rd: std::io::PipeReader, log: &str, tag: &str) {
    let path = log_dir().join(format!("{log}.log"));
    let mut buf = [0u8; 16 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match rd.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        rotate(&path);
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
            let _ = f.write_all(&buf[..n]);
        }
        partial.extend_from_slice(&buf[..n]);
        if let Some(end) = partial.iter().rposition(|b| *b == b'\n') {
            let rest = partial.split_off(end + 1);
            append_all(&prefixed(tag, &partial));
            partial = rest;
        } else if partial.len() > 16 * 1024 {
            partial.push(b'\n');
            append_all(&prefixed(tag, &partial));
            partial.clear();
        }
    }
    if !partial.is_empty() {
        partial.push(b'\n');
        append_all(&prefixed(tag, &partial));
    }
}

/// `lines` (whole, newline-ended) with `TAG | ` before each.
fn prefixed(tag: &str, lines: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.len() + 16);
    for line in lines.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(b" | ");
        out.extend_from_slice(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_waits_for_the_copy_of_the_exited_process_only_up_to_its_limit() {
        // Pids no process of this test has: the set is the whole mechanism.
        let (ended, held) = (-101, -102);
        copying(ended, true);
        copying(held, true);
        let t = Instant::now();
        let copier = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            copying(ended, false);
        });
        wait_copied(ended, Duration::from_secs(5));
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "returned before the copy ended"
        );
        assert!(t.elapsed() < Duration::from_secs(4), "missed the copy's end");
        copier.join().unwrap();
        let t = Instant::now();
        wait_copied(held, Duration::from_millis(200));
        assert!(t.elapsed() >= Duration::from_millis(200) && t.elapsed() < Duration::from_secs(2));
        copying(held, false);
        let t = Instant::now();
        wait_copied(12345678, Duration::from_secs(5));
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "a process with no copy is not waited for"
        );
    }
}
