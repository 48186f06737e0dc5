//! A private, throw-away gearshift node per test: its own data root, bridge, subnet, uid range,
//! cgroup parent and ports, chosen from a slot that a lock file reserves, so tests run in
//! parallel (and alongside other test binaries) without colliding. Dropping it destroys it.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod watchdog;

pub const BIN: &str = env!("CARGO_BIN_EXE_gearshift");

/// Ends the calling test for want of a prerequisite, with the reason (`format!` arguments):
/// records `binary::test: reason` in the skip file and returns, or, under strict mode, fails the
/// test with the reason ([`skipped`]).
#[macro_export]
macro_rules! skip {
    ($($why:tt)+) => {{
        $crate::common::skipped(&$crate::test_name!(), &format!($($why)+));
        return;
    }};
}

/// The calling test's name as `binary::test` (the form of tests/vm-only.txt).
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        $crate::common::test_of(std::any::type_name_of_val(&here))
    }};
}

/// Skips the calling test where we are not root ([`skip!`]: a failure under strict mode).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::nix_is_root() {
            $crate::skip!("needs root (real namespaces, cgroups, bridges)");
        }
    };
}

/// The tests that can only pass inside the test VM (`make vm-test`), one `binary::test` a line:
/// the one list the tests, `make test` and scripts/vm/test.sh all read.
pub const VM_ONLY_LIST: &str = include_str!("../vm-only.txt");

/// The names in [`VM_ONLY_LIST`].
pub fn vm_only() -> impl Iterator<Item = &'static str> {
    VM_ONLY_LIST
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// How a test whose prerequisite is missing ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// It skips, with the reason recorded (a developer's machine).
    Off,
    /// It fails, unless it is on the VM-only list (`CI` set, or `GEARSHIFT_TEST_STRICT=1`).
    Host,
    /// It fails, VM-only or not (`GEARSHIFT_TEST_STRICT=vm`: inside the test VM).
    Vm,
}

/// Strictness from the environment: `GEARSHIFT_TEST_STRICT=vm`, `GEARSHIFT_TEST_STRICT=1` (any
/// value but empty or `0`) or `CI` set (any value but empty, `0` or `false`: CI sets `CI=true`).
pub fn strictness() -> Strictness {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    match var("GEARSHIFT_TEST_STRICT").as_str() {
        "vm" => Strictness::Vm,
        "" | "0" if matches!(var("CI").as_str(), "" | "0" | "false") => Strictness::Off,
        _ => Strictness::Host,
    }
}

/// `binary::test` from the type name of a function item declared in the test's body.
pub fn test_of(item_path: &str) -> String {
    let parts: Vec<&str> = item_path.split("::").filter(|p| !p.starts_with('{')).collect();
    parts[..parts.len().saturating_sub(1)].join("::")
}

/// Where skips are recorded, a line each: `GEARSHIFT_TEST_SKIP_FILE`, by default
/// `target/test-skips.txt` in the checkout (`make test` prints it at the end).
pub fn skip_file() -> PathBuf {
    std::env::var_os("GEARSHIFT_TEST_SKIP_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-skips.txt"))
}

/// Appends `test: reason` to the skip file (one write with O_APPEND, so lines from tests and
/// test binaries running in parallel do not mix) and prints it.
fn record_skip(test: &str, why: &str) {
    use std::io::Write;
    let line = format!("{test}: {}\n", why.replace('\n', " "));
    eprint!("skipped: {line}");
    let file = skip_file();
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let written = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot record the skip in {}: {e}", file.display());
    }
}

/// A test cannot run here for `why`. Without strict mode, and for a VM-only test under strict
/// mode on the host, this records the skip and the caller returns; otherwise the test fails
/// with the reason.
#[track_caller]
pub fn skipped(test: &str, why: &str) {
    let listed = vm_only().any(|t| t == test);
    match strictness() {
        Strictness::Vm => panic!(
            "{test} cannot run: {why}\n(GEARSHIFT_TEST_STRICT=vm: in the test VM no test may skip)"
        ),
        Strictness::Host if !listed => panic!(
            "{test} cannot run: {why}\n(strict mode, CI or GEARSHIFT_TEST_STRICT=1: only the VM-only tests named in tests/vm-only.txt may skip)"
        ),
        _ => record_skip(test, why),
    }
}

