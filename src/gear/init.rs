//! The gear's init: pid 1 of the gear's pid namespace, which runs the supervisor it is given.
//! Started unless it runs (after a reboot too), known by its pid and start time, stopped with
//! everything in the gear.

use super::isolation::cgroup::GearCgroup;
use super::isolation::mounts;
use super::isolation::network::{self, GearNet, NodeNet};
use super::{control, spawn, Gear};
use crate::node::Node;
use anyhow::{Context, Result};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

/// Read-only bind mounts: host path -> path in the gear.
pub type Binds = Vec<(PathBuf, PathBuf)>;

/// What starting a gear's init needs from outside the gear module.
pub struct Boot {
    /// The app's cartridge, which the gear sees at /opt/gearshift/cartridge ("": none chosen yet).
    pub cartridge: String,
    /// The cartridge directories the gear sees, host path -> path in the gear, for a cartridge
    /// name (asked only when an init starts).
    pub cartridge_binds: fn(&Node, &str) -> Result<Binds>,
    /// What the init runs once confined (the gear's supervisor); it never returns.
    pub supervisor: fn() -> !,
}

/// The gear's cgroup, beneath the node's parent in every hierarchy.
pub fn cgroup(node: &Node, gear: &Gear) -> Result<GearCgroup> {
    Ok(GearCgroup::new(&node.state()?.cgroup_parents, &gear.cgroup_name()))
}

pub fn gear_net(node: &Node, gear: &Gear) -> Result<GearNet> {
    let limits = node.config.profile(&gear.profile)?.limits()?;
    Ok(GearNet {
        netns: gear.netns(),
        veth_host: gear.veth_host(),
        ip: gear.ip,
        bandwidth_kbit: limits.bandwidth_kbit,
    })
}

/// Puts a running gear back on the node's network (after the bridge was recreated under it, a
/// veth was detached, the gear's end lost its address; `shaped`: the host's token buckets, to
/// put back a missing one); returns what was repaired.
pub fn reattach_network(
    node: &Node,
    gear: &Gear,
    shaped: Option<&std::collections::HashSet<String>>,
) -> Result<Option<String>> {
    let init = init_pid(node, gear);
    network::reattach_gear(
        &NodeNet::from_config(&node.config),
        &gear_net(node, gear)?,
        init,
        shaped,
    )
    .with_context(|| format!("cannot put gear {} of app '{}' back on the network", gear.id, gear.app))
}

/// What of a gear that should run differs from what it should be (its init down, or what
/// [`network::gear_drift`] finds), one line each; cheap reads only.
pub fn drift(node: &Node, gear: &Gear, shaped: Option<&std::collections::HashSet<String>>) -> Result<Vec<String>> {
    let Some(init) = init_pid(node, gear) else {
        return Ok(vec!["its init is not running".into()]);
    };
    let net = gear_net(node, gear)?;
    let found = network::gear_drift(&NodeNet::from_config(&node.config), &net, Some(init), shaped);
    Ok(found.iter().map(|d| d.describe(&net)).collect())
}

/// Of /proc/PID/stat: (field 22, the start time, which tells a live init from a reused pid;
/// field 9, the kernel's flags). None for a dead (or zombie) process.
fn stat(pid: i32) -> Option<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    if after.starts_with(['Z', 'X']) {
        return None;
    }
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some((fields.get(19)?.parse().ok()?, fields.get(6)?.parse().ok()?))
}

fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(start, _)| start)
}

fn init_file(node: &Node, gear: &Gear) -> PathBuf {
    node.gear_meta_dir(&gear.id).join("init.pid")
}

/// The recorded init's pid, while that process lives (exiting or not).
fn recorded_pid(node: &Node, gear: &Gear) -> Option<i32> {
    recorded(node, gear).map(|(pid, _)| pid)
}

/// The recorded init's pid and stat flags, from one read of its stat, while it lives.
fn recorded(node: &Node, gear: &Gear) -> Option<(i32, u64)> {
    let text = fs::read_to_string(init_file(node, gear)).ok()?;
    let (pid, st) = text.trim().split_once(' ')?;
    let pid: i32 = pid.parse().ok()?;
    let (start, flags) = stat(pid)?;
    (start == st.parse::<u64>().ok()?).then_some((pid, flags))
}

/// The kernel's flag of a task in `do_exit` (include/linux/sched.h).
const PF_EXITING: u64 = 0x4;

/// Whether process `pid` is on its way out: killed (SIGKILL pending, for a kill sent a moment
/// ago), in its exit (PF_EXITING), or with its namespaces already gone though it is not a zombie
/// yet (a gear's init waits there until every other process of its pid namespace is reaped).
#[cfg(test)]
fn exiting(pid: i32) -> bool {
    stat(pid).is_none_or(|(_, flags)| exiting_with(pid, flags))
}

