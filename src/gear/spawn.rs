//! Spawning inside a gear. Each gear has one long-lived init (pid 1 of its pid namespace) that
//! owns the gear's namespaces and filesystem view; every command then joins those namespaces
//! (like `nsenter`), so all of a gear's processes see one another and nothing else, and a spawn
//! costs two forks and an exec instead of a fresh mount tree.
//!
//! The isolation sequence, top to bottom:
//! init:  cgroup → net ns (the gear's) → new mount, uts, ipc, pid, cgroup namespaces → fork
//!        (pid 1) → root filesystem (mounts) → hostname → confine → reap forever.
//! spawn: cgroup → join the init's namespaces → fork → confine → exec.
//! confine: rlimits → SELinux exec label → Landlock → capabilities disarmed → setgroups/setgid/
//!        setuid (gear uid, never root) → verify no capabilities → no_new_privs → seccomp.

use super::isolation::{caps, cgroup::GearCgroup, landlock, mounts, rlimits, seccomp, selinux};
use crate::node::config::LandlockMode;
use anyhow::{bail, Context, Result};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// Who a gear process runs as, and how it is confined.
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub mcs: String,
    pub home_inner: PathBuf,
}

/// What a gear's init needs.
pub struct InitSpec {
    pub root: mounts::RootSpec,
    pub cgroup: GearCgroup,
    pub netns: PathBuf,
    pub hostname: String,
    pub who: Identity,
    /// What the init runs once it is confined (the gear's supervisor).
    pub supervisor: fn() -> !,
    /// Whether a refused Landlock ruleset fails the start or only warns.
    pub landlock: LandlockMode,
}

/// A command to run in a running gear.
pub struct ExecSpec<'a> {
    /// The gear's namespaces, opened ([`Namespaces::open`]).
    pub gear: Namespaces,
    pub cgroup: &'a GearCgroup,
    pub who: &'a Identity,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Give the command a pseudo-terminal from the gear's own devpts.
    pub tty: bool,
    /// Relay the caller's stdin to the command (else the command reads an empty input).
    pub stdin: bool,
}

/// Writes to stderr and exits a forked child with `code`; never returns.
fn die(code: i32, msg: &str) -> ! {
    let _ = std::io::stderr().write_all(format!("gearshift: {msg}\n").as_bytes());
    // SAFETY: _exit ends the forked child without running the parent's destructors twice.
    unsafe { libc::_exit(code) }
}

fn exit_code(st: WaitStatus) -> i32 {
    match st {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 1,
    }
}

/// Waits for `pid`, retrying on EINTR.
fn wait_for(pid: Pid) -> Result<WaitStatus> {
    loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.with_context(|| format!("cannot wait for process {pid}")),
        }
    }
}

/// Closes every descriptor from `from` upwards except `keep`.
fn close_fds_from(from: RawFd, keep: Option<RawFd>) {
    let close = |lo: RawFd, hi: libc::c_uint| {
        if lo as libc::c_uint <= hi {
            // SAFETY: close_range only closes descriptors; none of them is used afterwards.
            unsafe { libc::syscall(libc::SYS_close_range, lo as libc::c_uint, hi, 0) };
        }
    };
    match keep {
        Some(k) if k >= from => {
            close(from, (k - 1) as libc::c_uint);
            close(k + 1, libc::c_uint::MAX);
        }
        _ => close(from, libc::c_uint::MAX),
    }
}

/// Applies every per-process mechanism and switches to the gear's uid. After this the process
/// has no capabilities, no_new_privs, the seccomp filter and (where asked) Landlock.
fn confine(who: &Identity, filters: &seccomp::Filters, with_landlock: bool) -> Result<()> {
    rlimits::apply()?;
    // Before Landlock, which makes /proc read-only for this process.
    selinux::set_exec_label(&who.mcs)?;
    if with_landlock {
        landlock::apply(&who.home_inner)?;
    }
    caps::disarm()?;
    nix::unistd::setgroups(&[]).context("cannot clear supplementary groups")?;
    let (g, u) = (Gid::from_raw(who.gid), Uid::from_raw(who.uid));
    nix::unistd::setresgid(g, g, g).context("cannot switch to the gear gid")?;
    nix::unistd::setresuid(u, u, u).context("cannot switch to the gear uid")?;
    caps::verify_none()?;
    caps::no_new_privs()?;
    seccomp::apply(filters)
}

