//! Density (issue 16): what must not grow with the number of apps, and a node sized for its
//! gears, driven as an admin does. The figures themselves are `make bench-density`'s.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

/// The status of GET / at HOST through the router.
fn status(n: &TestNode, host: &str) -> u16 {
    let o = Command::new("curl")
        .args([
            "-s",
            "-m",
            "40",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Host: {host}"),
        ])
        .arg(format!("http://127.0.0.1:{}/", n.http_port()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0)
}

/// The names of a process's threads.
fn threads(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        if let Ok(c) = std::fs::read_to_string(t.path().join("comm")) {
            out.push(c.trim().to_string());
        }
    }
    out
}

#[test]
fn one_watcher_thread_follows_every_gear() {
    require_root!();
    let n = TestNode::new();
    let d = n.start_daemon();
    let apps: Vec<String> = (0..6).map(|i| format!("w{i}")).collect();
    for a in &apps {
        n.ok(&["app", "create", a, "--cartridge", "static"]);
    }
    // Every app is in the route table: its host gets the app's own answer, not the 404 of an
    // unknown host.
    assert!(
        eventually(Duration::from_secs(60), || apps
            .iter()
            .all(|a| status(&n, &format!("{a}.localhost")) != 404)),
        "the router does not know every new app"
    );
    let names = threads(d.pid());
    let watchers: Vec<&String> = names.iter().filter(|c| c.starts_with("watch")).collect();
    assert_eq!(
        watchers,
        ["watch-gears"],
        "one watcher thread for the gears of 6 apps, not one per gear (threads: {names:?})"
    );
}

#[test]
fn init_refuses_a_node_too_small_for_its_gears_and_doctor_checks_the_kernel_for_them() {
    require_root!();
    // The test node's slot makes its subnet, uid range and ports ours to try a second init with.
    let n = TestNode::new();
    let config = n.root.join("small.toml");
    let o = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["init", "--root"])
        .arg(n.root.join("small"))
        .args([
            "--bridge",
            &format!("{}x", n.name),
            "--subnet",
            &format!("10.213.{}.0/24", n.slot),
        ])
        .args([
            "--uids",
            &format!("{}-{}", 460_000 + n.slot * 200, 460_199 + n.slot * 200),
        ])
        .args(["--gears", "500"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "init of a /24 for 500 gears succeeded");
    assert!(
        err.contains(&format!(
            "max_gears = 500 does not fit: subnet 10.213.{}.0/24 has room for 253 gears",
            n.slot
        )) && err.contains("give a /23 or larger"),
        "{err}"
    );
    assert!(!config.exists(), "a refused init wrote {}", config.display());
    // The test node holds 200 gears (its uid range): doctor judges the kernel's limits for that.
    let doctor = String::from_utf8_lossy(&n.gs(&["doctor"]).stdout).into_owned();
    for key in [
        "net.ipv4.neigh.default.gc_thresh3",
        "kernel.pid_max",
        "fs.inotify.max_user_watches",
    ] {
        let line = doctor
            .lines()
            .find(|l| l.contains(&format!("limit {key}")))
            .unwrap_or_else(|| panic!("{doctor}"));
        assert!(line.contains("200 gears"), "{line}");
    }
}

/// Whether the gear's init (its pid file's process) is alive.
fn init_alive(n: &TestNode, gear_id: &str) -> Option<u32> {
    let text = std::fs::read_to_string(n.root.join("run/gears").join(gear_id).join("init.pid")).ok()?;
    let pid: u32 = text.split_whitespace().next()?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(") ")?.1.chars().next()?;
    (state != 'Z' && state != 'X').then_some(pid)
}

