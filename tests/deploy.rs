//! git push deploys, as a developer sees them: push, get the page, push a change, push a
//! broken build and keep the old page, roll back, change the environment.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn push(d: &DevNode, dir: &Path, app: &str) -> (bool, String) {
    push_as(&d.n, &d.key, dir, app, "main")
}

/// The page of the live web process, straight from the gear (its port moves between 8080 and
/// 8081 with every zero-downtime switch).
fn get(n: &TestNode, app: &str) -> String {
    let ip = n.show(app)["gears"][0]["ip"].as_str().unwrap().to_string();
    // (`app status` fails when the app is not serving, and still prints the gear's status)
    let o = n.gs(&["app", "status", app, "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let port = st["port"].as_u64().filter(|p| *p != 0).unwrap_or(8080);
    let o = Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{ip}:{port}/")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const SERVER: &str = r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = (open('page.txt').read().strip() + ' ' + os.environ.get('GREETING', '-')).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): print('request', self.path, flush=True)
http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#;

#[test]
fn push_change_break_rollback_and_env() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "shop", "--cartridge", "python", "--owner", "dev"]);
    let dir = app_repo(
        n,
        "shop",
        &[
            ("Procfile", "web: python3 -u server.py\n"),
            ("server.py", SERVER),
            ("page.txt", "v1"),
        ],
    );
    let (ok, out) = push(&d, &dir, "shop");
    assert!(ok, "{out}");
    assert!(out.contains("remote: -----> deployed"), "{out}");
    assert_eq!(get(n, "shop"), "v1 -");

    write_files(&dir, &[("page.txt", "v2")]);
    commit(&dir, "v2");
    let (ok, out) = push(&d, &dir, "shop");
    assert!(ok, "{out}");
    assert_eq!(get(n, "shop"), "v2 -");

    // A failing build: the push is rejected naming the step, and v2 keeps serving.
    write_files(
        &dir,
        &[
            ("page.txt", "v3"),
            (
                ".openshift/action_hooks/build",
                "#!/bin/sh\necho compiling...\nexit 7\n",
            ),
        ],
    );
    commit(&dir, "v3 broken");
    let (ok, out) = push(&d, &dir, "shop");
    assert!(!ok, "a failing build was accepted: {out}");
    assert!(out.contains("remote: compiling..."), "build output not streamed: {out}");
    assert!(out.contains("action hook build failed with exit code 7"), "{out}");
    assert!(out.contains("pre-receive hook declined"), "{out}");
    assert_eq!(get(n, "shop"), "v2 -");

    // A push that changes nothing deployable says so.
    git(&dir, &["reset", "-q", "--hard", "HEAD~1"]);
    commit(&dir, "empty commit");
    let (ok, out) = push(&d, &dir, "shop");
    assert!(ok, "{out}");
    assert!(out.contains("nothing deployable changed"), "{out}");

    // The environment reaches the app, which restarts with it.
    n.ok(&["env", "set", "shop", "GREETING=howdy", "OTHER=x=y"]);
    assert_eq!(get(n, "shop"), "v2 howdy");
    assert!(n.ok(&["env", "list", "shop"]).contains("OTHER=x=y"));
    assert!(n.fails(&["env", "set", "shop", "PORT=1"]).contains("set by gearshift"));
    n.ok(&["env", "unset", "shop", "GREETING"]);
    assert_eq!(get(n, "shop"), "v2 -");

    // Deployments are listed; rollback re-activates v1 without a build.
    let list: serde_json::Value = serde_json::from_str(&n.ok(&["deploy", "list", "shop", "--json"])).unwrap();
    let results: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["result"].as_str().unwrap())
        .collect();
    assert_eq!(results.len(), 3, "{list}");
    assert!(results[2].starts_with("failed: action hook build"), "{list}");
    let t = Instant::now();
    n.ok(&["rollback", "shop"]);
    eprintln!("rollback took {:?}", t.elapsed());
    assert_eq!(get(n, "shop"), "v1 -");
    let status = n.ok(&["app", "status", "shop"]);
    assert!(status.starts_with("running"), "{status}");

    // Process control and logs.
    n.ok(&["app", "stop", "shop"]);
    assert_eq!(get(n, "shop"), "");
    let o = n.gs(&["app", "status", "shop"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("stopped"));
    assert_eq!(o.status.code(), Some(1), "a stopped app's status exits 0");
    assert!(String::from_utf8_lossy(&o.stderr).contains("'shop' is not serving: stopped"));
    n.ok(&["app", "start", "shop"]);
    assert_eq!(get(n, "shop"), "v1 -");
    // A restart answers once the new web process is ready: it serves at once, with a new pid.
    let pid = |st: &str| {
        st.split("pid ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .map(String::from)
    };
    let before = pid(&n.ok(&["app", "status", "shop"]));
    let restarted = n.ok(&["app", "restart", "shop"]);
    assert!(restarted.starts_with("running"), "{restarted}");
    assert_ne!(pid(&restarted), before, "{restarted}");
    assert_eq!(get(n, "shop"), "v1 -");
    let logs = n.ok(&["logs", "shop", "-n", "50"]);
    assert!(logs.contains("request /"), "the app's output is not in its log: {logs}");
}

#[test]
fn a_failed_start_shows_the_pusher_its_last_20_lines() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "boom", "--cartridge", "python", "--owner", "dev"]);
    let crashing = "import sys\nfor i in range(1, 31):\n    print('boot line', i)\nsys.exit(3)\n";
    let dir = app_repo(
        n,
        "boom",
        &[("Procfile", "web: python3 -u server.py\n"), ("server.py", crashing)],
    );
    let (ok, out) = push(&d, &dir, "boom");
    assert!(!ok, "a crashing start was accepted: {out}");
    assert!(
        out.contains("remote: -----> the web process's last output (20 line(s) of app-root/logs/web.log):"),
        "{out}"
    );
    let shown: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("remote:        boot line "))
        .collect();
    let want: Vec<String> = (11..=30).map(|i| i.to_string()).collect();
    assert_eq!(shown, want, "not the last 20 lines: {out}");
    assert!(out.contains("exit code 3"), "{out}");
    // The pusher is an SSH user: the hint names the command they can type.
    assert!(
        out.contains(&format!("see `ssh -p {} ", n.ssh_port())) && out.contains(" logs boom`"),
        "{out}"
    );
    assert!(!out.contains("`gearshift logs"), "{out}");
}

