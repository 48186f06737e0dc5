//! What a mechanism's `check()` reports to `gearshift doctor`, and the helpers the probes share.
//!
//! Statuses: `ok` (works), `missing` (something the node requires does not work: doctor's exit
//! code is non-zero), `warn` (absent or degraded but optional; gearshift runs without it).
//! Every probe actually tries its mechanism, and never changes the host: namespaces are
//! unshared and seccomp filters installed in forked children, network pieces are made in a
//! throwaway network namespace.

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use serde::Serialize;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How one mechanism fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and working.
    Ok,
    /// Required by the node and absent or broken.
    Missing,
    /// Optional and absent, or present in a degraded state.
    Warn,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Warn => "warn",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// One-line fix (Debian and Fedora package names where a package is the fix).
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    /// `missing` when `required`, else `warn`.
    pub fn absent(name: &str, required: bool, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        let status = if required { Status::Missing } else { Status::Warn };
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::absent(name, false, detail, fix)
    }
}

/// 1 when any check is `missing`, else 0.
pub fn exit_code(checks: &[Check]) -> i32 {
    i32::from(checks.iter().any(|c| c.status == Status::Missing))
}

/// The kernel's name, release and machine (the report's first line).
pub fn kernel() -> Check {
    match nix::sys::utsname::uname() {
        Ok(u) => Check::ok(
            "kernel",
            format!(
                "{} {} ({})",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy(),
                u.machine().to_string_lossy()
            ),
        ),
        Err(e) => Check::warn("kernel", format!("uname failed: {e}"), "check /proc is mounted"),
    }
}

// ---------------------------------------------------------------------------------------------
// forked probes

/// Runs `probe` in a forked child and returns its exit status (the probe returns 0 or an errno).
///
/// `probe` runs between fork and `_exit`, so it must only make async-signal-safe calls
/// (raw syscalls, no allocation, no locks).
pub fn in_child(probe: impl FnOnce() -> i32) -> std::result::Result<i32, String> {
    // SAFETY: the child only runs `probe` (documented to make raw syscalls only) and then
    // `_exit`s without unwinding or running destructors; the parent just waits for it.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = probe();
            // SAFETY: `_exit` never returns and is async-signal-safe.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Err(format!("probe killed by {sig}")),
            Ok(other) => Err(format!("probe ended oddly: {other:?}")),
            Err(e) => Err(format!("waitpid failed: {e}")),
        },
        Err(e) => Err(format!("fork failed: {e}")),
    }
}

pub fn errno_name(code: i32) -> String {
    nix::errno::Errno::from_raw(code).to_string()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A field of /proc/self/status (`Seccomp`, `NoNewPrivs`, ...), trimmed.
pub fn proc_status_field(field: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|v| v.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// tools

/// PATH for the tools the probes run (sbin dirs included even for a non-root PATH).
pub fn tool_path() -> String {
    let cur = std::env::var("PATH").unwrap_or_default();
    format!("{cur}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

/// Waits up to `timeout` for `child` to exit; kills and reaps it past that (None).
fn wait_or_kill(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs a command (with a timeout) and returns (exit code, stdout+stderr), or None if absent.
fn run_tool(cmd: &mut Command, timeout: Duration) -> Option<(i32, String)> {
    let mut child = cmd
        .env("PATH", tool_path())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let status = wait_or_kill(&mut child, timeout);
    let out = child.wait_with_output().ok()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    match status {
        Some(st) => Some((st.code().unwrap_or(-1), text)),
        None => Some((-1, format!("timed out after {} s", timeout.as_secs()))),
    }
}

/// First non-empty line of a tool's `--version`-style output, or None if it is not installed.
pub fn tool_version(program: &str, args: &[&str]) -> Option<String> {
    let (code, out) = run_tool(Command::new(program).args(args), Duration::from_secs(5))?;
    if code == 127 {
        return None;
    }
    out.lines().map(str::trim).find(|l| !l.is_empty()).map(String::from)
}

/// Runs a `/bin/sh` script in a new network namespace (and a user namespace mapping us to root
/// when not root, which gives the script's tools CAP_NET_ADMIN over it) and returns its stdout.
/// The namespace dies with the script, so nothing it creates outlives the probe.
pub fn sh_in_throwaway_netns(script: &str) -> std::result::Result<String, String> {
    let root = is_root();
    // The map lines are built before fork.
    let uid_map = format!("0 {} 1\n", nix::unistd::geteuid());
    let gid_map = format!("0 {} 1\n", nix::unistd::getegid());
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script);
    // SAFETY: the closure runs in the forked child before exec and only makes raw syscalls
    // (unshare, open, write, close) on memory prepared before the fork; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            let flags = if root {
                libc::CLONE_NEWNET
            } else {
                libc::CLONE_NEWNET | libc::CLONE_NEWUSER
            };
            if libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if !root {
                for (path, data) in [
                    (c"/proc/self/setgroups", "deny".as_bytes()),
                    (c"/proc/self/uid_map", uid_map.as_bytes()),
                    (c"/proc/self/gid_map", gid_map.as_bytes()),
                ] {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, data.as_ptr().cast(), data.len());
                    libc::close(fd);
                    if n < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .env("PATH", tool_path())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the probe in a new network namespace: {e}"))?;
    if wait_or_kill(&mut child, Duration::from_secs(10)).is_none() {
        return Err("the network probe timed out after 10 s".into());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot read the probe's output: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The line called `name` in a report (tests).
#[cfg(test)]
pub fn find<'a>(c: &'a [Check], name: &str) -> &'a Check {
    c.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} line"))
}
