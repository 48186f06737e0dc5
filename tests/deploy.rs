//! git push deploys, as a developer sees them: push, get the page, push a change, push a
//! broken build and keep the old page, roll back, change the environment.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A local git repository with the given files, committed.
fn repo(n: &TestNode, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = n.root.join("src").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    write_files(&dir, files);
    commit(&dir, "first");
    dir
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        if path.contains("action_hooks/") || path.starts_with("bin/") {
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
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

fn commit(dir: &Path, msg: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", msg]);
}

/// `git push` to the app; returns (success, combined output).
fn push(n: &TestNode, dir: &Path, app: &str) -> (bool, String) {
    let remote = format!("ext::{BIN} --config {} git-serve %S {app}", n.config.display());
    let o = Command::new("git")
        .args(["-c", "protocol.ext.allow=always", "push", &remote, "main"])
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

fn get(n: &TestNode, app: &str) -> String {
    let ip = n.show(app)["gears"][0]["ip"].as_str().unwrap().to_string();
    let o = Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{ip}:8080/")])
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
    let n = TestNode::new();
    n.create_app("shop");
    let dir = repo(
        &n,
        "shop",
        &[
            ("Procfile", "web: python3 -u server.py\n"),
            ("server.py", SERVER),
            ("page.txt", "v1"),
        ],
    );
    let (ok, out) = push(&n, &dir, "shop");
    assert!(ok, "{out}");
    assert!(out.contains("remote: -----> deployed"), "{out}");
    assert_eq!(get(&n, "shop"), "v1 -");

    write_files(&dir, &[("page.txt", "v2")]);
    commit(&dir, "v2");
    let (ok, out) = push(&n, &dir, "shop");
    assert!(ok, "{out}");
    assert_eq!(get(&n, "shop"), "v2 -");

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
    let (ok, out) = push(&n, &dir, "shop");
    assert!(!ok, "a failing build was accepted: {out}");
    assert!(out.contains("remote: compiling..."), "build output not streamed: {out}");
    assert!(out.contains("action hook build failed with exit code 7"), "{out}");
    assert!(out.contains("pre-receive hook declined"), "{out}");
    assert_eq!(get(&n, "shop"), "v2 -");

    // A push that changes nothing deployable says so.
    git(&dir, &["reset", "-q", "--hard", "HEAD~1"]);
    commit(&dir, "empty commit");
    let (ok, out) = push(&n, &dir, "shop");
    assert!(ok, "{out}");
    assert!(out.contains("nothing deployable changed"), "{out}");

    // The environment reaches the app, which restarts with it.
    n.ok(&["env", "set", "shop", "GREETING=howdy", "OTHER=x=y"]);
    assert_eq!(get(&n, "shop"), "v2 howdy");
    assert!(n.ok(&["env", "list", "shop"]).contains("OTHER=x=y"));
    assert!(n.fails(&["env", "set", "shop", "PORT=1"]).contains("set by gearshift"));
    n.ok(&["env", "unset", "shop", "GREETING"]);
    assert_eq!(get(&n, "shop"), "v2 -");

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
    assert_eq!(get(&n, "shop"), "v1 -");
    let status = n.ok(&["app", "status", "shop"]);
    assert!(status.starts_with("running"), "{status}");

    // Process control and logs.
    n.ok(&["app", "stop", "shop"]);
    assert_eq!(get(&n, "shop"), "");
    assert!(n.ok(&["app", "status", "shop"]).starts_with("stopped"));
    n.ok(&["app", "start", "shop"]);
    assert_eq!(get(&n, "shop"), "v1 -");
    let logs = n.ok(&["logs", "shop", "-n", "50"]);
    assert!(logs.contains("request /"), "the app's output is not in its log: {logs}");
}

#[test]
fn action_hooks_run_in_order_and_crashes_restart() {
    require_root!();
    let n = TestNode::new();
    n.create_app("hooks");
    let hook = |name: &str| format!("#!/bin/sh\necho {name} >> $OPENSHIFT_DATA_DIR/hooks.log\n");
    let (pre, build, deploy, post) = (hook("pre_build"), hook("build"), hook("deploy"), hook("post_deploy"));
    let dir = repo(
        &n,
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
    let (ok, out) = push(&n, &dir, "hooks");
    assert!(ok, "{out}");
    let (_, log, _) = n.sh("hooks", "cat ~/app-root/data/hooks.log");
    assert_eq!(log, "pre_build\nbuild\ndeploy\npost_deploy\n");
    assert_eq!(get(&n, "hooks"), "hooked -");

    // The web process crashes: the supervisor restarts it.
    let (_, _, _) = n.sh("hooks", "pkill -KILL -f server.py; true");
    let t = Instant::now();
    while get(&n, "hooks") != "hooked -" {
        assert!(t.elapsed() < Duration::from_secs(10), "not restarted after a crash");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = n.ok(&["app", "status", "hooks", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(st["restarts"], 1, "{status}");
    assert_eq!(st["last_exit"], "killed by signal 9", "{status}");
}

#[test]
fn pushes_are_serialised_and_a_huge_push_fills_only_the_gear_quota() {
    require_root!();
    let n = TestNode::new();
    n.add_profile("tiny", "256M", 1.0, 128, "24M", "50mbit");
    n.ok(&["app", "create", "slow", "--cartridge", "python", "--profile", "tiny"]);
    let dir = repo(
        &n,
        "slow",
        &[
            ("Procfile", "web: python3 -u server.py\n"),
            ("server.py", SERVER),
            ("page.txt", "slow"),
            (".openshift/action_hooks/build", "#!/bin/sh\nsleep 2\n"),
        ],
    );
    let remote = format!("ext::{BIN} --config {} git-serve %S slow", n.config.display());
    let first = Command::new("git")
        .args(["-c", "protocol.ext.allow=always", "push", &remote, "main"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    git(&dir, &["branch", "-f", "feature"]);
    let t = Instant::now();
    let o = Command::new("git")
        .args(["-c", "protocol.ext.allow=always", "push", &remote, "feature"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let second = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{second}");
    assert!(second.contains("another push to this app is in progress"), "{second}");
    assert!(second.contains("not a deploy branch"), "{second}");
    assert!(t.elapsed() > Duration::from_millis(800), "the second push did not wait");
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(get(&n, "slow"), "slow -");

    // 40 MB of incompressible data into a 24 MB gear: the push fails inside the gear's quota,
    // the host's disk is untouched, and the app keeps serving.
    let big: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("big.bin"), big).unwrap();
    commit(&dir, "huge");
    let before = n.show("slow")["gears"][0]["disk_limit"].as_u64().unwrap();
    let (ok, out) = push(&n, &dir, "slow");
    assert!(!ok, "a push beyond the quota was accepted");
    assert!(
        out.to_lowercase().contains("quota") || out.contains("No space") || out.contains("unpack"),
        "{out}"
    );
    assert_eq!(before, 24 << 20);
    let used = n.show("slow")["gears"][0]["disk_bytes"].as_u64().unwrap();
    assert!(used <= 25 << 20, "usage {used} beyond the quota");
    assert_eq!(get(&n, "slow"), "slow -");
}
