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
    n.sh("hog", "pkill -f bytearray; true");
    n.sh("burner", "pkill -f 'while True'; true");
}
