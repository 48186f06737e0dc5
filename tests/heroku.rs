//! Apps written for Heroku and Dokku, pushed unchanged over SSH and checked from outside through
//! the router: the environment of their processes (PATH, working directory, /app), `run` as
//! `heroku run`.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// A git repository of `files`.
fn push(d: &DevNode, dir: &Path, app: &str) -> (bool, String) {
    push_as(&d.n, &d.key, dir, app, "main")
}

/// GET PATH of APP through the router: (status, body).
fn get(n: &TestNode, app: &str, path: &str) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "-m", "20", "-o", "-", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host: {app}.localhost"))
        .arg(format!("http://127.0.0.1:{}{path}", n.http_port()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A stdlib server answering `page.txt` on $PORT (no PyPI needed).
const SERVER: &str = r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = open('page.txt').read().encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#;

#[test]
fn a_flask_app_on_gunicorn_deploys_unchanged_and_run_has_its_packages() {
    require_root!();
    if offline_leaves_out(&test_name!(), "the whole test (Flask and gunicorn come from PyPI)") {
        return;
    }
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "flask", "--cartridge", "python", "--owner", "dev"]);
    let dir = example_repo(n, "heroku-flask");
    let (ok, out) = push(&d, &dir, "flask");
    assert!(ok, "the Flask app did not deploy:\n{out}");
    let (code, page) = get(n, "flask", "/");
    assert_eq!(code, 200, "{page}\n{out}");
    assert!(page.contains("Hello from gearshift (flask on gunicorn)"), "{page}");
    assert!(page.contains("/app is this deployment: True"), "{page}");
    assert!(page.contains("cwd: /home/flask/app-deployments/"), "{page}");

    // A redeploy with the dependencies cached: push start -> the new page served.
    let app_py = std::fs::read_to_string(dir.join("app.py")).unwrap();
    write_files(&dir, &[("app.py", &app_py.replace("Hello from", "Hello again from"))]);
    commit(&dir, "a new page");
    let t = std::time::Instant::now();
    let (ok, out) = push(&d, &dir, "flask");
    let (_, page) = get(n, "flask", "/");
    eprintln!(
        "flask+gunicorn redeploy, push start -> new page served: {:?}",
        t.elapsed()
    );
    assert!(ok && page.contains("Hello again from gearshift"), "{page}\n{out}");
    assert!(out.contains("requirements.txt unchanged: reusing"), "{out}");

    // `run` over SSH, like `heroku run`: in the app, with its virtualenv first on PATH.
    let o = n.ssh(&d.key, &[], Some("run flask python -m flask --version"), b"");
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).contains("Flask 3.0.3"), "{}", text(&o.stdout));
    let o = n.ssh(&d.key, &[], Some("run flask which gunicorn"), b"");
    assert!(
        text(&o.stdout).trim().ends_with("/repo/.venv/bin/gunicorn"),
        "{}",
        text(&o.stdout)
    );
    // The CLI's `run` keeps every argument as given.
    let o = n.gs(&[
        "run",
        "flask",
        "--",
        "python",
        "-c",
        "import flask, os; print(os.getcwd())",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("/home/flask/app-deployments/"),
        "{}",
        text(&o.stdout)
    );
    // `shell` too (no login shell: the system's profile would reset PATH).
    let o = n.ssh(
        &d.key,
        &[],
        Some("shell flask"),
        b"python -c 'import flask'; echo code=$? pwd=$(pwd)\n",
    );
    let so = text(&o.stdout);
    assert!(
        so.contains("code=0 pwd=/home/flask/app-deployments/"),
        "{so}{}",
        text(&o.stderr)
    );
}

