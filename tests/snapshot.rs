//! App snapshots as a developer uses them over SSH: an app linked to a Redis add-on, with an env
//! variable and a file in app-root/data, saved with `snapshot save`, destroyed (with its
//! add-on), restored with `snapshot restore`: the same page (the same rows), env and file. A
//! truncated snapshot is refused and creates nothing; `--as NEW` gives a second copy.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn out(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ssh_ok(n: &TestNode, key: &Path, cmd: &str, stdin: &[u8]) -> Output {
    let o = n.ssh(key, &[], Some(cmd), stdin);
    assert!(o.status.success(), "ssh `{cmd}` failed: {}", out(&o.stderr));
    o
}

/// GET PATH at APP.localhost (or at a host name with a dot) through the router: (status, body).
fn get(n: &TestNode, app: &str, path: &str) -> (u16, String) {
    let host = if app.contains('.') {
        app.to_string()
    } else {
        format!("{app}.localhost")
    };
    let o = Command::new("curl")
        .args(["-s", "-m", "20", "-o", "-", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://127.0.0.1:{}{path}", n.http_port()))
        .output()
        .unwrap();
    let text = out(&o.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// What a restored app must show: its page (rows from Redis), its env, its data file.
fn assert_same(n: &TestNode, app: &str) {
    assert_eq!(
        get(n, app, "/"),
        (200, "notes: one,two\n".into()),
        "the page of '{app}'"
    );
    let (_, env, _) = n.sh(app, "echo $GREETING ${REDIS_URL%%:*}; cat ~/app-root/data/kept.txt");
    assert_eq!(env, "hello redis\nkept across snapshots\n", "env and data of '{app}'");
}

#[test]
fn snapshot_save_destroy_restore_serves_the_same_app_and_refuses_a_truncated_file() {
    require_root!();
    if !Path::new("/usr/bin/redis-server").exists() {
        skip!("the redis-server package is not installed (make deps)");
    }
    if offline_leaves_out(&test_name!(), "the whole test (redis from npm)") {
        return;
    }
    let d = dev_node();
    let (n, key) = (&d.n, &d.key);
    ssh_ok(n, key, "addon create redis cache", b"");
    ssh_ok(n, key, "app create board --cartridge nodejs", b"");
    ssh_ok(n, key, "addon link board cache", b"");
    ssh_ok(n, key, "env set board GREETING=hello", b"");
    let (ok, log) = push_as(n, key, &example_repo(n, "node-redis"), "board", "main");
    assert!(ok, "{log}");
    assert_eq!(get(n, "board", "/add?note=one"), (200, "notes: one\n".into()));
    assert_eq!(get(n, "board", "/add?note=two"), (200, "notes: one,two\n".into()));
    let (code, _, e) = n.sh("board", "echo kept across snapshots > ~/app-root/data/kept.txt");
    assert_eq!(code, 0, "{e}");
    assert_same(n, "board");

    let t = std::time::Instant::now();
    let snap = ssh_ok(n, key, "snapshot save board", b"").stdout;
    eprintln!("snapshot save: {:?}, {} bytes", t.elapsed(), snap.len());
    assert_eq!(&snap[..2], b"\x1f\x8b", "not gzip");
    let listing = {
        let f = n.root.join("board.tar.gz");
        std::fs::write(&f, &snap).unwrap();
        out(&Command::new("tar").arg("-tzf").arg(&f).output().unwrap().stdout)
    };
    for member in [
        "manifest.json",
        "app.json",
        "deployments.json",
        "repo.tar",
        "data.tar",
        "addon-cache.dump",
    ] {
        assert!(listing.lines().any(|l| l == member), "{member} missing: {listing}");
    }

    // Truncated (in the gzip stream, and a whole gzip stream of a cut archive): refused,
    // nothing created.
    for cut in [snap.len() / 2, snap.len() - 9] {
        let o = n.ssh(key, &[], Some("snapshot restore board --as broken"), &snap[..cut]);
        assert!(!o.status.success(), "a snapshot cut at {cut} was restored");
        let e = out(&o.stderr);
        assert!(e.contains("nothing was changed"), "{e}");
    }
    let o = n.ssh(key, &[], Some("snapshot restore board --as broken"), b"not a snapshot");
    assert!(!o.status.success());
    let apps = out(&ssh_ok(n, key, "app list", b"").stdout);
    assert!(!apps.contains("broken"), "{apps}");
    // A snapshot from a newer gearshift, and one whose data does not match its checksum.
    let unpacked = n.root.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = |args: &[&str]| assert!(Command::new("tar").args(args).status().unwrap().success());
    tar(&[
        "-xzf",
        &n.root.join("board.tar.gz").to_string_lossy(),
        "-C",
        &unpacked.to_string_lossy(),
    ]);
    let manifest = std::fs::read_to_string(unpacked.join("manifest.json")).unwrap();
    let repack = |name: &str| -> Vec<u8> {
        let f = n.root.join(name);
        let mut args: Vec<String> = ["-czf", &f.to_string_lossy(), "-C", &unpacked.to_string_lossy()]
            .map(String::from)
            .to_vec();
        args.extend(listing.lines().map(String::from));
        assert!(Command::new("tar").args(&args).status().unwrap().success());
        std::fs::read(f).unwrap()
    };
    let newer = manifest.replacen("\"format\": 2", "\"format\": 99", 1);
    assert_ne!(newer, manifest);
    std::fs::write(unpacked.join("manifest.json"), newer).unwrap();
    let o = n.ssh(
        key,
        &[],
        Some("snapshot restore board --as broken"),
        &repack("newer.tar.gz"),
    );
    let e = out(&o.stderr);
    assert!(!o.status.success() && e.contains("format 99, newer than"), "{e}");
    std::fs::write(unpacked.join("manifest.json"), &manifest).unwrap();
    let mut data = std::fs::read(unpacked.join("data.tar")).unwrap();
    data[600] ^= 1;
    std::fs::write(unpacked.join("data.tar"), data).unwrap();
    let o = n.ssh(
        key,
        &[],
        Some("snapshot restore board --as broken"),
        &repack("corrupt.tar.gz"),
    );
    let e = out(&o.stderr);
    assert!(!o.status.success() && e.contains("does not match its checksum"), "{e}");
    let apps = out(&ssh_ok(n, key, "app list", b"").stdout);
    assert!(!apps.contains("broken"), "{apps}");

    // A snapshot of another app's name is refused before anything changes.
    let o = n.ssh(key, &[], Some("snapshot restore other"), &snap);
    assert!(out(&o.stderr).contains("snapshot of app 'board'"), "{}", out(&o.stderr));

    ssh_ok(n, key, "app destroy board --confirm board", b"");
    ssh_ok(n, key, "addon destroy cache --confirm cache --force", b"");
    assert_eq!(get(n, "board", "/").0, 404);

    let t = std::time::Instant::now();
    let o = ssh_ok(n, key, "snapshot restore board", &snap);
    eprintln!("snapshot restore: {:?}\n{}", t.elapsed(), out(&o.stderr));
    assert_same(n, "board");
    let addons = out(&ssh_ok(n, key, "addon list", b"").stdout);
    assert!(addons.contains("cache") && addons.contains("redis"), "{addons}");

    // A second copy beside the original, linked to the same add-on.
    let o = ssh_ok(n, key, "snapshot restore board --as copy", &snap);
    eprintln!("{}", out(&o.stderr));
    assert_same(n, "copy");
    let o = n.ssh(key, &[], Some("snapshot restore board"), &snap);
    assert!(out(&o.stderr).contains("exists"), "{}", out(&o.stderr));
}

const SERVER: &str = r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = open('page.txt').read().strip().encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#;

/// The build refuses while app-root/data holds `break-build`: a snapshot taken then fails to
/// deploy when restored, after its app was created.
const BUILD_HOOK: &str =
    "#!/bin/sh\n[ ! -e \"$OPENSHIFT_DATA_DIR/break-build\" ] || { echo build broken on purpose; exit 9; }\n";

/// `curl` through the router's HTTPS port, trusting only CERT: the page, or None.
fn get_tls(n: &TestNode, host: &str, cert: &Path) -> Option<String> {
    let port = n.https_port();
    let o = Command::new("curl")
        .args(["-s", "-m", "20", "--cacert"])
        .arg(cert)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}/"))
        .output()
        .unwrap();
    o.status.success().then(|| out(&o.stdout))
}

#[test]
fn restore_brings_back_domains_formation_and_kept_deployments_and_a_failed_restore_leaves_nothing() {
    require_root!();
    let d = dev_node();
    let (n, key) = (&d.n, &d.key);
    ssh_ok(n, key, "app create keep --cartridge python", b"");
    let dir = app_repo(
        n,
        "keep",
        &[
            (
                "Procfile",
                "web: python3 -u server.py\nworker: python3 -c 'import time; time.sleep(1e6)'\n",
            ),
            ("server.py", SERVER),
            (".openshift/action_hooks/build", BUILD_HOOK),
            ("page.txt", "v1"),
        ],
    );
    let (ok, log) = push_as(n, key, &dir, "keep", "main");
    assert!(ok, "{log}");
    write_files(&dir, &[("page.txt", "v2")]);
    commit(&dir, "v2");
    let (ok, log) = push_as(n, key, &dir, "keep", "main");
    assert!(ok, "{log}");
    assert_eq!(get(n, "keep", "/"), (200, "v2".into()));
    ssh_ok(n, key, "domain add keep keep.example", b"");
    let (cert, key_file) = make_cert(&n.root.join("certs-keep"), "keep.example", "keep-cert");
    let mut bundle = std::fs::read(&cert).unwrap();
    bundle.extend(std::fs::read(&key_file).unwrap());
    ssh_ok(n, key, "domain cert keep keep.example", &bundle);
    assert!(
        eventually(std::time::Duration::from_secs(10), || get_tls(n, "keep.example", &cert)
            .is_some()),
        "the installed certificate is not served"
    );
    ssh_ok(n, key, "app scale keep worker=2", b"");
    let show = out(&ssh_ok(n, key, "app show keep", b"").stdout);
    assert!(show.contains("worker=2"), "{show}");

    let t = std::time::Instant::now();
    let snap = ssh_ok(n, key, "snapshot save keep", b"").stdout;
    eprintln!("snapshot save: {:?}, {} bytes", t.elapsed(), snap.len());

    // Damaged files are refused before anything is made: cut short, and one byte changed in
    // the middle of the gzip stream.
    let mut flipped = snap.clone();
    flipped[snap.len() / 2] ^= 0x40;
    for (what, bad) in [("truncated", &snap[..snap.len() * 2 / 3]), ("corrupted", &flipped[..])] {
        let o = n.ssh(key, &[], Some("snapshot restore keep --as broken"), bad);
        let e = out(&o.stderr);
        assert!(!o.status.success(), "a {what} snapshot was restored");
        assert!(e.contains("nothing was changed"), "{what}: {e}");
    }

    // A restore that fails part-way (its live commit does not build) removes the app it made:
    // its record and gear.
    let (code, _, e) = n.sh("keep", "touch ~/app-root/data/break-build");
    assert_eq!(code, 0, "{e}");
    let breaking = ssh_ok(n, key, "snapshot save keep", b"").stdout;
    let (code, _, e) = n.sh("keep", "rm ~/app-root/data/break-build");
    assert_eq!(code, 0, "{e}");
    let o = n.ssh(key, &[], Some("snapshot restore keep --as broken"), &breaking);
    let e = out(&o.stderr);
    assert!(!o.status.success(), "a restore whose deploy failed succeeded: {e}");
    assert!(e.contains("created app 'broken'"), "{e}");
    assert!(e.contains("did not deploy") && e.contains("was removed"), "{e}");
    let apps = out(&ssh_ok(n, key, "app list", b"").stdout);
    assert!(!apps.contains("broken"), "{apps}");
    assert!(!n.ssh(key, &[], Some("app show broken"), b"").status.success());
    // Nothing of it is in the way of the name.
    ssh_ok(n, key, "app create broken --cartridge python", b"");
    ssh_ok(n, key, "app destroy broken --confirm broken", b"");

    ssh_ok(n, key, "app destroy keep --confirm keep", b"");
    assert_eq!(get(n, "keep", "/").0, 404);
    let t = std::time::Instant::now();
    let o = ssh_ok(n, key, "snapshot restore keep", &snap);
    eprintln!("snapshot restore: {:?}\n{}", t.elapsed(), out(&o.stderr));
    assert_eq!(get(n, "keep", "/"), (200, "v2".into()));
    assert_eq!(get(n, "keep.example", "/").0, 200, "the domain through the router");
    assert_eq!(
        get_tls(n, "keep.example", &cert).as_deref(),
        Some("v2"),
        "the domain's own certificate"
    );
    let show = out(&ssh_ok(n, key, "app show keep", b"").stdout);
    assert!(show.contains("worker=2"), "{show}");
    ssh_ok(n, key, "rollback keep", b"");
    assert_eq!(get(n, "keep", "/"), (200, "v1".into()), "rollback after a restore");
}