/// Starts a gear's init and returns its pid (in the host's pid namespace).
pub fn start_init(spec: &InitSpec) -> Result<i32> {
    let filters = seccomp::build()?;
    selinux::enabled(); // decided now: the gear's /sys has no selinuxfs
    let netns = File::open(&spec.netns).with_context(|| {
        format!(
            "gear network namespace {} is missing (run `gearshift node up`)",
            spec.netns.display()
        )
    })?;
    let devnull = File::options().read(true).write(true).open("/dev/null")?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    // SAFETY: this process is single-threaded here (the CLI, or a helper forked for one spawn),
    // so the child may allocate and use the std library freely.
    match unsafe { fork() }.context("cannot fork the gear init")? {
        ForkResult::Child => {
            drop(rd);
            let mut w = File::from(wr);
            let r = (|| -> Result<Pid> {
                nix::unistd::setsid().context("setsid")?;
                spec.cgroup.join(0).context("cannot join the gear's cgroup")?;
                setns(&netns, CloneFlags::CLONE_NEWNET).context("cannot enter the gear's network namespace")?;
                unshare(
                    CloneFlags::CLONE_NEWNS
                        | CloneFlags::CLONE_NEWUTS
                        | CloneFlags::CLONE_NEWIPC
                        | CloneFlags::CLONE_NEWPID
                        | CloneFlags::CLONE_NEWCGROUP,
                )
                .context("cannot create the gear's namespaces")?;
                // SAFETY: single-threaded process, as above.
                match unsafe { fork() }.context("cannot fork the gear's pid 1")? {
                    ForkResult::Parent { child } => Ok(child),
                    ForkResult::Child => {
                        let Err(e) = init_main(spec, &filters, &devnull, &mut w);
                        let _ = writeln!(w, "error: {e:#}");
                        // SAFETY: forked child exits without unwinding.
                        unsafe { libc::_exit(1) }
                    }
                }
            })();
            match r {
                Ok(pid) => {
                    let _ = writeln!(w, "pid {pid}");
                    // SAFETY: forked child exits without unwinding.
                    unsafe { libc::_exit(0) }
                }
                Err(e) => {
                    let _ = writeln!(w, "error: {e:#}");
                    // SAFETY: forked child exits without unwinding.
                    unsafe { libc::_exit(1) }
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            wait_for(child)?;
            let mut out = String::new();
            File::from(rd)
                .read_to_string(&mut out)
                .context("cannot read the gear init's report")?;
            let mut pid = None;
            let mut ready = false;
            for line in out.lines() {
                if let Some(e) = line.strip_prefix("error: ") {
                    bail!("gear init failed: {e}");
                }
            }
            for line in out.lines() {
                if let Some(w) = line.strip_prefix("warning: ") {
                    eprintln!("gearshift: warning: {w}");
                }
                if let Some(p) = line.strip_prefix("pid ") {
                    pid = p.trim().parse::<i32>().ok();
                }
                ready |= line == "ready";
            }
            match (pid, ready) {
                (Some(p), true) => Ok(p),
                _ => bail!("gear init exited before it was ready (report: {out:?})"),
            }
        }
    }
}

/// The gear's pid 1: builds the root, confines itself, reports ready, then reaps orphans.
fn init_main(
    spec: &InitSpec,
    filters: &seccomp::Filters,
    devnull: &File,
    w: &mut File,
) -> Result<std::convert::Infallible> {
    for fd in 0..3 {
        nix::unistd::dup2(devnull.as_raw_fd(), fd).context("cannot redirect stdio")?;
    }
    mounts::build_root(&spec.root)?;
    nix::unistd::sethostname(&spec.hostname).context("cannot set the gear's hostname")?;
    rename_self();
    // The supervisor and everything it starts inherit this environment (and the test-only
    // fault variable of whoever started the gear: the supervisor pauses at `during-switch`).
    let fault = crate::fault::passed_on();
    for (k, _) in std::env::vars_os().collect::<Vec<_>>() {
        std::env::remove_var(k);
    }
    std::env::set_var("HOME", &spec.who.home_inner);
    std::env::set_var("PATH", "/usr/local/bin:/usr/bin:/bin");
    if let Some((k, v)) = fault {
        std::env::set_var(k, v);
    }
    close_fds_from(3, Some(w.as_raw_fd()));
    confine(&spec.who, filters, false)?;
    // Reported before the label switch: the report pipe carries its creator's level, which a
    // gear may not write (root's login range). A failed switch still reports its error (the
    // starter checks for errors first), and nothing is written after it.
    writeln!(w, "ready")?;
    // The init never execs: it takes the gear's SELinux label now (its children's execs get it
    // from the exec label set in confine).
    selinux::set_current_label(&spec.who.mcs)?;
    // Landlock last (it makes /proc read-only, and the label switch writes there): the
    // supervisor and everything it starts (web, other types, release, cron) write only under
    // the gear's home, /tmp, its run directory, /dev/shm, /dev/pts and the harmless devices. A kernel with Landlock that refuses it fails the
    // start, reported like a failed label switch; with `landlock = "warn"` it is reported as a
    // warning (the pipe may refuse it under SELinux: the starter then says nothing).
    if let Some(warning) = landlock::enforce(&spec.who.home_inner, spec.landlock)
        .context("cannot confine the gear's init with Landlock")?
    {
        let _ = writeln!(w, "warning: {warning}");
    }
    // SAFETY: closing our copy of the report pipe; `w` is not written again.
    unsafe { libc::close(w.as_raw_fd()) };
    (spec.supervisor)()
}

/// Shows the init as `gearshift-init` in `ps` instead of the command line that created it
/// (which names host paths).
fn rename_self() {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"gearshift-init".as_ptr() as libc::c_ulong, 0, 0, 0) };
    let _ = overwrite_args(b"gearshift-init"); // cosmetic here: the init's are host paths
}