#[test]
fn app_processes_start_in_the_deployment_with_its_path_and_see_it_at_slash_app() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "envs", "--cartridge", "python", "--owner", "dev"]);
    // A deployment-local command on PATH (what a venv's bin is), used by web and the hooks.
    let hook = "#!/bin/sh\necho \"$(pwd) $(which greet)\" > \"$OPENSHIFT_DATA_DIR/deploy-hook\"\n";
    let dir = app_repo(
        n,
        "envs",
        &[
            ("Procfile", "web: greet\n"),
            (".venv/bin/greet", "#!/bin/sh\nexec python3 -u server.py\n"),
            (".openshift/action_hooks/deploy", hook),
            ("server.py", SERVER),
            ("page.txt", "one"),
        ],
    );
    std::fs::set_permissions(
        dir.join(".venv/bin/greet"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    commit(&dir, "exec bit");
    let (ok, out) = push(&d, &dir, "envs");
    // The python cartridge removes a committed .venv only when it builds one (requirements.txt).
    assert!(ok, "{out}");
    assert_eq!(get(n, "envs", "/"), (200, "one".to_string()));
    let (_, hook_out, _) = n.sh("envs", "cat ~/app-root/data/deploy-hook");
    let (pwd, greet) = hook_out.trim().split_once(' ').unwrap();
    assert!(pwd.starts_with("/home/envs/app-deployments/"), "{hook_out}");
    assert_eq!(greet, format!("{pwd}/.venv/bin/greet"), "{hook_out}");

    // /app is the live deployment, and follows the switch to the next one.
    let (_, first, _) = n.sh("envs", "pwd; cat /app/page.txt");
    write_files(&dir, &[("page.txt", "two")]);
    commit(&dir, "two");
    assert!(push(&d, &dir, "envs").0);
    assert_eq!(get(n, "envs", "/"), (200, "two".to_string()));
    let (_, second, _) = n.sh("envs", "pwd; cat /app/page.txt; echo; echo $PATH");
    let lines: Vec<&str> = second.lines().collect();
    assert_ne!(
        first.lines().next(),
        lines.first().copied(),
        "run did not move to the new deployment"
    );
    assert_eq!(lines[1], "two", "{second}");
    assert_eq!(
        lines[2],
        format!("{}/.venv/bin:/usr/local/bin:/usr/bin:/bin", lines[0]),
        "{second}"
    );
    // /app is read-only for the gear: a link in its root, not something the app can replace.
    let (code, _, _) = n.sh("envs", "rm /app || ln -sfn /tmp /app");
    assert_ne!(code, 0);
}

/// Records how it ran: the app's variable, its directory, where /app pointed (before the switch
/// it is not the new deployment yet); fails when `fail` exists in the deployment.
const RELEASE: &str = r#"echo "$GREETING $(pwd) $(readlink -f /app)" >> "$OPENSHIFT_DATA_DIR/release.log"
if [ -e fail ]; then echo "migration failed" >&2; exit 3; fi
"#;

#[test]
fn the_release_command_runs_before_the_switch_and_a_failing_one_keeps_the_old_deployment() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "rel", "--cartridge", "python", "--owner", "dev"]);
    n.ok(&["env", "set", "rel", "GREETING=hi"]);
    let dir = app_repo(
        n,
        "rel",
        &[
            (
                "Procfile",
                "# Heroku's release phase\nweb: python3 -u server.py\nrelease: sh release.sh\n",
            ),
            ("release.sh", RELEASE),
            ("server.py", SERVER),
            ("page.txt", "v1"),
        ],
    );
    let (ok, out) = push(&d, &dir, "rel");
    assert!(ok, "{out}");
    assert!(out.contains("remote: -----> release: sh release.sh"), "{out}");
    assert_eq!(get(n, "rel", "/"), (200, "v1".to_string()));

    write_files(&dir, &[("page.txt", "v2"), ("fail", "")]);
    commit(&dir, "v2 with a failing release");
    let (ok, out) = push(&d, &dir, "rel");
    assert!(!ok, "a failing release was deployed: {out}");
    assert!(out.contains("migration failed"), "{out}");
    assert!(
        out.contains("the release command `sh release.sh` failed with exit code 3; push rejected"),
        "{out}"
    );
    assert_eq!(get(n, "rel", "/"), (200, "v1".to_string()), "{out}");

    std::fs::remove_file(dir.join("fail")).unwrap();
    write_files(&dir, &[("page.txt", "v3")]);
    commit(&dir, "v3");
    assert!(push(&d, &dir, "rel").0);
    assert_eq!(get(n, "rel", "/"), (200, "v3".to_string()));
    let (_, log, _) = n.sh("rel", "cat ~/app-root/data/release.log");
    let lines: Vec<Vec<&str>> = log.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 3, "not once per push: {log}");
    for l in &lines {
        assert_eq!(l[0], "hi", "{log}");
        assert!(l[1].starts_with("/home/rel/app-deployments/"), "{log}");
        assert_ne!(l[1], l[2], "the release ran after the switch: {log}");
    }
}

#[test]
fn app_json_scripts_run_around_the_switch_and_a_malformed_app_json_fails_the_push() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "dok", "--cartridge", "python", "--owner", "dev"]);
    let log = r#"echo $(readlink -f /app) $(pwd) >> $OPENSHIFT_DATA_DIR/scripts.log"#;
    let app_json = format!(
        "{{\n  // Dokku tolerates comment lines\n  \"name\": \"dok\",\n  \"scripts\": {{\"dokku\": {{\n    \"predeploy\": \"echo pre {log}\",\n    \"postdeploy\": \"echo post {log}\"\n  }}}}\n}}\n",
        log = log.replace('"', "\\\"").replace("echo ", "")
    );
    let dir = app_repo(
        n,
        "dok",
        &[
            ("Procfile", "web: python3 -u server.py\n"),
            ("app.json", &app_json),
            ("server.py", SERVER),
            ("page.txt", "one"),
        ],
    );
    let (ok, out) = push(&d, &dir, "dok");
    assert!(ok, "{app_json}\n{out}");
    assert!(out.contains("-----> app.json predeploy: echo pre"), "{out}");
    assert_eq!(get(n, "dok", "/"), (200, "one".to_string()));
    let (_, text, _) = n.sh("dok", "cat ~/app-root/data/scripts.log");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0][0], "pre", "{text}");
    assert_ne!(lines[0][1], lines[0][2], "predeploy ran after the switch: {text}");
    assert_eq!(lines[1][0], "post", "{text}");
    assert_eq!(lines[1][1], lines[1][2], "postdeploy ran before the switch: {text}");

    write_files(
        &dir,
        &[("app.json", "{\"scripts\": {\"dokku\": {}},}\n"), ("page.txt", "two")],
    );
    commit(&dir, "a trailing comma");
    let (ok, out) = push(&d, &dir, "dok");
    assert!(!ok, "{out}");
    assert!(
        out.contains("remote: -----> FAILED: app.json is not valid: trailing comma at line 1"),
        "{out}"
    );
    assert_eq!(get(n, "dok", "/"), (200, "one".to_string()));
}

