//! The node itself, as its admin sees it: `status` and `doctor` check the running node for
//! real, `node destroy` stops its daemon and says what it removed, `init` refuses clashes.

mod common;
use common::*;
use std::path::Path;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn admin_key(n: &TestNode, name: &str) -> std::path::PathBuf {
    let key = keygen(&n.root.join("keys"), name);
    n.ok(&[
        "user",
        "add",
        name,
        "--admin",
        "--key",
        key.with_extension("pub").to_str().unwrap(),
    ]);
    key
}

fn check<'a>(doctor: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doctor
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("doctor has no check '{name}': {doctor}"))
}

/// A node initialised without `--uids` takes the first free range of the default width (50000
/// uids), which may cover the explicit ranges of test nodes made at the same time in this binary
/// (they are registered only once made): that test runs alone (write), the others beside each
/// other (read).
static DEFAULT_UIDS: std::sync::RwLock<()> = std::sync::RwLock::new(());

#[test]
fn status_and_doctor_check_the_running_node() {
    require_root!();
    let _serial = DEFAULT_UIDS.read().unwrap_or_else(|e| e.into_inner());
    let n = TestNode::new();
    let root_key = admin_key(&n, "boss");
    let bob = n.add_user("bob");
    n.create_app("quiet");

    // The daemon is not running: status and doctor say so, with how to start it.
    let out = n.gs(&["status"]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "status with no daemon: {s}");
    assert!(s.contains("daemon  DOWN  not running"), "{s}");
    assert!(
        s.contains("gearshift --config") && s.contains("daemon`"),
        "no start hint: {s}"
    );
    assert!(s.contains("apps    1: 1 never deployed"), "{s}");
    let out = n.gs(&["doctor"]);
    let d = text(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "doctor passes with the daemon stopped: {d}");
    assert!(!d.contains("everything the node requires works"), "{d}");
    assert!(
        d.lines()
            .any(|l| l.starts_with("missing") && l.contains("daemon") && l.contains("fix: start it")),
        "{d}"
    );
    // A port someone else holds is named, with its process.
    let squatter = std::net::TcpListener::bind(("0.0.0.0", n.http_port())).unwrap();
    let d: serde_json::Value = serde_json::from_slice(&n.gs(&["doctor", "--json"]).stdout).unwrap();
    let http = check(&d, "port http");
    assert_eq!(http["status"], "missing", "{http}");
    assert!(
        http["detail"].as_str().unwrap().contains("bound by another process"),
        "{http}"
    );
    assert!(http["fix"].as_str().unwrap().contains("http_port"), "{http}");
    drop(squatter);

    let daemon = n.start_daemon();
    // start_daemon waits for sshd; the router binds its ports just after.
    let router_up = || n.gs(&["status"]).status.success();
    assert!(
        eventually(std::time::Duration::from_secs(30), router_up),
        "{}",
        daemon.log_text()
    );
    let out = n.gs(&["status"]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains(&format!("daemon  up    pid {}", daemon.pid())), "{s}");
    assert!(
        s.contains(&format!("sshd    up    port {}", n.ssh_port())) && s.contains("handshake ok"),
        "{s}"
    );
    assert!(s.contains(&format!("router  up    http {}", n.http_port())), "{s}");
    assert!(s.contains("disk    ") && s.contains("memory  "), "{s}");
    let j: serde_json::Value = serde_json::from_slice(&n.gs(&["status", "--json"]).stdout).unwrap();
    assert_eq!(j["up"], true, "{j}");
    assert_eq!(j["daemon_pid"], daemon.pid(), "{j}");
    assert_eq!(j["sshd_handshake"], true, "{j}");
    for l in j["listeners"].as_array().unwrap() {
        assert_eq!(l["bound"], "ours", "{l}");
    }
    assert_eq!(j["apps_by_state"]["never deployed"], 1, "{j}");
    assert_eq!(j["apps"][0]["state"], "never deployed", "{j}");
    assert!(j["disk"]["total_bytes"].as_u64().unwrap() > 0, "{j}");
    assert!(j["memory"]["available_bytes"].as_u64().unwrap() > 0, "{j}");
    let d: serde_json::Value = serde_json::from_slice(&n.gs(&["doctor", "--json"]).stdout).unwrap();
    for name in [
        "daemon",
        "port sshd",
        "port http",
        "port https",
        "port admin",
        "ssh handshake",
    ] {
        assert_eq!(check(&d, name)["status"], "ok", "{}", check(&d, name));
    }
    // Landlock: whether gears run under it, and what the node's `landlock` setting does.
    let ll = check(&d, "landlock");
    let detail = ll["detail"].as_str().unwrap();
    if ll["status"] == "ok" {
        assert!(
            detail.starts_with("ABI version ")
                && detail.contains("the gear init applies it")
                && detail.contains("landlock = \"require\""),
            "{ll}"
        );
        n.set_config("landlock = \"require\"", "landlock = \"warn\"");
        let d: serde_json::Value = serde_json::from_slice(&n.gs(&["doctor", "--json"]).stdout).unwrap();
        let ll = check(&d, "landlock");
        assert!(ll["detail"].as_str().unwrap().contains("landlock = \"warn\""), "{ll}");
        n.set_config("landlock = \"warn\"", "landlock = \"require\"");
    } else {
        assert!(detail.contains("gears run without Landlock"), "{ll}");
    }

    // Over SSH: an admin gets the same; anyone else is refused and pointed at their own apps.
    let out = n.ssh(&root_key, &[], Some("status --json"), b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["up"], true, "{j}");
    let out = n.ssh(&bob, &[], Some("status"), b"");
    let e = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(e.contains("only admins can see the node's status"), "{e}");
    assert!(
        e.contains(&format!("ssh -p {}", n.ssh_port())) && e.contains("app list"),
        "{e}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

fn refused(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    matches!(
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[test]
fn node_destroy_stops_its_daemon_and_lists_what_it_removed() {
    require_root!();
    let _serial = DEFAULT_UIDS.read().unwrap_or_else(|e| e.into_inner());
    let n = TestNode::new();
    let app = n.create_app("gone");
    let gear = app["gears"][0]["id"].as_str().unwrap().to_string();
    let daemon = n.start_daemon();
    let router_up = || n.gs(&["status"]).status.success();
    assert!(
        eventually(std::time::Duration::from_secs(30), router_up),
        "{}",
        daemon.log_text()
    );
    assert!(!refused(n.ssh_port()) && !refused(n.http_port()));

    let out = n.ok(&["node", "destroy", "--confirm", &n.name]);
    let pid = daemon.pid();
    for line in [
        format!("node '{}' destroyed; removed:", n.name),
        format!(
            "  daemon (pid {pid}) stopped, with its sshd and router (ports {}, {}, {}, {} closed)",
            n.ssh_port(),
            n.http_port(),
            n.https_port(),
            n.http_port() + 2
        ),
        format!("  bridge {} (10.213.{}.1/24)", n.name, n.slot),
        format!("  nftables table inet gearshift_{}", n.name),
        format!("  login user gs-{}", n.name),
        format!("  data root {}", n.root.display()),
        format!("  config {}", n.config.display()),
    ] {
        assert!(out.lines().any(|l| l == line), "no line '{line}' in:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("  app 'gone' and its gear(s) ") && l.contains(&gear)),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("  cgroup ") && l.contains(&format!("gearshift-{}", n.name))),
        "{out}"
    );
    // Nothing of the node answers any more: its daemon is gone and its ports refuse.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "daemon still alive: {state}"
    );
    for port in [n.ssh_port(), n.http_port(), n.https_port()] {
        assert!(
            refused(port),
            "port {port} still accepts connections after node destroy"
        );
    }
}

/// `init` of a second node beside `n` whose settings, but for `clash`, are its own.
fn init_beside(
    n: &TestNode,
    clash: &[(&str, String)],
) -> (std::process::Output, std::path::PathBuf, std::path::PathBuf, String) {
    init_other(n, 0, clash, &[])
}

/// `init` of another node beside `n`: `which` (0, 1) picks its name, subnet and ports; `clash`
/// replaces or adds flags, `without` leaves flags out.
fn init_other(
    n: &TestNode,
    which: u32,
    clash: &[(&str, String)],
    without: &[&str],
) -> (std::process::Output, std::path::PathBuf, std::path::PathBuf, String) {
    let name = format!("{}{}", ["gsx", "gsy"][which as usize], n.slot);
    let root = root_base().join(format!("gearshift-test/{name}"));
    let config = root_base().join(format!("gearshift-test/{name}.toml"));
    let uid0 = 505_000 + n.slot * 90;
    let port0 = [40_000, 45_000][which as usize] + n.slot * 10;
    let mut args: Vec<(&str, String)> = vec![
        ("--root", root.display().to_string()),
        ("--bridge", name.clone()),
        ("--name", name.clone()),
        ("--subnet", format!("10.{}.{}.0/24", 215 + which, n.slot)),
        ("--uids", format!("{uid0}-{}", uid0 + 89)),
        ("--http-port", port0.to_string()),
        ("--ssh-port", (port0 + 1).to_string()),
        ("--disk-backend", "none".into()),
        ("--allow-unlimited-disk", String::new()),
    ];
    args.retain(|(k, _)| !without.contains(k));
    for (k, v) in clash {
        match args.iter_mut().find(|(a, _)| a == k) {
            Some(a) => a.1 = v.clone(),
            None => args.push((k, v.clone())),
        }
    }
    let mut c = std::process::Command::new(BIN);
    c.arg("--config").arg(&config).arg("init");
    for (k, v) in &args {
        c.arg(k);
        if !v.is_empty() {
            c.arg(v);
        }
    }
    (c.output().unwrap(), root, config, name)
}

#[test]
fn init_refuses_what_another_node_or_the_host_already_uses() {
    require_root!();
    let _serial = DEFAULT_UIDS.read().unwrap_or_else(|e| e.into_inner());
    let n = TestNode::new();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let cases: Vec<(Vec<(&str, String)>, String)> = vec![
        (
            vec![("--subnet", format!("10.213.{}.128/25", n.slot))],
            format!(
                "subnet 10.213.{s}.128/25 overlaps 10.213.{s}.0/24 of node '{}' ({})",
                n.name,
                n.config.display(),
                s = n.slot
            ),
        ),
        (
            vec![("--subnet", "127.5.0.0/24".into())],
            "subnet 127.5.0.0/24 overlaps host interface lo's address 127.0.0.1/8".into(),
        ),
        (
            vec![("--bridge", n.name.clone())],
            format!("a network interface named {} already exists on this host", n.name),
        ),
        (
            vec![("--http-port", n.http_port().to_string())],
            format!("http_port {} is the http_port of node '{}'", n.http_port(), n.name),
        ),
        (
            vec![("--ssh-port", taken.to_string())],
            format!("ssh_port {taken} is already bound on this host ("),
        ),
        (
            vec![(
                "--uids",
                format!("{}-{}", 460_000 + n.slot * 200 + 150, 460_000 + n.slot * 200 + 250),
            )],
            format!(
                "uid range {}-{} overlaps",
                460_000 + n.slot * 200 + 150,
                460_000 + n.slot * 200 + 250
            ),
        ),
    ];
    for (clash, want) in cases {
        let (out, root, config, name) = init_beside(&n, &clash);
        let e = text(&out.stderr);
        assert!(
            !out.status.success(),
            "init with {clash:?} succeeded: {}",
            text(&out.stdout)
        );
        assert!(
            e.contains("(nothing was written)") && e.contains(&want),
            "{clash:?}: want '{want}' in:\n{e}"
        );
        assert!(e.contains("choose another"), "{e}");
        // Nothing was written: no config, data root, bridge or registry entry.
        assert!(!config.exists() && !root.exists(), "{clash:?} left files");
        assert!(
            !Path::new(&format!("/sys/class/net/{name}")).exists(),
            "{clash:?} made a bridge"
        );
        assert!(!Path::new(&format!("/etc/gearshift/nodes/{name}.toml")).exists());
    }
    drop(squatter);

    // Without a clash the node comes up and is registered; destroying it forgets it.
    let (out, _root, config, name) = init_beside(&n, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entry = Path::new("/etc/gearshift/nodes").join(format!("{name}.toml"));
    let t = std::fs::read_to_string(&entry).unwrap();
    assert!(t.contains(config.to_str().unwrap()), "{t}");
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["node", "destroy", "--confirm", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!entry.exists(), "registry entry left after node destroy");
}

fn uid_range(config: &Path) -> (u32, u32) {
    let t = std::fs::read_to_string(config).unwrap();
    let v: toml::Value = toml::from_str(&t).unwrap();
    let n = |k: &str| v[k].as_integer().unwrap_or_else(|| panic!("no {k} in {t}")) as u32;
    (n("uid_min"), n("uid_max"))
}

/// Break 6 of issue 14: every node defaulted to uids 400000-449999, so two nodes' gears shared
/// uids (per-uid kernel limits) and MCS pairs. A node given no `--uids` takes a free range.
#[test]
fn nodes_initialised_without_uids_get_ranges_of_their_own() {
    require_root!();
    let _serial = DEFAULT_UIDS.write().unwrap_or_else(|e| e.into_inner());
    let n = TestNode::new();
    let destroy = |config: &Path, name: &str| {
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(config)
            .args(["node", "destroy", "--confirm", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let (out, _, config_a, name_a) = init_other(&n, 0, &[], &["--uids"]);
    assert!(out.status.success(), "first init without --uids: {}", text(&out.stderr));
    let (out, _, config_b, name_b) = init_other(&n, 1, &[], &["--uids"]);
    let (second_ok, second) = (out.status.success(), text(&out.stderr));
    let a = uid_range(&config_a);
    let b = second_ok.then(|| uid_range(&config_b));
    destroy(&config_a, &name_a);
    if second_ok {
        destroy(&config_b, &name_b);
    }
    let b = b.unwrap_or_else(|| panic!("second init without --uids: {second}"));
    assert!(a.1 < b.0 || b.1 < a.0, "uid ranges overlap: {a:?} and {b:?}");
    let mine = (460_000 + n.slot * 200, 460_000 + n.slot * 200 + 199);
    for r in [a, b] {
        assert!(r.1 < mine.0 || mine.1 < r.0, "{r:?} overlaps the test node's {mine:?}");
        assert!(r.0 >= 400_000 && r.1 <= 523_776 && r.1 - r.0 >= 999, "{r:?}");
    }
}
