//! A push that reports success tells the truth: the router already routes to the new process
//! when `git push` returns, first deploy included.

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A git repository holding a copy of `examples/NAME` whose page names `app`.
fn example_for(n: &TestNode, example: &str, app: &str) -> PathBuf {
    let dir = n.root.join("src").join(app);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join(example);
    assert!(Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(&dir)
        .status()
        .unwrap()
        .success());
    let index = dir.join("index.html");
    if let Ok(page) = std::fs::read_to_string(&index) {
        std::fs::write(&index, page.replace("(static)", &format!("(static) app {app}"))).unwrap();
    }
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", app]);
    dir
}

/// One request through the router, sent the instant it is called: (status, body).
fn through_router(n: &TestNode, app: &str) -> (String, String) {
    let o = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host: {app}.localhost"))
        .arg(format!("http://127.0.0.1:{}/", n.http_port()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.to_string(), body.to_string())
}

#[test]
fn thirty_first_pushes_each_answer_the_instant_the_push_returns() {
    require_root!();
    let d = dev_node();
    const APPS: usize = 30;
    const AT_ONCE: usize = 3;
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for lane in 0..AT_ONCE {
            let (d, failures) = (&d, &failures);
            s.spawn(move || {
                for i in (lane..APPS).step_by(AT_ONCE) {
                    let app = format!("first{i}");
                    let (example, cart, expected) = if i % 2 == 0 {
                        ("static", "static", format!("(static) app {app}"))
                    } else {
                        ("python-flaskless", "python", format!("app {app}"))
                    };
                    let o =
                        d.n.ssh(&d.key, &[], Some(&format!("app create {app} --cartridge {cart}")), b"");
                    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                    let dir = example_for(&d.n, example, &app);
                    let (ok, out) = push_as(&d.n, &d.key, &dir, &app, "main");
                    let (code, body) = through_router(&d.n, &app);
                    assert!(ok, "{app}: the push failed:\n{out}");
                    if code != "200" || !body.contains(&expected) {
                        failures.lock().unwrap().push(format!("{app}: {code} {body:?}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {APPS} apps did not answer with their new version the moment the push returned:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const SERVER: &str = r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = open('page.txt').read().strip().encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#;

fn write_commit(dir: &std::path::Path, page: &str) {
    std::fs::write(dir.join("page.txt"), page).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", page]);
}

/// Whether nobody holds the gear's push lock (taken and let go at once).
fn push_lock_free(lock: &std::path::Path) -> bool {
    use std::os::unix::io::AsRawFd;
    let Ok(f) = std::fs::File::open(lock) else {
        return true;
    };
    // SAFETY: flock on a descriptor we own; dropping it releases the lock.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// The deploy branch's commit, as the user's git sees it over SSH.
fn remote_ref(d: &DevNode, dir: &std::path::Path, app: &str) -> String {
    let o = Command::new("git")
        .args(["ls-remote", &git_remote(&d.n, app), "refs/heads/main"])
        .env("GIT_SSH_COMMAND", git_ssh(&d.key, &d.n))
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Every fault point of a push x kill -9 of the daemon there: afterwards the live version
/// (through the router), the deploy branch's ref and `deploy list` agree, and are the new
/// ones only if the client was told the push succeeded; the push lock is free and the next
/// push deploys.
#[test]
fn a_push_killed_at_any_step_is_all_or_nothing() {
    require_root!();
    let mut d = dev_node();
    // (fault point, what the client is told)
    let table = [
        ("after-checkout", false),
        ("during-build", false),
        ("after-build", false),
        ("after-switch", false),
        ("before-no-return", false),
    ];
    let mut outcomes = Vec::new();
    for (i, (point, told_ok)) in table.iter().enumerate() {
        let app = format!("fault{i}");
        d.n.ok(&["app", "create", &app, "--cartridge", "python", "--owner", "dev"]);
        let dir = d.n.root.join("src").join(&app);
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("Procfile"), "web: python3 -u server.py\n").unwrap();
        std::fs::write(dir.join("server.py"), SERVER).unwrap();
        write_commit(&dir, "old");
        let (ok, out) = push_as(&d.n, &d.key, &dir, &app, "main");
        assert!(ok, "{out}");
        let old = git(&dir, &["rev-parse", "HEAD"]).trim().to_string();
        write_commit(&dir, "new");
        let new = git(&dir, &["rev-parse", "HEAD"]).trim().to_string();
        let home = std::path::PathBuf::from(d.n.show(&app)["gears"][0]["home"].as_str().unwrap());
        let marker = home.join(format!("app-root/runtime/fault-{point}"));

        // The daemon that pauses pushes at the fault point (one daemon per node at a time).
        d.daemon.kill9();
        d.daemon = d.n.start_daemon_with(&[("GEARSHIFT_FAULT", point)]);
        let pusher = Command::new("git")
            .args(["push", &git_remote(&d.n, &app), "main"])
            .env("GIT_SSH_COMMAND", git_ssh(&d.key, &d.n))
            .current_dir(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        assert!(
            eventually(Duration::from_secs(120), || marker.exists()),
            "{point}: the push never reached the fault point"
        );
        d.daemon.kill9();
        let out = pusher.wait_with_output().unwrap();
        let pushed = out.status.success();
        // The deploy's survivors in the gear go on from the fault point.
        std::fs::remove_file(&marker).unwrap();
        d.daemon = d.n.start_daemon();
        let lock = home.join("app-root/runtime/.gearshift-push.lock");
        assert!(
            eventually(Duration::from_secs(60), || push_lock_free(&lock)),
            "{point}: the interrupted deploy still holds the push lock"
        );
        let want = if pushed { ("new", &new) } else { ("old", &old) };
        // The new daemon's router has fed the app's route from its gear (at its own pace: a
        // daemon start is not a push).
        let mut seen = (String::new(), String::new());
        eventually(Duration::from_secs(30), || {
            seen = through_router(&d.n, &app);
            seen.0 == "200"
        });
        let (code, body) = seen;
        let reference = remote_ref(&d, &dir, &app);
        let list: serde_json::Value = serde_json::from_str(&d.n.ok(&["deploy", "list", &app, "--json"])).unwrap();
        let live: Vec<_> = list.as_array().unwrap().iter().filter(|x| x["live"] == true).collect();
        outcomes.push(format!(
            "{point} x kill -9 daemon: push {}, live {code} {body:?}, ref {}, deploy list live {}",
            if pushed { "succeeded" } else { "failed" },
            &reference[..8.min(reference.len())],
            live.first().map(|l| l["commit"].to_string()).unwrap_or_default()
        ));
        eprintln!("{}", outcomes.last().unwrap());
        assert_eq!(
            pushed,
            *told_ok,
            "{point}: git push said {pushed}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!((code.as_str(), body.as_str()), ("200", want.0), "{point}: live version");
        assert_eq!(&reference, want.1, "{point}: the deploy branch's ref");
        assert_eq!(live.len(), 1, "{point}: {list}");
        assert_eq!(
            live[0]["commit"].as_str(),
            Some(want.1.as_str()),
            "{point}: deploy list"
        );
        assert_eq!(live[0]["result"], "deployed", "{point}: {list}");
        // The next push deploys, and answers at once.
        let (ok, out) = push_as(&d.n, &d.key, &dir, &app, "main");
        assert!(ok, "{point}: the next push failed:\n{out}");
        assert_eq!(
            through_router(&d.n, &app),
            ("200".into(), "new".into()),
            "{point}: after the next push"
        );
    }
    eprintln!("{}", outcomes.join("\n"));
}

/// What a cell of the fault table kills at its fault point.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Victim {
    /// The daemon's SSH worker that relays the push (`internal-exec`).
    Worker,
    /// The process in the gear that reached the fault point (git's pre-receive hook).
    Hook,
    /// The client: `git push` and its ssh.
    Client,
    /// The node's sshd process that carries the push's session.
    Sshd,
    /// The gear's init: every process of the gear (git, the hook, its settler, the web
    /// processes); the daemon's reconciler starts the gear again.
    Init,
}

/// A process's parent, as the host sees it.
fn parent(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The host pid of the process of uid `uid` that is `ns_pid` in its gear's pid namespace.
fn host_pid(uid: u64, ns_pid: &str) -> Option<i32> {
    let procs = procs_of(uid);
    procs
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|ns| ns.split_whitespace().last().map(|p| p == ns_pid))
                .unwrap_or(false)
        })
}

/// What `/proc/PID/fd/FD` names (`pipe:[N]`, `socket:[N]`).
fn fd_of(pid: i32, fd: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Kills `target` (a negative pid: its process group) with SIGKILL for `cell`; a `worker` is
/// checked to be the daemon's child first.
fn kill9(cell: &str, target: i32, worker: bool) {
    if worker {
        // The worker hides its command line from the gear; its parent is the daemon.
        let daemon = std::fs::read(format!("/proc/{}/cmdline", parent(target))).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&daemon).contains("daemon"),
            "{cell}: {target} is not the daemon's worker"
        );
    }
    // SAFETY: kill(2) with integer arguments.
    assert_eq!(
        unsafe { libc::kill(target, libc::SIGKILL) },
        0,
        "{cell}: cannot kill {target}"
    );
}

/// The node's sshd process that runs the forced command (`ssh-entry`) whose stdout is the
/// worker's.
fn sshd_of(worker: i32) -> Option<i32> {
    let out = fd_of(worker, 1);
    let entry = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            *pid != worker
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("ssh-entry"))
                && fd_of(*pid, 1) == out
        })?;
    Some(parent(entry))
}

/// Every cell of the table below runs on its own app of one node, side by side: a push to
/// it pauses at the cell's fault point (`GEARSHIFT_FAULT=APP=POINT,...`), the cell kills its
/// victim with SIGKILL there and lets the survivors go on. Afterwards (a gear whose init died
/// started again by the reconciler, its journaled switch settled by its supervisor) the live
/// version, the deploy branch's ref and `deploy list` agree and are the old ones (no client was
/// told of success), the push lock is free, no process of the push is left, and the next push
/// deploys.
#[test]
fn a_push_whose_worker_hook_client_sshd_or_gear_init_dies_is_all_or_nothing() {
    require_root!();
    let mut d = dev_node();
    use Victim::*;
    let table = [
        ("during-build", Worker),
        ("after-switch", Worker),
        ("during-build", Hook),
        ("after-switch", Hook),
        ("before-no-return", Hook),
        ("during-build", Client),
        ("after-switch", Client),
        ("before-no-return", Client),
        ("after-build", Sshd),
        ("before-no-return", Sshd),
        ("during-build", Init),
        ("after-switch", Init),
    ];
    // Every app is deployed once, and its next version committed.
    let apps: Vec<(String, PathBuf, String, String, PathBuf, u64)> = table
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let app = format!("cell{i}");
            d.n.ok(&["app", "create", &app, "--cartridge", "python", "--owner", "dev"]);
            let dir = d.n.root.join("src").join(&app);
            std::fs::create_dir_all(&dir).unwrap();
            git(&dir, &["init", "-q", "-b", "main"]);
            std::fs::write(dir.join("Procfile"), "web: python3 -u server.py\n").unwrap();
            std::fs::write(dir.join("server.py"), SERVER).unwrap();
            write_commit(&dir, &format!("old {app}"));
            let (ok, out) = push_as(&d.n, &d.key, &dir, &app, "main");
            assert!(ok, "{out}");
            let old = git(&dir, &["rev-parse", "HEAD"]).trim().to_string();
            write_commit(&dir, &format!("new {app}"));
            let new = git(&dir, &["rev-parse", "HEAD"]).trim().to_string();
            assert_ne!(old, new);
            let g = &d.n.show(&app)["gears"][0];
            let home = PathBuf::from(g["home"].as_str().unwrap());
            let uid = g["uid"].as_u64().unwrap();
            (app, dir, old, new, home, uid)
        })
        .collect();
    let spec: Vec<String> = table
        .iter()
        .zip(&apps)
        .map(|((point, _), (app, ..))| format!("{app}={point}"))
        .collect();
    d.daemon.kill9();
    d.daemon = d.n.start_daemon_with(&[("GEARSHIFT_FAULT", &spec.join(","))]);
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for ((point, victim), (app, dir, old, _new, home, uid)) in table.iter().zip(&apps) {
            let (d, outcomes) = (&d, &outcomes);
            s.spawn(move || {
                let cell = format!("{point} x kill -9 {victim:?}");
                let marker = home.join(format!("app-root/runtime/fault-{point}"));
                let pusher = Command::new("git")
                    .args(["push", &git_remote(&d.n, app), "main"])
                    .env("GIT_SSH_COMMAND", git_ssh(&d.key, &d.n))
                    .current_dir(dir)
                    .process_group(0)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                assert!(
                    eventually(Duration::from_secs(120), || marker.exists()),
                    "{cell}: the push never reached the fault point"
                );
                let ns_pid = std::fs::read_to_string(&marker).unwrap().trim().to_string();
                let hook = host_pid(*uid, &ns_pid).unwrap_or_else(|| panic!("{cell}: no hook {ns_pid}"));
                let worker = parent(parent(hook));
                let target = match victim {
                    Hook => hook,
                    Worker => worker,
                    // A negative pid: the client's process group (git and its ssh).
                    Client => -(pusher.id() as i32),
                    Sshd => sshd_of(worker).unwrap_or_else(|| panic!("{cell}: no sshd for worker {worker}")),
                    Init => {
                        let id = d.n.show(app)["gears"][0]["id"].as_str().unwrap().to_string();
                        let pidfile = std::fs::read_to_string(d.n.root.join("run/gears").join(id).join("init.pid"));
                        pidfile.unwrap().split_whitespace().next().unwrap().parse().unwrap()
                    }
                };
                kill9(&cell, target, *victim == Worker);
                let out = pusher.wait_with_output().unwrap();
                let pushed = out.status.success();
                // The node has seen the death when the push's git-receive-pack is gone; only
                // then does the paused hook go on (a death the node has not seen by the point
                // of no return counts as after it).
                let git_alive = || procs_of(*uid).contains("receive-pack");
                assert!(
                    *victim == Hook || eventually(Duration::from_secs(30), || !git_alive()),
                    "{cell}: git-receive-pack outlived the {victim:?}:\n{}",
                    procs_of(*uid)
                );
                std::fs::remove_file(&marker).unwrap();
                let lock = home.join("app-root/runtime/.gearshift-push.lock");
                assert!(
                    eventually(Duration::from_secs(60), || push_lock_free(&lock)),
                    "{cell}: the interrupted deploy still holds the push lock"
                );
                let push_procs = || {
                    procs_of(*uid)
                        .lines()
                        .filter(|l| l.contains("receive-pack") || l.contains("pre-receive"))
                        .map(String::from)
                        .collect::<Vec<String>>()
                };
                eventually(Duration::from_secs(10), || push_procs().is_empty());
                let left = push_procs();
                // The route follows the gear's supervisor (the watcher): a rollback in the
                // gear reaches it within moments, as no client waits for it; a gear whose init
                // died is started again by the reconciler.
                let first = through_router(&d.n, app);
                let mut seen = first.clone();
                eventually(Duration::from_secs(30), || {
                    seen = through_router(&d.n, app);
                    seen.0 == "200"
                });
                let (code, body) = seen;
                if first.0 != "200" {
                    eprintln!("{cell}: the router answered {} at first", first.0);
                }
                if code != "200" {
                    // What the gear and its supervisor say, for the failure's reader.
                    let log = std::fs::read_to_string(home.join("app-root/logs/web.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!(
                        "{cell}: app show {}\nprocesses:\n{}\nweb.log (last lines, newest first):\n{}",
                        d.n.show(app)["gears"],
                        procs_of(*uid),
                        tail.join("\n")
                    );
                }
                let reference = remote_ref(d, dir, app);
                let list: serde_json::Value =
                    serde_json::from_str(&d.n.ok(&["deploy", "list", app, "--json"])).unwrap();
                let live: Vec<_> = list.as_array().unwrap().iter().filter(|x| x["live"] == true).collect();
                let line = format!(
                    "{cell}: push {}, live {code} {body:?}, ref {}, deploy list live {}",
                    if pushed { "succeeded" } else { "failed" },
                    &reference[..8.min(reference.len())],
                    live.first().map(|l| l["commit"].to_string()).unwrap_or_default()
                );
                eprintln!("{line}");
                outcomes.lock().unwrap().push(line);
                assert!(!pushed, "{cell}: git push said it succeeded");
                assert!(left.is_empty(), "{cell}: processes of the push are left: {left:?}");
                assert_eq!(
                    (code.as_str(), body.as_str()),
                    ("200", format!("old {app}").as_str()),
                    "{cell}: live version"
                );
                assert_eq!(&reference, old, "{cell}: the deploy branch's ref");
                assert_eq!(live.len(), 1, "{cell}: {list}");
                assert_eq!(live[0]["commit"].as_str(), Some(old.as_str()), "{cell}: deploy list");
                assert_eq!(live[0]["result"], "deployed", "{cell}: {list}");
            });
        }
    });
    // The next push of every app deploys (by a daemon that pauses nothing).
    d.daemon.kill9();
    d.daemon = d.n.start_daemon();
    for ((point, victim), (app, dir, ..)) in table.iter().zip(&apps) {
        let (ok, out) = push_as(&d.n, &d.key, dir, app, "main");
        assert!(ok, "{point} x {victim:?}: the next push failed:\n{out}");
        let list: serde_json::Value = serde_json::from_str(&d.n.ok(&["deploy", "list", app, "--json"])).unwrap();
        let live: Vec<_> = list.as_array().unwrap().iter().filter(|x| x["live"] == true).collect();
        assert_eq!(live.len(), 1, "{point} x {victim:?}: {list}");
        assert_eq!(live[0]["result"], "deployed", "{point} x {victim:?}: {list}");
        // Served at once: the push has returned, and the router was told before it did.
        assert_eq!(
            through_router(&d.n, app),
            ("200".to_string(), format!("new {app}")),
            "{point} x {victim:?}: right after the next push:\n{out}"
        );
    }
    eprintln!("{}", outcomes.into_inner().unwrap().join("\n"));
}

/// Creates and pushes each (app, example), and checks it answers through the router.
fn deploy_examples(d: &DevNode, apps: &[(&str, &str)]) {
    for &(app, example) in apps {
        let cart = if example == "static" { "static" } else { "python" };
        d.n.ok(&["app", "create", app, "--cartridge", cart, "--owner", "dev"]);
        let dir = example_for(&d.n, example, app);
        let (ok, out) = push_as(&d.n, &d.key, &dir, app, "main");
        assert!(ok, "{out}");
        assert_eq!(through_router(&d.n, app).0, "200");
    }
}

/// The node's bridge and nftables table deleted under running gears (a network restart, an
/// admin's mistake) while the daemon was down: the next daemon puts the surviving gears back
/// on the network, and every app answers again within 10 s of its start, without a restart.
#[test]
fn a_network_torn_down_under_live_gears_heals_when_the_daemon_starts() {
    require_root!();
    let mut d = dev_node();
    let apps = [("heal0", "static"), ("heal1", "python-flaskless")];
    deploy_examples(&d, &apps);
    let pids: Vec<String> = apps
        .iter()
        .map(|(app, _)| d.n.ok(&["app", "status", app, "--json"]))
        .collect();
    d.daemon.kill9();
    let table = format!("gearshift_{}", d.n.name.replace('-', "_"));
    for cmd in [
        vec!["ip", "link", "delete", "dev", d.n.name.as_str()],
        vec!["nft", "delete", "table", "inet", table.as_str()],
    ] {
        let st = Command::new(cmd[0]).args(&cmd[1..]).status().unwrap();
        assert!(st.success(), "{cmd:?} failed");
    }
    d.daemon = d.n.start_daemon();
    let started = std::time::Instant::now();
    for (app, _) in apps {
        assert!(
            eventually(Duration::from_secs(10).saturating_sub(started.elapsed()), || {
                through_router(&d.n, app).0 == "200"
            }),
            "{app} does not answer 10 s after the daemon started:\n{}",
            d.daemon.log_text()
        );
    }
    // Healed, not restarted: the same web processes serve.
    for ((app, _), before) in apps.iter().zip(pids) {
        let pid = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["pid"].clone();
        assert!(pid(&before).is_i64(), "{app} had no web process: {before}");
        assert_eq!(
            pid(&d.n.ok(&["app", "status", app, "--json"])),
            pid(&before),
            "{app} was restarted"
        );
    }
}

/// One request through the router that gives up after `secs` (a gear off the network does not
/// answer at all): its status.
fn status_within(n: &TestNode, app: &str, secs: u32) -> String {
    let o = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-m",
            &secs.to_string(),
            "-w",
            "%{http_code}",
            "-H",
        ])
        .arg(format!("Host: {app}.localhost"))
        .arg(format!("http://127.0.0.1:{}/", n.http_port()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Under a running daemon, an admin's mistake takes a gear's veth off the bridge, another
/// gear's address away, then the node's nftables table: the daemon's periodic check puts each
/// back within 10 s, without a restart, and `gearshift events` names each repair.
#[test]
fn a_gear_network_broken_under_the_running_daemon_heals_within_ten_seconds() {
    require_root!();
    let d = dev_node();
    let apps = [("mend0", "static"), ("mend1", "python-flaskless")];
    deploy_examples(&d, &apps);
    let pid = |app: &str| {
        serde_json::from_str::<serde_json::Value>(&d.n.ok(&["app", "status", app, "--json"])).unwrap()["pid"].clone()
    };
    let before: Vec<_> = apps.iter().map(|(app, _)| pid(app)).collect();
    let gear = |app: &str| d.n.show(app)["gears"][0].clone();
    let (g0, g1) = (gear("mend0"), gear("mend1"));
    let run = |cmd: &[&str]| {
        let st = Command::new(cmd[0]).args(&cmd[1..]).status().unwrap();
        assert!(st.success(), "{cmd:?} failed");
    };
    let heals = |what: &str| {
        let started = std::time::Instant::now();
        for (app, _) in apps {
            assert!(
                eventually(Duration::from_secs(10).saturating_sub(started.elapsed()), || {
                    status_within(&d.n, app, 2) == "200"
                }),
                "{what}: {app} does not answer 10 s later:\n{}",
                d.daemon.log_text()
            );
        }
        eprintln!("{what}: every app answers {:?} later", started.elapsed());
    };
    let events = || d.n.ok(&["events", "--lines", "200"]);

    // A veth off the bridge, and the other gear's address gone.
    run(&["ip", "link", "set", g0["veth"].as_str().unwrap(), "nomaster"]);
    run(&[
        "ip",
        "-n",
        g1["netns"].as_str().unwrap(),
        "addr",
        "flush",
        "dev",
        "eth0",
    ]);
    heals("veth off the bridge, address flushed");
    assert!(
        eventually(Duration::from_secs(10), || {
            let e = events();
            e.contains("node.repair") && e.contains("is not on the bridge") && e.contains("lacks address")
        }),
        "the repairs are not in the event log:\n{}",
        events()
    );

    // The node's nftables table.
    let table = format!("gearshift_{}", d.n.name.replace('-', "_"));
    run(&["nft", "delete", "table", "inet", &table]);
    let back = || {
        Command::new("nft")
            .args(["list", "table", "inet", &table])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        eventually(Duration::from_secs(10), back),
        "the nftables table is not back 10 s later:\n{}",
        d.daemon.log_text()
    );
    heals("nftables table deleted");
    assert!(
        eventually(Duration::from_secs(5), || events()
            .contains(&format!("nftables table inet {table} is missing"))),
        "the table's repair is not in the event log:\n{}",
        events()
    );
    let log = events();
    eprintln!("{log}");
    assert!(!log.contains("not repaired") && !log.contains("still wrong"), "{log}");
    // Healed, not restarted: the same web processes serve.
    for ((app, _), before) in apps.iter().zip(before) {
        assert!(before.is_i64(), "{app} had no web process: {before}");
        assert_eq!(pid(app), before, "{app} was restarted");
    }
}

/// A gear whose init runs but whose supervisor cannot be reached (its init, the supervisor,
/// stopped with SIGSTOP) is reported by `app status` and `app show` over SSH as not serving,
/// with what to do; doing it serves the app again.
#[test]
fn a_gear_whose_supervisor_does_not_answer_is_reported_as_not_serving() {
    require_root!();
    let d = dev_node();
    deploy_examples(&d, &[("numb", "python-flaskless")]);
    let id = d.n.show("numb")["gears"][0]["id"].as_str().unwrap().to_string();
    let pidfile = std::fs::read_to_string(d.n.root.join("run/gears").join(&id).join("init.pid")).unwrap();
    let init: i32 = pidfile.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: kill(2) with integer arguments.
    assert_eq!(unsafe { libc::kill(init, libc::SIGSTOP) }, 0);
    let ssh = |cmd: &str| {
        let o = d.n.ssh(&d.key, &[], Some(cmd), b"");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (o.status.success(), text(&o.stdout), text(&o.stderr))
    };
    let (ok, out, err) = ssh("app status numb");
    assert!(!ok, "app status says the frozen app serves:\n{out}{err}");
    assert!(out.contains("not answering"), "{out}");
    assert!(err.contains("'numb' is not serving"), "{err}");
    assert!(err.contains("app idle numb") && err.contains("app start numb"), "{err}");
    let (_, show, err) = ssh("app show numb");
    assert!(show.contains("status:    not answering"), "app show:\n{show}{err}");
    // What it says to do: the gear is restarted, and serves again.
    for cmd in ["app idle numb", "app start numb"] {
        let (ok, out, err) = ssh(cmd);
        assert!(ok, "{cmd}:\n{out}{err}");
    }
    let (ok, out, err) = ssh("app status numb");
    assert!(ok && out.starts_with("running"), "after a restart:\n{out}{err}");
    assert_eq!(through_router(&d.n, "numb").0, "200");
}

/// A command sent the instant a gear's init is killed (by a crash, an OOM kill, another admin's
/// restart) waits for the old gear to be gone and starts it again, rather than failing on the
/// exiting init's vanished namespaces (CI met `deploy list` failing with "cannot open
/// /proc/PID/ns/cgroup" so). The gear holds a process with 300 MiB written, which keeps its
/// exiting init around for a while, as a loaded app does. Each time the daemon's repair (`node
/// up`) races the command to start the gear again.
#[test]
fn a_command_the_instant_its_gears_init_is_killed_starts_the_gear_again() {
    require_root!();
    let d = dev_node();
    page_app(&d, "reborn", "small", "v1");
    let id = d.n.show("reborn")["gears"][0]["id"].as_str().unwrap().to_string();
    let pidfile = d.n.root.join("run/gears").join(&id).join("init.pid");
    let hog = "setsid python3 -c \"import signal; b = b'x' * (300 << 20); open('/tmp/hog', 'w').close(); signal.pause()\" </dev/null >/dev/null 2>&1 &";
    for round in 1..=12 {
        d.n.ok(&["run", "reborn", "--", "sh", "-c", hog]);
        assert!(
            eventually(Duration::from_secs(30), || d
                .n
                .gs(&["run", "reborn", "--", "test", "-e", "/tmp/hog"])
                .status
                .success()),
            "round {round}: the memory hog never started"
        );
        let init: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // SAFETY: kill(2) with integer arguments.
        assert_eq!(unsafe { libc::kill(init, libc::SIGKILL) }, 0);
        // The daemon's repair (`node up`, run by its reconciler once it has seen the gear down
        // twice) races the command to start the gear: neither may take the gear the other is
        // starting (its supervisor not listening yet) for a dumb one and kill it.
        let up =
            d.n.cmd()
                .args(["node", "up"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
        let word = if round % 2 == 0 { "deploy list" } else { "run" };
        let o = if round % 2 == 0 {
            d.n.gs(&["deploy", "list", "reborn", "--json"])
        } else {
            d.n.gs(&["run", "reborn", "--", "cat", "/app/page.txt"])
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(
            o.status.success(),
            "round {round}: `{word}` the instant the gear's init was killed failed:\n{}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        let out = text(&o.stdout);
        let right = if round % 2 == 0 {
            let list: serde_json::Value = serde_json::from_str(&out).unwrap();
            list.as_array().unwrap().iter().filter(|x| x["live"] == true).count() == 1
        } else {
            out.trim() == "v1"
        };
        assert!(right, "round {round}: `{word}` says:\n{out}");
        let up = up.wait_with_output().unwrap();
        let said = text(&up.stderr);
        assert!(up.status.success(), "round {round}: node up:\n{said}");
        assert!(
            !said.contains("restart"),
            "round {round}: node up restarted the gear:\n{said}"
        );
    }
    assert!(
        eventually(Duration::from_secs(30), || through_router(&d.n, "reborn")
            == ("200".into(), "v1".into())),
        "the app does not serve after its gear was started again: {:?}",
        through_router(&d.n, "reborn")
    );
}

/// A page naming the deployment's page.txt and the environment's COLOR (`-` when unset).
const ENV_SERVER: &str = r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = (open('page.txt').read().strip() + ' ' + os.environ.get('COLOR', '-')).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#;

/// What a cell of the rollback, env and scale table changes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    /// `rollback APP`: from v2 back to v1.
    Rollback,
    /// `env set APP COLOR=blue` (COLOR=red before).
    EnvSet,
    /// `app scale APP worker=2` (worker=1 before).
    Scale,
}

/// Who a cell kills at its fault point.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dies {
    /// The root CLI running the command.
    Cli,
    /// The daemon's SSH worker running it for an SSH user.
    Worker,
    /// The gear's init (its supervisor, and with it every process of the gear).
    Init,
}

/// A cell's app: its name, source, (commit, page) of each version, gear 0's home, uid and id.
struct OpApp {
    name: String,
    dir: PathBuf,
    pages: Vec<(String, String)>,
    home: PathBuf,
    uid: u64,
    id: String,
}

/// The command of `op` for `app`, as words.
fn op_words(op: Op, app: &str) -> Vec<String> {
    let w = match op {
        Op::Rollback => vec!["rollback", app],
        Op::EnvSet => vec!["env", "set", app, "COLOR=blue"],
        Op::Scale => vec!["app", "scale", app, "worker=2"],
    };
    w.into_iter().map(String::from).collect()
}

/// What the node says of `app`: the live deployment's page (by its commit) and COLOR from
/// `deploy list` and `env`, and `worker=N` from the recorded formation.
fn said(d: &DevNode, app: &str, pages: &[(String, String)]) -> String {
    let list: serde_json::Value = serde_json::from_str(&d.n.ok(&["deploy", "list", app, "--json"])).unwrap();
    let live: Vec<_> = list.as_array().unwrap().iter().filter(|x| x["live"] == true).collect();
    assert_eq!(live.len(), 1, "{app}: {list}");
    let page = pages
        .iter()
        .find(|(c, _)| live[0]["commit"].as_str() == Some(c.as_str()))
        .map_or("?", |(_, p)| p.as_str());
    let env: serde_json::Value = serde_json::from_str(&d.n.ok(&["env", "list", app, "--json"])).unwrap();
    let show = d.n.show(app);
    format!(
        "{page} {} worker={}",
        env["COLOR"].as_str().unwrap_or("-"),
        show["formation"]["worker"].as_u64().unwrap_or(0)
    )
}

/// What runs: the page through the router, and how many worker processes gear 0 runs.
fn runs(d: &DevNode, app: &str) -> String {
    let (code, body) = through_router(&d.n, app);
    let st: serde_json::Value = serde_json::from_str(&d.n.ok(&["app", "status", app, "--json"])).unwrap_or_default();
    let workers = st["types"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t[0] == "worker")
        .and_then(|t| t[2].as_u64())
        .unwrap_or(0);
    if code == "200" {
        format!("{body} worker={workers}")
    } else {
        format!("HTTP {code} worker={workers}")
    }
}

/// Rollback, `env set` and `app scale`, each killed at a fault point inside it: afterwards
/// what `deploy list`, `env` and `app show` say is what runs (the page through the router, the
/// worker processes), once the node has recovered (an interrupted env or formation change is
/// finished by the daemon's reconciler), and the next command works. Each cell runs on its own
/// app, side by side (`GEARSHIFT_FAULT=APP=POINT,...` on the daemon, and on the CLI that
/// starts the gears' supervisors, so that they pause too).
#[test]
fn a_rollback_env_change_or_scale_killed_at_any_step_is_all_or_nothing() {
    require_root!();
    let mut d = dev_node();
    use Dies::*;
    use Op::*;
    // (operation, fault point, who dies, what it says and runs afterwards)
    let table = [
        (Rollback, "before-rollback", Cli, "v2 red worker=1"),
        (Rollback, "before-rollback", Worker, "v2 red worker=1"),
        (Rollback, "during-switch", Cli, "v1 red worker=1"),
        (Rollback, "during-switch", Worker, "v1 red worker=1"),
        (Rollback, "during-switch", Init, "v2 red worker=1"),
        (EnvSet, "before-apply", Cli, "v2 blue worker=1"),
        (EnvSet, "before-apply", Worker, "v2 blue worker=1"),
        (EnvSet, "during-switch", Cli, "v2 blue worker=1"),
        // The CLI lives and sees the gear fail with nothing of it running: blue stays recorded,
        // and the gear started again runs it.
        (EnvSet, "during-switch", Init, "v2 blue worker=1"),
        (Scale, "before-apply", Cli, "v2 red worker=2"),
        (Scale, "before-apply", Worker, "v2 red worker=2"),
    ];
    // Every app runs v2 (v1 kept for rollback) with COLOR=red and one worker.
    let apps: Vec<OpApp> = table
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let app = format!("op{i}");
            d.n.ok(&["app", "create", &app, "--cartridge", "python", "--owner", "dev"]);
            d.n.ok(&["env", "set", &app, "COLOR=red"]);
            let dir = d.n.root.join("src").join(&app);
            std::fs::create_dir_all(&dir).unwrap();
            git(&dir, &["init", "-q", "-b", "main"]);
            std::fs::write(
                dir.join("Procfile"),
                "web: python3 -u server.py\nworker: python3 -c 'import time; time.sleep(100000)'\n",
            )
            .unwrap();
            std::fs::write(dir.join("server.py"), ENV_SERVER).unwrap();
            let mut pages = Vec::new();
            for page in ["v1", "v2"] {
                write_commit(&dir, page);
                let (ok, out) = push_as(&d.n, &d.key, &dir, &app, "main");
                assert!(ok, "{out}");
                pages.push((git(&dir, &["rev-parse", "HEAD"]).trim().to_string(), page.to_string()));
            }
            d.n.ok(&["app", "scale", &app, "worker=1"]);
            let g = &d.n.show(&app)["gears"][0];
            OpApp {
                home: PathBuf::from(g["home"].as_str().unwrap()),
                uid: g["uid"].as_u64().unwrap(),
                id: g["id"].as_str().unwrap().to_string(),
                name: app,
                dir,
                pages,
            }
        })
        .collect();
    let spec: Vec<String> = table
        .iter()
        .zip(&apps)
        .map(|((_, point, ..), a)| format!("{}={point}", a.name))
        .collect();
    let spec = spec.join(",");
    d.daemon.kill9();
    d.daemon = d.n.start_daemon_with(&[("GEARSHIFT_FAULT", &spec)]);
    // The gears' supervisors start again with the fault variable.
    for OpApp { name: app, .. } in &apps {
        d.n.ok(&["app", "idle", app]);
        let o =
            d.n.cmd()
                .args(["app", "start", app])
                .env("GEARSHIFT_FAULT", &spec)
                .output()
                .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for ((op, point, dies, expect), a) in table.iter().zip(&apps) {
            let OpApp {
                name: app,
                pages,
                home,
                uid,
                id,
                ..
            } = a;
            let (d, outcomes, spec) = (&d, &outcomes, &spec);
            s.spawn(move || {
                let cell = format!("{op:?} x {point} x kill -9 {dies:?}");
                let words = op_words(*op, app);
                let mut command = if *dies == Worker {
                    let mut c = Command::new("ssh");
                    c.args(ssh_opts(&d.key, d.n.ssh_port()))
                        .arg(format!("{}@127.0.0.1", d.n.ssh_user()))
                        .arg(words.join(" "));
                    c
                } else {
                    let mut c = d.n.cmd();
                    c.args(&words).env("GEARSHIFT_FAULT", spec);
                    c
                };
                let client = command
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let marker = if *point == "before-apply" {
                    d.n.root.join("run").join(format!("fault-{app}-{point}"))
                } else {
                    home.join(format!("app-root/runtime/fault-{point}"))
                };
                assert!(
                    eventually(Duration::from_secs(120), || marker.exists()),
                    "{cell}: the command never reached the fault point"
                );
                let target = match dies {
                    Cli => client.id() as i32,
                    Init => {
                        let pidfile = d.n.root.join("run/gears").join(id).join("init.pid");
                        let text = std::fs::read_to_string(pidfile).unwrap();
                        text.split_whitespace().next().unwrap().parse().unwrap()
                    }
                    // The process that paused is the worker itself (root's side), or runs in
                    // the gear as the worker's child (`gear rollback`).
                    Worker if *point == "before-apply" => {
                        std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap()
                    }
                    Worker => {
                        let rollback = procs_of(*uid)
                            .lines()
                            .find(|l| l.contains("gear rollback"))
                            .and_then(|l| l.split_whitespace().next()?.parse::<i32>().ok())
                            .unwrap_or_else(|| panic!("{cell}: no `gear rollback`:\n{}", procs_of(*uid)));
                        parent(rollback)
                    }
                };
                kill9(&cell, target, *dies == Worker);
                let out = client.wait_with_output().unwrap();
                let _ = std::fs::remove_file(&marker);
                // An interrupted env or formation change is finished by the reconciler.
                assert!(
                    eventually(Duration::from_secs(60), || d.n.show(app)["applying"].is_null()),
                    "{cell}: the interrupted change is never finished:\n{}",
                    d.daemon.log_text()
                );
                let mut seen = (String::new(), String::new());
                eventually(Duration::from_secs(30), || {
                    seen = (said(d, app, pages), runs(d, app));
                    seen.0 == seen.1
                });
                let line = format!(
                    "{cell}: command {}, says {:?}, runs {:?}",
                    if out.status.success() { "succeeded" } else { "failed" },
                    seen.0,
                    seen.1
                );
                eprintln!("{line}");
                outcomes.lock().unwrap().push(line);
                assert!(!out.status.success(), "{cell}: the killed command said it succeeded");
                assert_eq!(seen.0, seen.1, "{cell}: what the node says is not what runs");
                assert_eq!(seen.0, *expect, "{cell}");
            });
        }
    });
    // The next command of every app works (under a daemon, and supervisors, that pause nothing).
    d.daemon.kill9();
    d.daemon = d.n.start_daemon();
    for ((op, point, dies, _), a) in table.iter().zip(&apps) {
        let OpApp {
            name: app, dir, pages, ..
        } = a;
        let cell = format!("{op:?} x {point} x kill -9 {dies:?}");
        d.n.ok(&["app", "idle", app]);
        d.n.ok(&["app", "start", app]);
        let mut pages = pages.clone();
        let want = match op {
            Rollback => {
                write_commit(dir, "v3");
                let (ok, out) = push_as(&d.n, &d.key, dir, app, "main");
                assert!(ok, "{cell}: the next push failed:\n{out}");
                pages.push((git(dir, &["rev-parse", "HEAD"]).trim().to_string(), "v3".into()));
                "v3 red worker=1"
            }
            EnvSet => {
                d.n.ok(&["env", "set", app, "COLOR=green"]);
                "v2 green worker=1"
            }
            Scale => {
                d.n.ok(&["app", "scale", app, "worker=3"]);
                "v2 red worker=3"
            }
        };
        // Served at once: the command has returned.
        assert_eq!(
            (said(&d, app, &pages), runs(&d, app)),
            (want.into(), want.into()),
            "{cell}: the next command"
        );
    }
    eprintln!("{}", outcomes.into_inner().unwrap().join("\n"));
}

/// Creates python app `app` of `profile`, serving `SERVER` (its page.txt), and deploys `page`;
/// returns its source.
fn page_app(d: &DevNode, app: &str, profile: &str, page: &str) -> PathBuf {
    d.n.ok(&[
        "app",
        "create",
        app,
        "--cartridge",
        "python",
        "--profile",
        profile,
        "--owner",
        "dev",
    ]);
    let dir = d.n.root.join("src").join(app);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("Procfile"), "web: python3 -u server.py\n").unwrap();
    std::fs::write(dir.join("server.py"), SERVER).unwrap();
    write_commit(&dir, page);
    let (ok, out) = push_as(&d.n, &d.key, &dir, app, "main");
    assert!(ok, "{out}");
    dir
}

/// Redeploys of a dependency-free python app: each push returns only once the new version is
/// served (a request sent that instant gets it); prints the median push-to-served time, the
/// redeploy figure (`make bench` measures it properly).
#[test]
fn a_redeploy_is_served_the_moment_its_push_returns() {
    require_root!();
    let d = dev_node();
    let dir = page_app(&d, "again", "small", "v0");
    let mut times = Vec::new();
    for i in 1..=7 {
        let page = format!("v{i}");
        write_commit(&dir, &page);
        let t = std::time::Instant::now();
        let (ok, out) = push_as(&d.n, &d.key, &dir, "again", "main");
        let served = through_router(&d.n, "again");
        times.push(t.elapsed());
        assert!(ok, "{out}");
        assert_eq!(served, ("200".to_string(), page), "the moment push {i} returned");
    }
    times.sort();
    eprintln!(
        "redeploy, push start -> new version served: median {:?} (of {:?})",
        times[3], times
    );
}

/// A push that fills the gear's disk quota (and carries on, as a careless script does) fails
/// clearly and changes nothing, wherever the disk fills: in the build (before the switch: no
/// room left for the switch's reserve) or in a post_deploy hook (after it: the record cannot be
/// written, and the switch is undone with the reserve's room, though a btrfs qgroup refuses even
/// a rename when full). Then, space freed by the app's owner, the next push deploys.
#[test]
fn a_push_that_fills_the_disk_quota_before_or_after_the_switch_fails_clearly_and_the_next_push_works() {
    require_root!();
    let d = dev_node();
    d.n.add_profile("tiny", "256M", 1.0, 128, "24M", "50mbit");
    let dir = page_app(&d, "full", "tiny", "v1");
    let mut live = "v1".to_string();
    for (i, (hook, undone)) in [
        ("build", "keeps serving"),
        ("post_deploy", "is made live again once git has ended"),
    ]
    .into_iter()
    .enumerate()
    {
        let hook = dir.join(".openshift/action_hooks").join(hook);
        std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
        std::fs::write(
            &hook,
            "#!/bin/sh\nhead -c 40000000 /dev/urandom > \"$OPENSHIFT_DATA_DIR/fill\" || echo the disk is full, going on\n",
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        write_commit(&dir, &format!("filled {i}"));
        let (ok, out) = push_as(&d.n, &d.key, &dir, "full", "main");
        eprintln!("{out}");
        assert!(!ok, "a push that met a full disk was accepted:\n{out}");
        assert!(out.contains("FAILED") && out.to_lowercase().contains("quota"), "{out}");
        assert!(out.contains("disk is full: free space in it"), "{out}");
        assert!(out.contains(undone), "{hook:?}: not `{undone}`:\n{out}");
        // The settler undoes a switch once git has ended (the client may be told a moment before).
        assert!(
            eventually(Duration::from_secs(10), || through_router(&d.n, "full")
                == ("200".into(), live.clone())),
            "{hook:?}: the previous deployment is not serving: {:?}",
            through_router(&d.n, "full")
        );
        // The settler records the undone push just after the switch back: waited for.
        let list_now =
            || -> serde_json::Value { serde_json::from_str(&d.n.ok(&["deploy", "list", "full", "--json"])).unwrap() };
        let settled = |l: &serde_json::Value| l.as_array().unwrap().iter().all(|x| x["result"] != "building");
        eventually(Duration::from_secs(10), || settled(&list_now()));
        let list = list_now();
        let rows = list.as_array().unwrap();
        let live_rows: Vec<_> = rows.iter().filter(|x| x["live"] == true).collect();
        assert_eq!(live_rows.len(), 1, "{list}");
        assert_eq!(live_rows[0]["result"], "deployed", "{list}");
        assert!(
            rows.iter().all(|x| x["result"] != "building"),
            "a failed push is still listed as building: {list}"
        );
        // A switch undone is recorded with the room its reserve gave back.
        if hook.ends_with("post_deploy") {
            assert!(
                rows.iter()
                    .any(|x| x["result"].as_str().is_some_and(|r| r.starts_with("failed")
                        && r.ends_with(&format!("{} is live again", live_rows[0]["id"].as_str().unwrap())))),
                "the undone push is not recorded as failed: {list}"
            );
        }
        // Space freed (by the app's owner, in the gear), the next push deploys.
        let (code, _, err) = d.n.sh("full", "rm \"$OPENSHIFT_DATA_DIR/fill\"");
        assert_eq!(code, 0, "{err}");
        std::fs::remove_file(&hook).unwrap();
        live = format!("v{}", i + 2);
        write_commit(&dir, &live);
        let (ok, out) = push_as(&d.n, &d.key, &dir, "full", "main");
        assert!(ok, "the push after freeing space failed:\n{out}");
        assert_eq!(through_router(&d.n, "full"), ("200".into(), live.clone()));
    }
}
