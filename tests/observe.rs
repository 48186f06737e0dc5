//! Seeing the node: `gearshift top` (locally and over SSH, where a user sees only their own
//! apps) and the event log.

mod common;
use common::*;
use std::time::Duration;

/// One `top --once --json` frame, run as root.
fn top(n: &TestNode) -> serde_json::Value {
    serde_json::from_str(n.ok(&["top", "--once", "--json"]).trim()).unwrap()
}

fn row<'a>(frame: &'a serde_json::Value, app: &str) -> &'a serde_json::Value {
    frame["gears"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["app"] == app)
        .unwrap_or_else(|| panic!("no line for {app} in {frame}"))
}

#[test]
fn top_shows_a_memory_hog_and_a_cpu_burner_and_users_see_their_own() {
    require_root!();
    let n = TestNode::new();
    let _d = n.start_daemon();
    n.add_profile("tiny", "128M", 0.2, 64, "32M", "8mbit");
    n.ok(&["app", "create", "hog", "--cartridge", "python", "--profile", "tiny"]);
    n.ok(&["app", "create", "burner", "--cartridge", "python", "--profile", "tiny"]);

    let first = top(&n);
    assert_eq!(first["requests_available"], true, "{first}");
    let base = row(&first, "hog")["memory_bytes"].as_u64().unwrap();
    assert_eq!(row(&first, "hog")["memory_limit"].as_u64().unwrap(), 128 << 20);
    assert_eq!(row(&first, "hog")["cpu_quota_percent"].as_f64().unwrap(), 20.0);

    // The hog allocates and touches 40 MiB, then sleeps.
    let hog = "b=bytearray(40<<20)\nfor i in range(0,len(b),4096): b[i]=1\nimport time\ntime.sleep(600)";
    let (code, _, err) = n.sh("hog", &format!("nohup python3 -c '{hog}' >/dev/null 2>&1 &"));
    assert_eq!(code, 0, "{err}");
    let mut last = serde_json::Value::Null;
    let rose = eventually(Duration::from_secs(30), || {
        last = top(&n);
        row(&last, "hog")["memory_bytes"].as_u64().unwrap() >= base + (36 << 20)
    });
    assert!(rose, "the hog's memory did not rise by 40 MiB from {base}: {last}");
    assert!(row(&last, "hog")["pids"].as_u64().unwrap() >= 1, "{last}");

    // The burner spins; its CPU reaches the profile's quota (20 % of a core) and no more.
    let (code, _, err) = n.sh("burner", "nohup python3 -c 'while True: pass' >/dev/null 2>&1 &");
    assert_eq!(code, 0, "{err}");
    let near = eventually(Duration::from_secs(30), || {
        last = top(&n);
        let cpu = row(&last, "burner")["cpu_percent"].as_f64().unwrap();
        (14.0..=26.0).contains(&cpu)
    });
    assert!(near, "the burner's CPU is not near its 20 % quota: {last}");
    let idle_cpu = row(&last, "hog")["cpu_percent"].as_f64().unwrap();
    assert!(idle_cpu < 5.0, "the sleeping hog uses {idle_cpu} % CPU: {last}");

    // The table fits 80 columns and names both gears.
    let table = n.ok(&["top", "--once"]);
    assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");
    assert!(table.contains("hog.0") && table.contains("burner.0"), "{table}");

    // A user over SSH sees only their own apps.
    let key = n.add_user("alice");
    n.ok(&["app", "create", "mine", "--cartridge", "static", "--owner", "alice"]);
    let o = n.ssh(&key, &[], Some("top --once --json"), b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let frame: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let apps: Vec<&str> = frame["gears"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["app"].as_str().unwrap())
        .collect();
    assert_eq!(apps, ["mine"], "{frame}");
}

fn events_of(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A node with its daemon and two users, alice and bob (their keys).
fn alice_and_bob() -> (TestNode, Daemon, std::path::PathBuf, std::path::PathBuf) {
    let n = TestNode::new();
    let d = n.start_daemon();
    let alice = n.add_user("alice");
    let bob = n.add_user("bob");
    (n, d, alice, bob)
}

#[test]
fn a_push_and_a_crash_are_events_that_only_their_owner_sees() {
    require_root!();
    let (n, _d, alice, bob) = alice_and_bob();
    let o = n.ssh(&alice, &[], Some("app create shop --cartridge python"), b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = n.root.join("shop-src");
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("Procfile"), "web: python3 -u server.py\n").unwrap();
    std::fs::write(
        dir.join("server.py"),
        "import http.server, os\n\
         class H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200); self.end_headers(); self.wfile.write(b'up')\n\
         http.server.HTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n",
    )
    .unwrap();
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-qm", "first"]);
    let (ok, out) = push_as(&n, &alice, &dir, "shop", "main");
    assert!(ok, "{out}");

    // (app.create comes first: this test is about the push.)
    let root_events = || -> Vec<serde_json::Value> {
        let all = events_of(n.ok(&["events", "--app", "shop", "--json"]).as_bytes());
        all.into_iter().filter(|e| e["kind"] != "app.create").collect()
    };
    // The push's result is recorded once git has ended, which the client may see first.
    let mut evs = Vec::new();
    let done = eventually(Duration::from_secs(20), || {
        evs = root_events();
        evs.iter().any(|e| e["kind"] == "deploy.result")
    });
    assert!(done, "no deploy result: {evs:?}\n{out}");
    let kinds: Vec<&str> = evs.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"deploy.start"), "{evs:?}");
    assert_eq!(kinds.last(), Some(&"deploy.result"), "{evs:?}");
    let result = evs.last().unwrap();
    assert_eq!(result["by"], "alice", "{evs:?}");
    let key = result["key"].as_str().unwrap_or_else(|| panic!("no key: {evs:?}"));
    assert_eq!(key, fingerprint(&alice));
    assert_eq!(result["detail"]["result"], "deployed", "{evs:?}");
    let deployment = result["detail"]["deployment"]
        .as_str()
        .unwrap_or_else(|| panic!("{evs:?}"));
    assert_ne!(deployment, "repo", "{evs:?}");

    // Each step of the pipeline is an event, which the owner sees over SSH: build, then the switch.
    let o = n.ssh(&alice, &[], Some("events --app shop --json"), b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs = events_of(&o.stdout);
    let step = |evs: &[serde_json::Value], kind: &str, name: &str| -> Option<serde_json::Value> {
        (evs.iter())
            .find(|e| e["kind"] == kind && (kind == "deploy.switch" || e["detail"]["step"] == name))
            .cloned()
    };
    let build = step(&theirs, "deploy.step", "build").unwrap_or_else(|| panic!("no build step: {theirs:?}"));
    assert_eq!(build["detail"]["ok"], true, "{build}");
    assert_eq!(build["detail"]["deployment"], deployment, "{build}");
    assert!(build["detail"]["ms"].is_u64(), "{build}");
    let switch = step(&theirs, "deploy.switch", "").unwrap_or_else(|| panic!("no switch: {theirs:?}"));
    assert_eq!(switch["detail"]["ok"], true, "{switch}");
    assert_eq!(switch["by"], "alice", "{switch}");
    let pos = |kind: &str| theirs.iter().position(|e| e["kind"] == kind).unwrap();
    assert!(pos("deploy.start") < pos("deploy.switch") && pos("deploy.switch") < pos("deploy.result"));

    // A push whose build fails shows the failed step, and no switch.
    let hooks = dir.join(".openshift/action_hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(hooks.join("build"), "#!/bin/sh\necho broken build; exit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(hooks.join("build"), std::fs::Permissions::from_mode(0o755)).unwrap();
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-qm", "broken"]);
    let (ok, out) = push_as(&n, &alice, &dir, "shop", "main");
    assert!(!ok, "{out}");
    let mut failed = Vec::new();
    let done = eventually(Duration::from_secs(20), || {
        failed = root_events();
        failed.iter().filter(|e| e["kind"] == "deploy.result").count() >= 2
    });
    assert!(done, "no second deploy result: {failed:?}\n{out}");
    let second = &failed[failed.iter().rposition(|e| e["kind"] == "deploy.start").unwrap()..];
    let build = step(second, "deploy.step", "build").unwrap_or_else(|| panic!("no build step: {second:?}"));
    assert_eq!(build["detail"]["ok"], false, "{build}");
    assert!(step(second, "deploy.switch", "").is_none(), "{second:?}");
    assert_eq!(second.last().unwrap()["detail"]["result"], "not deployed", "{second:?}");
    // The next push fixes it (the crash below needs a good deployment).
    std::fs::remove_dir_all(dir.join(".openshift")).unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "fixed"]);
    let (ok, out) = push_as(&n, &alice, &dir, "shop", "main");
    assert!(ok, "{out}");

    // The web process dies: the supervisor restarts it, the daemon records the crash.
    n.ok(&["run", "shop", "--", "pkill", "-KILL", "-f", "server.py"]);
    let mut last = Vec::new();
    let crashed = eventually(Duration::from_secs(30), || {
        last = root_events();
        last.iter().any(|e| e["kind"] == "process.crash")
    });
    assert!(crashed, "no crash event: {last:?}");
    let crash = last.iter().find(|e| e["kind"] == "process.crash").unwrap();
    assert_eq!(crash["by"], "gearshift");
    assert!(
        crash["detail"]["last_exit"].as_str().unwrap_or("").contains('9'),
        "{crash}"
    );

    // The owner sees them over SSH; another user sees none of them, nor the app.
    let o = n.ssh(&alice, &[], Some("events --json"), b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mine = events_of(&o.stdout);
    assert!(mine.iter().any(|e| e["kind"] == "process.crash"), "{mine:?}");
    assert!(
        mine.iter().all(|e| e["app"] == "shop"),
        "alice sees others' events: {mine:?}"
    );
    let o = n.ssh(&bob, &[], Some("events --json"), b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        events_of(&o.stdout).is_empty(),
        "bob sees: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = n.ssh(&bob, &[], Some("events --app shop"), b"");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown app 'shop'"));

    // Root sees the user changes too, and the log is root's alone.
    let all = events_of(n.ok(&["events", "--json"]).as_bytes());
    assert!(
        all.iter()
            .any(|e| e["kind"] == "user.add" && e["detail"]["user"] == "bob" && e["by"] == "root"),
        "{all:?}"
    );
    let table = n.ok(&["events", "--app", "shop"]);
    assert!(table.contains("deploy.result") && table.contains("by alice"), "{table}");
    let meta = std::fs::metadata(n.root.join("logs/events.jsonl")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
}

/// The SHA256 fingerprint of the public key beside the private key `key`.
fn fingerprint(key: &std::path::Path) -> String {
    let o = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let f = text.split_whitespace().find(|w| w.starts_with("SHA256:"));
    f.unwrap_or_else(|| panic!("no fingerprint in {text}")).to_string()
}

#[test]
fn a_users_changes_are_events_with_their_key_that_others_do_not_see() {
    require_root!();
    let (n, _d, alice, bob) = alice_and_bob();
    let run = |key: &std::path::Path, cmd: &str| {
        let o = n.ssh(key, &[], Some(cmd), b"");
        assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let done = [
        ("app create shop --cartridge static", "app.create"),
        ("env set shop TOKEN=s3cret-value DEBUG=1", "env.set"),
        ("env unset shop DEBUG", "env.unset"),
        ("app stop shop", "app.stop"),
        ("app start shop", "app.start"),
        ("app restart shop", "app.restart"),
        ("domain add shop shop.example.com", "domain.add"),
        ("domain remove shop shop.example.com", "domain.remove"),
        ("app destroy shop --confirm shop", "app.destroy"),
    ];
    for (cmd, kind) in done {
        run(&alice, cmd);
        if kind == "app.create" {
            // Started and restarted, it needs a deployment.
            let dir = app_repo(&n, "shop", &[("index.html", "hi\n")]);
            let (ok, out) = push_as(&n, &alice, &dir, "shop", "main");
            assert!(ok, "{out}");
            // No earlier deployment: the rollback fails, and says so in its event.
            let o = n.ssh(&alice, &[], Some("rollback shop"), b"");
            assert!(!o.status.success());
        }
    }
    run(&bob, "app create stall --cartridge static");
    // A verb that fails records nothing.
    let o = n.ssh(&bob, &[], Some("app stop nosuch"), b"");
    assert!(!o.status.success());

    let o = n.ssh(&alice, &[], Some("events --json"), b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("s3cret"),
        "a value in the log: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let seen = events_of(&o.stdout);
    assert!(
        seen.iter().all(|e| e["app"] == "shop"),
        "alice sees others' events: {seen:?}"
    );
    // (The push's and the daemon's own events of her app come between.)
    let mine: Vec<&serde_json::Value> = (seen.iter())
        .filter(|e| e["by"] != "gearshift" && !e["kind"].as_str().unwrap().starts_with("deploy."))
        .collect();
    let kinds: Vec<&str> = mine.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let want: Vec<&str> = done.iter().map(|d| d.1).collect();
    assert_eq!(kinds, want, "{mine:?}");
    let key = fingerprint(&alice);
    for e in &mine {
        assert_eq!(
            (e["by"].as_str(), e["key"].as_str()),
            (Some("alice"), Some(key.as_str())),
            "{e}"
        );
        assert_eq!(e["app"], "shop", "{e}");
    }
    assert_eq!(mine[1]["detail"]["names"], serde_json::json!(["TOKEN", "DEBUG"]));
    let rollback = seen.iter().find(|e| e["kind"] == "deploy.rollback");
    let result = rollback.and_then(|e| e["detail"]["result"].as_str()).unwrap_or("");
    assert!(result.starts_with("failed"), "{seen:?}");
    assert_eq!(mine[6]["detail"]["host"], "shop.example.com");

    // Bob sees his own change only; root sees both, and its own with no key.
    let o = n.ssh(&bob, &[], Some("events --json"), b"");
    let his: Vec<serde_json::Value> = (events_of(&o.stdout).into_iter())
        .filter(|e| e["by"] != "gearshift")
        .collect();
    let kinds: Vec<(&str, &str)> = (his.iter())
        .map(|e| (e["kind"].as_str().unwrap(), e["app"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("app.create", "stall")], "{his:?}");
    assert_eq!(his[0]["key"].as_str(), Some(fingerprint(&bob).as_str()));
    let all = events_of(n.ok(&["events", "--json"]).as_bytes());
    let user_add = all.iter().find(|e| e["kind"] == "user.add").unwrap();
    assert!(user_add["by"] == "root" && user_add["key"].is_null(), "{user_add}");
    let push_steps = ["deploy.start", "deploy.step", "deploy.switch"];
    let by_alice = (all.iter()).filter(|e| e["by"] == "alice" && !push_steps.contains(&e["kind"].as_str().unwrap()));
    // Hers, the push's result and the failed rollback.
    assert_eq!(by_alice.count(), done.len() + 2, "{all:?}");
    let log = std::fs::read_to_string(n.root.join("logs/events.jsonl")).unwrap();
    assert!(!log.contains("s3cret"), "{log}");
}

/// The daemon's loopback admin port (from the node's config).
fn admin_port(n: &TestNode) -> u16 {
    let cfg = std::fs::read_to_string(&n.config).unwrap();
    let line = cfg.lines().find(|l| l.starts_with("admin_port")).unwrap();
    line.split('=').nth(1).unwrap().trim().parse().unwrap()
}

/// GET `path` on the admin port: (status, body).
fn admin_get(n: &TestNode, path: &str) -> (u16, String) {
    let o = std::process::Command::new("curl")
        .args(["-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{}{path}", admin_port(n)))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of the sample `series` (name and labels, exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

const WEB: &str = "import http.server, os\n\
    class H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200); self.end_headers(); self.wfile.write(b'up')\n\
    http.server.HTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n";

#[test]
fn metrics_pass_promtool_and_count_deploys_requests_and_gears() {
    require_root!();
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        skip!("promtool is not installed (the prometheus package: scripts/deps.sh)");
    }
    let n = TestNode::new();
    let _d = n.start_daemon();
    let alice = n.add_user("alice");
    n.ok(&["app", "create", "shop", "--cartridge", "python", "--owner", "alice"]);
    let deployed = "gearshift_app_deploys_total{app=\"shop\",result=\"deployed\"}";
    let failed = "gearshift_app_deploys_total{app=\"shop\",result=\"failed\"}";
    let (code, first) = admin_get(&n, "/metrics");
    assert_eq!(code, 200, "{first}");
    assert_eq!(sample(&first, deployed), None, "{first}");

    let dir = app_repo(
        &n,
        "shop",
        &[("Procfile", "web: python3 -u server.py\n"), ("server.py", WEB)],
    );
    let (ok, out) = push_as(&n, &alice, &dir, "shop", "main");
    assert!(ok, "{out}");
    // The push is counted once git has ended, which the client may see first.
    let mut text = String::new();
    let counted = eventually(Duration::from_secs(20), || {
        text = admin_get(&n, "/metrics").1;
        sample(&text, deployed) == Some(1.0)
    });
    assert!(counted, "no deploy counted:\n{text}");

    // A build that fails is a failed deploy; the deployed count stays.
    write_files(
        &dir,
        &[(".openshift/action_hooks/build", "#!/bin/sh\necho broken >&2\nexit 1\n")],
    );
    commit(&dir, "broken build");
    let (ok, out) = push_as(&n, &alice, &dir, "shop", "main");
    assert!(!ok, "{out}");
    let counted = eventually(Duration::from_secs(20), || {
        text = admin_get(&n, "/metrics").1;
        sample(&text, failed) == Some(1.0)
    });
    assert!(counted, "no failed deploy counted:\n{text}");
    assert_eq!(sample(&text, deployed), Some(1.0), "{text}");

    // Requests through the router are counted by status class, with their latency.
    for _ in 0..3 {
        let o = std::process::Command::new("curl")
            .args(["-s", "-m", "10", "-H", "Host: shop.localhost"])
            .arg(format!("http://127.0.0.1:{}/", n.http_port()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "up");
    }
    let seen = eventually(Duration::from_secs(5), || {
        text = admin_get(&n, "/metrics").1;
        sample(&text, "gearshift_router_requests_total{app=\"shop\",class=\"2xx\"}") == Some(3.0)
    });
    assert!(seen, "{text}");
    assert_eq!(
        sample(&text, "gearshift_router_request_duration_seconds_count{app=\"shop\"}"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "gearshift_router_request_duration_seconds_bucket{app=\"shop\",le=\"+Inf\"}"
        ),
        Some(3.0),
        "{text}"
    );

    // The gear's own series: what the kernel counts for it (disk usage is read in the
    // background, after the first scrape that asks).
    let disk = "gearshift_gear_disk_bytes{app=\"shop\",gear=\"0\"}";
    let read = eventually(Duration::from_secs(10), || {
        text = admin_get(&n, "/metrics").1;
        sample(&text, disk).is_some()
    });
    assert!(read, "no disk usage: {text}");
    let g = |name: &str| sample(&text, &format!("{name}{{app=\"shop\",gear=\"0\"}}"));
    assert!(g("gearshift_gear_memory_bytes").unwrap_or(0.0) > 1e6, "{text}");
    assert!(g("gearshift_gear_memory_limit_bytes").unwrap_or(0.0) > 0.0, "{text}");
    assert!(g("gearshift_gear_cpu_seconds_total").unwrap_or(0.0) > 0.0, "{text}");
    assert!(g("gearshift_gear_pids").unwrap_or(0.0) >= 1.0, "{text}");
    assert_eq!(g("gearshift_gear_oom_kills_total"), Some(0.0), "{text}");
    assert!(
        g("gearshift_gear_network_receive_bytes_total").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert_eq!(g("gearshift_gear_process_restarts_total"), Some(0.0), "{text}");

    // promtool's lint: the exposition is valid and the names follow Prometheus' conventions.
    let mut p = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A web process that answers each GET after `DELAY` seconds (its environment; 0 unset).
const DELAYED_WEB: &str = "import http.server, os, time\n\
    class H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        time.sleep(float(os.environ.get('DELAY', '0')))\n        self.send_response(200); self.end_headers(); self.wfile.write(b'up')\n    def log_message(self, *a): pass\n\
    http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n";

/// Sends GET / for `host` through the router on `port`, one request after another, until
/// `stop`; returns how many were answered 200.
fn keep_asking(
    port: u16,
    host: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let host = host.to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut answered = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut reply = Vec::new();
            if c.write_all(head.as_bytes()).is_ok()
                && c.read_to_end(&mut reply).is_ok()
                && reply.starts_with(b"HTTP/1.1 200")
            {
                answered += 1;
            }
        }
        answered
    })
}

/// The apps of a `top --once --json --sort KEY` frame, in its order.
fn top_sorted(n: &TestNode, key: &str) -> (serde_json::Value, Vec<String>) {
    let frame: serde_json::Value =
        serde_json::from_str(n.ok(&["top", "--once", "--json", "--sort", key]).trim()).unwrap();
    let apps = frame["gears"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["app"].as_str().unwrap().to_string())
        .collect();
    (frame, apps)
}

#[test]
fn requests_through_the_router_show_in_tops_rate_and_p95_and_sort_it() {
    require_root!();
    let n = TestNode::new();
    let _d = n.start_daemon();
    let alice = n.add_user("alice");
    // calm gets no requests, lazy answers after 0.3 s, rapid at once.
    n.ok(&["app", "create", "calm", "--cartridge", "static", "--owner", "alice"]);
    let dir = app_repo(
        &n,
        "delayed",
        &[("Procfile", "web: python3 -u server.py\n"), ("server.py", DELAYED_WEB)],
    );
    for app in ["lazy", "rapid"] {
        n.ok(&["app", "create", app, "--cartridge", "python", "--owner", "alice"]);
    }
    n.ok(&["env", "set", "lazy", "DELAY=0.3"]);
    for app in ["lazy", "rapid"] {
        let (ok, out) = push_as(&n, &alice, &dir, app, "main");
        assert!(ok, "{out}");
    }

    // Nothing asked yet: no rate, no latency.
    let (quiet, apps) = top_sorted(&n, "app");
    assert_eq!(apps, ["calm", "lazy", "rapid"], "{quiet}");
    for app in ["lazy", "rapid"] {
        assert_eq!(row(&quiet, app)["requests_per_sec"], 0.0, "{quiet}");
        assert!(row(&quiet, app)["p95_ms"].is_null(), "{quiet}");
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let askers: Vec<_> = ["lazy", "rapid", "lazy", "rapid"]
        .iter()
        .map(|app| keep_asking(n.http_port(), &format!("{app}.localhost"), stop.clone()))
        .collect();
    let rps = |f: &serde_json::Value, app: &str| row(f, app)["requests_per_sec"].as_f64().unwrap_or(0.0);
    let p95 = |f: &serde_json::Value, app: &str| row(f, app)["p95_ms"].as_f64();
    // Largest p95 first: lazy's 0.3 s, then rapid's, then calm without one.
    let mut last = (serde_json::Value::Null, Vec::new());
    let by_p95 = eventually(Duration::from_secs(60), || {
        last = top_sorted(&n, "p95");
        let f = &last.0;
        last.1 == ["lazy", "rapid", "calm"]
            && p95(f, "lazy").is_some_and(|v| (200.0..2000.0).contains(&v))
            && p95(f, "rapid").is_some_and(|v| v < p95(f, "lazy").unwrap_or(0.0))
            && p95(f, "calm").is_none()
            && rps(f, "lazy") >= 1.0
    });
    assert!(by_p95, "top --sort p95: {:?} {}", last.1, last.0);
    // Most requests/s first: rapid answers many more than lazy.
    let by_req = eventually(Duration::from_secs(30), || {
        last = top_sorted(&n, "req");
        last.1 == ["rapid", "lazy", "calm"] && rps(&last.0, "rapid") > 2.0 * rps(&last.0, "lazy")
    });
    assert!(by_req, "top --sort req: {:?} {}", last.1, last.0);
    assert_eq!(rps(&last.0, "calm"), 0.0, "{}", last.0);
    // The table shows the same, with the p95 in its last column.
    let table = n.ok(&["top", "--once", "--sort", "p95"]);
    let first = table.lines().nth(1).unwrap_or("");
    assert!(first.starts_with("lazy.0") && first.ends_with('s'), "{table}");
    assert!(table.lines().next().unwrap().ends_with("P95"), "{table}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: u64 = askers.into_iter().map(|a| a.join().unwrap()).sum();
    assert!(answered > 0);
    let (_, apps) = top_sorted(&n, "app");
    assert_eq!(apps, ["calm", "lazy", "rapid"]);
}

/// CPU seconds (user + system) process `pid` and its threads used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The host's load averages (1, 5, 15 minutes), as /proc/loadavg gives them: the figures
/// below mean little on a busy machine.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The figures the issue asks for: the daemon's CPU with 50 idle apps and no `top`, and
/// `/metrics` with 200 apps. Heavy (creates 200 apps), so run by hand:
/// `cargo test --release --test observe perf_ -- --ignored --nocapture` (the figures are for a
/// release build).
#[test]
#[ignore = "a measurement: creates 200 apps"]
fn perf_daemon_idle_cpu_and_metrics_with_many_apps() {
    require_root!();
    let n = TestNode::new();
    let d = n.start_daemon();
    // 200 apps' disk quotas must fit the test node's 64 GiB (disk admission).
    n.add_profile("perf", "64M", 0.1, 64, "64M", "1mbit");
    let create = |from: usize, to: usize| {
        for i in from..to {
            let name = format!("app{i}");
            n.ok(&["app", "create", &name, "--cartridge", "static", "--profile", "perf"]);
        }
    };
    let t = std::time::Instant::now();
    create(0, 50);
    eprintln!("created 50 apps in {:?}", t.elapsed());
    // The daemon's CPU share over `secs` of nothing happening.
    let cpu_share = |secs: u64| {
        let (c0, t0) = (cpu_seconds(d.pid()), std::time::Instant::now());
        std::thread::sleep(Duration::from_secs(secs));
        (cpu_seconds(d.pid()) - c0) / t0.elapsed().as_secs_f64() * 100.0
    };
    // Let the watchers settle first.
    std::thread::sleep(Duration::from_secs(5));
    let running = cpu_share(30);
    eprintln!("daemon CPU with 50 running apps, no top: {running:.2} % of one core");
    for i in 0..50 {
        n.ok(&["app", "idle", &format!("app{i}")]);
    }
    std::thread::sleep(Duration::from_secs(5));
    let share = cpu_share(60);
    eprintln!(
        "daemon CPU with 50 idle apps, no top: {share:.2} % of one core; load average {}",
        load_average()
    );
    create(50, 200);
    let listed = eventually(Duration::from_secs(40), || {
        admin_get(&n, "/metrics").1.contains("app=\"app199\"")
    });
    assert!(listed, "the daemon does not list app199");
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let (code, text) = admin_get(&n, "/metrics");
        times.push(t.elapsed());
        assert_eq!(code, 200);
        assert!(text.contains("app=\"app199\""), "{text}");
    }
    times.sort();
    let median = (times[9] + times[10]) / 2;
    eprintln!(
        "/metrics with 200 apps, 20 scrapes: min {:?}, median {median:?}, max {:?} (curl included); load average {}",
        times[0],
        times[19],
        load_average()
    );
    assert!(share < 1.0, "the idle daemon uses {share:.2} % of a core");
    assert!(median < Duration::from_millis(50), "{times:?}");
}

#[test]
fn an_oom_killed_app_shows_an_oom_event() {
    require_root!();
    let n = TestNode::new();
    let _d = n.start_daemon();
    n.add_profile("hogpen", "64M", 0.5, 64, "32M", "8mbit");
    let alice = n.add_user("alice");
    n.ok(&[
        "app",
        "create",
        "hog",
        "--cartridge",
        "python",
        "--profile",
        "hogpen",
        "--owner",
        "alice",
    ]);
    // Touches 200 MiB, page by page, in a gear allowed 64 MiB: the kernel kills it.
    let hog = "b=bytearray(200<<20)\nfor i in range(0,len(b),4096): b[i]=1\nprint(\"survived\")";
    let (code, out, _) = n.sh("hog", &format!("python3 -c '{hog}'"));
    assert!(
        code != 0 && !out.contains("survived"),
        "the hog was not killed: {code} {out}"
    );

    let mut evs = Vec::new();
    let seen = eventually(Duration::from_secs(15), || {
        evs = events_of(n.ok(&["events", "--app", "hog", "--json"]).as_bytes());
        evs.iter().any(|e| e["kind"] == "oom")
    });
    assert!(seen, "no oom event: {evs:?}");
    let oom = evs.iter().find(|e| e["kind"] == "oom").unwrap();
    assert_eq!(oom["by"], "gearshift", "{oom}");
    assert_eq!(oom["detail"]["gear"], 0, "{oom}");
    assert!(oom["detail"]["killed"].as_u64().unwrap_or(0) >= 1, "{oom}");
    assert_eq!(oom["detail"]["memory_limit_bytes"], 64 << 20, "{oom}");
    // The owner sees it over SSH, in words.
    let o = n.ssh(&alice, &[], Some("events --app hog"), b"");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("oom"), "{text}");
    // And top counts it.
    let frame = top(&n);
    assert!(row(&frame, "hog")["oom_kills"].as_u64().unwrap() >= 1, "{frame}");
}

/// The page's DOM after its script ran, in headless Chromium (and a screenshot into `shot`).
fn chromium_dom(url: &str, shot: &std::path::Path) -> String {
    let profile = tempdir("chromium-profile");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=5000",
        "--window-size=1280,800",
    ];
    let run = |extra: &str| {
        std::process::Command::new("chromium")
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(extra)
            .arg(url)
            .output()
            .unwrap()
    };
    let _ = run(&format!("--screenshot={}", shot.display()));
    let o = run("--dump-dom");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh empty directory under the system's temporary directory.
fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gearshift-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `<tr data-app="APP">` row of the dashboard's DOM.
fn dom_row<'a>(dom: &'a str, app: &str) -> Option<&'a str> {
    let start = dom.find(&format!("<tr data-app=\"{app}\">"))?;
    let end = dom[start..].find("</tr>")? + start;
    Some(&dom[start..end])
}

#[test]
fn the_dashboard_shows_every_app_and_a_crashed_one_as_crashed() {
    require_root!();
    if std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_err()
    {
        skip!("chromium is not installed (scripts/deps.sh)");
    }
    let n = TestNode::new();
    let _d = n.start_daemon();
    let alice = n.add_user("alice");
    // A server that exits with 3 at start once /tmp/crash exists in its gear.
    let web = format!("import os, sys\nif os.path.exists('/tmp/crash'): sys.exit(3)\n{WEB}");
    for app in ["shop", "blog", "broken"] {
        n.ok(&["app", "create", app, "--cartridge", "python", "--owner", "alice"]);
        let dir = app_repo(
            &n,
            app,
            &[("Procfile", "web: python3 -u server.py\n"), ("server.py", &web)],
        );
        let (ok, out) = push_as(&n, &alice, &dir, app, "main");
        assert!(ok, "{out}");
    }
    let (code, _, err) = n.sh("broken", "touch /tmp/crash && pkill -x python3");
    assert_eq!(code, 0, "{err}");
    let crashed = eventually(Duration::from_secs(30), || {
        n.show("broken")["state"].as_str().unwrap_or("").contains("crash")
    });
    assert!(crashed, "{}", n.show("broken"));

    let (code, json) = admin_get(&n, "/dashboard.json");
    assert_eq!(code, 200, "{json}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let url = format!("http://127.0.0.1:{}/", admin_port(&n));
    let mut dom = String::new();
    let shown = eventually(Duration::from_secs(60), || {
        dom = chromium_dom(&url, &shot);
        dom_row(&dom, "broken").is_some()
    });
    assert!(shown, "the page shows no apps:\n{dom}\n{json}");
    for app in ["shop", "blog"] {
        let row = dom_row(&dom, app).unwrap_or_else(|| panic!("no row for {app}:\n{dom}"));
        assert!(row.contains(">running<"), "{app}: {row}");
        assert!(row.contains(&format!("http://{app}.localhost/")), "{row}");
        assert!(row.contains("deployed by alice"), "{row}");
        assert!(row.contains("<svg"), "no sparklines: {row}");
    }
    let broken = dom_row(&dom, "broken").unwrap();
    assert!(broken.contains("class=\"state crashed\""), "{broken}");
    assert!(broken.contains("last exit 3"), "{broken}");
    assert!(dom.contains("process.crash"), "no recent events:\n{dom}");
    assert!(dom.contains("memory") && dom.contains("disk"), "{dom}");
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(png.starts_with(b"\x89PNG"), "no screenshot at {}", shot.display());
}

/// GET `https://admin.test:PORT{path}` with curl (`user`: `-u` credentials): (status, body);
/// status 0 when no HTTP answer came.
fn admin_https(url: &str, cacert: &std::path::Path, port: u16, user: Option<&str>) -> (u16, String) {
    let mut c = std::process::Command::new("curl");
    c.args(["-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(cacert)
        .arg("--resolve")
        .arg(format!("admin.test:{port}:127.0.0.1"));
    if let Some(u) = user {
        c.args(["-u", u]);
    }
    let o = c.arg(url).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Runs `gearshift ARGS` with `input` on its stdin.
fn gs_with_input(n: &TestNode, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = n
        .cmd()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses an over-long input stops reading it and exits:
    // the rest of the input then meets a closed pipe, which is its answer.
    if let Err(e) = child.stdin.take().unwrap().write_all(input) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing the input: {e}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_exposed_admin_port_wants_tls_and_the_admin_login() {
    require_root!();
    let n = TestNode::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = std::fs::read_to_string(&n.config).unwrap();
    let line = cfg.lines().find(|l| l.starts_with("admin_port")).unwrap().to_string();
    let listen_at = |at: &str| format!("{line}\nadmin_listen = \"{at}\"\nadmin_host = \"admin.test\"");

    // Refused without a certificate, then without a password, saying what to do.
    let refused = |want: &str| {
        let mut d = n
            .cmd()
            .arg("daemon")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&d.stderr).into_owned() + &String::from_utf8_lossy(&d.stdout);
        assert!(!d.status.success(), "{err}");
        assert!(err.contains(want), "{err}");
        d.stdout.clear();
    };
    // The router's own port is refused when the config is read, by every command.
    let http = n.http_port();
    n.set_config(&line, &listen_at(&format!("0.0.0.0:{http}")));
    let clash = format!("http_port and admin_listen are both {http}");
    assert!(n.fails(&["app", "list"]).contains(&clash));
    refused(&clash);
    // Another node's port, when the daemon starts.
    let other = TestNode::new();
    let theirs = other.ssh_port();
    n.set_config(&format!("0.0.0.0:{http}"), &format!("127.0.0.1:{theirs}"));
    refused(&format!(
        "admin_listen {theirs} is the ssh_port of node '{}'",
        other.name
    ));
    drop(other);
    n.set_config(&format!("127.0.0.1:{theirs}"), &format!("127.0.0.1:{port}"));
    refused("no TLS certificate for admin.test");

    // The certificate comes on stdin, checked before it is kept.
    let (crt, key) = make_cert(&n.root.join("admin-cert"), "admin.test", "admin.test");
    let (wrong_crt, wrong_key) = make_cert(&n.root.join("admin-cert"), "elsewhere.test", "elsewhere.test");
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let pem = n.root.join("admin.pem");
    for (bundle, why) in [
        ([read(&wrong_crt), read(&wrong_key)].concat(), "not for admin.test"),
        ([read(&crt), read(&wrong_key)].concat(), "does not belong"),
        (read(&crt), "no private key"),
        (vec![b'A'; 100 << 10], "larger than 64 KiB"),
    ] {
        let o = gs_with_input(&n, &["node", "admin-cert"], &bundle);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(why), "{why}: {err}");
        assert!(!pem.exists(), "{why}: a refused bundle was kept");
    }
    let o = gs_with_input(&n, &["node", "admin-cert"], &[read(&crt), read(&key)].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("for admin.test"), "{o:?}");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(&pem).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600));
    let pem_mode = |m| std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(m)).unwrap();
    pem_mode(0o644);
    refused("chmod 600");
    pem_mode(0o600);
    refused("gearshift node admin-password");

    let o = gs_with_input(&n, &["node", "admin-password"], b"a long admin secret\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stored = std::fs::read_to_string(n.root.join("admin.htpasswd")).unwrap();
    assert!(
        stored.starts_with("admin:$argon2id$") && !stored.contains("secret"),
        "{stored}"
    );

    let _d = n.start_daemon();
    let base = format!("https://admin.test:{port}");
    let right = Some("admin:a long admin secret");
    let (code, body) = admin_https(&format!("{base}/metrics"), &crt, port, right);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("gearshift_"), "{body}");
    let (code, body) = admin_https(&format!("{base}/"), &crt, port, right);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"),
        "{body}"
    );
    for wrong in [Some("admin:not the secret"), Some("root:a long admin secret"), None] {
        let (code, body) = admin_https(&format!("{base}/metrics"), &crt, port, wrong);
        assert_eq!(code, 401, "{wrong:?}: {body}");
        assert!(!body.contains("gearshift_"), "{body}");
    }
    // Plain HTTP gets no answer at all.
    let (code, body) = admin_https(&format!("http://127.0.0.1:{port}/metrics"), &crt, port, right);
    assert_eq!(code, 0, "{body}");
}
