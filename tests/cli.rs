//! The CLI as a node admin uses it: init, doctor, users and apps, and bad input that gets a clear
//! error and creates nothing.

mod common;
use common::*;

#[test]
fn init_is_idempotent_and_doctor_reports() {
    require_root!();
    let n = TestNode::new();
    let before = std::fs::read_to_string(&n.config).unwrap();
    n.ok(&["init"]);
    assert_eq!(
        std::fs::read_to_string(&n.config).unwrap(),
        before,
        "init changed the config"
    );
    // doctor checks the running node too: its daemon, sshd and router.
    let d = n.start_daemon();
    let up = || n.gs(&["status"]).status.success();
    assert!(eventually(std::time::Duration::from_secs(30), up), "{}", d.log_text());
    let o = n.gs(&["doctor"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "doctor failed on a host that has everything:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for word in [
        "cgroup",
        "landlock",
        "seccomp",
        "quota",
        "selinux",
        "nft",
        "sshd",
        "git",
        "daemon",
        "port http",
    ] {
        assert!(
            out.to_lowercase().contains(word),
            "doctor says nothing about {word}:\n{out}"
        );
    }
    let j: serde_json::Value = serde_json::from_str(&n.ok(&["doctor", "--json"])).unwrap();
    assert!(j.as_array().unwrap().len() >= 10);
}

#[test]
fn bad_input_is_refused_and_creates_nothing() {
    require_root!();
    let n = TestNode::new();
    // Two listeners on one port (the admin port defaults to the HTTP port + 2): refused, and
    // neither a config nor a data root is written.
    let (cfg, root) = (n.root.join("clash.toml"), n.root.join("clash"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gearshift"))
        .arg("--config")
        .arg(&cfg)
        .args(["init", "--root"])
        .arg(&root)
        .args(["--http-port", "21990", "--ssh-port", "21992"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "init accepted clashing ports");
    assert!(err.contains("ssh_port and admin_port are both 21992"), "{err}");
    assert!(!cfg.exists() && !root.exists(), "a refused init wrote something");
    for bad in [
        "",
        "1abc",
        "Shop",
        "a_b",
        "a.b",
        "-x",
        "x-",
        "../etc",
        "a b",
        "a;rm -rf /",
        &"a".repeat(33),
        "ça",
    ] {
        let err = n.fails(&["app", "create", bad, "--cartridge", "python"]);
        // clap rejects a leading '-' as an unknown flag before gearshift sees it.
        assert!(
            err.contains("app name") || err.contains("unexpected argument"),
            "unclear error for {bad:?}: {err}"
        );
    }
    let err = n.fails(&["app", "create", "shop", "--cartridge", "cobol"]);
    assert!(
        err.contains("unknown cartridge 'cobol'") && err.contains("python"),
        "{err}"
    );
    let err = n.fails(&["app", "create", "shop", "--cartridge", "python", "--owner", "ghost"]);
    assert!(err.contains("unknown user 'ghost'"), "{err}");
    let err = n.fails(&["app", "create", "shop", "--cartridge", "python", "--profile", "huge"]);
    assert!(err.contains("unknown profile 'huge'"), "{err}");
    assert_eq!(
        n.ok(&["app", "list", "--json"]).trim(),
        "[]",
        "bad input created an app"
    );
    assert!(
        std::fs::read_dir(n.root.join("gears")).unwrap().next().is_none(),
        "bad input created a gear home"
    );

    n.create_app("shop");
    let err = n.fails(&["app", "create", "shop", "--cartridge", "python"]);
    assert!(err.contains("already exists"), "{err}");
    let err = n.fails(&["app", "destroy", "shop", "--confirm", "shoe"]);
    assert!(err.contains("--confirm shop"), "{err}");
    let err = n.fails(&["app", "show", "nope"]);
    assert!(err.contains("unknown app 'nope'"), "{err}");

    let tmp = n.root.join("keys");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("junk.pub"), "ssh-ed25519 not-base64!! x\n").unwrap();
    let err = n.fails(&["user", "add", "alice", "--key", tmp.join("junk.pub").to_str().unwrap()]);
    assert!(!err.is_empty());
    let users: serde_json::Value = serde_json::from_str(&n.ok(&["user", "list", "--json"])).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 0, "an invalid key created a user");
}

#[test]
fn users_and_keys() {
    require_root!();
    let n = TestNode::new();
    let dir = n.root.join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    let (k1, k2) = (
        keygen(&dir, "alice").with_extension("pub"),
        keygen(&dir, "bob").with_extension("pub"),
    );
    let fp1 = String::from_utf8_lossy(
        &std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&k1)
            .output()
            .unwrap()
            .stdout,
    )
    .split_whitespace()
    .nth(1)
    .unwrap()
    .to_string();
    n.ok(&["user", "add", "alice", "--admin", "--key", k1.to_str().unwrap()]);
    let err = n.fails(&["user", "add", "bob", "--key", k1.to_str().unwrap()]);
    assert!(err.contains("alice"), "a key of alice was accepted for bob: {err}");
    n.ok(&["user", "add", "bob", "--key", k2.to_str().unwrap()]);
    let list = n.ok(&["user", "list"]);
    assert!(list.contains("alice") && list.contains("bob"), "{list}");
    let shown = n.ok(&["user", "show", "alice"]);
    assert!(
        shown.contains(&fp1),
        "alice's key is not shown by its fingerprint {fp1}: {shown}"
    );
    n.ok(&["app", "create", "bobs", "--cartridge", "static", "--owner", "bob"]);
    let err = n.fails(&["user", "remove", "bob"]);
    assert!(err.contains("bobs"), "{err}");
    n.ok(&["app", "destroy", "bobs", "--confirm", "bobs"]);
    n.ok(&["user", "remove", "bob"]);
    let users: serde_json::Value = serde_json::from_str(&n.ok(&["user", "list", "--json"])).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 1);
}