/// Overwrites this process's argument area (what `/proc/PID/cmdline` shows) with `name`
/// (cut to fit). std::env::args() reads that area: call it once nothing needs the arguments.
pub(crate) fn overwrite_args(name: &[u8]) -> Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("cannot read /proc/self/stat")?;
    let (_, rest) = stat.rsplit_once(") ").context("unexpected /proc/self/stat")?;
    // Fields 48 and 49 (arg_start, arg_end), counted from field 3 after the command name.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (Some(start), Some(end)) = (
        f.get(45).and_then(|v| v.parse::<usize>().ok()),
        f.get(46).and_then(|v| v.parse::<usize>().ok()),
    ) else {
        bail!("no argument area in /proc/self/stat");
    };
    if end <= start {
        return Ok(());
    }
    let keep = name.len().min(end - start - 1);
    // SAFETY: [start, end) is this process's own argument area on its stack, mapped writable;
    // the caller reads no arguments after this point.
    unsafe {
        std::ptr::write_bytes(start as *mut u8, 0, end - start);
        std::ptr::copy_nonoverlapping(name.as_ptr(), start as *mut u8, keep);
    }
    Ok(())
}

/// Opens a pty pair in the gear's own devpts: (master, slave).
fn gear_pty(init_pid: i32) -> Result<(OwnedFd, OwnedFd)> {
    let ptmx = format!("/proc/{init_pid}/root/dev/pts/ptmx");
    let master = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&ptmx)
        .with_context(|| format!("cannot open {ptmx}"))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the pointer, which is valid for the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot unlock the pty");
    }
    // SAFETY: TIOCGPTPEER returns a new descriptor for the peer; no pointers involved.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
    if slave < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot open the pty's peer");
    }
    // SAFETY: `slave` is a fresh descriptor that nothing else owns.
    Ok((master.into(), unsafe { OwnedFd::from_raw_fd(slave) }))
}

