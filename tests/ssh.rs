//! The SSH entry end to end: the node's own sshd (started by `gearshift daemon`), keys of two
//! users, and the system ssh, rsync and scp clients, the way a user drives gearshift.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A node with a running daemon and two users, alice and bob, with their private keys.
struct Setup {
    alice: PathBuf,
    bob: PathBuf,
    // Dropped in this order: the daemon before the node.
    daemon: Daemon,
    n: TestNode,
}

fn setup() -> Setup {
    let n = TestNode::new();
    let (alice, bob) = (n.add_user("alice"), n.add_user("bob"));
    let daemon = n.start_daemon();
    Setup { alice, bob, daemon, n }
}

#[test]
fn users_work_on_their_own_apps_over_ssh() {
    require_root!();
    let s = setup();
    let n = &s.n;
    n.ok(&["app", "create", "rootapp", "--cartridge", "static"]);

    // No command: help and (no) apps.
    let o = n.ssh(&s.alice, &[], None, b"");
    assert!(o.status.success(), "{}\n{}", text(&o.stderr), s.daemon.log_text());
    assert!(text(&o.stdout).contains("shell APP"), "{}", text(&o.stdout));

    let o = n.ssh(&s.alice, &[], Some("app create shop --cartridge python"), b"");
    assert!(o.status.success(), "app create over ssh: {}", text(&o.stderr));
    let shop = n.show("shop");
    assert_eq!(shop["owner"], "alice");
    let o = n.ssh(&s.alice, &[], Some("app list"), b"");
    let list = text(&o.stdout);
    assert!(o.status.success() && list.contains("shop"), "{list}{}", text(&o.stderr));
    assert!(!list.contains("rootapp"), "alice sees an app that is not hers: {list}");
    let o = n.ssh(&s.bob, &[], Some("app list"), b"");
    assert!(
        o.status.success() && !text(&o.stdout).contains("shop"),
        "{}",
        text(&o.stdout)
    );

    // run, with the gear's uid and the exit code passed through.
    let o = n.ssh(&s.alice, &[], Some("run shop id -u"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), shop["gears"][0]["uid"].to_string());
    let o = n.ssh(&s.alice, &[], Some("run shop false"), b"");
    assert_eq!(o.status.code(), Some(1));

    // An interactive shell through a pty, driven from a pipe.
    let o = n.ssh(
        &s.alice,
        &["-tt"],
        Some("shell shop"),
        b"echo hi-from-$((6*7)); exit 3\n",
    );
    assert!(
        text(&o.stdout).contains("hi-from-42"),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));

    // bob gets the same answer as for an app that does not exist.
    for cmd in [
        "run shop id",
        "shell shop",
        "app show shop",
        "run nosuch id",
        "app show nosuch",
    ] {
        let o = n.ssh(&s.bob, &[], Some(cmd), b"");
        assert!(!o.status.success(), "bob could `{cmd}`");
        let e = text(&o.stderr);
        assert!(e.contains("unknown app '"), "`{cmd}` as bob: {e}");
    }

    // rsync into the gear.
    let src = n.root.join("upload");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/b.txt"), "beta\n").unwrap();
    let rsh = format!("ssh {}", ssh_opts(&s.alice, n.ssh_port()).join(" "));
    let o = std::process::Command::new("rsync")
        .args(["-rtv", "-e", &rsh])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}@127.0.0.1:shop/app-root/data/up", n.ssh_user()))
        .output()
        .unwrap();
    assert!(o.status.success(), "rsync: {}{}", text(&o.stdout), text(&o.stderr));
    let o = n.ssh(
        &s.alice,
        &[],
        Some("run shop cat app-root/data/up/a.txt app-root/data/up/sub/b.txt"),
        b"",
    );
    assert_eq!(text(&o.stdout), "alpha\nbeta\n", "{}", text(&o.stderr));
    let o = n.ssh(&s.alice, &[], Some("run shop stat -c %u app-root/data/up/a.txt"), b"");
    assert_eq!(text(&o.stdout).trim(), shop["gears"][0]["uid"].to_string());

    // git requests reach git::serve (implemented elsewhere: a stub panics, the real one
    // advertises refs).
    let o = n.ssh(&s.alice, &[], Some("git-receive-pack 'shop'"), b"");
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(!err.contains("command refused"), "{err}");
    assert!(err.contains("git push deploys") || !out.is_empty(), "{out}{err}");
}