#[test]
fn action_hooks_run_in_order_and_crashes_restart() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "hooks", "--cartridge", "python", "--owner", "dev"]);
    let hook = |name: &str| format!("#!/bin/sh\necho {name} >> $OPENSHIFT_DATA_DIR/hooks.log\n");
    let (pre, build, deploy, post) = (hook("pre_build"), hook("build"), hook("deploy"), hook("post_deploy"));
    let dir = app_repo(
        n,
        "hooks",
        &[
            ("Procfile", "web: python3 -u server.py\n"),
            ("server.py", SERVER),
            ("page.txt", "hooked"),
            (".openshift/action_hooks/pre_build", &pre),
            (".openshift/action_hooks/build", &build),
            (".openshift/action_hooks/deploy", &deploy),
            (".openshift/action_hooks/post_deploy", &post),
        ],
    );
    let (ok, out) = push(&d, &dir, "hooks");
    assert!(ok, "{out}");
    let (_, log, _) = n.sh("hooks", "cat ~/app-root/data/hooks.log");
    assert_eq!(log, "pre_build\nbuild\ndeploy\npost_deploy\n");
    assert_eq!(get(n, "hooks"), "hooked -");

    // The web process crashes: the supervisor restarts it.
    let (_, _, _) = n.sh("hooks", "pkill -KILL -f server.py; true");
    assert!(
        eventually(Duration::from_secs(10), || get(n, "hooks") == "hooked -"),
        "not restarted after a crash"
    );
    let status = n.ok(&["app", "status", "hooks", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(st["restarts"], 1, "{status}");
    assert_eq!(st["last_exit"], "killed by signal 9", "{status}");
}

#[test]
fn pushes_are_serialised_and_a_huge_push_fills_only_the_gear_quota() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.add_profile("tiny", "256M", 1.0, 128, "24M", "50mbit");
    n.ok(&[
        "app",
        "create",
        "slow",
        "--cartridge",
        "python",
        "--profile",
        "tiny",
        "--owner",
        "dev",
    ]);
    let dir = app_repo(
        n,
        "slow",
        &[
            ("Procfile", "web: python3 -u server.py\n"),
            ("server.py", SERVER),
            ("page.txt", "slow"),
            (".openshift/action_hooks/build", "#!/bin/sh\nsleep 5\n"),
        ],
    );
    let mut first = Command::new("git")
        .args(["push", &git_remote(n, "slow"), "main"])
        .env("GIT_SSH_COMMAND", git_ssh(&d.key, n))
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The second push starts once the first is building (holding the push lock): a fixed delay
    // was too short in the emulated test VM.
    let (building, rx) = std::sync::mpsc::channel();
    let stderr = first.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("action hook build") {
                let _ = building.send(());
            }
            all += &line;
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the first push never reached its build hook");
    // Nothing serves yet and a push is building: the app says so.
    let list = n.ok(&["app", "list"]);
    let row = list.lines().find(|l| l.starts_with("slow ")).unwrap_or_default();
    assert!(row.contains("building"), "{list}");
    git(&dir, &["branch", "-f", "feature"]);
    let t = Instant::now();
    let (ok, second) = push_as(n, &d.key, &dir, "slow", "feature");
    assert!(ok, "{second}");
    assert!(second.contains("another push to this app is in progress"), "{second}");
    assert!(second.contains("not a deploy branch"), "{second}");
    assert!(t.elapsed() > Duration::from_millis(800), "the second push did not wait");
    let status = first.wait().unwrap();
    let first_err = reader.join().unwrap();
    assert!(status.success(), "{first_err}");
    assert_eq!(get(n, "slow"), "slow -");

    // 40 MB of incompressible data into a 24 MB gear: the push fails inside the gear's quota,
    // the host's disk is untouched, and the app keeps serving.
    let big: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("big.bin"), big).unwrap();
    commit(&dir, "huge");
    let before = n.show("slow")["gears"][0]["disk_limit"].as_u64().unwrap();
    let (ok, out) = push(&d, &dir, "slow");
    assert!(!ok, "a push beyond the quota was accepted");
    assert!(
        out.to_lowercase().contains("quota") || out.contains("No space") || out.contains("unpack"),
        "{out}"
    );
    assert_eq!(before, 24 << 20);
    let used = n.show("slow")["gears"][0]["disk_bytes"].as_u64().unwrap();
    assert!(used <= 25 << 20, "usage {used} beyond the quota");
    assert_eq!(get(n, "slow"), "slow -");
}

