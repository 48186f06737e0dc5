//! The router as a visitor sees it: every app at its own name, aliases, clear error pages,
//! deploys that never drop a request, idle apps woken by their first request, and apps that
//! outlive a killed daemon.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// GET / at HOST through the router: (status, body).
fn get(n: &TestNode, host: &str) -> (u16, String) {
    let o = Command::new("curl")
        .args([
            "-s",
            // beyond the router's 30 s wake timeout: a wake under the test VM's emulated CPU
            // took 17 s, and the router's answer (not curl's give-up) is what is tested
            "-m",
            "40",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            &format!("Host: {host}"),
        ])
        .arg(format!("http://127.0.0.1:{}/", n.http_port()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

const SERVER: &str = r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        h = lambda k: self.headers.get(k, '-')
        b = (open('page.txt').read().strip() + ' xff=' + h('X-Forwarded-For') + ' real=' + h('X-Real-IP')
             + ' fwd=' + h('Forwarded') + ' rid=' + h('X-Request-Id')).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#;

/// Creates APP owned by dev and pushes a page saying `page`; returns the repository.
fn deploy(x: &DevNode, app: &str, page: &str) -> PathBuf {
    deploy_with(x, app, page, |_| {})
}

/// Like `deploy`, with `extra` adding files to the repository before the first commit.
fn deploy_with(x: &DevNode, app: &str, page: &str, extra: impl FnOnce(&Path)) -> PathBuf {
    x.n.ok(&["app", "create", app, "--cartridge", "python", "--owner", "dev"]);
    let dir = x.n.root.join("src").join(app);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Procfile"), "web: python3 -u server.py\n").unwrap();
    std::fs::write(dir.join("server.py"), SERVER).unwrap();
    std::fs::write(dir.join("page.txt"), page).unwrap();
    extra(&dir);
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", page]);
    push(x, &dir, app);
    dir
}

fn push(x: &DevNode, dir: &Path, app: &str) {
    let (ok, out) = push_as(&x.n, &x.key, dir, app, "main");
    assert!(ok, "push: {out}");
}

fn wait_for(n: &TestNode, host: &str, want: &str) {
    let mut last = (0, String::new());
    let answered = eventually(Duration::from_secs(15), || {
        last = get(n, host);
        last.0 == 200 && last.1.starts_with(want)
    });
    let (code, body) = last;
    assert!(answered, "{host} never answered {want:?} (last: {code} {body})");
}

#[test]
fn apps_at_their_names_aliases_and_error_pages() {
    require_root!();
    let x = dev_node();
    let n = &x.n;
    deploy(&x, "shop", "shop-page");
    deploy(&x, "blog", "blog-page");
    wait_for(n, "shop.localhost", "shop-page");
    wait_for(n, "blog.localhost", "blog-page");
    let (code, body) = get(n, "blog.localhost:8080");
    assert_eq!(code, 200);
    assert!(body.starts_with("blog-page xff=127.0.0.1 real=127.0.0.1"), "{body}");
    // Break 11 of issue 14: a client's own forwarded headers and request id do not reach the
    // app; the router writes them from the real peer.
    let o = Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            "-H",
            "Host: blog.localhost",
            "-H",
            "X-Forwarded-For: 6.6.6.6",
        ])
        .args([
            "-H",
            "X-Real-IP: 6.6.6.6",
            "-H",
            "Forwarded: for=6.6.6.6",
            "-H",
            "X-Request-Id: forged",
        ])
        .arg(format!("http://127.0.0.1:{}/", n.http_port()))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&o.stdout);
    assert!(
        body.starts_with(
            "blog-page xff=127.0.0.1 real=127.0.0.1 fwd=for=127.0.0.1;proto=http;host=\"blog.localhost\" rid="
        ),
        "{body}"
    );
    assert!(!body.contains("6.6.6.6") && !body.contains("forged"), "{body}");
    assert!(get(n, "SHOP.Localhost").1.starts_with("shop-page"));
    // HTTPS with the app's self-signed certificate (SNI), then the per-app redirect.
    let https = n.https_port();
    let o = Command::new("curl")
        .args([
            "-sk",
            "-m",
            "10",
            "--resolve",
            &format!("shop.localhost:{https}:127.0.0.1"),
        ])
        .arg(format!("https://shop.localhost:{https}/"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("shop-page"),
        "HTTPS: {o:?}"
    );
    n.ok(&["domain", "redirect", "shop", "on"]);
    let mut out = String::new();
    let redirected = eventually(Duration::from_secs(10), || {
        let o = Command::new("curl")
            .args([
                "-s",
                "-m",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
                "-H",
                "Host: shop.localhost",
            ])
            .arg(format!("http://127.0.0.1:{}/x", n.http_port()))
            .output()
            .unwrap();
        out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.starts_with("301 https://shop.localhost")
    });
    assert!(redirected, "no redirect to HTTPS: {out}");
    n.ok(&["domain", "redirect", "shop", "off"]);
    wait_for(n, "shop.localhost", "shop-page");
    n.ok(&["domain", "add", "shop", "www.shop.example"]);
    wait_for(n, "www.shop.example", "shop-page");
    let (code, body) = get(n, "nobody.localhost");
    assert_eq!(code, 404);
    assert!(body.contains("No app is served at this address"), "{body}");
    n.ok(&["app", "stop", "blog"]);
    assert!(
        eventually(Duration::from_secs(10), || get(n, "blog.localhost").0 == 502),
        "a stopped app does not get a 502"
    );
    assert!(get(n, "blog.localhost").1.contains("502 Bad Gateway"));
    let access = std::fs::read_to_string(n.root.join("logs/access/shop.log")).unwrap();
    assert!(
        access.lines().any(|l| l.contains("GET /") && l.contains(" 200 ")),
        "{access}"
    );
}

#[test]
fn ten_redeploys_drop_no_request() {
    require_root!();
    let x = dev_node();
    let n = &x.n;
    let dir = deploy(&x, "live", "v0");
    wait_for(n, "live.localhost", "v0");
    let port = n.http_port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    // The number of the newest version the looper has been answered with.
    let newest = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let newest2 = newest.clone();
    let looper = std::thread::spawn(move || {
        let (mut ok, mut failed, mut seen) = (0u32, Vec::new(), Vec::<String>::new());
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let o = Command::new("curl")
                .args([
                    "-s",
                    "-m",
                    "10",
                    "-o",
                    "-",
                    "-w",
                    "\n%{http_code}",
                    "-H",
                    "Host: live.localhost",
                ])
                .arg(format!("http://127.0.0.1:{port}/"))
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            match out.rsplit_once('\n') {
                Some((body, "200")) => {
                    ok += 1;
                    let v = body.split_whitespace().next().unwrap_or("").to_string();
                    if seen.last() != Some(&v) {
                        if let Ok(i) = v.trim_start_matches('v').parse() {
                            newest2.store(i, std::sync::atomic::Ordering::Relaxed);
                        }
                        seen.push(v);
                    }
                }
                _ => failed.push(out),
            }
        }
        (ok, failed, seen)
    });
    for i in 1..=10 {
        std::fs::write(dir.join("page.txt"), format!("v{i}")).unwrap();
        git(&dir, &["commit", "-qam", &format!("v{i}")]);
        push(&x, &dir, "live");
    }
    wait_for(n, "live.localhost", "v10");
    // Until the looper too has been answered by v10.
    eventually(Duration::from_secs(15), || {
        newest.load(std::sync::atomic::Ordering::Relaxed) == 10
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, seen) = looper.join().unwrap();
    eprintln!("{ok} requests during 10 redeploys, versions seen in order: {seen:?}");
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    let nums: Vec<u32> = seen
        .iter()
        .map(|v| v.trim_start_matches('v').parse().unwrap())
        .collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]), "versions out of order: {seen:?}");
    assert_eq!(nums.last(), Some(&10));
    assert!(ok > 20);
}