#[test]
fn app_json_healthchecks_gate_the_switch_and_herokus_postdeploy_runs_on_the_first_deploy_only() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "hc", "--cartridge", "python", "--owner", "dev"]);
    let app_json = r#"{
  // Dokku's healthchecks; Heroku's postdeploy (first deploy only) beside Dokku's (every deploy)
  "healthchecks": {"web": [
    {"type": "startup", "name": "page ready", "description": "the page names its version",
     "path": "/ready", "content": "version", "attempts": 2, "timeout": 2, "wait": 0, "initialDelay": 0},
    {"type": "liveness", "path": "/never-run-at-deploy", "content": "nothing has this"}
  ]},
  "scripts": {
    "postdeploy": {"command": "echo seeded >> $OPENSHIFT_DATA_DIR/seed.log"},
    "dokku": {"postdeploy": "echo deployed >> $OPENSHIFT_DATA_DIR/deploys.log"}
  }
}
"#;
    let dir = app_repo(
        n,
        "hc",
        &[
            // Says which page it serves (what a failed check shows the pusher).
            (
                "Procfile",
                "web: sh -c 'echo serving $(cat page.txt); exec python3 -u server.py'\n",
            ),
            ("app.json", app_json),
            ("server.py", SERVER),
            ("page.txt", "version 1"),
        ],
    );
    let (ok, out) = push(&d, &dir, "hc");
    assert!(ok, "{out}");
    assert!(
        out.contains("remote: -----> healthchecks: the new web process must pass 'page ready' before it goes live"),
        "{out}"
    );
    assert!(out.contains("app.json postdeploy (first deploy): echo seeded"), "{out}");
    assert_eq!(get(n, "hc", "/"), (200, "version 1".to_string()));

    // A page without the content: the check fails, the push is rejected, the old one serves.
    write_files(&dir, &[("page.txt", "broken")]);
    commit(&dir, "a page the check refuses");
    let (ok, out) = push(&d, &dir, "hc");
    assert!(!ok, "a deployment failing its healthcheck went live:\n{out}");
    assert!(
        out.contains(
            "app.json healthcheck 'page ready' failed after 2 attempt(s): GET /ready answered 200 without \"version\" in its body"
        ),
        "{out}"
    );
    assert!(
        out.contains("serving broken"),
        "the new process's last lines are not shown:\n{out}"
    );
    assert!(out.contains("keeps serving"), "{out}");
    assert_eq!(get(n, "hc", "/"), (200, "version 1".to_string()));

    write_files(&dir, &[("page.txt", "version 3")]);
    commit(&dir, "v3");
    let (ok, out) = push(&d, &dir, "hc");
    assert!(ok, "{out}");
    assert!(!out.contains("first deploy"), "{out}");
    assert_eq!(get(n, "hc", "/"), (200, "version 3".to_string()));
    let (_, seeded, _) = n.sh("hc", "cat ~/app-root/data/seed.log");
    assert_eq!(seeded, "seeded\n", "Heroku's postdeploy is for the first deploy only");
    let (_, deploys, _) = n.sh("hc", "cat ~/app-root/data/deploys.log");
    assert_eq!(
        deploys, "deployed\ndeployed\n",
        "Dokku's postdeploy runs on every deploy"
    );

    // A check gearshift cannot honour fails the push before any build, saying what to change.
    write_files(
        &dir,
        &[(
            "app.json",
            r#"{"healthchecks": {"web": [{"path": "/", "scheme": "https"}]}}"#,
        )],
    );
    commit(&dir, "https check");
    let (ok, out) = push(&d, &dir, "hc");
    assert!(!ok, "{out}");
    assert!(
        out.contains("healthcheck GET /: scheme 'https' is not supported"),
        "{out}"
    );
    assert_eq!(get(n, "hc", "/"), (200, "version 3".to_string()));
}

#[test]
fn procfile_process_types_run_as_formation_says_each_with_its_log_and_restart_after_a_crash() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "work", "--cartridge", "python", "--owner", "dev"]);
    let procfile = "# five types, comments and blank lines\n\nweb: python3 -u server.py\nworker: sh worker.sh # the queue\nclock: sh clock.sh\nurgent: sh worker.sh\nrelease: true\n";
    let dir = app_repo(
        n,
        "work",
        &[
            ("Procfile", procfile),
            (
                "app.json",
                r#"{"formation": {"worker": {"quantity": 1}, "urgent": {"quantity": 0}}}"#,
            ),
            (
                "worker.sh",
                "echo \"worker up in $(pwd)\"\nwhile :; do sleep 0.2; done\n",
            ),
            ("clock.sh", "echo clock up\nwhile :; do sleep 0.2; done\n"),
            ("server.py", SERVER),
            ("page.txt", "one"),
        ],
    );
    let (ok, out) = push(&d, &dir, "work");
    assert!(ok, "{out}");
    assert_eq!(get(n, "work", "/"), (200, "one".to_string()));
    let live = |n: &TestNode| n.sh("work", "readlink -f /app").1.trim().to_string();
    let workers = |n: &TestNode| {
        n.sh("work", "pgrep -f '^sh worker.sh' | tr '\\n' ' '")
            .1
            .trim()
            .to_string()
    };
    let first = live(n);
    let log_has = |n: &TestNode, what: &str| n.sh("work", "cat ~/app-root/logs/worker.log").1.contains(what);
    assert!(
        eventually(std::time::Duration::from_secs(10), || log_has(
            n,
            &format!("worker up in {first}")
        )),
        "no worker output in worker.log"
    );
    let pid = workers(n);
    assert_eq!(pid.split(' ').count(), 1, "not one worker: {pid:?}");
    let (_, clock, _) = n.sh(
        "work",
        "pgrep -fc '^sh clock.sh'; test -e ~/app-root/logs/clock.log && echo log",
    );
    assert_eq!(clock.trim(), "0", "clock runs with quantity 0");
    let st: serde_json::Value = serde_json::from_str(&n.ok(&["app", "status", "work", "--json"])).unwrap();
    assert_eq!(st["processes"][0][0], "worker.1", "{st}");

    // A crash: restarted (after 1 s), and its exit noted in the web log.
    n.sh("work", &format!("kill -9 {pid}"));
    assert!(
        eventually(std::time::Duration::from_secs(10), || {
            let now = workers(n);
            !now.is_empty() && now != pid && now.split(' ').count() == 1
        }),
        "the worker was not restarted"
    );
    assert!(n
        .sh("work", "cat ~/app-root/logs/web.log")
        .1
        .contains("worker.1 exited (signal 9)"));

    // A redeploy replaces it with the new deployment's.
    write_files(&dir, &[("page.txt", "two")]);
    commit(&dir, "two");
    assert!(push(&d, &dir, "work").0);
    assert_eq!(get(n, "work", "/"), (200, "two".to_string()));
    let second = live(n);
    assert_ne!(first, second);
    assert!(
        eventually(std::time::Duration::from_secs(15), || {
            log_has(n, &format!("worker up in {second}")) && workers(n).split(' ').count() == 1
        }),
        "the new deployment's worker did not replace the old one: {}",
        workers(n)
    );
}

