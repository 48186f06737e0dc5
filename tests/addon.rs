//! Add-ons as a developer uses them over SSH: a PostgreSQL add-on in a gear of its own, linked
//! to an app that reads and writes rows through DATABASE_URL with psycopg (from PyPI), served
//! through the router; other users' apps cannot reach it; rows survive kill -9 of postgres and
//! of the daemon; unlink takes access away; destroy is refused while linked.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn ssh_ok(n: &TestNode, key: &Path, cmd: &str) -> String {
    let o = n.ssh(key, &[], Some(cmd), b"");
    assert!(
        o.status.success(),
        "ssh `{cmd}` failed: {}{}",
        out(&o.stdout),
        out(&o.stderr)
    );
    out(&o.stdout)
}

fn ssh_fails(n: &TestNode, key: &Path, cmd: &str) -> String {
    let o = n.ssh(key, &[], Some(cmd), b"");
    assert!(!o.status.success(), "ssh `{cmd}` succeeded: {}", out(&o.stdout));
    out(&o.stderr)
}

fn out(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// GET PATH at APP.DOMAIN through the router: (status, body).
fn get(n: &TestNode, app: &str, path: &str) -> (u16, String) {
    let o: Output = Command::new("curl")
        .args(["-s", "-m", "20", "-o", "-", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host: {app}.localhost"))
        .arg(format!("http://127.0.0.1:{}{path}", n.http_port()))
        .output()
        .unwrap();
    let text = out(&o.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// From inside APP's gear: can it open a TCP connection to IP:5432? ("connected" or why not)
fn probe(n: &TestNode, app: &str, ip: &str) -> String {
    let (_, o, e) = n.sh(
        app,
        &format!(
            "python3 -c \"import socket\ntry:\n socket.create_connection(('{ip}', 5432), timeout=3); print('connected')\nexcept Exception as e: print('failed:', e)\""
        ),
    );
    format!("{o}{e}").trim().to_string()
}

/// The postmaster of the add-on gear with uid UID (its children rename themselves).
fn postmaster(uid: u64) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let owner = status
            .lines()
            .find(|l| l.starts_with("Uid:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (owner == uid && cmd.starts_with("/opt/gearshift/cartridge/bin/postgres\0-D")).then_some(pid)
    })
}

fn example_repo(n: &TestNode, name: &str) -> PathBuf {
    let dir = n.root.join("src").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    assert!(Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(&dir)
        .status()
        .unwrap()
        .success());
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "notes"]);
    dir
}

#[test]
fn postgresql_addon_linked_over_ssh_isolated_durable_and_unlinked() {
    require_root!();
    if !Path::new("/usr/lib/postgresql").exists() && !Path::new("/usr/bin/initdb").exists() {
        skip!("the postgresql package is not installed (make deps)");
    }
    if offline_leaves_out(&test_name!(), "the whole test (psycopg from PyPI)") {
        return;
    }
    let mut d = dev_node();
    let n = &d.n;
    let key = d.key.clone();
    let bob = n.add_user("bob");

    // Create over SSH: owned by dev, invisible to bob.
    let t = Instant::now();
    let created = ssh_ok(n, &key, "addon create postgresql notesdb");
    eprintln!("addon create postgresql: {:?}", t.elapsed());
    assert!(created.contains("created postgresql add-on 'notesdb'"), "{created}");
    let list: serde_json::Value = serde_json::from_str(&ssh_ok(n, &key, "addon list --json")).unwrap();
    assert_eq!(list[0]["name"], "notesdb");
    assert_eq!(list[0]["owner"], "dev");
    let bobs: serde_json::Value = serde_json::from_str(&ssh_ok(n, &bob, "addon list --json")).unwrap();
    assert_eq!(bobs, serde_json::json!([]));
    assert!(ssh_fails(n, &bob, "addon show notesdb").contains("unknown add-on 'notesdb'"));
    let show: serde_json::Value = serde_json::from_str(&ssh_ok(n, &key, "addon show notesdb --json")).unwrap();
    let ip = show["gears"][0]["ip"].as_str().unwrap().to_string();
    let password = show["password"].as_str().unwrap().to_string();
    assert_eq!(password.len(), 48);
    assert_eq!(show["url"], format!("postgres://notesdb:{password}@{ip}:5432/notesdb"));
    assert_eq!(show["service"]["state"], "running");
    assert!(n
        .fails(&["app", "create", "notesdb", "--cartridge", "python"])
        .contains("taken by an add-on"));

    // Credentials: root-only, never in the daemon's log.
    for (p, mode) in [
        (n.root.join("secrets"), 0o700),
        (n.root.join("secrets/addons"), 0o700),
        (n.root.join("secrets/addons/notesdb.toml"), 0o600),
    ] {
        let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
            mode,
            "{}",
            p.display()
        );
    }

    // The app, linked before its first push; its page writes and reads rows through psycopg.
    ssh_ok(n, &key, "app create notes --cartridge python");
    assert!(ssh_fails(n, &key, "addon unlink notes notesdb").contains("not linked"));
    let linked = ssh_ok(n, &key, "addon link notes notesdb");
    assert!(
        linked.contains("DATABASE_URL") && linked.contains("OPENSHIFT_POSTGRESQL_DB_HOST"),
        "{linked}"
    );
    assert!(!linked.contains(&password), "link printed the password");
    let dir = example_repo(n, "python-postgres");
    let (ok, log) = push_as(n, &key, &dir, "notes", "main");
    assert!(ok, "{log}");
    assert_eq!(get(n, "notes", "/add?note=one"), (200, "notes: one\n".into()));
    assert_eq!(get(n, "notes", "/add?note=two"), (200, "notes: one,two\n".into()));
    let (_, env, _) = n.sh(
        "notes",
        "echo $OPENSHIFT_POSTGRESQL_DB_HOST:$OPENSHIFT_POSTGRESQL_DB_PORT",
    );
    assert_eq!(env.trim(), format!("{ip}:5432"));

    // A variable the user set is not overwritten: --as names another.
    ssh_ok(n, &key, "app create other --cartridge python");
    ssh_ok(n, &key, "env set other DATABASE_URL=mine");
    let e = ssh_fails(n, &key, "addon link other notesdb");
    assert!(e.contains("already sets DATABASE_URL") && e.contains("--as"), "{e}");
    ssh_ok(n, &key, "addon link other notesdb --as NOTES_URL");
    let (_, env, _) = n.sh("other", "echo $DATABASE_URL $NOTES_URL");
    assert_eq!(
        env.trim(),
        format!("mine postgres://notesdb:{password}@{ip}:5432/notesdb")
    );
    assert_eq!(probe(n, "other", &ip), "connected");
    ssh_ok(n, &key, "addon unlink other notesdb");

    // Another user's app (and an unlinked one) cannot reach the add-on's port.
    n.ok(&["app", "create", "bobapp", "--cartridge", "python", "--owner", "bob"]);
    let r = probe(n, "bobapp", &ip);
    assert!(r.starts_with("failed"), "bob's app reached the add-on: {r}");
    let r = probe(n, "other", &ip);
    assert!(
        r.starts_with("failed"),
        "the unlinked app still reaches the add-on: {r}"
    );
    assert!(ssh_fails(n, &bob, "addon link bobapp notesdb").contains("unknown add-on"));

    // kill -9 of postgres: the supervisor restarts it; committed rows are there.
    let uid = show["gears"][0]["uid"].as_u64().unwrap();
    let pm = postmaster(uid).expect("no postmaster in the add-on's gear");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pm), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(
        eventually(Duration::from_secs(60), || get(n, "notes", "/")
            == (200, "notes: one,two\n".into())),
        "rows did not come back after kill -9 of postgres: {:?}",
        get(n, "notes", "/")
    );
    assert_ne!(postmaster(uid), Some(pm));

    assert!(
        !d.daemon.log_text().contains(&password),
        "the daemon logged the password"
    );

    // kill -9 of the daemon: its start puts the links back into the firewall.
    d.daemon.kill9();
    d.daemon = d.n.start_daemon();
    let n = &d.n;
    assert!(
        eventually(Duration::from_secs(30), || get(n, "notes", "/add?note=three").0 == 200),
        "the app lost its add-on after a daemon restart: {:?}",
        get(n, "notes", "/")
    );
    assert_eq!(get(n, "notes", "/"), (200, "notes: one,two,three\n".into()));

    // Destroy is refused while linked; unlink takes the variables and the access away.
    let e = ssh_fails(n, &key, "addon destroy notesdb --confirm notesdb");
    assert!(e.contains("linked to notes") && e.contains("--force"), "{e}");
    ssh_ok(n, &key, "addon unlink notes notesdb");
    let r = probe(n, "notes", &ip);
    assert!(
        r.starts_with("failed"),
        "the unlinked app still reaches the add-on: {r}"
    );
    let (code, body) = get(n, "notes", "/");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("DATABASE_URL"), "{body}");
    ssh_ok(n, &key, "addon destroy notesdb --confirm notesdb");
    assert_eq!(ssh_ok(n, &key, "addon list --json").trim(), "[]");
    assert!(!n.root.join("secrets/addons/notesdb.toml").exists());
}
