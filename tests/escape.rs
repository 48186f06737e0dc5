//! The escape suite: a tenant who owns an app attacks the node from inside its gear
//! (`tests/escape/attack.py`, pushed with the app and started with `ssh ... run`), with hostile
//! build hooks, outward symlinks and a Procfile aimed at the host, and by taking the descriptors
//! of what root starts in the gear. Every attack must fail in its expected way (the table in
//! `tests/escape/expect.rs`), and the neighbouring app of another user keeps answering through
//! the router the whole time. Every isolation mechanism added later adds its attack here.

mod common;
#[path = "escape/expect.rs"]
mod expect;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ATTACK_PY: &str = include_str!("escape/attack.py");

const SERVER: &str = r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        try:
            b = open('page.txt', 'rb').read().strip()
        except OSError as e:
            b = ('unreadable: %s' % e).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#;

/// The attacker's profile: small enough that every exhaustion attack reaches its limit fast.
const PROFILE: &str = "\n[profiles.tight]\nmemory = \"128M\"\ncpu = 1.0\npids = 64\ndisk = \"32M\"\ninodes = 10000\nbandwidth = \"8mbit\"\nio_weight = 100\n";
const QUOTA_BYTES: u64 = 32 << 20;
const INODES: u64 = 10_000;
const BANDWIDTH_KBIT: u64 = 8_000;

/// GET / at `host` through the router on `port`, giving up after 20 s: (status, body).
fn get_at(port: u16, host: &str) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "-m", "20", "-o", "-", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Where the attacker's node lives: not on a tmpfs. The disk attacks fill the gear's quota; the
/// gears' btrfs image on a tmpfs (the test VM's /tmp) is backed by shmem pages that the loop
/// device charges to the writing gear's memory cgroup and that nothing can reclaim, so the
/// 128 MiB gear was OOM-killed by its own disk writes before its quota refused them. (A node's
/// data root on a real disk, as everywhere but a test, has reclaimable page cache there.)
fn base_off_tmpfs() -> PathBuf {
    let base = root_base();
    match nix::sys::statfs::statfs(&base) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC => PathBuf::from("/var/tmp"),
        _ => base,
    }
}

/// What the memory cgroup of APP's first gear says of its OOM kills and what it holds (for a
/// battery that was killed).
fn memory_of(n: &TestNode, app: &str) -> String {
    // The gear's cgroup: APP-INDEX under the node's cgroup parent (gearshift-NODE).
    let found = Command::new("find")
        .args(["/sys/fs/cgroup", "-name", "memory.events", "-path"])
        .arg(format!("*/gearshift-{}/{app}-0/memory.events", n.name))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let Some(events) = found.lines().next().map(PathBuf::from) else {
        return format!("no memory cgroup of {app}-0 found");
    };
    let read = |f: &str| std::fs::read_to_string(events.with_file_name(f)).unwrap_or_default();
    let keep = [
        "anon ",
        "file ",
        "file_dirty",
        "file_writeback",
        "slab_reclaimable",
        "slab_unreclaimable",
        "shmem ",
    ];
    let stat: Vec<String> = read("memory.stat")
        .lines()
        .filter(|l| keep.iter().any(|k| l.starts_with(k)))
        .map(String::from)
        .collect();
    format!("{}; {}", read("memory.events").replace('\n', " "), stat.join(", "))
}

/// GET / at `host` through `n`'s router.
fn get(n: &TestNode, host: &str) -> (u16, String) {
    get_at(n.http_port(), host)
}

/// Creates APP for `owner` (with `profile`), and pushes `files` (plus the web server) with `key`.
fn deploy(n: &TestNode, key: &Path, owner: &str, app: &str, profile: &str, files: &[(&str, &str)]) -> PathBuf {
    n.ok(&[
        "app",
        "create",
        app,
        "--cartridge",
        "python",
        "--owner",
        owner,
        "--profile",
        profile,
    ]);
    let mut all = vec![("Procfile", "web: python3 -u server.py\n"), ("server.py", SERVER)];
    all.extend_from_slice(files);
    let dir = app_repo(n, app, &all);
    let (ok, out) = push_as(n, key, &dir, app, "main");
    assert!(ok, "push of {app}: {out}");
    dir
}