use std::os::unix::fs::OpenOptionsExt;

/// What is exec'd for `argv`: gearshift's own `gearshift gear ...` as it is, any other program
/// through `gearshift gear lifeline --`; both set the parent-death signal again after the exec
/// into the gear, which may clear it (lifeline.rs), and the program is looked up on the gear's
/// PATH inside the gear.
fn held(argv: &[String]) -> Vec<String> {
    if argv.first().map(String::as_str) == Some(super::layout::BINARY)
        && argv.get(1).map(String::as_str) == Some("gear")
    {
        return argv.to_vec();
    }
    let mut held: Vec<String> = [super::layout::BINARY, "gear", "lifeline", "--"]
        .map(String::from)
        .to_vec();
    held.extend(argv.iter().cloned());
    held
}

/// The namespaces of a running gear, opened: held, they stay joinable whatever its init does
/// next, and opening them is what tells a running init from one that is exiting (its
/// namespaces go before it does).
pub struct Namespaces {
    init_pid: i32,
    /// In the order they are joined.
    ns: Vec<(File, CloneFlags)>,
}

impl Namespaces {
    /// Opens the namespaces of the gear whose init is `init_pid`.
    pub fn open(init_pid: i32) -> Result<Namespaces> {
        let ns_kinds = [
            ("cgroup", CloneFlags::CLONE_NEWCGROUP),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("net", CloneFlags::CLONE_NEWNET),
            ("pid", CloneFlags::CLONE_NEWPID),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ];
        let ns = ns_kinds
            .iter()
            .map(|(k, f)| {
                let p = format!("/proc/{init_pid}/ns/{k}");
                File::open(&p)
                    .map(|fd| (fd, *f))
                    .with_context(|| format!("cannot open {p} (is the gear running?)"))
            })
            .collect::<Result<_>>()?;
        Ok(Namespaces { init_pid, ns })
    }
}

