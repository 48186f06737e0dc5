//! SELinux MCS per gear, on a host where SELinux is enforcing with the gearshift policy (the test
//! VM, `make vm-test`): every gear process runs as `gear_t` with its own category pair, its
//! files carry the pair, and a process at another pair cannot read, write, signal or ptrace
//! them even with the same uid. Skipped, with the reason recorded, where SELinux is not enforcing:
//! VM-only tests (tests/vm-only.txt), which fail instead in the VM.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !nix_is_root() {
        return Some("needs root".into());
    }
    match std::fs::read_to_string("/sys/fs/selinux/enforce") {
        Ok(s) if s.trim() == "1" => {}
        Ok(_) => return Some("SELinux is permissive, not enforcing".into()),
        Err(_) => return Some("SELinux is not enabled on this host (run `make vm-test`)".into()),
    }
    for tool in ["runcon", "setpriv", "python3"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Skips the calling test where SELinux is not enforcing: on the host, under strict mode too,
/// as these tests are on the VM-only list (tests/vm-only.txt); in the test VM it is a failure.
macro_rules! require_enforcing {
    () => {
        if let Some(why) = skip_reason() {
            skip!("{why}");
        }
    };
}

struct GearInfo {
    uid: u64,
    mcs: String,
    home: PathBuf,
}

fn gear(n: &TestNode, app: &str) -> GearInfo {
    let g = &n.show(app)["gears"][0];
    GearInfo {
        uid: g["uid"].as_u64().unwrap(),
        mcs: g["mcs"].as_str().unwrap().to_string(),
        home: PathBuf::from(g["home"].as_str().unwrap()),
    }
}

/// Runs `argv` as `uid` in `gear_t` at level `mcs`, from the host (a forged process: the uid of
/// one gear with the category pair of another, say).
///
/// The forged process writes into pipes a python3 at level `s0` makes: the test itself may run
/// at root's login range, whose pipes a process at a gear's pair may not use (gearshift relays
/// them for its own commands; this bypasses gearshift).
fn as_gear(uid: u64, mcs: &str, argv: &[&str]) -> Output {
    let uid = uid.to_string();
    let relay = "import subprocess,sys\nr=subprocess.run(sys.argv[1:],capture_output=True)\nsys.stdout.buffer.write(r.stdout)\nsys.stderr.buffer.write(r.stderr)\nsys.exit(r.returncode if r.returncode>=0 else 128-r.returncode)";
    Command::new("runcon")
        .args(["-l", "s0", "--", "python3", "-c", relay])
        .args(["setpriv", "--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
        .args(["runcon", "-t", "gear_t", "-l", mcs, "--"])
        .args(argv)
        .output()
        .expect("cannot run setpriv/runcon")
}

fn file_label(p: &Path) -> String {
    let o = Command::new("stat").args(["-c", "%C"]).arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn process_label(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/attr/current"))
        .unwrap_or_default()
        .trim_end_matches(['\0', '\n'])
        .to_string()
}

/// `type:level` of a context (`user:role:type:level` with a level that may contain colons).
fn type_and_level(ctx: &str) -> String {
    ctx.splitn(3, ':').nth(2).unwrap_or_default().to_string()
}

/// Waits until the audit log has an AVC denial line containing every one of `needles`.
fn audit_denial(needles: &[&str]) -> Option<String> {
    let t = Instant::now();
    loop {
        let log = std::fs::read_to_string("/var/log/audit/audit.log").unwrap_or_default();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("avc:  denied") && needles.iter().all(|n| l.contains(n)))
        {
            return Some(l.to_string());
        }
        if t.elapsed() > Duration::from_secs(10) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every file of the gear's home tree (more than `at_least` of them) carries its pair.
fn assert_home_labelled(g: &GearInfo, at_least: usize) {
    let find = Command::new("find")
        .arg(&g.home)
        .args(["-printf", "%Z %p\n"])
        .output()
        .unwrap();
    let find = String::from_utf8_lossy(&find.stdout).to_string();
    assert!(find.lines().count() > at_least, "{find}");
    for l in find.lines() {
        let (label, path) = l.split_once(' ').unwrap();
        assert_eq!(type_and_level(label), format!("gear_file_t:{}", g.mcs), "{path}");
    }
}

/// Host pids of the processes in an app's first gear (from its cgroup).
fn gear_pids(n: &TestNode, app: &str) -> Vec<i32> {
    let state = std::fs::read_to_string(n.root.join("node.toml")).unwrap();
    let v: toml::Value = toml::from_str(&state).unwrap();
    let mut pids = Vec::new();
    for p in v["cgroup_parents"].as_array().unwrap() {
        let dir = Path::new(p.as_str().unwrap()).join(format!("{app}-0"));
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Starts `sleep 300` in the app's gear (through the gear's supervisorless `run`, detached) and
/// returns its host pid.
fn start_sleeper(n: &TestNode, app: &str) -> i32 {
    let (code, _, err) = n.sh(app, "nohup sleep 300 >/dev/null 2>&1 &");
    assert_eq!(code, 0, "{err}");
    let mut found = None;
    eventually(Duration::from_secs(10), || {
        found = gear_pids(n, app)
            .into_iter()
            .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep"));
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no sleep process in {app}'s gear"))
}

#[test]
fn a_world_readable_file_stays_private_to_its_gear() {
    require_enforcing!();
    let n = TestNode::new();
    n.create_app("alpha");
    n.create_app("beta");
    let (a, b) = (gear(&n, "alpha"), gear(&n, "beta"));
    assert_ne!(a.mcs, b.mcs);

    let (code, _, err) = n.sh("alpha", "echo secret > $HOME/shared && chmod 666 $HOME/shared");
    assert_eq!(code, 0, "{err}");
    let f = a.home.join("shared");
    assert!(
        file_label(&f).ends_with(&format!(":gear_file_t:{}", a.mcs)),
        "the app's new file is labelled {}",
        file_label(&f)
    );
    let path = f.to_str().unwrap();

    // Control: alpha's uid at alpha's pair reads it.
    let o = as_gear(a.uid, &a.mcs, &["cat", path]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "secret\n",
        "alpha itself cannot read: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Beta's uid: DAC alone stops it (0700 home).
    assert!(!as_gear(b.uid, &b.mcs, &["cat", path]).status.success());
    // Alpha's uid (DAC passes) at beta's pair: MCS stops reads and writes.
    let o = as_gear(a.uid, &b.mcs, &["cat", path]);
    assert!(!o.status.success(), "beta's pair read alpha's 0666 file");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = as_gear(a.uid, &b.mcs, &["sh", "-c", &format!("echo pwned >> {path}")]);
    assert!(!o.status.success(), "beta's pair wrote alpha's 0666 file");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "secret\n");

    let line = audit_denial(&[
        &format!(":gear_t:{} ", b.mcs),
        &format!("tcontext=system_u:object_r:gear_file_t:{} ", a.mcs),
    ])
    .expect("no MCS denial in /var/log/audit/audit.log");
    eprintln!("audit: {line}");
}

#[test]
fn a_neighbour_with_the_same_uid_cannot_signal_or_ptrace() {
    require_enforcing!();
    let n = TestNode::new();
    n.create_app("alpha");
    n.create_app("beta");
    let (a, b) = (gear(&n, "alpha"), gear(&n, "beta"));
    let pid = start_sleeper(&n, "alpha");
    let p = pid.to_string();
    assert!(process_label(pid).ends_with(&format!(":gear_t:{}", a.mcs)));

    // Control: the same uid at alpha's own pair may signal it (SIGCONT is harmless).
    let o = as_gear(a.uid, &a.mcs, &["kill", "-CONT", &p]);
    assert!(
        o.status.success(),
        "alpha cannot signal itself: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for sig in ["-CONT", "-TERM", "-KILL"] {
        let o = as_gear(a.uid, &b.mcs, &["kill", sig, &p]);
        assert!(!o.status.success(), "beta's pair sent {sig} to alpha's process");
    }
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "alpha's process died");
    audit_denial(&[
        &format!(":gear_t:{} ", b.mcs),
        &format!(":gear_t:{} ", a.mcs),
        "tclass=process",
    ])
    .expect("no signal denial in the audit log");

    // ptrace (yama would refuse a non-child first: lift it for this check and put it back).
    let yama = Path::new("/proc/sys/kernel/yama/ptrace_scope");
    let old = std::fs::read_to_string(yama).ok();
    if old.is_some() {
        std::fs::write(yama, "0").unwrap();
    }
    let attach = "import ctypes,sys\nlibc=ctypes.CDLL(None,use_errno=True)\nr=libc.ptrace(16,int(sys.argv[1]),0,0)\nprint(r,ctypes.get_errno())\nif r==0: libc.ptrace(17,int(sys.argv[1]),0,0)";
    let o = as_gear(a.uid, &b.mcs, &["python3", "-c", attach, &p]);
    let environ = as_gear(a.uid, &b.mcs, &["cat", &format!("/proc/{pid}/environ")]);
    if let Some(v) = old {
        std::fs::write(yama, v.trim()).unwrap();
    }
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("-1 "),
        "ptrace attach from beta's pair: {out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!environ.status.success(), "beta's pair read alpha's /proc/PID/environ");
    audit_denial(&[&format!(":gear_t:{} ", b.mcs), "ptrace"]).expect("no ptrace denial in the audit log");
}

#[test]
fn gear_processes_and_files_carry_their_own_pair() {
    require_enforcing!();
    let n = TestNode::new();
    n.create_app("alpha");
    n.create_app("beta");
    start_sleeper(&n, "alpha");
    start_sleeper(&n, "beta");
    // LABEL PID TTY TIME CMD
    let ps = Command::new("ps").arg("-eZ").output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    let gear_lines: Vec<&str> = ps.lines().filter(|l| l.contains(":gear_t:")).collect();
    eprintln!("ps -eZ, gear processes:\n{}", gear_lines.join("\n"));
    assert!(
        gear_lines.len() >= 4,
        "expected two inits and two sleepers in gear_t:\n{ps}"
    );
    for app in ["alpha", "beta"] {
        let g = gear(&n, app);
        let pids = gear_pids(&n, app);
        assert!(pids.len() >= 2, "{app}: expected the init and a sleeper, got {pids:?}");
        for pid in pids {
            let Some(line) = ps
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(pid.to_string().as_str()))
            else {
                // A process that came after `ps` (or a `run` that joined and left) is skipped.
                continue;
            };
            let label = line.split_whitespace().next().unwrap();
            assert_eq!(type_and_level(label), format!("gear_t:{}", g.mcs), "{app}: {line}");
        }
        // app show prints the labels.
        let s = &n.show(app)["gears"][0]["selinux"];
        assert_eq!(s["mode"], "enforcing");
        assert!(
            s["process"].as_str().unwrap().ends_with(&format!(":gear_t:{}", g.mcs)),
            "{s}"
        );
        assert_eq!(
            s["home"].as_str().unwrap(),
            format!("system_u:object_r:gear_file_t:{}", g.mcs)
        );
        // Every file of the home tree, including what the app creates later.
        let (code, _, err) = n.sh(app, "mkdir -p $HOME/app-root/data/new && echo x > $HOME/app-root/data/new/f && ln -s f $HOME/app-root/data/new/l");
        assert_eq!(code, 0, "{err}");
        assert_home_labelled(&g, 8);
        // The gear's private /tmp too.
        let (code, out, err) = n.sh(app, "echo t > /tmp/t && stat -c %C /tmp/t");
        assert_eq!(code, 0, "{err}");
        assert_eq!(type_and_level(out.trim()), format!("gear_file_t:{}", g.mcs));
    }
    let doctor = n.gs(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("selinux") && l.contains("enforcing, policy module gearshift loaded")),
        "{text}"
    );
}

/// Runs `script` with `sh` at SELinux level `level` (root's ssh login range, say), so the pipes
/// it creates carry that level.
fn sh_at_level(level: &str, script: &str) -> Output {
    Command::new("runcon")
        .args(["-l", level, "--", "/bin/sh", "-c", script])
        .output()
        .expect("cannot run runcon")
}

#[test]
fn run_output_reaches_a_pipe_made_at_roots_login_range() {
    require_enforcing!();
    let n = TestNode::new();
    n.create_app("alpha");
    let gs = format!("{BIN} --config {}", n.config.display());
    // The shell at s0-s0:c0.c1023 makes every pipe here: gearshift's stdin, stdout and stderr,
    // which a gear at s0:cX,cY may not use directly.
    let probe = sh_at_level("s0-s0:c0.c1023", "cat /proc/self/attr/current");
    assert!(
        String::from_utf8_lossy(&probe.stdout).contains(":s0-s0:c0.c1023"),
        "runcon -l s0-s0:c0.c1023 did not take: {probe:?}"
    );
    let script = format!(
        "printf 'line one\\nline two\\n' | {gs} run alpha -- /bin/sh -c 'cat; echo out-ok; echo err-ok >&2; exit 3' 2>&1 | cat; echo \"rc=$?\""
    );
    let o = sh_at_level("s0-s0:c0.c1023", &script);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    eprintln!(
        "through pipes at s0-s0:c0.c1023:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in ["line one\nline two\n", "out-ok\n", "err-ok\n"] {
        assert!(out.contains(want), "missing {want:?} in {out:?}");
    }
    // The command's exit code comes through as well.
    let o = sh_at_level(
        "s0-s0:c0.c1023",
        &format!("{gs} run alpha -- /bin/sh -c 'echo x; exit 3' >/dev/null; echo code=$?"),
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("code=3"), "{o:?}");
    // A large output is relayed whole, in order.
    let o = sh_at_level(
        "s0-s0:c0.c1023",
        &format!("{gs} run alpha -- /bin/sh -c 'seq 1 200000' | tail -1"),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "200000", "{o:?}");
}

#[test]
fn node_up_restores_the_labels_of_a_gear_made_before_the_policy() {
    require_enforcing!();
    let n = TestNode::new();
    n.create_app("alpha");
    let g = gear(&n, "alpha");
    let want = format!("gear_file_t:{}", g.mcs);
    let meta = n.root.join("run/gears").join(g.home.file_name().unwrap());
    let deep = g.home.join("app-root/data");
    // What a gear created before the policy was installed looks like: no gear labels at all.
    for p in [&g.home, &deep] {
        let st = Command::new("chcon")
            .args(["-t", "var_lib_t", "-l", "s0"])
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success());
        assert!(!file_label(p).ends_with(&want), "{}", file_label(p));
    }
    assert!(meta.is_dir(), "no meta dir {}", meta.display());
    let st = Command::new("chcon")
        .args(["-R", "-t", "var_lib_t", "-l", "s0"])
        .arg(&meta)
        .status()
        .unwrap();
    assert!(st.success());
    n.ok(&["node", "up"]);
    for p in [&g.home, &deep] {
        assert_eq!(type_and_level(&file_label(p)), want, "{} after node up", p.display());
    }
    assert_eq!(
        type_and_level(&file_label(&meta)),
        want,
        "{} after node up",
        meta.display()
    );
    // And the gear works with them: it writes to its home.
    let (code, _, err) = n.sh(
        "alpha",
        "echo ok > $HOME/app-root/data/after && cat $HOME/app-root/data/after",
    );
    assert_eq!(code, 0, "{err}");
}

/// Issue 13: an add-on's gear (here Redis, linked to an app) runs at a pair of its own, its files
/// carry it, and its processes cannot read the linked app's world-readable file: with DAC open
/// (the app's home traversable by all), only MCS refuses.
#[test]
fn an_addon_gear_has_its_own_pair_and_cannot_read_its_apps_files() {
    require_enforcing!();
    if !Path::new("/usr/bin/redis-server").exists() {
        skip!("the redis-server package is not installed (make deps)");
    }
    let n = TestNode::new();
    n.create_app("web");
    n.ok(&["addon", "create", "redis", "cache"]);
    n.ok(&["addon", "link", "web", "cache"]);
    let app = gear(&n, "web");
    let show: serde_json::Value = serde_json::from_str(&n.ok(&["addon", "show", "cache", "--json"])).unwrap();
    let g = &show["gears"][0];
    let addon = GearInfo {
        uid: g["uid"].as_u64().unwrap(),
        mcs: g["mcs"].as_str().unwrap().to_string(),
        home: PathBuf::from(g["home"].as_str().unwrap()),
    };
    assert_ne!(addon.mcs, app.mcs, "the add-on shares its app's pair");
    assert_ne!(addon.uid, app.uid);

    // Its processes: the init and redis-server, all at the add-on's pair.
    let pids = gear_pids(&n, "cache");
    let comms: Vec<String> = pids
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    assert!(
        comms.iter().any(|c| c == "redis-server") && pids.len() >= 2,
        "expected the init and redis-server in the add-on's gear: {comms:?}"
    );
    for pid in &pids {
        let label = process_label(*pid);
        if label.is_empty() {
            continue; // gone since the listing
        }
        assert_eq!(type_and_level(&label), format!("gear_t:{}", addon.mcs), "pid {pid}");
    }
    // Its files, the data directory the server writes included.
    assert_home_labelled(&addon, 4);

    // The app's world-readable file, its home opened to all.
    let (code, _, err) = n.sh("web", "echo secret > $HOME/shared && chmod 644 $HOME/shared");
    assert_eq!(code, 0, "{err}");
    std::fs::set_permissions(&app.home, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let path = app.home.join("shared");
    let path = path.to_str().unwrap();
    // Control: DAC lets the add-on's uid through (at the app's pair, it reads the file) ...
    let o = as_gear(addon.uid, &app.mcs, &["cat", path]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "secret\n",
        "the add-on's uid cannot read the file even at the app's pair (DAC?): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // ... and at its own pair, MCS refuses.
    let o = as_gear(addon.uid, &addon.mcs, &["cat", path]);
    assert!(!o.status.success(), "the add-on's gear read the app's file");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = audit_denial(&[
        &format!(":gear_t:{} ", addon.mcs),
        &format!("tcontext=system_u:object_r:gear_file_t:{} ", app.mcs),
    ])
    .expect("no MCS denial in /var/log/audit/audit.log");
    eprintln!("audit: {line}");
}
