//! A stuck test fails with a picture of where it is stuck, instead of holding the whole run until
//! CI's clock runs out (stop 21: one e2e test hung for over an hour and the run was killed with no
//! word of where). Every [`super::TestNode`] carries one: if the node is still alive after
//! `GEARSHIFT_TEST_TIMEOUT` seconds (default 1200), the watchdog writes, straight to the test
//! binary's stderr (past libtest's capture), the test's name, every process below the test
//! binary with its state and kernel wait channel, the kernel stack of each one in D state, and
//! the tail of the node's daemon log; then it aborts the test binary, which cargo reports as a
//! failed target before it goes on with the next.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Ends its thread when dropped (the node is gone in time).
pub struct Watchdog {
    done: Arc<(Mutex<bool>, Condvar)>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cv) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

/// The limit in seconds: `GEARSHIFT_TEST_TIMEOUT`, else 1200 (the longest e2e test takes about
/// 300 s alone, under the VM's load about twice that).
fn limit() -> Duration {
    let secs = std::env::var("GEARSHIFT_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1200);
    Duration::from_secs(secs)
}

/// Watches the node `name` whose data root is `root`, made by the calling test.
pub fn watch(name: &str, root: &Path) -> Watchdog {
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let (name, root, flag) = (name.to_string(), root.to_path_buf(), done.clone());
    let limit = limit();
    std::thread::Builder::new()
        .name(format!("watchdog {name}"))
        .spawn(move || {
            let (lock, cv) = &*flag;
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, timeout) = cv
                .wait_timeout_while(guard, limit, |done| !*done)
                .unwrap_or_else(|e| e.into_inner());
            if *guard || !timeout.timed_out() {
                return;
            }
            report(&test, &name, &root, limit);
            std::process::abort();
        })
        .expect("cannot start the test watchdog");
    Watchdog { done }
}

fn report(test: &str, name: &str, root: &Path, limit: Duration) {
    let mut text = format!(
        "\n==== TEST WATCHDOG: `{test}` still holds node {name} after {} s: stuck. \
         Aborting this test binary (GEARSHIFT_TEST_TIMEOUT to change the limit).\n\
         Processes below the test (pid ppid state wchan args):\n",
        limit.as_secs()
    );
    let me = std::process::id();
    let all = processes();
    let mut below = vec![me];
    let mut i = 0;
    while i < below.len() {
        let parent = below[i];
        below.extend(all.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    for p in all.iter().filter(|p| below.contains(&p.pid) && p.pid != me) {
        text.push_str(&format!("  {} {} {} {} {}\n", p.pid, p.ppid, p.state, p.wchan, p.args));
        if p.state == 'D' {
            for l in read(&format!("/proc/{}/stack", p.pid)).lines() {
                text.push_str(&format!("      {l}\n"));
            }
        }
    }
    let stuck: Vec<_> = all.iter().filter(|p| p.state == 'D').collect();
    if !stuck.is_empty() {
        text.push_str("Every process of the host in D state (uninterruptible):\n");
        for p in stuck {
            text.push_str(&format!("  {} {} {} {}\n", p.pid, p.wchan, p.args, kernel_stack(p.pid)));
        }
    }
    let log: PathBuf = root.join("daemon.log");
    let log = read(log.to_str().unwrap_or_default());
    let tail: Vec<_> = log.lines().rev().take(40).collect();
    text.push_str(&format!("Last {} lines of {name}'s daemon.log:\n", tail.len()));
    for l in tail.into_iter().rev() {
        text.push_str(&format!("  {l}\n"));
    }
    text.push_str("==== END TEST WATCHDOG\n");
    // Past libtest's capture of print!/eprint!: the binary is about to abort.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

struct Proc {
    pid: u32,
    ppid: u32,
    state: char,
    wchan: String,
    args: String,
}

fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = read(&format!("/proc/{pid}/stat"));
            // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            let mut f = after.split_whitespace();
            let state = f.next()?.chars().next()?;
            let ppid = f.next()?.parse().ok()?;
            let args = read(&format!("/proc/{pid}/cmdline")).replace('\0', " ");
            Some(Proc {
                pid,
                ppid,
                state,
                wchan: read(&format!("/proc/{pid}/wchan")),
                args: args.trim().chars().take(200).collect(),
            })
        })
        .collect()
}

fn kernel_stack(pid: u32) -> String {
    read(&format!("/proc/{pid}/stack"))
        .lines()
        .take(8)
        .map(|l| l.split_whitespace().last().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join(" < ")
}

fn read(path: &str) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