/// `ssh ... CMD` as the dev user: (success, stdout, stderr).
fn ssh_cmd(d: &DevNode, cmd: &str) -> (bool, String, String) {
    let o = d.n.ssh(&d.key, &[], Some(cmd), b"");
    (o.status.success(), text(&o.stdout), text(&o.stderr))
}

/// `app create APP` over SSH, without --cartridge; what it printed.
fn ssh_create(d: &DevNode, app: &str) -> String {
    let (ok, out, err) = ssh_cmd(d, &format!("app create {app}"));
    assert!(ok, "{out}{err}");
    out
}

/// The command lines of APP's gear 0 (`run APP ps -eo args`) that run `what`.
fn ps_lines(d: &DevNode, app: &str, what: &str) -> Vec<String> {
    let (_, out, _) = ssh_cmd(d, &format!("run {app} ps -eo args"));
    out.lines().filter(|l| l.contains(what)).map(String::from).collect()
}

#[test]
fn a_worker_only_app_deploys_when_its_worker_stays_up_and_is_not_routed() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "queue", "--cartridge", "python", "--owner", "dev"]);
    let dir = example_repo(n, "heroku-worker");
    let (ok, out) = push(&d, &dir, "queue");
    assert!(ok, "the worker-only app did not deploy:\n{out}");
    // Its output, prefixed like Heroku's, in `logs` over SSH.
    assert!(
        eventually(std::time::Duration::from_secs(10), || ssh_cmd(&d, "logs queue")
            .1
            .contains("worker.1 | worker tick")),
        "no worker output in logs: {}",
        ssh_cmd(&d, "logs queue").1
    );
    let (ok, typed, err) = ssh_cmd(&d, "logs queue --type worker -n 5");
    assert!(ok, "{err}");
    assert!(
        typed.lines().count() == 5 && typed.lines().all(|l| l.starts_with("worker.1 | ")),
        "{typed}"
    );
    // Exactly one worker, and no web process: nothing routed.
    let workers = ps_lines(&d, "queue", "python3 -u worker.py");
    assert_eq!(workers.len(), 1, "{workers:?}");
    let (code, _) = get(n, "queue", "/");
    assert_ne!(code, 200, "a worker-only app is not routed");
    let (ok, status, err) = ssh_cmd(&d, "app status queue");
    assert!(ok, "{status}{err}");
    assert!(
        status.contains("web=0") && status.contains("worker=1 (1 running)"),
        "{status}"
    );
    assert!(n
        .ok(&["app", "show", "queue"])
        .contains("processes: web=0, worker=1 (1 running)"));

    // A worker that dies at once fails the push with its last lines; the old one keeps running.
    write_files(
        &dir,
        &[(
            "worker.py",
            "import sys\nprint('boom: no queue configured', flush=True)\nsys.exit(3)\n",
        )],
    );
    commit(&dir, "a broken worker");
    let (ok, out) = push(&d, &dir, "queue");
    assert!(!ok, "a worker that exits at once was deployed:\n{out}");
    assert!(out.contains("worker.1 exited (exit code 3)"), "{out}");
    assert!(out.contains("boom: no queue configured"), "{out}");
    assert!(
        eventually(std::time::Duration::from_secs(10), || {
            let w = ps_lines(&d, "queue", "python3 -u worker.py");
            w.len() == 1 && ssh_cmd(&d, "app status queue").1.contains("worker=1 (1 running)")
        }),
        "the previous deployment's worker is not back: {:?}",
        ps_lines(&d, "queue", "python3")
    );
}