fn wait_page(n: &TestNode, host: &str, want: &str) {
    assert!(
        eventually(Duration::from_secs(30), || {
            let (code, body) = get(n, host);
            code == 200 && body.starts_with(want)
        }),
        "{host} never answered {want:?} (last: {:?})",
        get(n, host)
    );
}

/// Asks the neighbour's page through the router until stopped; every answer that is not its page
/// is kept (with the time it came).
struct Neighbour {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u32, Vec<String>)>,
}

impl Neighbour {
    fn watch(n: &TestNode, host: &str, page: &str) -> Neighbour {
        let stop = Arc::new(AtomicBool::new(false));
        let (port, host, page, flag) = (n.http_port(), host.to_string(), page.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut ok, mut bad) = (0, Vec::new());
            let t = std::time::Instant::now();
            while !flag.load(Ordering::Relaxed) {
                match get_at(port, &host) {
                    (200, body) if body.starts_with(&page) => ok += 1,
                    other => bad.push(format!("after {:?}: {other:?}", t.elapsed())),
                }
                // one request at a time, but no busy loop of curls on a shared 2-core machine
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, bad)
        });
        Neighbour { stop, thread }
    }

    /// Stops asking; asserts that every request was answered with the page.
    fn assert_answered(self, during: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, bad) = self.thread.join().unwrap();
        assert!(ok > 0, "the neighbour was never asked during {during}");
        assert!(
            bad.is_empty(),
            "the neighbour failed {} of {} requests during {during}:\n{}",
            bad.len(),
            ok as usize + bad.len(),
            bad.join("\n")
        );
    }
}

fn assert_no_breach(expected: &[(&str, &[&str])], output: &str, what: &str) {
    let breaches = expect::breaches(expected, output);
    assert!(
        breaches.is_empty(),
        "{} attack(s) of {what} did not fail as they must:\n{}\n\nthe helper's whole output:\n{output}",
        breaches.len(),
        breaches.join("\n")
    );
}

/// The host pid of the process of `uid` whose command line contains `needle`.
fn host_pid(uid: u64, needle: &str) -> u32 {
    let ps = procs_of(uid);
    ps.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no process `{needle}` of uid {uid}:\n{ps}"))
}

#[test]
fn attacks_from_a_gear_fail_and_the_neighbour_keeps_answering() {
    require_root!();
    let x = dev_node_in(&base_off_tmpfs(), |cfg| cfg.push_str(PROFILE));
    let n = &x.n;
    let mallory = n.add_user("mallory");
    deploy(n, &x.key, "dev", "shop", "tight", &[("page.txt", "shop-page")]);
    wait_page(n, "shop.localhost", "shop-page");
    deploy(
        n,
        &mallory,
        "mallory",
        "evil",
        "tight",
        &[("page.txt", "evil-page"), ("attack.py", ATTACK_PY)],
    );
    wait_page(n, "evil.localhost", "evil-page");

    let shop = n.show("shop");
    let gear = &shop["gears"][0];
    let uid = gear["uid"].as_u64().unwrap();
    let root = n.root.display().to_string();
    let ctx = [
        ("victim_ip", gear["ip"].as_str().unwrap().to_string()),
        ("victim_pid", host_pid(uid, "server.py").to_string()),
        ("victim_home", gear["home"].as_str().unwrap().to_string()),
        ("victim_app", "shop".to_string()),
        (
            "victim_env",
            format!("{root}/run/gears/{}/gear.toml", gear["id"].as_str().unwrap()),
        ),
        ("daemon_pid", x.daemon.pid().to_string()),
        ("data_root", root.clone()),
        ("config", n.config.display().to_string()),
        ("ssh_port", n.ssh_port().to_string()),
        ("gateway", format!("{}1", n.subnet_prefix())),
        ("quota_bytes", QUOTA_BYTES.to_string()),
        ("inodes", INODES.to_string()),
        ("bandwidth_kbit", BANDWIDTH_KBIT.to_string()),
    ];
    assert!(
        Path::new(&ctx[4].1).exists(),
        "the victim's gear.toml is not at {} (the attack would test nothing)",
        ctx[4].1
    );
    let args: Vec<String> = ctx.iter().map(|(k, v)| format!("{k}={v}")).collect();

    // The battery, as mallory over SSH, while the neighbour is asked through the router.
    let neighbour = Neighbour::watch(n, "shop.localhost", "shop-page");
    let o = n.ssh(
        &mallory,
        &[],
        Some(&format!("run evil python3 attack.py battery {}", args.join(" "))),
        b"",
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.contains(&format!("DONE {}", expect::EXPECTED.len())),
        "the battery did not finish ({}):\n{out}\n{err}\nthe attacker's gear's memory: {}",
        o.status,
        memory_of(n, "evil")
    );
    neighbour.assert_answered("the battery");
    // The figures (how far each exhaustion got), for --nocapture.
    eprintln!("{out}");
    assert_no_breach(expect::EXPECTED, &out, "the battery");

    // Break 2: a process of the gear takes the descriptors of whatever root starts in it.
    let neighbour = Neighbour::watch(n, "shop.localhost", "shop-page");
    let out = root_started_processes_under_watch(n, &mallory);
    neighbour.assert_answered("the descriptor watch");
    assert_no_breach(expect::WATCH_EXPECTED, &out, "the descriptor watch");

    // And the attacker's own app still works: its limits held it, they did not break it.
    wait_page(n, "evil.localhost", "evil-page");
}

