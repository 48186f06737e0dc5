//! A gear as its user sees it from inside, and as a neighbour sees it: `gearshift run` applies
//! every mechanism, and two apps cannot touch each other or the host.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn run_applies_every_mechanism() {
    require_root!();
    let n = TestNode::new();
    let app = n.create_app("alpha");
    let uid = app["gears"][0]["uid"].as_u64().unwrap();

    let (code, out, err) = n.sh("alpha", "id -u; id -g; hostname; whoami; echo $HOME; pwd");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            uid.to_string().as_str(),
            uid.to_string().as_str(),
            "alpha",
            "alpha",
            "/home/alpha",
            "/home/alpha"
        ]
    );

    // Only the gear's own processes: pid 1 is the gear init, and the rest are ours.
    let (_, ps, _) = n.sh("alpha", "ps -e -o pid=,user=,comm=");
    let pids: Vec<u32> = ps
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(pids.contains(&1), "no pid 1 in {ps}");
    assert!(pids.len() <= 5, "the gear sees foreign processes:\n{ps}");
    assert!(!ps.contains("root"), "a root process is visible in the gear:\n{ps}");

    // Capabilities, no_new_privs, seccomp.
    let (_, status, _) = n.sh("alpha", "cat /proc/self/status");
    assert_eq!(status_field(&status, "CapEff:"), "0000000000000000");
    assert_eq!(status_field(&status, "CapPrm:"), "0000000000000000");
    assert_eq!(status_field(&status, "CapBnd:"), "0000000000000000");
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&status, "Seccomp:"), "2");

    // Private /tmp; read-only runtimes; the data root and other gears are not there.
    let marker = format!("/tmp/gearshift-private-{}", n.slot);
    let (code, _, _) = n.sh("alpha", &format!("echo x > {marker} && test -s {marker}"));
    assert_eq!(code, 0);
    assert!(!std::path::Path::new(&marker).exists(), "gear /tmp leaked to the host");
    for dir in ["/usr", "/etc", "/bin", "/lib", "/"] {
        let (code, _, err) = n.sh("alpha", &format!("touch {dir}/gearshift-probe"));
        assert_ne!(code, 0, "{dir} is writable in the gear");
        assert!(
            err.contains("Read-only file system") || err.contains("Permission denied"),
            "{dir}: {err}"
        );
    }
    let root = n.root.display().to_string();
    let (code, _, _) = n.sh("alpha", &format!("ls {root} || ls /var/lib/gearshift"));
    assert_ne!(code, 0, "the data root is visible in the gear");
    let (code, _, _) = n.sh("alpha", "echo hi > ~/app-root/data/f && cat ~/app-root/data/f");
    assert_eq!(code, 0, "the gear cannot write its own home");

    // Every writable mount is nosuid and nodev.
    let (_, mi, _) = n.sh("alpha", "cat /proc/self/mountinfo");
    for mp in ["/", "/home/alpha", "/tmp", "/usr", "/run/host/etc", "/proc", "/dev/shm"] {
        let line = mi
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(mp))
            .unwrap_or_else(|| panic!("{mp} not mounted:\n{mi}"));
        let opts = line.split_whitespace().nth(5).unwrap();
        assert!(opts.contains("nosuid"), "{mp} lacks nosuid: {line}");
        assert!(opts.contains("nodev") || mp == "/dev", "{mp} lacks nodev: {line}");
    }

    // The gear's /etc is part of its read-only root, the host's read-only behind it.
    let (code, _, _) = n.sh(
        "alpha",
        "touch /etc/planted || touch /run/host/etc/planted || echo x >> /etc/hosts",
    );
    assert_ne!(code, 0, "the gear wrote into /etc");
    assert!(!std::path::Path::new("/etc/planted").exists());

    // Exit codes and stdin pass through.
    assert_eq!(n.sh("alpha", "exit 42").0, 42);
    assert_eq!(n.sh("alpha", "kill -TERM $$").0, 128 + 15);
    let mut child = n
        .cmd()
        .args(["run", "alpha", "--", "tr", "a-z", "A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello gear\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO GEAR\n");
    let o = n.gs(&["run", "alpha", "--", "no-such-program"]);
    assert_eq!(o.status.code(), Some(127));

    // With a terminal on stdin, the command gets a pty of the gear's own devpts, as its
    // controlling terminal; the exit code still passes through.
    let cmdline = format!(
        "{BIN} --config {} run alpha -- sh -c 'tty; test -t 0 && echo interactive; exit 7'",
        n.config.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("/dev/pts/0"), "no gear pty: {out}");
    assert!(
        out.contains("interactive"),
        "stdin is not a terminal in the gear: {out}"
    );
    assert_eq!(o.status.code(), Some(7), "{out}");
}