#[test]
fn app_scale_sets_each_type_and_logs_show_every_type_or_one() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "mixed", "--cartridge", "python", "--owner", "dev"]);
    let dir = app_repo(
        n,
        "mixed",
        &[
            (
                "Procfile",
                "web: python3 -u server.py\nworker: sh worker.sh\nclock: sh clock.sh\n",
            ),
            ("worker.sh", "echo \"worker $$ up\"\nwhile :; do sleep 0.3; done\n"),
            ("clock.sh", "while :; do sleep 1; done\n"),
            ("server.py", &format!("print('web up', flush=True)\n{SERVER}")),
            ("page.txt", "one"),
        ],
    );
    let (ok, out) = push(&d, &dir, "mixed");
    assert!(ok, "{out}");
    assert_eq!(get(n, "mixed", "/"), (200, "one".to_string()));
    // Dokku's defaults: web 1, the others 0.
    let (_, status, _) = ssh_cmd(&d, "app status mixed");
    assert!(
        status.contains("web=1 (1 running)") && status.contains("worker=0") && status.contains("clock=0"),
        "{status}"
    );

    // Per type, over SSH; an unknown type is refused with what there is.
    let (ok, _, err) = ssh_cmd(&d, "app scale mixed emailer=1");
    assert!(
        !ok && err.contains("no process type 'emailer'") && err.contains("worker"),
        "{err}"
    );
    let (ok, said, err) = ssh_cmd(&d, "app scale mixed web=1 worker=2");
    assert!(ok, "{err}");
    assert!(said.contains("web=1 worker=2"), "{said}");
    assert!(
        eventually(std::time::Duration::from_secs(10), || ps_lines(
            &d,
            "mixed",
            "sh worker.sh"
        )
        .len()
            == 2),
        "{:?}",
        ps_lines(&d, "mixed", "sh worker.sh")
    );
    let (_, status, _) = ssh_cmd(&d, "app status mixed");
    assert!(status.contains("worker=2 (2 running)"), "{status}");
    assert_eq!(get(n, "mixed", "/"), (200, "one".to_string()));

    // `logs`: every type, prefixed; `--type worker`: only the workers'.
    assert!(
        eventually(std::time::Duration::from_secs(10), || {
            let all = ssh_cmd(&d, "logs mixed -n 200").1;
            all.contains("web.1 | web up") && all.contains("worker.1 | worker") && all.contains("worker.2 | worker")
        }),
        "{}",
        ssh_cmd(&d, "logs mixed -n 200").1
    );
    let (_, workers, _) = ssh_cmd(&d, "logs mixed --type worker");
    assert!(
        !workers.is_empty() && workers.lines().all(|l| l.starts_with("worker.")),
        "{workers}"
    );
    let (ok, _, err) = ssh_cmd(&d, "logs mixed --type 'a;b'");
    assert!(!ok && err.contains("not a process type name"), "{err}");

    // The quantities survive a redeploy and a restart.
    write_files(&dir, &[("page.txt", "two")]);
    commit(&dir, "two");
    assert!(push(&d, &dir, "mixed").0);
    assert_eq!(get(n, "mixed", "/"), (200, "two".to_string()));
    n.ok(&["app", "restart", "mixed"]);
    assert!(
        eventually(std::time::Duration::from_secs(10), || ps_lines(
            &d,
            "mixed",
            "sh worker.sh"
        )
        .len()
            == 2),
        "{:?}",
        ps_lines(&d, "mixed", "sh worker.sh")
    );

    // A bare N still means web gears; the workers stay in gear 0.
    let (ok, said, err) = ssh_cmd(&d, "app scale mixed 2");
    assert!(ok, "{err}");
    assert!(said.contains("web=2 worker=2"), "{said}");
    let (_, status, _) = ssh_cmd(&d, "app status mixed");
    assert!(
        status.contains("web=2 (2 running)") && status.contains("worker=2 (2 running)"),
        "{status}"
    );
    let (_, in_gear1, _) = n.sh_gear("mixed", 1, "pgrep -fc '^sh worker.sh' || true");
    assert_eq!(in_gear1.trim(), "0");
    // worker=0 stops them.
    let (ok, _, err) = ssh_cmd(&d, "app scale mixed worker=0");
    assert!(ok, "{err}");
    assert!(
        eventually(std::time::Duration::from_secs(15), || ps_lines(
            &d,
            "mixed",
            "sh worker.sh"
        )
        .is_empty()),
        "{:?}",
        ps_lines(&d, "mixed", "sh worker.sh")
    );
}