#[test]
fn idle_apps_wake_on_their_first_request_and_apps_outlive_a_killed_daemon() {
    require_root!();
    let mut x = dev_node();
    deploy(&x, "nap", "awake");
    wait_for(&x.n, "nap.localhost", "awake");
    x.n.ok(&["app", "idle", "nap"]);
    let uid = x.n.show("nap")["gears"][0]["uid"].as_u64().unwrap();
    let procs = || {
        String::from_utf8_lossy(
            &Command::new("sh")
                .arg("-c")
                .arg(format!("ps -u {uid} -o pid=,stat= | awk '$2 !~ /Z/ {{print $1}}'"))
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    assert_eq!(procs().trim(), "", "an idle app still has processes");
    // The first request is held until the app answers: no redirect, no error.
    let t = Instant::now();
    let (code, body) = get(&x.n, "nap.localhost");
    eprintln!("wake: first request answered in {:?}", t.elapsed());
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("awake"));
    assert!(x.n.ok(&["app", "status", "nap"]).starts_with("running"));

    // kill -9 of the daemon: the app keeps its processes; a new daemon serves it again.
    let before = procs();
    x.daemon.kill9();
    // Not a wait for an event (kill9 returns once the daemon and its sshd are gone): a grace
    // period in which anything the daemon's death would do to the app's processes shows.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(procs(), before, "killing the daemon touched the app's processes");
    x.daemon = x.n.start_daemon();
    wait_for(&x.n, "nap.localhost", "awake");
    assert_eq!(
        procs(),
        before,
        "the new daemon restarted the app instead of adopting it"
    );

    // After a "reboot" (every gear process gone), a daemon started from empty process state
    // starts every app that should run.
    let pid = std::fs::read_to_string(
        x.n.root
            .join("run/gears")
            .join(x.n.show("nap")["gears"][0]["id"].as_str().unwrap())
            .join("init.pid"),
    )
    .unwrap();
    x.daemon.kill9();
    let _ = Command::new("kill")
        .args(["-9", pid.split_whitespace().next().unwrap()])
        .status();
    // The gear's other processes die with its init (the pid namespace goes).
    eventually(Duration::from_secs(10), || procs().trim().is_empty());
    assert_eq!(procs().trim(), "");
    x.daemon = x.n.start_daemon();
    wait_for(&x.n, "nap.localhost", "awake");
}

#[test]
fn a_scaled_app_spreads_requests_and_survives_a_dead_gear() {
    require_root!();
    let x = dev_node();
    let n = &x.n;
    x.n.ok(&["app", "create", "wide", "--cartridge", "python", "--owner", "dev"]);
    let dir = n.root.join("src/wide");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Procfile"), "web: python3 -u server.py\n").unwrap();
    std::fs::write(
        dir.join("server.py"),
        SERVER.replace("open('page.txt').read().strip()", "os.environ['OPENSHIFT_GEAR_UUID']"),
    )
    .unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "wide"]);
    push(&x, &dir, "wide");
    n.ok(&["app", "scale", "wide", "3"]);
    let gears: Vec<String> = n.show("wide")["gears"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(gears.len(), 3);
    // Each gear is isolated: its own uid and address.
    let uids: std::collections::HashSet<u64> = n.show("wide")["gears"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["uid"].as_u64().unwrap())
        .collect();
    assert_eq!(uids.len(), 3);
    let mut seen = std::collections::HashSet::new();
    let spread = eventually(Duration::from_secs(20), || {
        let (code, body) = get(n, "wide.localhost");
        if code == 200 {
            seen.insert(body.split_whitespace().next().unwrap_or("").to_string());
        }
        seen.len() == 3
    });
    assert!(spread, "requests reached only {seen:?} of {gears:?}");
    // A push reaches every gear.
    std::fs::write(dir.join("extra.txt"), "x").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "more"]);
    push(&x, &dir, "wide");
    for i in 1..3 {
        let (_, out, _) = n.sh_gear("wide", i, "cat ~/app-root/repo/extra.txt");
        assert_eq!(out, "x", "gear {i} did not get the new deployment");
    }
    // One gear's web process dies for good, as a crash does it, from the host (inside the gear,
    // `kill -STOP 1` is ignored: the kernel protects a pid namespace's init from its own
    // members): its init is stopped, so that its supervisor's restarts do not hide the death,
    // and every other process of the gear is killed. After the first retry window no request
    // fails.
    let uid = n.show("wide")["gears"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["index"] == 2)
        .and_then(|g| g["uid"].as_u64())
        .unwrap();
    crash_gear(uid);
    assert!(
        eventually(Duration::from_secs(10), || !procs_of(uid).contains("server.py")),
        "gear 2's web process did not die:\n{}",
        procs_of(uid)
    );
    let mut failed = 0;
    for _ in 0..30 {
        if get(n, "wide.localhost").0 != 200 {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "requests failed with one gear down");
    n.ok(&["app", "scale", "wide", "1"]);
    assert_eq!(n.show("wide")["gears"].as_array().unwrap().len(), 1);
}

