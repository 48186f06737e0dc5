//! gearshift's own OpenSSH sshd: its own port, host keys and config under `<data_root>/ssh/`,
//! supervised by the daemon. The admin's sshd and /etc/ssh/sshd_config are never touched.

use crate::node::Node;
use anyhow::{bail, Context, Result};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The OpenSSH server binary.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Paths of one node's sshd.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub host_keys: Vec<PathBuf>,
    pub pid_file: PathBuf,
    pub log: PathBuf,
    /// The root-owned copy of gearshift that sshd runs (AuthorizedKeysCommand, forced command).
    pub bin: PathBuf,
}

impl Paths {
    /// Where this node's sshd keeps its files.
    pub fn of(node: &Node) -> Paths {
        let dir = node.root().join("ssh");
        Paths {
            config: dir.join("sshd_config"),
            host_keys: vec![dir.join("ssh_host_ed25519_key"), dir.join("ssh_host_rsa_key")],
            pid_file: node.run_dir().join("sshd.pid"),
            log: node.root().join("logs/sshd.log"),
            bin: bin_dir().join(&node.config.name).join("gearshift"),
            dir,
        }
    }
}

/// Where sshd finds the gearshift binary it runs for logins: /run/gearshift (tmpfs, gone at
/// reboot), unless /run is mounted noexec (Debian trixie does so), then /var/lib/gearshift-ssh.
/// Both are root-owned all the way up, as sshd demands of an AuthorizedKeysCommand.
pub fn bin_dir() -> PathBuf {
    let noexec = nix::sys::statvfs::statvfs("/run")
        .map(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
        .unwrap_or(false);
    PathBuf::from(if noexec {
        "/var/lib/gearshift-ssh"
    } else {
        "/run/gearshift"
    })
}

/// The sshd_config text (pure: everything it needs is passed in).
pub fn config_text(node: &Node, p: &Paths, config_path: &Path, ipv6: bool, sshd_version: Option<(u32, u32)>) -> String {
    let c = &node.config;
    let mut s = String::from("# Written by gearshift daemon at every start: edits are lost.\n");
    let mut kv = |k: &str, v: &str| s.push_str(&format!("{k} {v}\n"));
    kv("Port", &c.ssh_port.to_string());
    kv("ListenAddress", "0.0.0.0");
    if ipv6 {
        kv("ListenAddress", "::");
    }
    for k in &p.host_keys {
        kv("HostKey", &k.display().to_string());
    }
    kv("PidFile", &p.pid_file.display().to_string());
    kv("LogLevel", "VERBOSE");
    kv("AuthorizedKeysFile", "none");
    kv(
        "AuthorizedKeysCommand",
        &format!("{} auth-keys --config {} %u", p.bin.display(), config_path.display()),
    );
    kv("AuthorizedKeysCommandUser", &c.ssh_user);
    kv("AllowUsers", &c.ssh_user);
    for (k, v) in [
        ("AuthenticationMethods", "publickey"),
        ("PubkeyAuthentication", "yes"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("HostbasedAuthentication", "no"),
        ("GSSAPIAuthentication", "no"),
        ("KerberosAuthentication", "no"),
        ("PermitEmptyPasswords", "no"),
        ("PermitRootLogin", "no"),
        ("UsePAM", "no"),
        ("StrictModes", "yes"),
        ("IgnoreRhosts", "yes"),
        ("UseDNS", "no"),
        ("PermitUserEnvironment", "no"),
        ("PermitUserRC", "no"),
        ("AllowAgentForwarding", "no"),
        ("X11Forwarding", "no"),
        ("PermitTunnel", "no"),
        ("AllowStreamLocalForwarding", "no"),
        ("GatewayPorts", "no"),
        ("PermitListen", "none"),
        // Local forwarding only, and each key's permitopen limits it to its user's gears.
        ("AllowTcpForwarding", "local"),
        ("PermitTTY", "yes"),
        ("PrintMotd", "no"),
        ("PrintLastLog", "no"),
        ("Banner", "none"),
        ("LoginGraceTime", "30"),
        ("MaxAuthTries", "6"),
        ("MaxSessions", "10"),
        ("ClientAliveInterval", "60"),
        ("ClientAliveCountMax", "3"),
    ] {
        kv(k, v);
    }
    s.push_str(&startup_limits(sshd_version));
    // No Subsystem line: sftp (and scp, which uses it) is refused by sshd itself.
    s
}

/// The start-up and penalty limits, sized for a workshop: thirty people behind one NAT address
/// pushing at once, and CI loops that run hundreds of commands from one address.
fn startup_limits(sshd_version: Option<(u32, u32)>) -> String {
    let mut s = String::from(
        "# Start-up limits are node-wide, never per source address: a room behind one NAT address,\n\
         # or a CI loop, looks like one source. 64 unauthenticated connections are always accepted,\n\
         # then 30% of new ones are dropped at random, rising to all of them at 256.\n\
         # (No PerSourceMaxStartups: on OpenSSH 10.0 its per-source slots are never freed, so the\n\
         # eleventh connection from one address was dropped until sshd restarted.)\n",
    );
    s.push_str("MaxStartups 64:30:256\n");
    s.push_str("PerSourceMaxStartups none\n");
    // PerSourcePenalties exists from OpenSSH 9.8 on (and is on by default there); 9.2 rejects it.
    if sshd_version.is_some_and(|v| v >= (9, 8)) {
        s.push_str(
            "# Penalties for failed authentication (and sshd crashes, i.e. exploit attempts) only:\n\
             # a client that connects and leaves before authenticating (a host-key prompt answered\n\
             # 'no', ssh-keyscan, a port probe) or that is slow to log in is not penalised. A failed\n\
             # login adds 2 s to its address, and the address is refused only once 60 s have piled\n\
             # up (30 failed logins in quick succession; penalties drain in real time), for at most\n\
             # 120 s: one laptop with the wrong key, retrying by hand, never locks out the others\n\
             # behind the same NAT address, while a password-guessing bot is slowed down.\n",
        );
        s.push_str(
            "PerSourcePenalties authfail:2s crash:90s noauth:0s grace-exceeded:0s min:60s \
             max:120s\n",
        );
    }
    s
}

/// The installed sshd's (major, minor) version, from `sshd -V` (which older releases answer
/// with their usage text, still naming the version: `OpenSSH_9.2p1, OpenSSL ...`).
pub fn sshd_version() -> Option<(u32, u32)> {
    let out = Command::new(SSHD).arg("-V").stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    parse_version(&text)
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split("OpenSSH_").nth(1)?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether an IPv6 socket can be bound here.
pub fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

fn mkdir_root(dir: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    nix::unistd::chown(dir, Some(0.into()), Some(0.into())).with_context(|| format!("cannot chown {}", dir.display()))
}

/// Copies the running binary to a root-owned path sshd accepts for commands (every parent
/// root-owned and not group/world-writable, which /tmp or a build tree is not).
pub fn install_binary(p: &Paths) -> Result<()> {
    let dir = p.bin.parent().context("binary path has no parent")?;
    for d in [bin_dir().as_path(), dir] {
        mkdir_root(d, 0o755)?;
    }
    // Copied in the kernel (copy_file_range), not read into the daemon's memory, and renamed
    // into place so a running sshd never execs a half-written binary.
    let tmp = p.bin.with_extension("new");
    std::fs::copy("/proc/self/exe", &tmp)
        .with_context(|| format!("cannot copy the running gearshift binary to {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &p.bin).with_context(|| format!("cannot install {}", p.bin.display()))?;
    Ok(())
}

/// Generates missing host keys (ed25519 and rsa) with ssh-keygen.
pub fn ensure_host_keys(p: &Paths) -> Result<()> {
    mkdir_root(&p.dir, 0o755)?;
    for (key, kind) in p.host_keys.iter().zip(["ed25519", "rsa"]) {
        if key.exists() {
            continue;
        }
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-N", "", "-t", kind, "-C", "gearshift host key", "-f"])
            .arg(key);
        if kind == "rsa" {
            cmd.args(["-b", "3072"]);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .context("cannot run ssh-keygen (install openssh-client)")?;
        if !out.status.success() {
            bail!(
                "ssh-keygen could not create {}: {}",
                key.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Writes the config, installs the binary, makes host keys and checks the result with `sshd -t`.
pub fn prepare(node: &Node, config_path: &Path) -> Result<Paths> {
    if !Path::new(SSHD).exists() {
        bail!("{SSHD} is missing: install openssh-server (scripts/deps.sh)");
    }
    for s in [config_path.to_string_lossy(), node.root().to_string_lossy()] {
        if s.contains(|c: char| c.is_whitespace() || c == '"' || c == '%' || c == '\\') {
            bail!("path '{s}' contains whitespace, quotes, '%' or '\\', which sshd_config cannot carry: move it");
        }
    }
    let p = Paths::of(node);
    install_binary(&p)?;
    ensure_host_keys(&p)?;
    // Privilege separation directory that Debian's sshd expects.
    mkdir_root(Path::new("/run/sshd"), 0o755)?;
    if let Some(d) = p.log.parent() {
        crate::state::log_dir(d)?;
    }
    crate::state::log_file(&p.log)?;
    crate::state::write_atomic(
        &p.config,
        config_text(node, &p, config_path, ipv6_available(), sshd_version()).as_bytes(),
        0o644,
    )?;
    let out = Command::new(SSHD)
        .arg("-t")
        .arg("-f")
        .arg(&p.config)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {SSHD}"))?;
    if !out.status.success() {
        bail!(
            "sshd rejects the generated config {}: {} (see `sshd -t -f {}`)",
            p.config.display(),
            String::from_utf8_lossy(&out.stderr).trim(),
            p.config.display()
        );
    }
    Ok(p)
}

fn spawn(p: &Paths) -> Result<Child> {
    stop_stale(p);
    let mut cmd = Command::new(SSHD);
    // SAFETY: the pre-exec closure only calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // The listener dies with the daemon (sessions already running keep going: their
            // processes are forks, which do not inherit this), so a restarted daemon can bind.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            Ok(())
        });
    }
    cmd.arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&p.config)
        .arg("-E")
        .arg(&p.log)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {SSHD}"))
}

/// Stops an sshd left behind by a daemon that was killed (its pid file names it, and its
/// command line names our config: never anyone else's sshd).
pub fn stop_stale(p: &Paths) {
    let Ok(text) = std::fs::read_to_string(&p.pid_file) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else { return };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = String::from_utf8_lossy(&cmdline).contains(&*p.config.to_string_lossy());
    if !ours {
        return;
    }
    // SAFETY: kill(2) on a pid whose command line was just checked to be our own sshd.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs sshd until `stop` is set, restarting it with backoff (1 s doubling to 30 s, back to
/// 1 s after a minute of good health) when it dies.
pub fn supervise(p: &Paths, stop: &AtomicBool) {
    let mut backoff = Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut child = match spawn(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("gearshift daemon: {e:#}");
                sleep_unless(stop, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let status = loop {
            if stop.load(Ordering::Relaxed) {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let _ = child.wait();
                let _ = std::fs::remove_file(&p.pid_file);
                return;
            }
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => {
                    eprintln!("gearshift daemon: cannot wait for sshd: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        eprintln!(
            "gearshift daemon: sshd exited ({status}); restarting in {}s (log: {})",
            backoff.as_secs(),
            p.log.display()
        );
        sleep_unless(stop, backoff);
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_essentials() {
        let config = crate::node::config::Config {
            name: "n1".into(),
            ssh_user: "gs-n1".into(),
            ssh_port: 2223,
            data_root: "/var/lib/n1".into(),
            ..Default::default()
        };
        let node = Node {
            config,
            config_path: "/etc/n1.toml".into(),
        };
        let p = Paths::of(&node);
        let t = config_text(&node, &p, Path::new("/etc/n1.toml"), false, Some((9, 2)));
        for want in [
            "Port 2223\n",
            "AuthorizedKeysFile none\n",
            "AuthorizedKeysCommand /run/gearshift/n1/gearshift auth-keys --config /etc/n1.toml %u\n",
            "AuthorizedKeysCommandUser gs-n1\n",
            "AllowUsers gs-n1\n",
            "PasswordAuthentication no\n",
            "PermitRootLogin no\n",
            "AllowTcpForwarding local\n",
            "HostKey /var/lib/n1/ssh/ssh_host_ed25519_key\n",
            "PidFile /var/lib/n1/run/sshd.pid\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in:\n{t}");
        }
        assert!(!t.contains("ListenAddress ::"));
        assert!(!t.contains("Subsystem"));
        // OpenSSH 9.2 knows no PerSourcePenalties; nobody gets a per-source start-up limit.
        assert!(!t.contains("PerSourcePenalties"));
        assert!(t.contains("PerSourceMaxStartups none\n"));
        assert!(t.contains("MaxStartups 64:30:256\n"));
    }

    #[test]
    fn penalties_only_where_sshd_knows_them_and_only_for_failed_logins() {
        for (v, want) in [
            (Some((9, 7)), false),
            (Some((9, 8)), true),
            (Some((10, 0)), true),
            (None, false),
        ] {
            let t = startup_limits(v);
            assert_eq!(t.contains("PerSourcePenalties"), want, "{v:?}:\n{t}");
            if want {
                let line = t.lines().find(|l| l.starts_with("PerSourcePenalties")).unwrap();
                assert!(
                    line.contains("noauth:0s") && line.contains("grace-exceeded:0s"),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn version_is_read_from_sshd_output() {
        assert_eq!(
            parse_version("OpenSSH_9.2p1 Debian-2+deb12u6, OpenSSL 3.0.19"),
            Some((9, 2))
        );
        assert_eq!(
            parse_version("unknown option -- V\nOpenSSH_10.0p2 Debian-7, OpenSSL 3.5.1"),
            Some((10, 0))
        );
        assert_eq!(parse_version("OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026"), Some((9, 2)));
        assert_eq!(parse_version("sshd: command not found"), None);
    }
}