#[test]
fn cron_jobs_from_app_json_and_openshift_folders_run_every_minute_in_the_gear() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "sched", "--cartridge", "python", "--owner", "dev"]);
    n.ok(&["env", "set", "sched", "GREETING=hello"]);
    let cron = |schedule: &str| {
        format!(
            r#"{{"cron": [{{"command": "echo \"cron $GREETING in $(pwd) as $(id -u)\" | tee -a $HOME/cron.txt", "schedule": "{schedule}"}}]}}"#
        )
    };
    // A bad schedule fails the push, naming the entry.
    let dir = app_repo(
        n,
        "sched",
        &[
            ("Procfile", "web: python3 -u server.py\n"),
            ("server.py", SERVER),
            ("page.txt", "one"),
            ("app.json", &cron("*/5 * * *")),
            (
                ".openshift/cron/minutely/tick",
                "#!/bin/sh\necho \"tick $(date +%s)\" >> $HOME/tick.txt\nexec sleep 600\n",
            ),
        ],
    );
    std::fs::set_permissions(
        dir.join(".openshift/cron/minutely/tick"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    commit(&dir, "executable tick");
    let (ok, out) = push(&d, &dir, "sched");
    assert!(!ok && out.contains("app.json cron entry 1"), "{out}");

    write_files(&dir, &[("app.json", &cron("* * * * *"))]);
    commit(&dir, "every minute");
    let (ok, out) = push(&d, &dir, "sched");
    assert!(ok, "{out}");
    assert!(out.contains("cron: 2 scheduled job(s)"), "{out}");
    let (ok, list, err) = ssh_cmd(&d, "cron list sched");
    assert!(ok, "{err}");
    assert!(
        list.contains(".openshift/cron/minutely") && list.contains("app.json") && list.contains("* * * * *"),
        "{list}"
    );
    // Within the next minute boundary (at most ~60 s): wait on the files, not a clock.
    assert!(
        eventually(std::time::Duration::from_secs(80), || {
            n.sh("sched", "cat ~/cron.txt ~/tick.txt 2>/dev/null")
                .1
                .contains("tick")
                && n.sh("sched", "cat ~/cron.txt 2>/dev/null").1.contains("cron hello in")
        }),
        "no cron run: {}",
        n.sh("sched", "cat ~/app-root/logs/web.log").1
    );
    let (_, line, _) = n.sh("sched", "head -1 ~/cron.txt");
    assert!(
        line.contains("cron hello in /home/sched/app-deployments/")
            && line
                .trim_end()
                .ends_with(&format!("as {}", n.show("sched")["gears"][0]["uid"])),
        "not in the deployment as the gear user with the app's env: {line}"
    );
    let (_, logs, _) = ssh_cmd(&d, "logs sched --type cron");
    assert!(logs.contains("cron.2 | cron hello in"), "{logs}");
    assert!(logs.lines().all(|l| l.starts_with("cron.")), "{logs}");

    // A job still running (the tick sleeps) ends with `app stop`.
    assert_eq!(ps_lines(&d, "sched", "sleep 600").len(), 1);
    let (ok, _, err) = ssh_cmd(&d, "app stop sched");
    assert!(ok, "{err}");
    let left = ps_lines(&d, "sched", "sleep 600");
    assert!(left.is_empty(), "a cron job outlived app stop: {left:?}");
}

#[test]
fn app_create_without_a_cartridge_detects_it_at_the_first_push_and_cartridge_overrides() {
    require_root!();
    let d = dev_node();
    let n = &d.n;

    // Created over SSH with no cartridge: the first push of a repo gearshift cannot place fails
    // and says what it recognises; nothing is recorded.
    let out = ssh_create(&d, "site");
    assert!(out.contains("detected at the first push"), "{out}");
    let dir = app_repo(
        n,
        "site",
        &[("Procfile", "web: ./main\n"), ("main.go", "package main\n")],
    );
    let (ok, out) = push(&d, &dir, "site");
    assert!(!ok, "an undetectable repo deployed:\n{out}");
    for want in [
        "cannot tell which cartridge",
        "requirements.txt -> python",
        "package.json -> nodejs",
        "index.html -> static",
        "--cartridge",
    ] {
        assert!(out.contains(want), "missing {want:?}:\n{out}");
    }
    let (_, show, _) = ssh_cmd(&d, "app show site");
    assert!(show.contains("detected at the first push"), "{show}");

    // index.html only: static, said in a remote: line, recorded, and still so after a restart
    // (the gear then starts with that cartridge alone).
    std::fs::remove_file(dir.join("Procfile")).unwrap();
    write_files(&dir, &[("index.html", "<h1>detected static</h1>\n")]);
    commit(&dir, "a page");
    let (ok, out) = push(&d, &dir, "site");
    assert!(ok, "{out}");
    assert!(
        out.contains("remote: -----> detected static (because index.html)"),
        "{out}"
    );
    assert!(get(n, "site", "/").1.contains("detected static"));
    let (_, show, _) = ssh_cmd(&d, "app show site");
    assert!(show.contains("cartridge: static cartridge"), "{show}");
    n.ok(&["app", "stop", "site"]);
    n.ok(&["app", "start", "site"]);
    let (code, page) = get(n, "site", "/");
    assert_eq!((code, page.contains("detected static")), (200, true), "{page}");

    // requirements.txt: python (an empty one needs no PyPI), its Procfile's web runs.
    n.ok(&["app", "create", "py", "--owner", "dev"]);
    let files = [
        ("requirements.txt", "# nothing yet\n"),
        ("index.html", "not served\n"),
        ("page.txt", "served by python\n"),
        ("server.py", SERVER),
        (
            "Procfile",
            "web: sh -c 'echo \"ip=$OPENSHIFT_PYTHON_IP port=$OPENSHIFT_PYTHON_PORT\" >> page.txt; exec python server.py'\n",
        ),
    ];
    let dir = app_repo(n, "py", &files);
    let (ok, out) = push(&d, &dir, "py");
    assert!(ok, "{out}");
    assert!(
        out.contains("remote: -----> detected python (because requirements.txt)"),
        "{out}"
    );
    let page = get(n, "py", "/").1;
    assert!(page.contains("served by python"), "{page}");
    // The detected cartridge's OPENSHIFT_<CART>_* names, already on the first deploy.
    let ip = n.ok(&["app", "show", "py"]);
    assert!(page.contains(" port=8080") && !page.contains("ip= "), "{page}\n{ip}");

    // Scaled before its first push: gear 0 detects, the other gear builds with the same
    // cartridge (its virtualenv) and runs with its names.
    n.ok(&["app", "create", "duo", "--owner", "dev"]);
    n.ok(&["app", "scale", "duo", "2"]);
    let duo = app_repo(n, "duo", &files);
    let (ok, out) = push(&d, &duo, "duo");
    assert!(ok, "{out}");
    for gear in [0, 1] {
        let (code, o, e) = n.sh_gear(
            "duo",
            gear,
            "test -x ~/app-root/repo/.venv/bin/python && echo venv; cat ~/app-root/repo/page.txt",
        );
        assert_eq!(code, 0, "gear {gear}: {o}{e}");
        assert!(o.starts_with("venv\n") && o.contains(" port=8080"), "gear {gear}: {o}");
        assert!(!o.contains("ip= "), "gear {gear} has no OPENSHIFT_PYTHON_IP: {o}");
    }
    assert!(ssh_cmd(&d, "app show duo").1.contains("cartridge: python"));
    // The next push detects nothing: the cartridge is the app's now.
    write_files(&dir, &[("page.txt", "again\n")]);
    commit(&dir, "again");
    let (ok, out) = push(&d, &dir, "py");
    assert!(ok && !out.contains("detected"), "{out}");
    assert!(get(n, "py", "/").1.contains("again"));

    // --cartridge overrides what the files say.
    n.ok(&["app", "create", "forced", "--cartridge", "static", "--owner", "dev"]);
    let dir = app_repo(
        n,
        "forced",
        &[
            ("requirements.txt", "flask\n"),
            ("index.html", "<p>forced static</p>\n"),
        ],
    );
    let (ok, out) = push(&d, &dir, "forced");
    assert!(ok && !out.contains("detected"), "{out}");
    assert!(get(n, "forced", "/").1.contains("forced static"));
}

/// The exact version of the host's /usr/bin/python3, and its minor.
fn host_python() -> (String, String) {
    let o = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import platform, sys; print(platform.python_version()); print(sys.version_info[1])",
        ])
        .output()
        .unwrap();
    let out = text(&o.stdout);
    let mut l = out.lines();
    (l.next().unwrap().to_string(), l.next().unwrap().to_string())
}