/// Runs a command in a running gear, with stdio attached, and returns its exit code
/// (128+N when killed by signal N). The calling process joins the gear's cgroup and
/// namespaces: call it from a single-threaded process that has nothing else to do (the CLI, or
/// a process forked for this one spawn).
pub fn exec(spec: ExecSpec) -> Result<i32> {
    let filters = seccomp::build()?;
    selinux::enabled(); // decided now: the gear's /sys has no selinuxfs
    let argv: Vec<CString> = held(&spec.argv)
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .context("argument contains a NUL byte")?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .context("environment contains a NUL byte")?;
    let pty = if spec.tty {
        Some(gear_pty(spec.gear.init_pid)?)
    } else {
        None
    };
    if let Some((m, _)) = &pty {
        super::tty::copy_window_size(0, m.as_raw_fd());
    }
    // Nothing of the caller's crosses into the gear: its stdio is relayed (see relay.rs), or
    // replaced by the gear's own pty.
    let relay = if spec.tty {
        None
    } else {
        Some(super::relay::Relay::prepare(spec.stdin)?)
    };
    // The child is a copy of this process, visible in the gear's /proc until it execs: its
    // command line (ours: `gearshift env set APP KEY=VALUE`...) must not tell the gear anything.
    overwrite_args(b"gearshift").context("cannot hide the command line from the gear")?;

    // The caller itself joins the gear's cgroup and namespaces (a single-threaded, short-lived
    // process that needs nothing from the host after this point), which saves a fork. setns of
    // the pid namespace applies to the children only: the command becomes a member, we do not.
    spec.cgroup.join(0).context("cannot join the gear's cgroup")?;
    for (fd, kind) in &spec.gear.ns {
        setns(fd, *kind).with_context(|| format!("cannot join the gear's {kind:?} namespace"))?;
    }
    // SAFETY: single-threaded process; the child uses only its own copies.
    let forked = unsafe { fork() }.map_err(|e| match e {
        // The kernel refuses new members to a pid namespace whose init has exited.
        nix::errno::Errno::ENOMEM => anyhow::anyhow!(
            "the gear stopped as the command was starting (its init was killed or restarted): run the command again"
        ),
        e => anyhow::Error::new(e).context("cannot fork into the gear"),
    });
    let child = match forked? {
        ForkResult::Parent { child } => child,
        ForkResult::Child => {
            if let Some((m, s)) = &pty {
                // SAFETY: plain syscalls on descriptors this process owns.
                unsafe {
                    libc::close(m.as_raw_fd());
                    libc::setsid();
                    libc::ioctl(s.as_raw_fd(), libc::TIOCSCTTY, 0);
                    for fd in 0..3 {
                        libc::dup2(s.as_raw_fd(), fd);
                    }
                }
            }
            if let Some(r) = &relay {
                r.install_in_child();
            }
            close_fds_from(3, None);
            if let Err(e) = confine(spec.who, &filters, true) {
                die(126, &format!("cannot confine the process: {e:#}"));
            }
            // The command dies with the process that started it (the CLI, or the daemon's
            // worker for an SSH session). Set after the uid change, which clears it; the exec
            // clears it again when it changes the SELinux domain, so what is exec'd sets it
            // once more itself (`held`, gear/lifeline.rs).
            super::lifeline::die_with_parent();
            // The parent is outside the gear's pid namespace, so it shows as pid 0 whether it
            // lives or not: an orphan is adopted by a reaper of the parent's own namespace,
            // outside the gear. Its other end of our stdout tells.
            if super::lifeline::starter_is_gone() {
                die(126, "the process that started this command is gone");
            }
            if let Err(e) = nix::unistd::chdir(&spec.who.home_inner) {
                die(126, &format!("cannot enter {}: {e}", spec.who.home_inner.display()));
            }
            let e = nix::unistd::execve(&argv[0], &argv, &envp).unwrap_err();
            die(
                if e == nix::errno::Errno::ENOENT { 127 } else { 126 },
                &format!("cannot run {} in the gear: {e}", super::layout::BINARY),
            )
        }
    };
    drop(spec.gear); // the command holds the namespaces now
    if let Some((m, s)) = pty {
        drop(s);
        super::tty::relay(m, child)?;
    }
    if let Some(r) = relay {
        r.run(child)?;
    }
    Ok(exit_code(wait_for(child)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_not_gearshift_s_own_is_started_through_the_lifeline() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let own = v(&[super::super::layout::BINARY, "gear", "exec", "--", "sleep", "1"]);
        assert_eq!(held(&own), own);
        assert_eq!(
            held(&v(&["/bin/sh", "-c", "tail -f log"])),
            v(&[
                super::super::layout::BINARY,
                "gear",
                "lifeline",
                "--",
                "/bin/sh",
                "-c",
                "tail -f log"
            ])
        );
        // gearshift's binary with anything but its in-gear verbs is not trusted to re-arm.
        assert_eq!(
            held(&v(&[super::super::layout::BINARY, "version"]))[..4],
            v(&[super::super::layout::BINARY, "gear", "lifeline", "--"])[..]
        );
    }

    const CHILD: &str = "GEARSHIFT_TEST_OVERWRITE_ARGS_CHILD";

    /// Break 2 of issue 14: the process forked into a gear is a copy of the root CLI, visible
    /// in the gear's /proc until it execs; its command line must not show root's arguments.
    #[test]
    fn overwritten_arguments_do_not_show_in_proc() {
        if std::env::var_os(CHILD).is_some() {
            overwrite_args(b"gearshift").unwrap();
            let shown = std::fs::read("/proc/self/cmdline").unwrap();
            assert_eq!(shown.split(|b| *b == 0).next().unwrap(), b"gearshift");
            assert!(!String::from_utf8_lossy(&shown).contains("hunter2"), "{shown:?}");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "gear::spawn::tests::overwritten_arguments_do_not_show_in_proc",
            ])
            .args(["--test-threads=1", "API_KEY=hunter2"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
    }
}