#[test]
fn hostile_commands_are_refused_and_run_nothing() {
    require_root!();
    let s = setup();
    let n = &s.n;
    n.ok(&["app", "create", "shop", "--cartridge", "static", "--owner", "alice"]);
    // A damaged user file is skipped (with a warning), not fatal for everybody else.
    std::fs::write(n.root.join("users/zed.toml"), "name = [broken").unwrap();
    let t = std::time::Instant::now();
    let o = n.ssh(&s.alice, &[], Some("run shop true"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    eprintln!("ssh run shop true: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let o = n.ssh(&s.alice, &[], Some("app list"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    eprintln!("ssh app list: {:?}", t.elapsed());
    assert!(
        s.daemon.log_text().contains("skipped user file"),
        "{}",
        s.daemon.log_text()
    );

    // One daemon per node.
    let e = n.fails(&["daemon"]);
    assert!(e.contains("already running"), "{e}");

    let marker = format!("/tmp/gearshift-pwned-{}", n.name);
    let _ = std::fs::remove_file(&marker);
    let m = marker.as_str();
    let hostile = [
        format!("git-receive-pack 'shop'; touch {m}"),
        format!("git-upload-pack '$(touch {m})'"),
        "git-receive-pack '../shop'".to_string(),
        format!("shell shop && touch {m}"),
        format!("shell shop | touch {m}"),
        format!("run shop touch {m}; touch {m}"),
        format!("run shop\ntouch {m}"),
        format!("run shop echo \"$(touch {m})\""),
        format!("run shop echo \"`touch {m}`\""),
        format!("run shop echo 'x' ; touch {m}"),
        format!("run shop echo 'unclosed ; touch {m}"),
        format!("env set shop K=$(touch {m})"),
        format!("run shop touch `touch {m}`"),
        format!("app create x --cartridge python; touch {m}"),
        format!("app list && touch {m}"),
        format!("touch {m}"),
        format!("sh -c touch {m}"),
        format!("$(touch {m})"),
        "rsync --server . ../../etc".to_string(),
        "rsync --server -logDtpre.iLsfxCIvu . shop/../../etc".to_string(),
        "scp -t /etc".to_string(),
        "node destroy --confirm x".to_string(),
        "internal-exec".to_string(),
        format!("run shop touch /tmp/x{}", "a".repeat(1100)),
        format!("app list {}", "a ".repeat(5000)),
        "\u{430}pp list".to_string(),
    ];
    for cmd in &hostile {
        let o = n.ssh(&s.alice, &[], Some(cmd), b"");
        let err = text(&o.stderr);
        assert!(!o.status.success(), "accepted: {cmd:?}\n{}", text(&o.stdout));
        assert!(
            err.contains("command refused") || err.contains("not allowed") || err.contains("only possible"),
            "unclear refusal of {cmd:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "not one line for {cmd:?}: {err}");
        assert!(!Path::new(&marker).exists(), "{cmd:?} ran something");
    }
    let (code, _, _) = n.sh("shop", &format!("test -e {m}"));
    assert_ne!(code, 0, "a hostile command ran inside the gear");
    let o = n.ssh(&s.alice, &[], Some("scp -t /etc"), b"");
    assert!(text(&o.stderr).contains("rsync"), "{}", text(&o.stderr));

    // scp itself (SFTP protocol by default; -O for the legacy protocol) fails clearly.
    let f = n.root.join("f.txt");
    std::fs::write(&f, "x").unwrap();
    for legacy in [false, true] {
        let mut c = std::process::Command::new("scp");
        if legacy {
            c.arg("-O");
        }
        let mut opts = ssh_opts(&s.alice, n.ssh_port());
        opts[2] = "-P".into();
        let o = c
            .args(&opts)
            .arg(&f)
            .arg(format!("{}@127.0.0.1:shop/", n.ssh_user()))
            .output()
            .unwrap();
        assert!(!o.status.success(), "scp (legacy {legacy}) worked");
        if legacy {
            assert!(text(&o.stderr).contains("rsync"), "{}", text(&o.stderr));
        }
    }

    // Port forwarding reaches one's own gears' port 8080 only (nothing listens there: refused).
    let gear_ip = n.show("shop")["gears"][0]["ip"].as_str().unwrap().to_string();
    let fwd = |key: &Path, to: &str| {
        let o = n.ssh(key, &["-o", "LogLevel=INFO", "-W", to], None, b"GET / HTTP/1.0\r\n\r\n");
        text(&o.stderr)
    };
    let e = fwd(&s.alice, &format!("{gear_ip}:8080"));
    assert!(!e.contains("administratively prohibited"), "{e}");
    for (key, to) in [
        (&s.alice, "127.0.0.1:22".to_string()),
        (&s.alice, format!("{gear_ip}:22")),
        (&s.bob, format!("{gear_ip}:8080")),
    ] {
        let e = fwd(key, &to);
        assert!(
            e.contains("administratively prohibited"),
            "forwarding to {to} was not refused: {e}"
        );
    }

    // An unknown key gets nowhere.
    let stranger = keygen(&n.root.join("keys"), "stranger");
    let o = n.ssh(&stranger, &[], Some("app list"), b"");
    assert_eq!(o.status.code(), Some(255), "an unknown key got in: {}", text(&o.stdout));
    // The daemon socket refuses other uids.
    let o = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(BIN)
        .arg("ssh-entry")
        .arg("--socket")
        .arg(n.root.join("run/daemon.sock"))
        .args(["--user", "alice"])
        .env("SSH_ORIGINAL_COMMAND", "app list")
        .output()
        .unwrap();
    assert!(!o.status.success(), "nobody used the daemon: {}", text(&o.stdout));

    // sshd is restarted when it dies.
    let pid_file = n.root.join("run/sshd.pid");
    let old: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on the node's own sshd.
    unsafe { libc::kill(old, libc::SIGKILL) };
    let t = std::time::Instant::now();
    let back = eventually(std::time::Duration::from_secs(15), || {
        let new = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        new.is_some_and(|p| p != old) && n.ssh(&s.alice, &[], Some("app list"), b"").status.success()
    });
    assert!(back, "sshd was not restarted:\n{}", s.daemon.log_text());
    eprintln!("sshd back after a kill in {:?}", t.elapsed());
}

/// Values with spaces, shell metacharacters and quotes reach the gear unchanged when quoted
/// the way a shell quotes them; a `.env` on stdin is imported, and a bad one imports nothing.
#[test]
fn any_value_reaches_the_gear_over_ssh() {
    require_root!();
    let s = setup();
    let n = &s.n;
    let ok = |cmd: &str, stdin: &[u8]| {
        let o = n.ssh(&s.alice, &[], Some(cmd), stdin);
        assert!(
            o.status.success(),
            "`{cmd}` failed: {}{}",
            text(&o.stderr),
            s.daemon.log_text()
        );
        text(&o.stdout)
    };
    ok("app create shop --cartridge python", b"");
    ok("env set shop 'K=any value ?!#$'", b"");
    ok(
        "env set shop \"MSG=two words\" 'DB=postgres://u:p@db:5432/app?sslmode=require'",
        b"",
    );
    ok("env set shop 'Q=it'\\''s \"quoted\"'", b"");
    for (key, want) in [
        ("K", "any value ?!#$"),
        ("MSG", "two words"),
        ("DB", "postgres://u:p@db:5432/app?sslmode=require"),
        ("Q", "it's \"quoted\""),
    ] {
        assert_eq!(
            ok(&format!("run shop printenv {key}"), b""),
            format!("{want}\n"),
            "{key}"
        );
    }
    assert_eq!(ok("run shop python3 -c 'print(1)'", b""), "1\n");
    assert_eq!(ok("run shop sh -c 'echo \"$0|$1\"' a 'b c'", b""), "a|b c\n");

    let dotenv = b"# settings\nexport SECRET_KEY='a1!b2#c3$'\nGREETING=\"hello\\nworld\"\n\nPLAIN=x y # note\n";
    assert!(ok("env import shop", dotenv).contains("imported 3 variables"));
    assert_eq!(ok("run shop printenv SECRET_KEY", b""), "a1!b2#c3$\n");
    assert_eq!(ok("run shop printenv GREETING", b""), "hello\nworld\n");
    assert_eq!(ok("run shop printenv PLAIN", b""), "x y\n");

    // A bad line imports nothing and names the line; so does a reserved name.
    for (bad, what) in [
        (&b"NEW=1\nnot a pair\n"[..], "line 2"),
        (&b"NEW=1\nPORT=80\n"[..], "PORT"),
    ] {
        let o = n.ssh(&s.alice, &[], Some("env import shop"), bad);
        let e = text(&o.stderr);
        assert!(!o.status.success() && e.contains(what), "{e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
    }
    assert!(!ok("env list shop", b"").contains("NEW="));

    // Unquoted metacharacters and expansions in double quotes are still refused, in one line.
    for cmd in ["env set shop K=a?b", "env set shop \"K=$HOME\"", "run shop echo *"] {
        let o = n.ssh(&s.alice, &[], Some(cmd), b"");
        let e = text(&o.stderr);
        assert!(!o.status.success() && e.contains("command refused"), "{cmd}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
    }
}

/// Over SSH, help, hints, URLs and the git remote are in the terms of a user on a laptop: the
/// SSH form of each command, the router's real port, and what to do about a push to an app
/// that does not exist.
#[test]
fn messages_are_in_the_users_terms() {
    require_root!();
    let s = setup();
    let n = &s.n;
    let ssh_form = format!("ssh -p {} {}@localhost", n.ssh_port(), n.ssh_user());
    let remote = format!("ssh://{}@localhost:{}/web.git", n.ssh_user(), n.ssh_port());
    let url = format!("http://web.localhost:{}/", n.http_port());

    // `help` is the user's own help, with exit 0; `VERB --help` too, in the SSH form.
    let o = n.ssh(&s.alice, &[], Some("help"), b"");
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    for verb in [
        "env import APP",
        "logs APP",
        "rollback APP",
        "domain add",
        "app scale",
        "run APP",
    ] {
        assert!(out.contains(verb), "help lacks {verb}: {out}");
    }
    assert!(out.contains(&ssh_form), "{out}");
    assert!(!out.contains("user ...") && !out.contains("Usage: gearshift"), "{out}");
    let o = n.ssh(&s.alice, &[], Some("env --help"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("Usage: {ssh_form} env")),
        "{}",
        text(&o.stdout)
    );

    // app create prints the git remote and the URL with the router's port.
    let o = n.ssh(&s.alice, &[], Some("app create web --cartridge static"), b"");
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.contains(&remote) && out.contains(&url), "{out}");
    let o = n.ssh(&s.alice, &[], Some("app show web --json"), b"");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["url"], url.as_str());
    assert_eq!(v["git_remote"], remote.as_str());

    // Hints name the SSH form, never `gearshift VERB`.
    let o = n.ssh(&s.alice, &[], Some("app show nosuch"), b"");
    let e = text(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains(&format!("`{ssh_form} app list`")), "{e}");
    assert!(!e.contains("`gearshift "), "{e}");

    // A push to an app that does not exist says how to create it, before git's fatal line.
    let dir = n.root.join("nosuch-src");
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("index.html"), "hi\n").unwrap();
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-qm", "first"]);
    let (ok, out) = push_as(n, &s.alice, &dir, "nosuch", "main");
    assert!(!ok, "{out}");
    let create = out
        .find(&format!(
            "remote: create it with `{ssh_form} app create nosuch` (the push detects the cartridge"
        ))
        .unwrap_or_else(|| panic!("no hint to create the app: {out}"));
    let fatal = out.find("fatal:").unwrap_or(usize::MAX);
    assert!(create < fatal, "{out}");
    assert!(!out.contains("`gearshift "), "{out}");
}

/// `app list`, `app show` and `app status` say what the app is doing, from its supervisors:
/// an app never deployed and a crash-looping one are not `ready` or `running`, and `app status`
/// fails for them.
#[test]
fn app_state_is_truthful_over_ssh() {
    require_root!();
    let s = setup();
    let n = &s.n;
    let run = |cmd: &str| {
        let o = n.ssh(&s.alice, &[], Some(cmd), b"");
        (o.status.code(), text(&o.stdout), text(&o.stderr))
    };
    let row = |app: &str| {
        let (_, out, _) = run("app list");
        out.lines()
            .find(|l| l.starts_with(&format!("{app} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(run("app create fresh --cartridge python").0, Some(0));
    assert!(row("fresh").contains("never deployed"), "{}", row("fresh"));
    let (code, out, err) = run("app status fresh");
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("never deployed") && err.contains("not serving"),
        "{out}{err}"
    );
    let (_, out, _) = run("app show fresh --json");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "never deployed");

    // A web process that exits 3 once app-root/data/crash exists.
    assert_eq!(run("app create crashy --cartridge python").0, Some(0));
    let dir = n.root.join("crashy-src");
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("Procfile"), "web: python3 -u server.py\n").unwrap();
    std::fs::write(
        dir.join("server.py"),
        "import http.server, os, sys\n\
         if os.path.exists(os.path.join(os.environ['OPENSHIFT_DATA_DIR'], 'crash')): sys.exit(3)\n\
         class H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200); self.end_headers(); self.wfile.write(b'up')\n\
         http.server.HTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n",
    )
    .unwrap();
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-qm", "first"]);
    let (ok, out) = push_as(n, &s.alice, &dir, "crashy", "main");
    assert!(ok, "{out}");
    assert!(row("crashy").contains("running"), "{}", row("crashy"));
    assert_eq!(run("app status crashy").0, Some(0));

    // `run` starts in the deployment, as `heroku run` does: the data directory by its variable.
    run("run crashy sh -c 'touch \"$OPENSHIFT_DATA_DIR/crash\"'");
    run("run crashy pkill -KILL -f server.py");
    let crashed = |r: &str| r.contains("crashed (restarts ") && r.contains("last exit 3)");
    assert!(
        eventually(std::time::Duration::from_secs(30), || crashed(&row("crashy"))),
        "{}",
        row("crashy")
    );
    assert!(!row("crashy").contains("ready"), "{}", row("crashy"));
    assert!(
        eventually(std::time::Duration::from_secs(10), || {
            let (code, _, err) = run("app status crashy");
            code != Some(0) && err.contains("not serving: crashed")
        }),
        "{:?}",
        run("app status crashy")
    );
    let (_, out, _) = run("app show crashy");
    assert!(out.contains("status:    crashed (restarts "), "{out}");
}

/// A workshop behind one NAT address, or a CI loop: many commands from one address, in a row
/// and at once, all get in; failed logins from that address lock out neither that address's
/// other users nor anyone else (OpenSSH 10's per-source limits dropped the 11th connection).
#[test]
fn a_room_behind_one_address_is_never_locked_out() {
    require_root!();
    let s = setup();
    let n = &s.n;
    let ok = |key: &Path, extra: &[&str], what: &str| {
        // What is asserted is that no connection is dropped (a reset during the banner
        // exchange), not how fast a login is: the emulated test VM needs minutes for 30 at once.
        let extra: Vec<&str> = ["-o", "ConnectTimeout=600"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let o = n.ssh(key, &extra, Some("app list"), b"");
        assert!(
            o.status.success(),
            "{what}: {}\nsshd log:\n{}",
            text(&o.stderr),
            std::fs::read_to_string(n.root.join("logs/sshd.log")).unwrap_or_default()
        );
    };
    // In the emulated test VM (its OpenSSH 10 is where the lock-out was found) a login takes
    // seconds: 30 in a row there, three times OpenSSH 10's limit, and 100 on the host.
    let (in_a_row, at_once) = if strictness() == Strictness::Vm {
        (30, 20)
    } else {
        (100, 30)
    };
    for i in 0..in_a_row {
        ok(&s.alice, &[], &format!("sequential command {i} of {in_a_row}"));
    }
    std::thread::scope(|sc| {
        let running: Vec<_> = (0..at_once)
            .map(|i| {
                let key = if i % 2 == 0 { &s.alice } else { &s.bob };
                sc.spawn(move || ok(key, &[], &format!("concurrent command {i} of {at_once}")))
            })
            .collect();
        for r in running {
            r.join().unwrap();
        }
    });

    // Six failed logins from 127.0.0.1: a key the node does not know.
    let stranger = keygen(&n.root.join("keys"), "stranger");
    for i in 0..6 {
        let o = n.ssh(&stranger, &[], Some("app list"), b"");
        assert_eq!(
            o.status.code(),
            Some(255),
            "failed login {i} got in: {}",
            text(&o.stderr)
        );
        assert!(text(&o.stderr).contains("Permission denied"), "{}", text(&o.stderr));
    }
    // Another client on another address logs in, and so do the stranger's neighbours behind
    // the same address.
    ok(&s.bob, &["-o", "BindAddress=127.0.0.2"], "a valid key from 127.0.0.2");
    ok(
        &s.alice,
        &[],
        "a valid key from 127.0.0.1 after its neighbour's failed logins",
    );
}

/// Break 1 of issue 14: `domain cert` over SSH never opens a path the user names as root (no
/// existence oracle, no other tenant's key, no /dev/urandom); the bundle comes on stdin,
/// capped at 64 KiB, and a valid one is installed.
#[test]
fn domain_cert_reads_only_stdin_and_caps_it() {
    require_root!();
    let s = setup();
    let n = &s.n;
    let o = n.ssh(&s.alice, &[], Some("app create shop --cartridge static"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = n.ssh(&s.alice, &[], Some("domain add shop secure.example"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));

    // Paths: refused alike whether they exist or not, and nothing is read.
    let mut refusals = Vec::new();
    for path in ["/root/.bashrc", "/root/no-such-file", "/dev/urandom"] {
        let t = std::time::Instant::now();
        let cmd = format!("domain cert shop secure.example --cert {path} --key {path}");
        let o = n.ssh(&s.alice, &[], Some(&cmd), b"");
        assert!(!o.status.success(), "{cmd} succeeded");
        assert!(
            t.elapsed() < patience(std::time::Duration::from_secs(10)),
            "{cmd} took {:?}",
            t.elapsed()
        );
        refusals.push(text(&o.stderr).replace(path, "PATH"));
    }
    assert!(refusals.iter().all(|r| *r == refusals[0]), "an oracle: {refusals:?}");
    assert!(
        !refusals[0].contains("PEM") && !refusals[0].contains("No such file"),
        "{}",
        refusals[0]
    );

    // A stream past 64 KiB is refused without being read to its end.
    let t = std::time::Instant::now();
    let huge = vec![b'A'; 16 << 20];
    let o = n.ssh(&s.alice, &[], Some("domain cert shop secure.example"), &huge);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("larger than 64 KiB"), "{}", text(&o.stderr));
    assert!(
        t.elapsed() < patience(std::time::Duration::from_secs(10)),
        "took {:?}",
        t.elapsed()
    );

    // Not a host of one's own app; and a bundle whose key is not the certificate's.
    let (cert, key) = cert_and_key("secure.example");
    let (_, other_key) = cert_and_key("secure.example");
    let o = n.ssh(
        &s.bob,
        &[],
        Some("domain cert shop secure.example"),
        format!("{cert}{key}").as_bytes(),
    );
    assert!(!o.status.success());
    let o = n.ssh(
        &s.alice,
        &[],
        Some("domain cert shop secure.example"),
        format!("{cert}{other_key}").as_bytes(),
    );
    assert!(text(&o.stderr).contains("does not belong"), "{}", text(&o.stderr));
    assert!(!n.root.join("certs/shop@secure.example.crt").exists());
    // A certificate for other names, which a browser would refuse for this host.
    let (elsewhere, elsewhere_key) = cert_and_key("elsewhere.example");
    let o = n.ssh(
        &s.alice,
        &[],
        Some("domain cert shop secure.example"),
        format!("{elsewhere}{elsewhere_key}").as_bytes(),
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("not for secure.example") && text(&o.stderr).contains("nothing was installed"),
        "{}",
        text(&o.stderr)
    );
    assert!(!n.root.join("certs/shop@secure.example.crt").exists());

    // The bundle on stdin is installed, root-only.
    let o = n.ssh(
        &s.alice,
        &[],
        Some("domain cert shop secure.example"),
        format!("{cert}{key}").as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let kept = n.root.join("certs/shop@secure.example.key");
    assert_eq!(std::fs::read_to_string(&kept).unwrap().trim(), key.trim());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&kept).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // Removing the host name removes its certificate and key; another user's app that adds the
    // same name later gets neither.
    let o = n.ssh(&s.alice, &[], Some("domain remove shop secure.example"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let left: Vec<_> = std::fs::read_dir(n.root.join("certs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.contains("secure.example"))
        .collect();
    assert!(left.is_empty(), "left behind after domain remove: {left:?}");
    let o = n.ssh(&s.bob, &[], Some("app create other --cartridge static"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = n.ssh(&s.bob, &[], Some("domain add other secure.example"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!n.root.join("certs/other@secure.example.key").exists());
    // A certificate installed for an app is deleted with the app.
    let o = n.ssh(
        &s.bob,
        &[],
        Some("domain cert other secure.example"),
        format!("{cert}{key}").as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(n.root.join("certs/other@secure.example.key").exists());
    let o = n.ssh(&s.bob, &[], Some("app destroy other --confirm other"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!n.root.join("certs/other@secure.example.key").exists());
}

/// A self-signed certificate for `host` and its key, as PEM text (openssl, as a user would).
fn cert_and_key(host: &str) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("gs-cert-{}-{}", std::process::id(), rand_suffix()));
    let (c, k) = make_cert(&dir, host, host);
    let r = (
        std::fs::read_to_string(&c).unwrap(),
        std::fs::read_to_string(&k).unwrap(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Break 9 of issue 14: an SSH command's secrets never reach a log (`env set` is logged with
/// its keys only, `run` without its command line), and the node's logs are root's (no
/// other-user bits, directories 0750).
#[test]
fn secrets_are_not_logged_and_logs_are_root_only() {
    require_root!();
    let s = setup();
    let n = &s.n;
    let secret = format!("hunter2-{}", n.slot);
    let o = n.ssh(&s.alice, &[], Some("app create shop --cartridge static"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = n.ssh(&s.alice, &[], Some(&format!("env set shop API_KEY={secret}")), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = n.ssh(&s.alice, &[], Some(&format!("run shop echo {secret}")), b"");
    assert_eq!(text(&o.stdout).trim(), secret);
    // The curl goes through the router, so there is an access log too.
    let log = s.daemon.log_text();
    assert!(
        log.contains("env set shop API_KEY="),
        "the command is not logged:\n{log}"
    );
    assert!(!log.contains(&secret), "the daemon log holds the secret:\n{log}");
    let _ = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-H", "Host: shop.localhost"])
        .arg(format!("http://127.0.0.1:{}/?token={secret}", n.http_port()))
        .status();
    let logs = n.root.join("logs");
    let access = logs.join("access/shop.log");
    assert!(
        eventually(std::time::Duration::from_secs(10), || access.exists()),
        "no access log"
    );
    let mut stack = vec![logs];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        let m = std::fs::metadata(&p).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777;
        assert_eq!(mode & 0o007, 0, "{} is {mode:o}: other users may read it", p.display());
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        seen += 1;
    }
    assert!(seen >= 4, "only {seen} log paths");
}

/// The SHA256 fingerprint of a public key file, as `ssh-keygen -l` prints it.
fn fingerprint(public: &Path) -> String {
    let o = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public)
        .output()
        .unwrap();
    text(&o.stdout).split_whitespace().nth(1).unwrap().to_string()
}

/// Break 7 of issue 14: over an open multiplexed SSH connection (ControlMaster), a removed key
/// kept running commands. Now every command re-checks the key, and a running session ends
/// within a second or two of the key's removal; the user's other key keeps working.
#[test]
fn removing_a_key_ends_its_sessions() {
    require_root!();
    let s = setup();
    let n = &s.n;
    let second = keygen(&n.root.join("keys"), "alice2");
    n.ok(&[
        "user",
        "key",
        "add",
        "alice",
        "--key",
        second.with_extension("pub").to_str().unwrap(),
    ]);
    n.ok(&["app", "create", "mux", "--cartridge", "python", "--owner", "alice"]);
    let ctl = n.root.join("keys/mux.ctl");
    let ctl_opt = format!("ControlPath={}", ctl.display());
    let master = n.ssh(
        &second,
        &[
            "-o",
            "ControlMaster=yes",
            "-o",
            &ctl_opt,
            "-o",
            "ControlPersist=120",
            "-f",
            "-N",
        ],
        None,
        b"",
    );
    assert!(
        master.status.success(),
        "no master connection: {}",
        text(&master.stderr)
    );
    let via_master = ["-o", "ControlMaster=no", "-o", ctl_opt.as_str()];
    let o = n.ssh(&second, &via_master, Some("app list"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("mux"), "{}", text(&o.stdout));

    // A long-running session over the same connection.
    let mut long = std::process::Command::new("ssh")
        .args(via_master)
        .args(ssh_opts(&second, n.ssh_port()))
        .arg(format!("{}@127.0.0.1", n.ssh_user()))
        .arg("run mux sleep 3141")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let uid = n.show("mux")["gears"][0]["uid"].as_u64().unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(30), || procs_of(uid)
            .contains("sleep 3141")),
        "the session's command never ran (exited: {:?})",
        long.try_wait()
            .unwrap()
            .map(|_| text(&long.wait_with_output().unwrap().stderr))
    );

    n.ok(&[
        "user",
        "key",
        "remove",
        "alice",
        &fingerprint(&second.with_extension("pub")),
    ]);
    assert!(
        eventually(std::time::Duration::from_secs(10), || long
            .try_wait()
            .unwrap()
            .is_some()),
        "the session of a removed key is still running"
    );
    let out = long.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is no longer one of user 'alice''s keys"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        eventually(std::time::Duration::from_secs(10), || !procs_of(uid)
            .contains("sleep 3141")),
        "the session's command outlived it"
    );
    // The next command over the still-open connection is refused, in the user's terms.
    let o = n.ssh(&second, &via_master, Some("app list"), b"");
    assert!(!o.status.success(), "a removed key ran a command: {}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("log in with a key you still have"),
        "{}",
        text(&o.stderr)
    );
    // alice's other key is untouched.
    assert!(n.ssh(&s.alice, &[], Some("app list"), b"").status.success());
    let _ = n.ssh(&second, &["-o", &ctl_opt, "-O", "exit"], None, b"");
}

/// Break 5 of issue 14 (per-user part): any SSH user could create any number of apps of any
/// profile. `[limits]` in the node config caps both for users who are not admins.
#[test]
fn users_are_held_to_the_nodes_limits() {
    require_root!();
    let n = TestNode::new();
    let mut cfg = std::fs::read_to_string(&n.config).unwrap();
    // (init writes the section with its defaults)
    cfg = cfg
        .replace("max_apps_per_user = 0", "max_apps_per_user = 1")
        .replace("user_profiles = []", "user_profiles = [\"small\"]");
    assert!(cfg.contains("user_profiles = [\"small\"]"), "{cfg}");
    std::fs::write(&n.config, cfg).unwrap();
    let alice = n.add_user("alice");
    let _daemon = n.start_daemon();
    let o = n.ssh(&alice, &[], Some("app create one --profile large"), b"");
    assert!(!o.status.success(), "a large app was created: {}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("profile 'large' is not open to users on this node"),
        "{}",
        text(&o.stderr)
    );
    let o = n.ssh(&alice, &[], Some("app create one"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = n.ssh(&alice, &[], Some("app create two"), b"");
    assert!(!o.status.success(), "a second app was created: {}", text(&o.stdout));
    let e = text(&o.stderr);
    assert!(
        e.contains("user 'alice' has 1 app(s), the most this node allows"),
        "{e}"
    );
    assert!(!n.root.join("apps/two.toml").exists());
    // Root at the console is not limited.
    n.ok(&["app", "create", "three", "--owner", "alice", "--profile", "large"]);
}

/// Break 5 of issue 14 (disk part): app quotas were never compared with the gears' disk, so
/// three apps could be promised more than the image holds. A node whose image holds two apps
/// refuses the third (and more gears), saying what is used, asked and left, and takes it with
/// `disk.overcommit = true`, warning.
#[test]
fn the_nodes_disk_admits_only_what_it_holds() {
    require_root!();
    let n = TestNode::new();
    // Test nodes have a 64G (sparse) image: two 25G apps fit, a third does not.
    n.add_profile("quarter", "256M", 0.5, 128, "25G", "20mbit");
    let alice = n.add_user("alice");
    let _daemon = n.start_daemon();
    for app in ["one", "two"] {
        let o = n.ssh(&alice, &[], Some(&format!("app create {app} --profile quarter")), b"");
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(!text(&o.stderr).contains("warning"), "{}", text(&o.stderr));
    }
    let o = n.ssh(&alice, &[], Some("app create three --profile quarter"), b"");
    assert!(!o.status.success(), "a third app was created: {}", text(&o.stdout));
    let e = text(&o.stderr);
    for want in [
        "cannot create app 'three': not enough disk on this node",
        "asks for 25.0 GiB (1 gear(s) of profile 'quarter'",
        "quotas of 50.0 GiB of the 64.0 GiB the node has, 14.0 GiB is left",
        "disk.overcommit = true",
    ] {
        assert!(e.contains(want), "no '{want}' in: {e}");
    }
    assert!(!n.root.join("apps/three.toml").exists());
    let o = n.ssh(&alice, &[], Some("app scale one 2"), b"");
    assert!(!o.status.success(), "a gear was added: {}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("cannot create 1 more gear(s) of 'one': not enough disk"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(n.show("one")["gears"].as_array().unwrap().len(), 1);

    n.set_config("overcommit = false", "overcommit = true");
    let o = n.ssh(&alice, &[], Some("app create three --profile quarter"), b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(
        e.contains("warning: the node's disk is overcommitted (disk.overcommit = true): app 'three' asks for 25.0 GiB"),
        "{e}"
    );
    assert!(n.root.join("apps/three.toml").exists());
}