/// [`exiting`], for a process whose stat flags were just read.
fn exiting_with(pid: i32, flags: u64) -> bool {
    let killed = fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| {
        s.lines()
            .filter_map(|l| l.strip_prefix("SigPnd:").or_else(|| l.strip_prefix("ShdPnd:")))
            .any(|mask| u64::from_str_radix(mask.trim(), 16).is_ok_and(|m| m & (1 << (libc::SIGKILL - 1)) != 0))
    });
    killed || flags & PF_EXITING != 0 || fs::read_link(format!("/proc/{pid}/ns/mnt")).is_err()
}

/// The host pid of the gear's init, if it is running (not exiting).
pub fn init_pid(node: &Node, gear: &Gear) -> Option<i32> {
    recorded(node, gear)
        .filter(|(p, flags)| !exiting_with(*p, *flags))
        .map(|(p, _)| p)
}

/// Waits (up to `limit`) until process `pid`, not our child, has exited; true once it has.
fn wait_exit(pid: i32, limit: std::time::Duration) -> bool {
    // SAFETY: pidfd_open with integer arguments; the descriptor it returns is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        // Gone already (ESRCH), or no pidfd_open on this kernel: look for it every 5 ms.
        let t = std::time::Instant::now();
        while start_time(pid).is_some() && t.elapsed() < limit {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        return start_time(pid).is_none();
    }
    // SAFETY: `fd` is the fresh descriptor pidfd_open returned, owned here.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut pfd = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // SAFETY: one valid pollfd; a pidfd becomes readable when its process has exited.
        let n = unsafe {
            libc::poll(
                pfd.as_mut_ptr(),
                1,
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
            )
        };
        let interrupted = n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
        if !interrupted || left.is_zero() {
            return n > 0 || start_time(pid).is_none();
        }
    }
}

/// How long an exiting init may take (the kernel kills and reaps every process of its pid
/// namespace first) before a start waiting on it gives up.
const EXIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The gear's namespaces, opened, for a command to join: the init is started first if it is
/// down (see [`ensure_running`]); one killed in between (by `app restart`, an idle, a crash)
/// is started again, up to three times.
pub fn enter(node: &Node, gear: &Gear, boot: &Boot) -> Result<spawn::Namespaces> {
    let mut tries = 0;
    loop {
        let pid = ensure_running(node, gear, boot)?;
        match spawn::Namespaces::open(pid) {
            Ok(ns) => return Ok(ns),
            Err(_) if tries < 3 && init_pid(node, gear) != Some(pid) => tries += 1,
            Err(e) => return Err(e.context(format!("cannot enter gear {} of app '{}'", gear.id, gear.app))),
        }
    }
}

/// Starts the gear's init unless it runs; recreates the runtime pieces a reboot removes. An
/// init that is exiting (killed, its pid namespace being torn down) is waited for first.
pub fn ensure_running(node: &Node, gear: &Gear, boot: &Boot) -> Result<i32> {
    if let Some(pid) = init_pid(node, gear) {
        return Ok(pid);
    }
    let _lock = init_lock(node, gear)?;
    start_locked(node, gear, boot)
}

/// [`ensure_running`], and an init whose supervisor does not answer (one started by an older
/// gearshift: an upgrade) is replaced by a fresh one; true when it was. Decided and done under
/// the gear's init lock, so a gear another process is starting (its supervisor not listening
/// yet) is waited for, never taken for a dumb one and killed.
pub fn ensure_answering(node: &Node, gear: &Gear, boot: &Boot) -> Result<bool> {
    let _lock = init_lock(node, gear)?;
    let dumb =
        init_pid(node, gear).filter(|_| control::command(&network::netns_path(&gear.netns()), "status").is_err());
    if let Some(pid) = dumb {
        kill_init(pid);
        stop_locked(node, gear)?;
    }
    start_locked(node, gear, boot)?;
    Ok(dumb.is_some())
}

/// Held while a gear's init is started or stopped.
fn init_lock(node: &Node, gear: &Gear) -> Result<crate::state::Lock> {
    crate::state::Lock::exclusive(&node.gear_meta_dir(&gear.id).join("init.lock"))
}