#[test]
fn runtime_pins_choose_an_installed_interpreter_or_fail_with_what_is_installed() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    let (exact, minor) = host_python();

    // runtime.txt with another patch release of an installed 3.X: that interpreter, named exactly,
    // and the app's processes run on it.
    n.ok(&["app", "create", "pinned", "--cartridge", "python", "--owner", "dev"]);
    let files = [
        ("runtime.txt", format!("python-3.{minor}.99\n")),
        ("page.txt", "pinned\n".to_string()),
        ("server.py", SERVER.to_string()),
        ("Procfile", "web: python server.py\n".to_string()),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let dir = app_repo(n, "pinned", &files);
    let (ok, out) = push(&d, &dir, "pinned");
    assert!(ok, "{out}");
    let note = format!(
        "remote: -----> runtime.txt asks for python-3.{minor}.99: using python {exact} (/usr/bin/python3.{minor})"
    );
    assert!(out.contains(&note), "missing {note:?}:\n{out}");
    assert!(get(n, "pinned", "/").1.contains("pinned"));
    let (ok, v, err) = ssh_cmd(&d, "run pinned python -c 'import sys; print(sys.prefix)'");
    assert!(
        ok && v.contains("/.venv"),
        "the pin's venv is not first on PATH: {v}{err}"
    );

    // A python nobody installed: the build fails with what is installed and how to add one; the
    // pinned version keeps serving.
    write_files(&dir, &[("runtime.txt", "python-3.99.1\n"), ("page.txt", "never\n")]);
    commit(&dir, "3.99");
    let (ok, out) = push(&d, &dir, "pinned");
    assert!(!ok, "{out}");
    for want in [
        "runtime.txt asks for python 3.99".to_string(),
        format!("installed: {exact} (/usr/bin/python3.{minor})"),
        "apt-get install python3.99".into(),
    ] {
        assert!(out.contains(&want), "missing {want:?}:\n{out}");
    }
    assert!(get(n, "pinned", "/").1.contains("pinned"));

    // .python-version, major.minor only.
    std::fs::remove_file(dir.join("runtime.txt")).unwrap();
    write_files(
        &dir,
        &[
            (".python-version", &format!("3.{minor}\n")),
            ("page.txt", "by .python-version\n"),
        ],
    );
    commit(&dir, ".python-version");
    let (ok, out) = push(&d, &dir, "pinned");
    assert!(
        ok && out.contains(&format!(".python-version asks for 3.{minor}: using python {exact}")),
        "{out}"
    );
    assert!(get(n, "pinned", "/").1.contains("by .python-version"));

    // engines.node: satisfied by the installed node (named exactly), or the build fails naming
    // it and NodeSource.
    let node = text(&Command::new("/usr/bin/node").arg("--version").output().unwrap().stdout);
    let node = node.trim().trim_start_matches('v').to_string();
    let major = node.split('.').next().unwrap().to_string();
    n.ok(&["app", "create", "engines", "--owner", "dev"]);
    let server = "require('http').createServer((q, s) => s.end('node ' + process.version)).listen(process.env.PORT);\n";
    let pkg = |range: &str| {
        format!("{{\"name\": \"engines\", \"engines\": {{\"node\": \"{range}\"}}, \"scripts\": {{\"start\": \"node server.js\"}}}}\n")
    };
    let dir = app_repo(
        n,
        "engines",
        &[("package.json", &pkg(&format!("^{major}"))), ("server.js", server)],
    );
    let (ok, out) = push(&d, &dir, "engines");
    assert!(ok, "{out}");
    let note = format!("package.json engines.node asks for ^{major}: using node {node} (/usr/bin/node)");
    assert!(out.contains(&note), "missing {note:?}:\n{out}");
    assert!(get(n, "engines", "/").1.contains(&format!("node v{node}")));
    write_files(&dir, &[("package.json", &pkg(">=99"))]);
    commit(&dir, "node 99");
    let (ok, out) = push(&d, &dir, "engines");
    assert!(
        !ok && out.contains(&format!("installed: {node} (/usr/bin/node)")) && out.contains("NodeSource"),
        "{out}"
    );
    assert!(get(n, "engines", "/").1.contains(&format!("node v{node}")));

    // doctor lists what pins can choose.
    let doctor = text(&n.gs(&["doctor"]).stdout);
    assert!(
        doctor.contains(&format!("{exact} (/usr/bin/python3.{minor})")),
        "{doctor}"
    );
    assert!(doctor.contains(&format!("{node} (/usr/bin/node)")), "{doctor}");
}