#[test]
fn every_example_deploys_and_answers() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    let cases = [
        ("python-flaskless", "python", "Hello from gearshift (python)"),
        // requirements.txt names a real PyPI package: this proves the gear's outbound network.
        ("python-wsgi", "python", "Hello from gearshift (python wsgi)"),
        ("nodejs", "nodejs", "Hello from gearshift (nodejs"),
        ("static", "static", "Hello from gearshift (static)"),
        ("diy", "diy", "Hello from gearshift (diy)"),
        ("procfile", "python", "hooks: pre_build build deploy post_deploy"),
    ];
    // The test VM (`make vm-test`) has no route to PyPI: QEMU's user network is restricted.
    let offline = offline_leaves_out(&test_name!(), "the python-wsgi example (installs from PyPI)");
    for (i, (example, cart, expected)) in cases.iter().enumerate() {
        if offline && *example == "python-wsgi" {
            continue;
        }
        let app = format!("ex{i}");
        n.ok(&["app", "create", &app, "--cartridge", cart, "--owner", "dev"]);
        let dir = example_repo(n, example);
        let t = Instant::now();
        let (ok, out) = push(&d, &dir, &app);
        assert!(ok, "{example} did not deploy:\n{out}");
        eprintln!("{example}: deployed in {:?}", t.elapsed());
        let page = get(n, &app);
        assert!(
            page.contains(expected),
            "{example} answered {page:?}, expected {expected:?}\n{out}"
        );
    }
    if offline {
        return;
    }
    let (_, out, _) = n.sh(
        "ex1",
        "ls ~/app-root/repo/.venv/lib/python3*/site-packages | grep -c idna",
    );
    assert_ne!(out.trim(), "0", "idna was not installed into the deployment's venv");
}