#[test]
fn setuid_mount_unshare_chroot_do_not_escape() {
    require_root!();
    let n = TestNode::new();
    let app = n.create_app("esc");
    let home = std::path::PathBuf::from(app["gears"][0]["home"].as_str().unwrap());

    // A setuid-root copy of `id` planted in the gear's home by the host's root.
    let planted = home.join("suid-id");
    std::fs::copy("/usr/bin/id", &planted).unwrap();
    std::os::unix::fs::chown(&planted, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&planted, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    let (code, out, _) = n.sh("esc", "~/suid-id");
    assert_eq!(code, 0);
    assert!(
        !out.contains("uid=0") && !out.contains("euid=0"),
        "setuid gave root: {out}"
    );
    let (_, out, _) = n.sh("esc", "su -c id root </dev/null 2>&1; sudo -n id 2>&1; true");
    assert!(!out.contains("uid=0("), "su/sudo gave root: {out}");

    for attack in [
        "mount -t tmpfs none /tmp",
        "unshare -r true",
        "unshare -m true",
        "unshare -n true",
        "chroot / true",
        "python3 -c 'import ctypes,sys; sys.exit(0 if ctypes.CDLL(None).unshare(0x10000000)==0 else 1)'",
    ] {
        let (code, out, err) = n.sh("esc", attack);
        assert_ne!(code, 0, "`{attack}` succeeded in the gear: {out}{err}");
    }
}

fn wait_http(addr: &str, timeout: Duration) -> bool {
    eventually(timeout, || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(300)) else {
            return false;
        };
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut b = String::new();
        let _ = s.read_to_string(&mut b);
        b.starts_with("HTTP/1.0 200")
    })
}