/// Stops the init of the gear whose uid is `uid` (pid 1 of its pid namespace) and kills every
/// other process of it with SIGKILL, from the host.
fn crash_gear(uid: u64) {
    let pids: Vec<i32> = procs_of(uid)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let is_init = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|ns| ns.split_whitespace().last().map(|p| p == "1"))
            .unwrap_or(false)
    };
    let (init, rest): (Vec<i32>, Vec<i32>) = pids.into_iter().partition(|p| is_init(*p));
    assert_eq!(
        init.len(),
        1,
        "no single init among the gear's processes:\n{}",
        procs_of(uid)
    );
    // SAFETY: kill with plain integer arguments.
    assert_eq!(
        unsafe { libc::kill(init[0], libc::SIGSTOP) },
        0,
        "cannot stop the gear's init"
    );
    for pid in rest {
        // SAFETY: as above; a process that ended meanwhile is no error.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[test]
fn apps_without_requests_are_idled_and_woken_again() {
    require_root!();
    // The setting is read when the daemon starts: set it before the first start.
    let x = dev_node_with(|cfg| {
        *cfg = cfg.replace("idle_after_secs = 0", "idle_after_secs = 2");
        assert!(
            cfg.contains("idle_after_secs = 2"),
            "no idle_after_secs in the config:\n{cfg}"
        );
    });
    // The first push builds for longer than idle_after_secs: the app is not idled under it
    // (that would kill the push).
    deploy_with(&x, "sleepy", "zzz", |dir| {
        use std::os::unix::fs::PermissionsExt;
        let hook = dir.join(".openshift/action_hooks/build");
        std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
        std::fs::write(&hook, "#!/bin/sh\nsleep 4\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    });
    wait_for(&x.n, "sleepy.localhost", "zzz");
    assert!(
        eventually(Duration::from_secs(30), || x
            .n
            .ok(&["app", "status", "sleepy"])
            .starts_with("idle")),
        "not idled after 2 s without requests"
    );
    let (code, body) = get(&x.n, "sleepy.localhost");
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("zzz"));
}

#[test]
fn an_app_is_not_idled_under_a_running_push() {
    require_root!();
    let x = dev_node();
    let dir = deploy(&x, "busy", "one");
    wait_for(&x.n, "busy.localhost", "one");
    // The next push builds slowly and says when its build has begun.
    let hook = dir.join(".openshift/action_hooks/build");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "#!/bin/sh\ntouch \"$HOME/building\"\nsleep 3\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("page.txt"), "two").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "two"]);
    let marker = PathBuf::from(x.n.show("busy")["gears"][0]["home"].as_str().unwrap()).join("building");
    std::thread::scope(|s| {
        let pusher = s.spawn(|| push_as(&x.n, &x.key, &dir, "busy", "main"));
        assert!(
            eventually(Duration::from_secs(60), || marker.exists()),
            "the slow build never began"
        );
        let refused = x.n.fails(&["app", "idle", "busy"]);
        assert!(refused.contains("being deployed"), "{refused}");
        let (ok, out) = pusher.join().unwrap();
        assert!(ok, "the push was disturbed by the idle attempt: {out}");
    });
    wait_for(&x.n, "busy.localhost", "two");
    x.n.ok(&["app", "idle", "busy"]);
    assert!(x.n.ok(&["app", "status", "busy"]).starts_with("idle"));
}