#[test]
fn node_up_after_a_reboot_brings_back_every_running_gear_at_once_and_leaves_idle_ones_down() {
    require_root!();
    let n = TestNode::new();
    // Six apps whose gears run (more than node up's four processes: each brings back a share),
    // and one idle app.
    let apps: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
    for a in &apps {
        n.ok(&["app", "create", a, "--cartridge", "static"]);
        n.ok(&["run", a, "--", "/bin/true"]);
    }
    n.ok(&["app", "idle", "u6"]);
    let gear = |a: &str| n.show(a)["gears"][0]["id"].as_str().unwrap().to_string();
    assert!(init_alive(&n, &gear("u6")).is_none(), "an idled app's gear still runs");
    // A reboot, for the gears: every init killed (their processes die with them).
    for a in &apps[..6] {
        let pid = init_alive(&n, &gear(a)).unwrap_or_else(|| panic!("gear of {a} does not run"));
        // SAFETY: kill(2) with a pid read from the gear's pid file; no memory is involved.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert!(eventually(Duration::from_secs(10), || apps.iter().all(|a| init_alive(
        &n,
        &gear(a)
    )
    .is_none())));
    n.ok(&["node", "up"]);
    for a in &apps[..6] {
        assert!(
            init_alive(&n, &gear(a)).is_some(),
            "node up did not bring back the gear of {a}"
        );
    }
    assert!(
        init_alive(&n, &gear("u6")).is_none(),
        "node up started the gear of an idle app"
    );
    // Its gear comes back when it is used (a request's wake, a command).
    n.ok(&["run", "u6", "--", "/bin/true"]);
    assert!(
        init_alive(&n, &gear("u6")).is_some(),
        "the idle app's gear does not come back"
    );
}

/// The record files `gearshift ARGS` opens (strace), or None without strace.
fn records_opened(n: &TestNode, args: &[&str]) -> Option<Vec<String>> {
    let trace = std::env::temp_dir().join(format!("gs-density-trace-{}-{}", std::process::id(), args.join("-")));
    let o = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat", "-o"])
        .arg(&trace)
        .arg(common::BIN)
        .arg("--config")
        .arg(&n.config)
        .args(args)
        .output()
        .ok()?;
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_file(&trace);
    Some(
        text.lines()
            .filter(|l| l.contains("/apps/") && l.contains(".toml"))
            .map(String::from)
            .collect(),
    )
}

/// The STATUS column of APP in `app list`.
fn listed_state(list: &str, app: &str) -> String {
    let line = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(app))
        .unwrap_or_else(|| panic!("{app} not in `app list`:\n{list}"));
    line.split_whitespace().skip(6).collect::<Vec<_>>().join(" ")
}

#[test]
fn app_list_and_status_answer_from_the_daemons_index_and_agree_with_the_files() {
    require_root!();
    let n = TestNode::new();
    for a in ["ia", "ib", "ic"] {
        n.ok(&["app", "create", a, "--cartridge", "static"]);
    }
    n.ok(&["app", "idle", "ib"]);
    // No daemon: every record is read.
    let files = n.ok(&["app", "list"]);
    let d = n.start_daemon();
    assert!(
        eventually(Duration::from_secs(30), || n.ok(&["app", "list"]) == files),
        "the daemon's index says otherwise than the files:\n{}\nfiles:\n{files}",
        n.ok(&["app", "list"])
    );
    // Each change is in the very next answer.
    n.ok(&["app", "create", "id", "--cartridge", "static"]);
    assert_eq!(listed_state(&n.ok(&["app", "list"]), "id"), "never deployed");
    n.ok(&["app", "idle", "ia"]);
    let json: serde_json::Value = serde_json::from_str(&n.ok(&["app", "list", "--json"])).unwrap();
    let ia = json.as_array().unwrap().iter().find(|a| a["name"] == "ia").unwrap();
    assert_eq!(ia["idle"], true, "{json}");
    n.ok(&["app", "destroy", "ic", "--confirm", "ic"]);
    assert!(!n.ok(&["app", "list"]).lines().any(|l| l.starts_with("ic ")));
    let status = n.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["apps"].as_array().unwrap().len(), 3, "{status}");
    assert_eq!(v["apps_by_state"]["never deployed"], 3, "{status}");
    // The daemon answers: the CLI opens no record file (a daemon still starting says so, and
    // the CLI reads the files itself meanwhile).
    if records_opened(&n, &["--version"]).is_none() {
        skip!("strace is not installed (apt-get install strace)");
    }
    let mut opened = Vec::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            opened = records_opened(&n, &["app", "list"]).unwrap();
            opened.is_empty()
        }),
        "`app list` reads the records itself: {opened:?}"
    );
    // No daemon: the files again, with the same answer.
    let with = n.ok(&["app", "list"]);
    drop(d);
    assert_eq!(
        n.ok(&["app", "list"]),
        with,
        "the files say otherwise than the daemon's index"
    );
}