/// Starts the watcher in mallory's gear, then has root run commands in that gear: `run` with a
/// root-only file as stdin (its content a marker), once on a terminal, and verbs that reach
/// into the gear. The root CLI's argv (its `--config` path) and environment carry a second
/// marker that nothing in the gear may see. Ends the watch: its report.
fn root_started_processes_under_watch(n: &TestNode, mallory: &Path) -> String {
    let marker = format!("root-secret-{}-{}", n.slot, std::process::id());
    let caller = n.config.display().to_string();
    let mut watcher = Command::new("ssh")
        .args(ssh_opts(mallory, n.ssh_port()))
        .arg(format!("{}@127.0.0.1", n.ssh_user()))
        .arg(format!("run evil python3 attack.py watch {marker} {caller}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let first = lines.next().map(|l| l.unwrap_or_default());
    assert_eq!(first.as_deref(), Some("watching"), "the watcher did not start");

    let secret = n.root.with_extension("root-secret");
    std::fs::write(&secret, format!("{marker}\n")).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let env = ("GEARSHIFT_ESCAPE_CALLER", caller.as_str());
    // Each command waits (10 s at most) until the watcher has marked it as looked at, and says
    // so: a watch that never saw root's processes cannot pass.
    const SEEN: &str = "looked-at-by-the-watcher";
    let wait = format!(
        "i=0; while [ ! -e /tmp/watched-$$ ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; \
         [ -e /tmp/watched-$$ ] && echo {SEEN}"
    );
    for _ in 0..3 {
        let o = n
            .cmd()
            .args(["run", "evil", "--", "/bin/sh", "-c", &format!("{wait}; cat >/dev/null")])
            .env(env.0, env.1)
            .stdin(std::fs::File::open(&secret).unwrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "root's run in the gear: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(SEEN),
            "the watcher never saw root's run: {o:?}"
        );
    }
    // On a terminal (the operator's shell): the command gets a pty of the gear's own.
    let cmdline = format!("{BIN} --config {caller} run evil -- /bin/sh -c '{wait}'");
    let o = Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .env(env.0, env.1)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "root's run on a terminal: {o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(SEEN),
        "the watcher never saw root's run on a terminal: {o:?}"
    );
    for verb in [
        &["deploy", "list", "evil"][..],
        &["env", "set", "evil", "WATCHED=1"],
        &["logs", "evil", "--lines", "5"],
    ] {
        let o = n
            .cmd()
            .args(verb)
            .env(env.0, env.1)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "`gearshift {}`: {o:?}", verb.join(" "));
    }

    // Closing its stdin ends the watch; it reports what it took.
    drop(watcher.stdin.take());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = watcher.wait().unwrap();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut watcher.stderr.take().unwrap(), &mut err);
    assert!(
        status.success(),
        "the watcher failed ({status}): {}\n{err}",
        rest.join("\n")
    );
    let _ = std::fs::remove_file(&secret);
    rest.join("\n")
}

