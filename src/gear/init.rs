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

/// Field 22 of /proc/PID/stat: the start time, which tells a live init from a reused pid.
/// None for a dead (or zombie) process.
fn start_time(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    if after.starts_with(['Z', 'X']) {
        return None;
    }
    after.split_whitespace().nth(19)?.parse().ok()
}

fn init_file(node: &Node, gear: &Gear) -> PathBuf {
    node.gear_meta_dir(&gear.id).join("init.pid")
}

/// The recorded init's pid, while that process lives (exiting or not).
fn recorded_pid(node: &Node, gear: &Gear) -> Option<i32> {
    let text = fs::read_to_string(init_file(node, gear)).ok()?;
    let (pid, st) = text.trim().split_once(' ')?;
    let pid: i32 = pid.parse().ok()?;
    (start_time(pid)? == st.parse::<u64>().ok()?).then_some(pid)
}

/// Whether process `pid` is exiting: its namespaces are already gone, though it is not a zombie
/// yet (a gear's init waits there until every other process of its pid namespace is reaped).
fn exiting(pid: i32) -> bool {
    fs::read_link(format!("/proc/{pid}/ns/mnt")).is_err()
}

/// The host pid of the gear's init, if it is running (not exiting).
pub fn init_pid(node: &Node, gear: &Gear) -> Option<i32> {
    recorded_pid(node, gear).filter(|p| !exiting(*p))
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
    // SAFETY: one valid pollfd; a pidfd becomes readable when its process has exited.
    let n = unsafe { libc::poll(pfd.as_mut_ptr(), 1, limit.as_millis().min(i32::MAX as u128) as i32) };
    n > 0 || start_time(pid).is_none()
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
    let _lock = crate::state::Lock::exclusive(&node.gear_meta_dir(&gear.id).join("init.lock"))?;
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

/// Stops every process of the gear (its init, hence its pid namespace, and the cgroup).
pub fn stop(node: &Node, gear: &Gear) -> Result<()> {
    if let Some(pid) = recorded_pid(node, gear) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        // The kernel kills the rest of the pid namespace as its init exits; wait for that (the
        // cgroup's kill below takes whatever is left after 2 s).
        wait_exit(pid, std::time::Duration::from_secs(2));
    }
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