/// Starts the gear's init unless it runs, under its init lock.
fn start_locked(node: &Node, gear: &Gear, boot: &Boot) -> Result<i32> {
    if let Some(pid) = init_pid(node, gear) {
        return Ok(pid);
    }
    if let Some(old) = recorded_pid(node, gear) {
        if !wait_exit(old, EXIT_LIMIT) {
            anyhow::bail!(
                "gear {} of app '{}' is still stopping after {}s (its init, pid {old}, is exiting): try again, or run `gearshift doctor`",
                gear.id,
                gear.app,
                EXIT_LIMIT.as_secs()
            );
        }
    }
    let limits = node.config.profile(&gear.profile)?.limits()?;
    let cg = cgroup(node, gear)?;
    cg.create(&limits)?;
    if !network::netns_path(&gear.netns()).exists() {
        network::gear_up(&NodeNet::from_config(&node.config), &gear_net(node, gear)?)?;
    }
    let spec = spawn::InitSpec {
        root: mounts::RootSpec {
            staging: node.run_dir().join("newroot"),
            home_host: gear.home(node),
            home_inner: gear.inner_home(),
            meta_dir: node.gear_meta_dir(&gear.id),
            ro_binds: gear_opt_binds(node, gear, boot)?,
            // The live deployment at /app, as on Heroku and Dokku (follows every switch).
            links: vec![(gear.inner_home().join(super::layout::REPO), "/app".into())],
            tmp_size: (limits.memory_bytes / 4).max(16 << 20),
            owner_uid: gear.uid,
            mcs: gear.mcs(),
        },
        cgroup: cg,
        netns: network::netns_path(&gear.netns()),
        hostname: gear.app.clone(),
        who: identity(gear),
        supervisor: boot.supervisor,
        landlock: node.config.landlock,
    };
    let pid =
        spawn::start_init(&spec).with_context(|| format!("cannot start gear {} of app '{}'", gear.id, gear.app))?;
    let st = start_time(pid).context("gear init vanished right after start")?;
    crate::state::write_atomic(&init_file(node, gear), format!("{pid} {st}\n").as_bytes(), 0o644)?;
    wait_for_supervisor(gear)?;
    Ok(pid)
}

/// The init reports ready just before its supervisor binds the control sockets (it must report
/// before its SELinux label switch): a gear counts as running once its supervisor answers.
fn wait_for_supervisor(gear: &Gear) -> Result<()> {
    let netns = network::netns_path(&gear.netns());
    let t = std::time::Instant::now();
    loop {
        match control::connect(&netns) {
            Ok(_) => return Ok(()),
            Err(e) if t.elapsed() > std::time::Duration::from_secs(5) => {
                return Err(e.context(format!(
                    "gear {} of app '{}' started, but its supervisor does not listen",
                    gear.id, gear.app
                )))
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// What a gear sees of gearshift, read-only under /opt/gearshift: the binary (for hooks, the
/// supervisor and every command root starts), its cartridge (every cartridge while its app has
/// none), and its descriptor.
fn gear_opt_binds(node: &Node, gear: &Gear, boot: &Boot) -> Result<Binds> {
    let exe = std::env::current_exe().context("cannot find the gearshift binary")?;
    let mut binds = vec![(exe, super::layout::BINARY.into())];
    binds.extend((boot.cartridge_binds)(node, &boot.cartridge)?);
    binds.push((node.gear_meta_dir(&gear.id), "/opt/gearshift/meta".into()));
    Ok(binds)
}

/// Stops every process of the gear (its init, hence its pid namespace, and the cgroup); waits
/// for a start in progress first.
pub fn stop(node: &Node, gear: &Gear) -> Result<()> {
    let _lock = init_lock(node, gear)?;
    if let Some(pid) = recorded_pid(node, gear) {
        kill_init(pid);
    }
    stop_locked(node, gear)
}

/// Kills the gear's init and waits for it: the kernel kills the rest of the pid namespace as
/// its init exits (what is left after 2 s is the cgroup's kill's).
fn kill_init(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    wait_exit(pid, std::time::Duration::from_secs(2));
}

/// Kills whatever is left in the gear's cgroup and forgets its init, under its init lock.
fn stop_locked(node: &Node, gear: &Gear) -> Result<()> {
    if let Ok(cg) = cgroup(node, gear) {
        cg.kill_all()?;
    }
    let _ = fs::remove_file(init_file(node, gear));
    Ok(())
}

/// Kills every process of the running gear but its init (the supervisor, which keeps its
/// state and answers `app start`); nothing to do when the gear is down.
pub fn kill_all_but_init(node: &Node, gear: &Gear) -> Result<()> {
    match init_pid(node, gear) {
        Some(pid) => cgroup(node, gear)?.kill_all_but(pid),
        None => Ok(()),
    }
}

/// The identity every process of this gear runs as.
pub fn identity(gear: &Gear) -> spawn::Identity {
    spawn::Identity {
        uid: gear.uid,
        gid: gear.gid(),
        mcs: gear.mcs(),
        home_inner: gear.inner_home(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the real kernel: a live process is neither exiting nor waited out; once killed it is
    /// exiting (a zombie counts), and waiting on it returns as it ends.
    #[test]
    fn a_killed_process_is_exiting_and_waited_for() {
        let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(!exiting(pid), "a sleeping process is not exiting");
        assert!(start_time(pid).is_some());
        let t = std::time::Instant::now();
        assert!(
            !wait_exit(pid, std::time::Duration::from_millis(50)),
            "it has not exited"
        );
        assert!(t.elapsed() >= std::time::Duration::from_millis(50));
        child.kill().unwrap();
        assert!(
            wait_exit(pid, std::time::Duration::from_secs(5)),
            "the killed process is waited for"
        );
        assert!(exiting(pid), "a zombie is exiting");
        assert!(start_time(pid).is_none(), "a zombie has no start time");
        child.wait().unwrap();
    }
}