#[test]
fn hostile_pushes_do_not_reach_the_host() {
    require_root!();
    let x = dev_node_with(|cfg| cfg.push_str(PROFILE));
    let n = &x.n;
    // A marker in the node config: whatever shows it has read the config.
    let marker = format!("node-config-marker-{}-{}", n.slot, std::process::id());
    let mut cfg = std::fs::read_to_string(&n.config).unwrap();
    cfg.push_str(&format!("\n# {marker}\n"));
    std::fs::write(&n.config, cfg).unwrap();
    let config = n.config.display().to_string();
    let root = n.root.display().to_string();
    let hook_mark = format!("/tmp/gearshift-escape-hook-{}", n.slot);
    let proc_mark = format!("/tmp/gearshift-escape-procfile-{}", n.slot);
    for m in [&hook_mark, &proc_mark] {
        let _ = std::fs::remove_file(m);
    }
    let neighbour_key = n.add_user("neighbour");
    deploy(
        n,
        &neighbour_key,
        "neighbour",
        "shop",
        "tight",
        &[("page.txt", "shop-page")],
    );
    wait_page(n, "shop.localhost", "shop-page");
    let neighbour = Neighbour::watch(n, "shop.localhost", "shop-page");

    // A build hook that attacks, a Procfile whose web command reaches for the host, and a page
    // that is a symlink to the node config.
    let hook = format!(
        "#!/bin/sh\npython3 attack.py hook data_root={root} config={config} host_mark={hook_mark}\ncat {config} 2>&1 | head -c 200\n"
    );
    let procfile = format!(
        "web: sh -c 'cat {config}; touch {proc_mark}; nsenter -t 1 -m -- touch {proc_mark}; exec python3 -u server.py'\n"
    );
    n.ok(&[
        "app",
        "create",
        "evil",
        "--cartridge",
        "python",
        "--owner",
        "dev",
        "--profile",
        "tight",
    ]);
    let dir = app_repo(
        n,
        "evil",
        &[
            ("Procfile", procfile.as_str()),
            ("server.py", SERVER),
            ("attack.py", ATTACK_PY),
            (".openshift/action_hooks/build", hook.as_str()),
        ],
    );
    std::os::unix::fs::symlink(&n.config, dir.join("page.txt")).unwrap();
    std::os::unix::fs::symlink(n.root.join("ssh"), dir.join("host-ssh")).unwrap();
    commit(&dir, "hostile");
    let (ok, out) = push_as(n, &x.key, &dir, "evil", "main");
    assert!(
        ok,
        "the hostile push should deploy (its attacks fail, the app runs): {out}"
    );
    assert_no_breach(expect::HOOK_EXPECTED, &out, "the build hook");
    assert!(!out.contains(&marker), "the push showed the node config:\n{out}");
    wait_page(n, "evil.localhost", "unreadable");
    let (_, page) = get(n, "evil.localhost");
    assert!(!page.contains(&marker), "the app served the node config: {page}");
    let logs = n.ok(&["logs", "evil", "--lines", "200"]);
    assert!(!logs.contains(&marker), "the web process read the node config:\n{logs}");
    for m in [&hook_mark, &proc_mark] {
        assert!(!Path::new(m).exists(), "a push wrote {m} on the host");
    }

    // Symlinks where gearshift reads the app's own files: Procfile and app.json at host files.
    std::fs::remove_file(dir.join("Procfile")).unwrap();
    std::os::unix::fs::symlink(&n.config, dir.join("Procfile")).unwrap();
    std::os::unix::fs::symlink(&n.config, dir.join("app.json")).unwrap();
    commit(&dir, "symlinked Procfile and app.json");
    let (_, out) = push_as(n, &x.key, &dir, "evil", "main");
    assert!(
        !out.contains(&marker),
        "the push read the node config through a symlink:\n{out}"
    );
    for verb in [
        &["app", "show", "evil"][..],
        &["deploy", "list", "evil"],
        &["logs", "evil"],
    ] {
        let o = n.gs(verb);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !text.contains(&marker),
            "`{}` showed the node config:\n{text}",
            verb.join(" ")
        );
    }
    neighbour.assert_answered("the hostile pushes");
}
