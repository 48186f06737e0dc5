//! The supervisor of an add-on gear (a database or cache, `crate::addon`): pid 1 of the gear,
//! the gear's uid, no privileges. On first start it makes the service's data directory (a copy
//! of the node's template for its kind, finished by the kind with the password root left in the
//! meta directory), then runs the server on the gear's address, waits until it serves the
//! add-on's user and database (`Service::ready`), and restarts it with growing delays whenever
//! it exits; it is never stopped or idled. Output goes to `app-root/logs/service.log`. The
//! control sockets answer `status` (what the host waits on).

pub mod steps;

use crate::addon::kind::Kind;
use crate::gear::control::{self, Command};
use crate::gear::layout;
use crate::gear::meta::GearInfo;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use steps::{note, run_logged, TEMPLATE};

/// What `status` reports.
#[derive(Debug, Clone, Serialize, Default)]
struct Status {
    /// initialising, running, crashed (waiting to restart), failed (cannot initialise).
    state: String,
    pid: Option<i32>,
    restarts: u32,
    last_exit: Option<String>,
}

type Shared = Arc<Mutex<Status>>;

fn set(s: &Shared, f: impl FnOnce(&mut Status)) {
    f(&mut s.lock().unwrap_or_else(|e| e.into_inner()));
}

/// First start: the kind's data directory, a copy of the node's template (`addon::kit`) when
/// the kind has one, finished by the kind (`fresh`), made durable with one syncfs and renamed
/// into place, so a crash part-way starts over.
fn prepare_data(kind: Kind, info: &GearInfo) -> Result<std::path::PathBuf> {
    let data = layout::in_home(kind.data_dir());
    if data.exists() {
        return Ok(data);
    }
    let tmp = data.with_extension("init");
    let _ = std::fs::remove_dir_all(&tmp);
    if std::path::Path::new(TEMPLATE).exists() {
        // A copy cut short (no room) is removed at once: a full disk would hold the log too.
        run_logged(
            std::process::Command::new("cp").args(["-R", TEMPLATE]).arg(&tmp),
            "copying the template data directory",
        )
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&tmp);
        })?;
    } else {
        std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    }
    run_logged(
        std::process::Command::new("chmod")
            .args(["-R", "u+rwX,go-rwx"])
            .arg(&tmp),
        "chmod of the data directory",
    )?;
    kind.fresh(info, &tmp)?;
    let dir = std::fs::File::open(&tmp)?;
    // SAFETY: syncfs takes a valid open descriptor and touches no memory of ours.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
        bail!("syncfs failed: {}", std::io::Error::last_os_error());
    }
    std::fs::rename(&tmp, &data).context("cannot move the new data directory into place")?;
    Ok(data)
}

/// Starts the service and returns its pid once it serves the add-on's user and database.
fn start(info: &GearInfo) -> Result<i32> {
    let kind = Kind::parse(&info.cartridge)
        .with_context(|| format!("this gearshift cannot run a '{}' add-on", info.cartridge))?;
    let data = prepare_data(kind, info)?;
    let log = steps::log_file()?;
    let pid = kind
        .command(info, &data)?
        .env_clear()
        .envs(info.env_pairs())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start the {} server", kind.name()))?
        .id() as i32;
    if let Err(e) = kind.ready(info, &data) {
        // Not running until the add-on's user and database exist: stop and try again.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        wait_service(pid);
        return Err(e);
    }
    Ok(pid)
}

/// The delay before restart number `streak` (1 s doubling to 30 s).
pub fn backoff(streak: u32) -> Duration {
    Duration::from_secs((1u64 << streak.min(5)).min(30))
}

/// Waits until the service `pid` ends, reaping every other process that ends meanwhile
/// (orphans are ours as pid 1); returns its exit code.
fn wait_service(pid: i32) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a valid local int.
        let got = unsafe { libc::waitpid(-1, &mut status, 0) };
        if got == pid {
            return if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            };
        }
        if got < 0 {
            return -1;
        }
    }
}

fn serve(s: Shared, l: std::os::unix::net::UnixListener) {
    for stream in l.incoming().flatten() {
        let s = s.clone();
        std::thread::spawn(move || {
            let reply = match control::read_command(&stream) {
                Ok(Command::Status) => Ok("status"),
                Ok(Command::Watch(_)) => Ok("status"),
                Ok(_) => Err(anyhow::anyhow!(
                    "an add-on's service always runs: only `status` is answered"
                )),
                Err(e) => Err(e),
            };
            let st = s.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let _ = control::reply(&stream, reply, &st);
        });
    }
}

/// Runs the add-on's supervisor forever (the gear's pid 1, after confinement).
pub fn run() -> ! {
    let s: Shared = Arc::new(Mutex::new(Status {
        state: "initialising".into(),
        ..Default::default()
    }));
    for l in control::listen(note) {
        let s2 = s.clone();
        std::thread::spawn(move || serve(s2, l));
    }
    // One thread waits for processes (no reaper beside it, which would take the exit of
    // initdb from `Command::status`).
    let mut streak = 0;
    loop {
        let started = Instant::now();
        let res = GearInfo::load_in_gear().and_then(|info| start(&info));
        let exit = match res {
            Ok(pid) => {
                set(&s, |st| {
                    st.state = "running".into();
                    st.pid = Some(pid);
                });
                let code = wait_service(pid);
                format!("exit code {code}")
            }
            Err(e) => format!("{e:#}"),
        };
        if started.elapsed() > Duration::from_secs(60) {
            streak = 0;
        }
        let delay = backoff(streak);
        streak += 1;
        note(&format!("service ended ({exit}); restarting in {delay:?}"));
        set(&s, |st| {
            st.state = "crashed".into();
            st.pid = None;
            st.restarts += 1;
            st.last_exit = Some(exit.clone());
        });
        std::thread::sleep(delay);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_grows_to_thirty_seconds() {
        let s: Vec<u64> = (0..8).map(|n| super::backoff(n).as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
