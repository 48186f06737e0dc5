//! A push that reports success tells the truth: the router already routes to the new process
//! when `git push` returns, first deploy included.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

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