#[test]
fn two_apps_cannot_touch_each_other_or_the_host() {
    require_root!();
    let n = TestNode::new();
    let a = n.create_app("appa");
    let b = n.create_app("appb");
    let b_ip = b["gears"][0]["ip"].as_str().unwrap().to_string();
    let b_home = b["gears"][0]["home"].as_str().unwrap().to_string();
    assert_ne!(a["gears"][0]["uid"], b["gears"][0]["uid"]);
    assert_ne!(a["gears"][0]["mcs"], b["gears"][0]["mcs"]);

    // B serves HTTP and keeps a world-readable secret.
    let (code, _, err) = n.sh(
        "appb",
        "echo s3cret > ~/secret; chmod 666 ~/secret; nohup python3 -m http.server 8080 >/dev/null 2>&1 &",
    );
    assert_eq!(code, 0, "{err}");
    let b_addr = format!("{b_ip}:8080");
    assert!(
        wait_http(&b_addr, Duration::from_secs(30)),
        "B does not serve on {b_addr}"
    );

    // A cannot list or read B's home, by host path or by B's inner path.
    for cmd in [
        format!("ls {b_home}"),
        format!("cat {b_home}/secret"),
        "cat /home/appb/secret".into(),
        "ls /home/appb".into(),
    ] {
        let (code, out, _) = n.sh("appa", &cmd);
        assert_ne!(code, 0, "A could run `{cmd}`: {out}");
        assert!(!out.contains("s3cret"));
    }
    // A cannot see or signal B's processes (neither by host pid nor by a guess at B's inner pids).
    let (_, ps, _) = n.sh("appa", "ps -e -o comm=");
    assert!(!ps.contains("python3"), "A sees B's server: {ps}");
    let server_pid = std::process::Command::new("pgrep")
        .args(["-f", "http.server 8080"])
        .output()
        .unwrap();
    let server_pid = String::from_utf8_lossy(&server_pid.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    assert!(!server_pid.is_empty(), "B's server pid not found on the host");
    let (code, _, err) = n.sh(
        "appa",
        &format!("kill -9 {server_pid}; for p in $(seq 2 40); do [ $p = $$ ] || kill -9 $p 2>/dev/null; done; true"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_http(&b_addr, Duration::from_secs(2)),
        "B stopped serving after A's kill attempts"
    );

    // A cannot connect to B's address.
    let connect = |target: &str| {
        let (h, p) = target.rsplit_once(':').unwrap();
        n.sh(
            "appa",
            &format!("python3 -c 'import socket; s=socket.socket(); s.settimeout(2); s.connect((\"{h}\", {p}))'"),
        )
        .0
    };
    assert_ne!(connect(&b_addr), 0, "A reached B at {b_addr}");

    // A cannot reach the host's loopback services nor the host through the bridge.
    let lo = TcpListener::bind("127.0.0.1:0").unwrap();
    let lo_port = lo.local_addr().unwrap().port();
    assert_ne!(
        connect(&format!("127.0.0.1:{lo_port}")),
        0,
        "A reached the host's loopback"
    );
    let any = TcpListener::bind("0.0.0.0:0").unwrap();
    let gw = format!("{}1:{}", n.subnet_prefix(), any.local_addr().unwrap().port());
    assert_ne!(connect(&gw), 0, "A reached a host service through the bridge at {gw}");

    // And B is still fine.
    assert!(wait_http(&b_addr, Duration::from_secs(2)));
}

/// Starts a minimal HTTP server on port 8080 in APP's gear and returns once it listens (seen
/// from inside the gear, so the host's path to the gear is not what is waited on). Like an
/// add-on's server, it sends nothing of its own accord (`http.server` looks its name up in DNS,
/// which makes the gear ask the host for the gateway's MAC and so refreshes the host's entry).
fn serve_http_in(n: &TestNode, app: &str) {
    let (code, _, err) = n.sh(
        app,
        "nohup python3 -c 'import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((\"0.0.0.0\", 8080))
s.listen()
while True:
    c, _ = s.accept()
    c.recv(1000)
    c.sendall(b\"HTTP/1.0 200 OK\\r\\n\\r\\nok\")
    c.close()
' >/dev/null 2>&1 & \
         for i in $(seq 300); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8080), 1)' 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
    );
    assert_eq!(code, 0, "no HTTP server listens in {app}'s gear: {err}");
}

/// A gear made on the address of a destroyed one is reachable at once: the host forgets the old
/// gear's MAC for that address, and the bridge's (the gateway's) MAC does not change when gears
/// come and go, so no neighbour cache on the path points at a MAC that is gone.
#[test]
fn a_reused_gear_address_is_reachable_at_once() {
    require_root!();
    let n = TestNode::new();
    let mac = || std::fs::read_to_string(format!("/sys/class/net/{}/address", n.name)).unwrap();
    let before = mac();
    // Another gear keeps the bridge's carrier up when the first goes (a bridge left without
    // ports drops its carrier, and the kernel then flushes its neighbour entries anyway).
    n.create_app("keeper");
    let old = n.create_app("first");
    let ip = old["gears"][0]["ip"].as_str().unwrap().to_string();
    let addr = format!("{ip}:8080");
    serve_http_in(&n, "first");
    // The host now holds a REACHABLE neighbour entry for the address, with the gear's MAC.
    assert!(wait_http(&addr, Duration::from_secs(5)), "the host cannot reach {addr}");
    n.ok(&["app", "destroy", "first", "--confirm", "first"]);
    let new = n.create_app("second");
    assert_eq!(
        new["gears"][0]["ip"].as_str(),
        Some(ip.as_str()),
        "the address was not reused"
    );
    assert_eq!(mac(), before, "the bridge's MAC changed as gears came and went");
    serve_http_in(&n, "second");
    let t = Instant::now();
    assert!(
        wait_http(&addr, Duration::from_secs(3)),
        "the host cannot reach the new gear at the reused address {addr} (its neighbour entry: {})",
        String::from_utf8_lossy(
            &std::process::Command::new("ip")
                .args(["neigh", "show", &ip, "dev", &n.name])
                .output()
                .unwrap()
                .stdout
        )
    );
    eprintln!("reused address reached in {:?}", t.elapsed());
}

/// Break 2 of issue 14: root's stdio never crosses into a gear. Root runs a command in a gear
/// with stdin, stdout and stderr on root-only files: the command must see fresh pipes or
/// sockets, never root's descriptors (which a process of the gear could take with pidfd_getfd).
#[test]
fn a_gear_gets_none_of_the_callers_descriptors() {
    require_root!();
    let n = TestNode::new();
    n.create_app("fdleak");
    let dir = n.root.with_extension("callers-fds");
    std::fs::create_dir_all(&dir).unwrap();
    let open = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        (
            p.clone(),
            std::fs::OpenOptions::new().read(true).write(true).open(&p).unwrap(),
        )
    };
    let (in_path, stdin) = open("root-stdin", "root's secret input\n");
    let (out_path, stdout) = open("root-stdout", "");
    let (err_path, stderr) = open("root-stderr", "");
    let st = n
        .cmd()
        .args(["run", "fdleak", "--", "/bin/sh", "-c"])
        .arg("for f in 0 1 2; do echo \"$f $(readlink /proc/self/fd/$f)\"; done; cat")
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .unwrap();
    let out = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    // Read: the caller's files go before anything is asserted (they are beside the node's root,
    // which its destroy removes, not in it).
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(st.success(), "{st}: {out} {err}");
    let links: Vec<&str> = out.lines().take(3).collect();
    assert_eq!(links.len(), 3, "{out}");
    for l in &links {
        let target = l.split_once(' ').unwrap().1;
        assert!(
            target.starts_with("socket:[") || target.starts_with("pipe:["),
            "the gear's command got one of root's descriptors ({l}); \
             root's were {}, {}, {}",
            in_path.display(),
            out_path.display(),
            err_path.display()
        );
    }
    // ...and the relay still carries the data both ways.
    assert!(out.ends_with("root's secret input\n"), "{out}");
}

/// Break 3 of issue 14: an app's secrets are for its gear alone. Another local user (nobody)
/// can read no file of the node that holds an app's environment, nor a neighbouring gear.
#[test]
fn app_secrets_are_unreadable_by_other_local_users() {
    require_root!();
    let n = TestNode::new();
    n.create_app("vault");
    n.create_app("nosy");
    let secret = format!("s3cr3t-{}-value", n.slot);
    n.ok(&["env", "set", "vault", &format!("API_KEY={secret}")]);
    // The gear itself still gets it.
    let (code, out, err) = n.sh("vault", "echo $API_KEY; grep -c API_KEY /opt/gearshift/meta/gear.toml");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{secret}\n1\n"));
    let root = n.root.to_str().unwrap();
    // grep -r reads whatever nobody may read; any hit is a leak.
    let o = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["grep", "-rlsD", "skip", &secret, root])
        .output()
        .unwrap();
    let hits = String::from_utf8_lossy(&o.stdout);
    assert!(
        hits.trim().is_empty(),
        "files with vault's secret readable by nobody:\n{hits}"
    );
    // Nor the neighbour's gear.
    let (_, out, _) = n.sh(
        "nosy",
        &format!("grep -rlsD skip {secret} /home /opt /etc /tmp /var /run | wc -l"),
    );
    assert_eq!(out.trim(), "0", "nosy read vault's secret:\n{out}");
    // The check can fail: root finds it.
    let o = std::process::Command::new("grep")
        .args(["-rlsD", "skip", &secret, root])
        .output()
        .unwrap();
    assert!(!o.stdout.is_empty(), "the secret is nowhere on the host?");
}

/// Break 4 of issue 14: a gear opens only the socket families a web app needs (unix, IPv4,
/// IPv6, netlink route); vsock (the host's vsock port space), packet, netlink diag and XDP
/// fail with EAFNOSUPPORT, as on a kernel without them.
#[test]
fn a_gear_opens_only_the_socket_families_a_web_app_needs() {
    require_root!();
    let n = TestNode::new();
    n.create_app("sockets");
    let probe = r#"
import socket
for name, fam, typ, proto in [("unix", 1, 1, 0), ("inet", 2, 1, 0), ("inet6", 10, 2, 0),
        ("netlink-route", 16, 3, 0), ("vsock", 40, 1, 0), ("packet", 17, 3, 0),
        ("netlink-diag", 16, 3, 4), ("xdp", 44, 3, 0), ("vsock-cloexec", 40, 1 | 0o2000000, 0)]:
    try:
        socket.socket(fam, typ, proto).close()
        print(name, "ok")
    except OSError as e:
        print(name, e.errno)
"#;
    let o = n.gs(&["run", "sockets", "--", "python3", "-c", probe]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    let eafnosupport = libc::EAFNOSUPPORT.to_string();
    for line in out.lines() {
        let (name, result) = line.split_once(' ').unwrap();
        let want = match name {
            "unix" | "inet" | "inet6" | "netlink-route" => "ok",
            _ => eafnosupport.as_str(),
        };
        assert_eq!(result, want, "socket family {name} in a gear:\n{out}");
    }
    assert_eq!(out.lines().count(), 9, "{out}");
}

/// A gear's /etc/passwd, /etc/group and resolv.conf are its own for its whole life: the host
/// replaces its own by a rename whenever a user is added (useradd) or a DHCP client runs, and
/// a file bound over a host entry is detached by that rename, so the gear saw the host's users.
#[test]
fn a_gears_own_etc_files_outlive_the_host_renaming_its_own() {
    require_root!();
    let n = TestNode::new();
    n.create_app("etcapp");
    let passwd = |n: &TestNode| {
        let (code, out, err) = n.sh(
            "etcapp",
            "cat /etc/passwd /etc/group; cat /etc/hosts >/dev/null && echo hosts-ok",
        );
        assert_eq!(code, 0, "{err}");
        out
    };
    let before = passwd(&n);
    assert!(before.contains("etcapp:x:"), "{before}");
    assert!(
        before.contains("hosts-ok"),
        "the host's other /etc files are seen: {before}"
    );
    // A host user added while the gear runs: /etc/passwd and /etc/group renamed over.
    let user = format!("gsetc{}", n.slot);
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::process::Command::new("userdel").arg(&self.0).status();
        }
    }
    let st = std::process::Command::new("useradd")
        .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", &user])
        .status()
        .unwrap();
    assert!(st.success(), "useradd {user}");
    let _gone = Gone(user.clone());
    let host = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(host.contains(&format!("{user}:")), "the host has the new user");
    let after = passwd(&n);
    assert!(after.contains("etcapp:x:"), "the gear lost its own passwd: {after}");
    assert!(!after.contains(&user), "the gear sees the host's users: {after}");
    assert!(after.contains("hosts-ok"), "{after}");
}