/// Whether `test` must leave out `part` because it needs the internet and
/// `GEARSHIFT_TEST_OFFLINE=1` says there is none (the test VM's network is restricted). A part
/// left out is recorded in the skip file; under strict mode on the host it is a failure: only
/// the VM may be offline.
#[track_caller]
pub fn offline_leaves_out(test: &str, part: &str) -> bool {
    if std::env::var_os("GEARSHIFT_TEST_OFFLINE").is_none_or(|v| v != "1") {
        return false;
    }
    let why = format!("part left out: {part} (GEARSHIFT_TEST_OFFLINE=1: no network)");
    match strictness() {
        Strictness::Host => panic!("{test}: {why}\n(strict mode on the host: every part runs)"),
        _ => record_skip(test, &why),
    }
    true
}

/// Gives a test node the host keys every test node shares (made once, under a lock), so a
/// daemon start does not generate an RSA key: that takes a minute or more in the emulated test
/// VM. The daemon only generates the keys that are missing.
fn seed_host_keys(dir: &Path) {
    let cache = Path::new("/tmp/gearshift-test-hostkeys");
    std::fs::create_dir_all(cache).unwrap();
    let lock = File::create(cache.join("lock")).unwrap();
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    std::fs::create_dir_all(dir).unwrap();
    for (kind, bits) in [("ed25519", None), ("rsa", Some("3072"))] {
        let name = format!("ssh_host_{kind}_key");
        let key = cache.join(&name);
        if !cache.join(format!("{name}.pub")).exists() {
            let _ = std::fs::remove_file(&key);
            let mut c = Command::new("ssh-keygen");
            c.args(["-q", "-N", "", "-t", kind, "-C", "gearshift test host key", "-f"])
                .arg(&key);
            if let Some(b) = bits {
                c.args(["-b", b]);
            }
            assert!(c.status().unwrap().success(), "ssh-keygen -t {kind} failed");
        }
        for suffix in ["", ".pub"] {
            let from = cache.join(format!("{name}{suffix}"));
            let to = dir.join(format!("{name}{suffix}"));
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

/// Whether an SSH server on `port` completes a key exchange (ssh-keyscan prints its host key).
pub fn ssh_handshake(port: u16) -> bool {
    Command::new("ssh-keyscan")
        .args(["-T", "5", "-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("ssh-ed25519 "))
}

/// How long a test may wait for something that takes `d` on a host: `d` itself, or four times
/// it inside the emulated test VM (`GEARSHIFT_TEST_STRICT=vm`: TCG, and under CI beside the
/// host's own suites), where every process start, login and fsync is several times slower. Only
/// a limit on waiting, never a measure: a test waits on the event and goes on as soon as it
/// holds; a longer limit changes only how long a real failure takes to be reported.
pub fn patience(d: std::time::Duration) -> std::time::Duration {
    if strictness() == Strictness::Vm {
        d * 4
    } else {
        d
    }
}

/// Polls `event` every 50 ms until it holds or `limit` (its `patience`) has passed; whether it
/// held. What a test waits on instead of a fixed sleep before asserting on something that is
/// about to happen.
pub fn eventually(limit: std::time::Duration, mut event: impl FnMut() -> bool) -> bool {
    let limit = patience(limit);
    let t = std::time::Instant::now();
    loop {
        if event() {
            return true;
        }
        if t.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The live processes (not zombies) of `uid`, one `pid args` a line.
pub fn procs_of(uid: u64) -> String {
    let o = Command::new("ps")
        .args(["-u", &uid.to_string(), "-o", "pid=,stat=,args="])
        .output()
        .expect("cannot run ps");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (pid, stat) = (f.next()?, f.next()?);
            (!stat.contains('Z')).then(|| format!("{pid} {}", f.collect::<Vec<_>>().join(" ")))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn nix_is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub struct TestNode {
    pub name: String,
    pub root: PathBuf,
    pub config: PathBuf,
    pub slot: u32,
    _lock: File,
    // Dropped after the node's own drop (its destroy): a stuck destroy is caught too.
    _watchdog: watchdog::Watchdog,
}

fn take_slot() -> (u32, File) {
    let dir = Path::new("/tmp/gearshift-test-slots");
    std::fs::create_dir_all(dir).unwrap();
    for slot in 0..200u32 {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{slot}.lock")))
            .unwrap();
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return (slot, f);
        }
    }
    panic!("no free test node slot");
}

/// A fresh ed25519 key pair `dir/NAME` (+ `.pub`); returns the private key's path.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen failed");
    p
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where test nodes keep their data roots: `$GEARSHIFT_TEST_ROOT_BASE/gearshift-test/<node>`
/// (default /tmp). The disk quota backend follows the filesystem of the data root, so pointing
/// this at an ext4 or xfs quota mount tests those backends.
pub fn root_base() -> PathBuf {
    std::env::var_os("GEARSHIFT_TEST_ROOT_BASE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

impl TestNode {
    /// Creates and brings up a node with a fresh data root under `root_base()`.
    pub fn new() -> TestNode {
        Self::new_in(&root_base())
    }

    /// Creates and brings up a node whose data root lies under `base`.
    pub fn new_in(base: &Path) -> TestNode {
        let (slot, lock) = take_slot();
        let name = format!("gst{slot}");
        let root = base.join(format!("gearshift-test/{name}"));
        let config = base.join(format!("gearshift-test/{name}.toml"));
        let node = TestNode {
            _watchdog: watchdog::watch(&name, &root),
            name,
            root,
            config,
            slot,
            _lock: lock,
        };
        node.scrub();
        let uid0 = 460_000 + slot * 200;
        let out = node.gs(&[
            "init",
            "--root",
            node.root.to_str().unwrap(),
            "--bridge",
            &node.name,
            "--subnet",
            &format!("10.213.{slot}.0/24"),
            "--uids",
            &format!("{uid0}-{}", uid0 + 199),
            "--http-port",
            &(20_000 + slot * 10).to_string(),
            "--ssh-port",
            &(20_001 + slot * 10).to_string(),
            "--cartridges",
            repo().join("cartridges").to_str().unwrap(),
            // Sparse: room for the disk quotas of the gears a test makes (disk admission).
            "--disk-image-size",
            "64G",
        ]);
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if base != Path::new("/tmp") {
            // An ext4/xfs quota mount is small and shared by every test node on it.
            node.set_config("overcommit = false", "overcommit = true");
        }
        node
    }

    /// Removes what a crashed earlier run in this slot may have left.
    fn scrub(&self) {
        stop_sshd(&self.root);
        if self.config.exists() {
            let _ = self.gs(&["node", "destroy", "--confirm", &self.name]);
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.root.join("gears"))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_file(&self.config);
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("userdel")
            .args(["--force", &self.ssh_user()])
            .stderr(Stdio::null())
            .status();
    }

    /// The node's own sshd port.
    /// Adds user `name` with a new key pair (under `<root>/keys`); returns the private key's path.
    pub fn add_user(&self, name: &str) -> PathBuf {
        let dir = self.root.join("keys");
        std::fs::create_dir_all(&dir).unwrap();
        let key = keygen(&dir, name);
        self.ok(&[
            "user",
            "add",
            name,
            "--key",
            key.with_extension("pub").to_str().unwrap(),
        ]);
        key
    }

    pub fn ssh_port(&self) -> u16 {
        (20_001 + self.slot * 10) as u16
    }

    /// The router's HTTP port.
    pub fn http_port(&self) -> u16 {
        (20_000 + self.slot * 10) as u16
    }

    /// The router's HTTPS port.
    pub fn https_port(&self) -> u16 {
        (20_003 + self.slot * 10) as u16
    }

    /// The node's SSH login account (`gs-NAME` for a non-default node).
    pub fn ssh_user(&self) -> String {
        format!("gs-{}", self.name)
    }

    /// Starts `gearshift daemon` for this node and waits until its sshd accepts connections.
    /// Dropping the handle stops it (declare it after the node, so it is dropped first).
    pub fn start_daemon(&self) -> Daemon {
        self.start_daemon_with(&[])
    }

    /// [`TestNode::start_daemon`] with extra environment variables (`GEARSHIFT_FAULT`).
    pub fn start_daemon_with(&self, env: &[(&str, &str)]) -> Daemon {
        seed_host_keys(&self.root.join("ssh"));
        let log = self.root.join("daemon.log");
        let out = File::create(&log).unwrap();
        let child = self
            .cmd()
            .arg("daemon")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cannot start gearshift daemon");
        let mut d = Daemon {
            child,
            root: self.root.clone(),
            log,
            killed: false,
        };
        // Generous: on a loaded 2-core machine with many test nodes starting at once (useradd,
        // nft, ip for each) a start has taken over 30 s, and the test VM emulates its CPU (TCG).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("gearshift daemon exited ({st}):\n{}", d.log_text());
            }
            // Ready: the sshd in the pid file is this daemon's child (not one left by a killed
            // daemon) and completes an SSH handshake (a key exchange, never a bare TCP connect,
            // which OpenSSH >= 9.8 may count against the address as a client that never logged in).
            let own_sshd = std::fs::read_to_string(self.root.join("run/sshd.pid"))
                .ok()
                .and_then(|p| std::fs::read_to_string(format!("/proc/{}/stat", p.trim())).ok())
                .and_then(|st| {
                    st.rsplit_once(") ")
                        .and_then(|(_, r)| r.split_whitespace().nth(1).map(String::from))
                })
                .is_some_and(|ppid| ppid == d.child.id().to_string());
            if own_sshd && self.root.join("run/daemon.sock").exists() && ssh_handshake(self.ssh_port()) {
                return d;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sshd did not come up on port {} within 60 s (daemon log so far:\n{}\nsshd log:\n{})",
                self.ssh_port(),
                d.log_text(),
                std::fs::read_to_string(self.root.join("logs/sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Runs the system ssh client as the login user with `key`; `remote` is sent verbatim.
    pub fn ssh(&self, key: &Path, extra: &[&str], remote: Option<&str>, stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut c = Command::new("ssh");
        // Options given first win in ssh, so `extra` can override the defaults.
        c.args(extra)
            .args(ssh_opts(key, self.ssh_port()))
            .arg(format!("{}@127.0.0.1", self.ssh_user()));
        if let Some(r) = remote {
            c.arg(r);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run ssh");
        let mut i = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let w = std::thread::spawn(move || {
            let _ = i.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        let _ = w.join();
        out
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config);
        c
    }

    pub fn gs(&self, args: &[&str]) -> Output {
        self.cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run gearshift")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.gs(args);
        assert!(
            o.status.success(),
            "`gearshift {}` failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.gs(args);
        assert!(
            !o.status.success(),
            "`gearshift {}` succeeded but should fail: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Runs a shell snippet inside an app's gear; returns (exit code, stdout, stderr).
    pub fn sh(&self, app: &str, script: &str) -> (i32, String, String) {
        let o = self.gs(&["run", app, "--", "/bin/sh", "-c", script]);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Runs a shell snippet inside gear INDEX of an app.
    pub fn sh_gear(&self, app: &str, index: u32, script: &str) -> (i32, String, String) {
        let i = index.to_string();
        let o = self.gs(&["run", app, "--gear", &i, "--", "/bin/sh", "-c", script]);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    pub fn create_app(&self, app: &str) -> serde_json::Value {
        self.ok(&["app", "create", app, "--cartridge", "python"]);
        self.show(app)
    }

    /// Replaces `from` (which must be there) by `to` in the node config.
    pub fn set_config(&self, from: &str, to: &str) {
        let cfg = std::fs::read_to_string(&self.config).unwrap();
        assert!(cfg.contains(from), "no '{from}' in the node config: {cfg}");
        std::fs::write(&self.config, cfg.replacen(from, to, 1)).unwrap();
    }

    /// Adds a resource profile to the node config (for tight, fast limit tests).
    pub fn add_profile(&self, name: &str, memory: &str, cpu: f64, pids: u64, disk: &str, bandwidth: &str) {
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        text.push_str(&format!(
            "\n[profiles.{name}]\nmemory = \"{memory}\"\ncpu = {cpu:?}\npids = {pids}\ndisk = \"{disk}\"\ninodes = 10000\nbandwidth = \"{bandwidth}\"\nio_weight = 100\n"
        ));
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn show(&self, app: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["app", "show", app, "--json"])).unwrap()
    }

    pub fn subnet_prefix(&self) -> String {
        format!("10.213.{}.", self.slot)
    }
}

/// The ssh client options for a test node (no host key checks, only this key, no prompts).
pub fn ssh_opts(key: &Path, port: u16) -> Vec<String> {
    let mut v = vec![
        "-i".to_string(),
        key.display().to_string(),
        "-p".into(),
        port.to_string(),
    ];
    for o in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "LogLevel=ERROR",
    ] {
        v.push("-o".into());
        v.push(o.into());
    }
    let connect = patience(std::time::Duration::from_secs(20)).as_secs();
    v.push("-o".into());
    v.push(format!("ConnectTimeout={connect}"));
    v
}

/// Kills a node's sshd by its pid file (after a crashed daemon).
fn stop_sshd(root: &Path) {
    if let Ok(pid) = std::fs::read_to_string(root.join("run/sshd.pid")) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: kill(2) with a pid read from the node's own sshd pid file.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// A running `gearshift daemon`; dropping it stops the daemon (and so its sshd).
pub struct Daemon {
    child: std::process::Child,
    root: PathBuf,
    log: PathBuf,
    /// Killed already ([`Daemon::kill9`]): dropping it must not stop the sshd in the pid file,
    /// which by then may be the one of the daemon started next (`d.daemon = n.start_daemon()`
    /// drops the old handle after the new daemon is up).
    killed: bool,
}

impl Daemon {
    /// Kills the daemon with SIGKILL (no clean-up of its own), as a crash would.
    /// Its sshd dies with it (parent-death signal), asynchronously: wait until its pid is gone,
    /// so a daemon started next cannot mistake the old sshd for its own.
    pub fn kill9(&mut self) {
        let sshd = std::fs::read_to_string(self.root.join("run/sshd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
        if let Some(pid) = sshd {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon has written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        stop_sshd(&self.root);
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if !self.config.exists() {
            self.scrub();
            return;
        }
        let o = self.gs(&["node", "destroy", "--confirm", &self.name]);
        if !o.status.success() && !std::thread::panicking() {
            panic!("node destroy failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        // A gear cgroup no app owned any more: swept by destroy, named here for whoever reads.
        for l in String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("leftover cgroup"))
        {
            eprintln!("{}: node destroy swept a {}", self.name, l.trim());
        }
        self.scrub();
    }
}

/// A node with a running daemon (and so its sshd) and a developer `dev` with a key: what the
/// deploy and router tests start from.
pub struct DevNode {
    pub key: PathBuf,
    // Dropped in this order: the daemon before the node.
    pub daemon: Daemon,
    pub n: TestNode,
}

pub fn dev_node() -> DevNode {
    dev_node_with(|_| {})
}

/// [`dev_node`] whose node config text is first changed by `edit` (settings read at daemon start).
pub fn dev_node_with(edit: impl FnOnce(&mut String)) -> DevNode {
    dev_node_in(&root_base(), edit)
}

/// [`dev_node_with`], with the node's data root under `base`.
pub fn dev_node_in(base: &Path, edit: impl FnOnce(&mut String)) -> DevNode {
    let n = TestNode::new_in(base);
    let mut cfg = std::fs::read_to_string(&n.config).unwrap();
    edit(&mut cfg);
    std::fs::write(&n.config, cfg).unwrap();
    let key = n.add_user("dev");
    let daemon = n.start_daemon();
    DevNode { key, daemon, n }
}

/// Runs git in `dir` (with a committer identity, and the `ext::` transport allowed for local
/// pushes as root) and asserts success; returns stdout.
/// A fresh git repository (under the node's root, branch main, one commit) holding a copy of
/// `examples/NAME`.
pub fn example_repo(n: &TestNode, name: &str) -> PathBuf {
    let dir = n.root.join("src").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let st = Command::new("cp").arg("-a").arg(src).arg(&dir).status().unwrap();
    assert!(st.success(), "cannot copy examples/{name}");
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", name]);
    dir
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "protocol.ext.allow=always",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The git remote of an app, as `README.md` documents it.
pub fn git_remote(n: &TestNode, app: &str) -> String {
    format!("ssh://{}@127.0.0.1:{}/{app}.git", n.ssh_user(), n.ssh_port())
}

/// `GIT_SSH_COMMAND` for pushing to node `n` with `key`.
pub fn git_ssh(key: &Path, n: &TestNode) -> String {
    format!("ssh {}", ssh_opts(key, n.ssh_port()).join(" "))
}

/// `git push REMOTE REFSPEC` over SSH with `key`; returns (success, stdout+stderr).
pub fn push_as(n: &TestNode, key: &Path, dir: &Path, app: &str, refspec: &str) -> (bool, String) {
    let o = Command::new("git")
        .args(["push", &git_remote(n, app), refspec])
        .env("GIT_SSH_COMMAND", git_ssh(key, n))
        .current_dir(dir)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A local git repository `src/NAME` under the node's root with the given files, committed
/// (hooks and `bin/` scripts executable).
pub fn app_repo(n: &TestNode, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = n.root.join("src").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    write_files(&dir, files);
    commit(&dir, "first");
    dir
}

/// Writes `files` into a working tree (hooks and `bin/` scripts executable).
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        if path.contains("action_hooks/") || path.starts_with("bin/") {
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
    }
}

/// Commits everything in the working tree.
pub fn commit(dir: &Path, msg: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", msg]);
}

/// A self-signed certificate for `host` with subject CN=`cn`: (cert, key) files.
pub fn make_cert(dir: &Path, host: &str, cn: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (c, k) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", &format!("/CN={cn}"), "-addext"])
        .arg(format!("subjectAltName=DNS:{host}"))
        .arg("-keyout")
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl req: {o:?}");
    (c, k)
}