#[test]
fn an_express_app_with_a_lock_file_and_no_procfile_builds_and_starts_with_npm_start() {
    require_root!();
    if offline_leaves_out(&test_name!(), "the whole test (Express comes from the npm registry)") {
        return;
    }
    let d = dev_node();
    let n = &d.n;
    ssh_create(&d, "shop");
    let dir = example_repo(n, "heroku-express");
    let (ok, out) = push(&d, &dir, "shop");
    assert!(ok, "the Express app did not deploy:\n{out}");
    for want in [
        "remote: -----> detected nodejs (because package.json)",
        "package.json engines.node asks for >=18: using node",
        "Installing dependencies with npm ci (package-lock.json",
        "Running the build script of package.json (npm run build)",
        "wrote dist/banner.txt",
    ] {
        assert!(out.contains(want), "missing {want:?}:\n{out}");
    }
    let (code, page) = get(n, "shop", "/");
    assert_eq!(code, 200, "{page}\n{out}");
    assert!(page.contains("Hello from Express 4.21.2"), "{page}");
    assert!(page.contains("built by npm run build with node v"), "{page}");

    // A code change: node_modules reused, the build script runs again.
    let build = std::fs::read_to_string(dir.join("build.js")).unwrap();
    write_files(&dir, &[("build.js", &build.replace("built by", "rebuilt by"))]);
    commit(&dir, "rebuild");
    let (ok, out) = push(&d, &dir, "shop");
    assert!(ok, "{out}");
    assert!(out.contains("unchanged: reusing the previous node_modules"), "{out}");
    assert!(out.contains("npm run build"), "{out}");
    assert!(get(n, "shop", "/").1.contains("rebuilt by npm run build"));
}

#[test]
fn a_django_style_app_gets_collectstatic_at_build_unless_disabled() {
    require_root!();
    let d = dev_node();
    let n = &d.n;
    n.ok(&["app", "create", "dj", "--cartridge", "python", "--owner", "dev"]);
    // A stand-in for Django's manage.py (no PyPI needed): collectstatic writes what it was asked.
    let manage = "import sys, os\nos.makedirs('staticfiles', exist_ok=True)\nopen('staticfiles/ran.txt', 'w').write(' '.join(sys.argv[1:]))\nprint('collected 1 static file')\n";
    let settings = "INSTALLED_APPS = ['django.contrib.staticfiles']\n";
    let server = SERVER.replace(
        "open('page.txt')",
        "open('staticfiles/ran.txt' if os.path.exists('staticfiles/ran.txt') else 'page.txt')",
    );
    let files = [
        ("manage.py", manage),
        ("site/settings.py", settings),
        ("page.txt", "no collectstatic\n"),
        ("server.py", server.as_str()),
        ("Procfile", "web: python3 server.py\n"),
    ];
    let dir = app_repo(n, "dj", &files);
    let (ok, out) = push(&d, &dir, "dj");
    assert!(ok, "{out}");
    assert!(out.contains("Running manage.py collectstatic --noinput"), "{out}");
    assert!(out.contains("collected 1 static file"), "{out}");
    assert_eq!(get(n, "dj", "/").1, "collectstatic --noinput");

    // DISABLE_COLLECTSTATIC=1, as on Heroku.
    n.ok(&["env", "set", "dj", "DISABLE_COLLECTSTATIC=1"]);
    write_files(&dir, &[("page.txt", "skipped\n")]);
    commit(&dir, "skip");
    let (ok, out) = push(&d, &dir, "dj");
    assert!(ok && !out.contains("collectstatic"), "{out}");
    assert_eq!(get(n, "dj", "/").1, "skipped\n");
}

#[test]
fn a_django_app_with_whitenoise_manifest_storage_and_a_release_migrate_deploys_unchanged() {
    require_root!();
    if offline_leaves_out(
        &test_name!(),
        "the whole test (Django, WhiteNoise and gunicorn come from PyPI)",
    ) {
        return;
    }
    let d = dev_node();
    let n = &d.n;
    ssh_create(&d, "django");
    let dir = example_repo(n, "heroku-django");
    let (exact, minor) = host_python();
    if minor != "11" {
        // The example pins 3.11, as a Heroku app would; this host's python is another.
        write_files(&dir, &[("runtime.txt", &format!("python-3.{minor}.0\n"))]);
        commit(&dir, "this host's python");
    }
    let (ok, out) = push(&d, &dir, "django");
    assert!(ok, "the Django app did not deploy:\n{out}");
    for want in [
        "remote: -----> detected python (because requirements.txt)".to_string(),
        format!("asks for python-3.{minor}"),
        format!("using python {exact}"),
        "Running manage.py collectstatic --noinput".into(),
        "Applying auth.0001_initial".into(),
    ] {
        assert!(out.contains(&want), "missing {want:?}:\n{out}");
    }
    let (code, page) = get(n, "django", "/");
    assert_eq!(code, 200, "{page}\n{out}");
    assert!(
        page.contains("Hello from Django") && page.contains("migrated: True"),
        "{page}"
    );
    // The manifest storage's hashed name, served by WhiteNoise.
    let css = page
        .split('"')
        .find(|s| s.starts_with("/static/css/site.") && s.ends_with(".css"))
        .unwrap_or_else(|| panic!("no hashed stylesheet in {page}"));
    assert_ne!(css, "/static/css/site.css", "{page}");
    let (code, body) = get(n, "django", css);
    assert_eq!(code, 200, "{css}: {body}");
    assert!(body.contains("#3b5"), "{body}");
}