#[test]
fn another_user_cannot_push_to_shell_into_or_read_the_logs_of_an_app() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    let bob = n.add_user("bob");
    n.ok(&["app", "create", "mine", "--cartridge", "python", "--owner", "dev"]);
    let dir = app_repo(
        n,
        "mine",
        &[
            ("Procfile", "web: python3 -u server.py\n"),
            ("server.py", SERVER),
            ("page.txt", "mine"),
        ],
    );
    assert!(push(&d, &dir, "mine").0);
    write_files(&dir, &[("page.txt", "bob was here")]);
    commit(&dir, "bob");
    let (ok, out) = push_as(n, &bob, &dir, "mine", "main");
    assert!(!ok, "bob pushed to dev's app: {out}");
    assert!(out.contains("unknown app 'mine'"), "{out}");
    for cmd in [
        "logs mine",
        "shell mine",
        "run mine id",
        "app show mine",
        "deploy list mine",
        "env set mine A=1",
        "rollback mine",
        "app stop mine",
    ] {
        let o = n.ssh(&bob, &[], Some(cmd), b"");
        assert!(!o.status.success(), "bob could `{cmd}`");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("unknown app 'mine'"),
            "`{cmd}`: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // dev can, over SSH, with the local grammar.
    let o = n.ssh(&d.key, &[], Some("logs mine -n 5"), b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(get(n, "mine"), "mine -");
}

#[test]
fn killing_the_daemon_mid_deploy_keeps_the_previous_deployment() {
    require_root!();
    let mut d = dev_node();
    n_create(&d, "crash");
    let dir = app_repo(
        &d.n,
        "crash",
        &[
            ("Procfile", "web: python3 -u server.py\n"),
            ("server.py", SERVER),
            ("page.txt", "old"),
        ],
    );
    assert!(push(&d, &dir, "crash").0);
    write_files(
        &dir,
        &[
            ("page.txt", "new"),
            (".openshift/action_hooks/build", "#!/bin/sh\necho building\n"),
        ],
    );
    commit(&dir, "new");
    let home = PathBuf::from(d.n.show("crash")["gears"][0]["home"].as_str().unwrap());
    // This daemon's pushes pause while the build hook runs (`fault.rs`): the kill lands there on
    // every machine.
    d.daemon.kill9();
    d.daemon = d.n.start_daemon_with(&[("GEARSHIFT_FAULT", "during-build")]);
    let marker = home.join("app-root/runtime/fault-during-build");
    let pusher = Command::new("git")
        .args(["push", &git_remote(&d.n, "crash"), "main"])
        .env("GIT_SSH_COMMAND", git_ssh(&d.key, &d.n))
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(60), || marker.exists()),
        "the build never began"
    );
    d.daemon.kill9();
    let out = pusher.wait_with_output().unwrap();
    assert!(!out.status.success(), "the push survived the daemon's death");
    // What of the deploy outlived the daemon goes on from the build.
    std::fs::remove_file(&marker).unwrap();
    d.daemon = d.n.start_daemon();
    // Whatever of the interrupted deploy outlived the daemon has ended: it held the push lock.
    let lock = home.join("app-root/runtime/.gearshift-push.lock");
    assert!(
        eventually(Duration::from_secs(60), || push_lock_free(&lock)),
        "the interrupted deploy still holds {}",
        lock.display()
    );
    assert_eq!(get(&d.n, "crash"), "old -", "the previous deployment is not serving");
    let list: serde_json::Value = serde_json::from_str(&d.n.ok(&["deploy", "list", "crash", "--json"])).unwrap();
    let live: Vec<_> = list.as_array().unwrap().iter().filter(|x| x["live"] == true).collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["result"], "deployed");
    // The push lock was released: the next push deploys.
    let (ok, out) = push(&d, &dir, "crash");
    assert!(ok, "{out}");
    assert_eq!(get(&d.n, "crash"), "new -");
}