/// The test watchdog (`tests/common/watchdog.rs`) as a stuck test meets it: the probe below, run
/// alone in a child test binary with a 2 s limit, still holds its watch past it while a child
/// process of it waits. The binary is aborted, after naming the test, the waiting process and the
/// tail of the node's daemon log.
#[test]
fn a_stuck_test_is_aborted_with_a_picture_of_where_it_waits() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let dir = std::env::temp_dir().join(format!("gearshift-watchdog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("daemon.log"), "the probe's daemon was here\n").unwrap();
    // Its stderr into a file: a pipe would stay open as long as the probe's `sleep`.
    let report = dir.join("stderr");
    let t = std::time::Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "watchdog_probe", "--ignored"])
        .env("GEARSHIFT_TEST_TIMEOUT", "2")
        .env("GEARSHIFT_PROBE_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&report).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = child.id() as i32;
    let status = child.wait().unwrap();
    // The probe's `sleep` outlives its aborted parent: its process group goes now.
    // SAFETY: a signal to the process group the probe made; nothing else is in it.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let e = std::fs::read_to_string(&report).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}\n{e}");
    assert!(
        e.contains("==== TEST WATCHDOG: `watchdog_probe` still holds node probe-node after 2 s"),
        "{e}"
    );
    assert!(e.contains("sleep 300"), "the waiting process is not named:\n{e}");
    assert!(e.contains("the probe's daemon was here"), "no daemon log:\n{e}");
    assert!(e.contains("==== END TEST WATCHDOG"), "{e}");
    assert!(
        t.elapsed() < patience(std::time::Duration::from_secs(60)),
        "{:?}",
        t.elapsed()
    );
}

/// Held by the test above: never ends by itself.
#[test]
#[ignore = "run by a_stuck_test_is_aborted_with_a_picture_of_where_it_waits, in a child binary"]
fn watchdog_probe() {
    let dir = std::path::PathBuf::from(std::env::var("GEARSHIFT_PROBE_DIR").expect("GEARSHIFT_PROBE_DIR"));
    let _watch = common::watchdog::watch("probe-node", &dir);
    std::process::Command::new("sleep").arg("300").status().unwrap();
}

/// What `make vm-test` prints of a failed suite (`scripts/vm/failures.sh`), run on the real
/// output of a test binary whose test failed, with a backtrace as the VM asks for: the test's
/// name and its whole message, and no backtrace.
#[test]
fn a_failed_suite_is_summed_up_by_its_test_names_and_messages() {
    let dir = std::env::temp_dir().join(format!("gearshift-failures-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("probe.log");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "failing_probe", "--ignored"])
        .env("RUST_BACKTRACE", "1")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .status()
        .unwrap();
    assert!(!status.success(), "the probe passed");
    let summary = std::process::Command::new("sh")
        .arg(repo().join("scripts/vm/failures.sh"))
        .arg(&log)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&summary.stdout).into_owned();
    let raw = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(summary.status.success(), "{summary:?}");
    assert!(out.contains("vm-test: failing_probe:"), "{out}\nfrom:\n{raw}");
    assert!(out.contains("the probe failed on purpose"), "{out}");
    assert!(out.contains("and says why on a second line"), "{out}");
    assert!(
        raw.contains("stack backtrace:"),
        "the probe's log has no backtrace to leave out:\n{raw}"
    );
    assert!(!out.contains("stack backtrace"), "{out}");
}

/// Fails on purpose for the test above.
#[test]
#[ignore = "run by a_failed_suite_is_summed_up_by_its_test_names_and_messages, in a child binary"]
fn failing_probe() {
    panic!("the probe failed on purpose\nand says why on a second line");
}