fn n_create(d: &DevNode, app: &str) {
    d.n.ok(&["app", "create", app, "--cartridge", "python", "--owner", "dev"]);
}

/// Whether nobody holds the gear's push lock (taken and let go at once).
fn push_lock_free(lock: &Path) -> bool {
    use std::os::unix::io::AsRawFd;
    let Ok(f) = std::fs::File::open(lock) else {
        return true;
    };
    // SAFETY: flock on a descriptor we own; dropping it releases the lock.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Break 10 of issue 14: `app stop` stopped only the web process group, so a `setsid` loop
/// started with `run` and a daemon an action hook put in the background outlived it. Now
/// every process in the gear's cgroup but its init (the supervisor) is killed.
#[test]
fn app_stop_ends_everything_a_run_or_a_hook_started() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "tree", "--cartridge", "python", "--owner", "dev"]);
    let hook = "#!/bin/sh\nsetsid sleep 3141592 </dev/null >/dev/null 2>&1 &\n";
    let dir = app_repo(
        n,
        "tree",
        &[
            ("Procfile", "web: python3 -u server.py\n"),
            ("server.py", SERVER),
            ("page.txt", "tree"),
            (".openshift/action_hooks/deploy", hook),
        ],
    );
    let (ok, out) = push(&d, &dir, "tree");
    assert!(ok, "{out}");
    let (code, _, err) = n.sh(
        "tree",
        "setsid sh -c 'while :; do sleep 2718281; done' </dev/null >/dev/null 2>&1 &",
    );
    assert_eq!(code, 0, "{err}");
    let uid = n.show("tree")["gears"][0]["uid"].as_u64().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let p = procs_of(uid);
            p.contains("sleep 3141592") && p.contains("sleep 2718281") && p.contains("server.py")
        }),
        "the hook's and the run's processes are not running: {}",
        procs_of(uid)
    );
    let out = n.ok(&["app", "stop", "tree"]);
    assert!(out.starts_with("stopped"), "{out}");
    // Only the gear's init is left (it keeps the app stopped and answers `app start`).
    let left = procs_of(uid);
    assert!(
        left.lines().all(|l| l.ends_with("gearshift-init")),
        "processes outlived app stop:\n{left}"
    );
    assert_eq!(left.lines().count(), 1, "{left}");
    n.ok(&["app", "start", "tree"]);
    assert_eq!(get(n, "tree"), "tree -");
}

/// Issue 14: Landlock was applied to `run` but not to the web process (the gear's init and
/// its supervisor ran without it). Writing `/proc/self/comm` is allowed by every other
/// mechanism and refused by Landlock (procfs is read-only in the ruleset): a probe of it.
#[test]
fn landlock_confines_the_web_process_and_run() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "locked", "--cartridge", "python", "--owner", "dev"]);
    let probe = "if echo x 2>/dev/null > /proc/self/comm; then echo unconfined; else echo landlocked; fi";
    let dir = app_repo(
        n,
        "locked",
        &[
            (
                "Procfile",
                &format!("web: sh -c '({probe}) > $HOME/web-probe; exec python3 -u server.py'\n"),
            ),
            ("server.py", SERVER),
            ("page.txt", "locked"),
        ],
    );
    let (ok, out) = push(&d, &dir, "locked");
    assert!(ok, "{out}");
    assert_eq!(get(n, "locked"), "locked -");
    let (_, web, _) = n.sh("locked", "cat $HOME/web-probe");
    assert_eq!(web.trim(), "landlocked", "the web process is not under Landlock");
    let (_, run, _) = n.sh("locked", probe);
    assert_eq!(run.trim(), "landlocked", "`run` is not under Landlock");
    // Writes under the home and /tmp still work.
    let (code, _, err) = n.sh("locked", "echo a > $HOME/app-root/data/f && echo b > /tmp/f");
    assert_eq!(code, 0, "{err}");
}
