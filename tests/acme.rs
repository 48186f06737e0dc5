//! Automatic TLS over ACME, against Let's Encrypt's test server `pebble` on loopback: a host
//! added with `domain add --acme` gets a certificate (pebble validates HTTP-01 against the
//! node's own router, resolving names through a tiny DNS responder of this test), served over
//! HTTPS without a restart; `domain renew` replaces it while the daemon runs; and a challenge
//! that fails leaves the old certificate serving and records a failure event.

mod common;
use common::*;
use std::collections::HashSet;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A DNS responder on loopback for pebble's lookups: every name is 127.0.0.1 (A), has no IPv6
/// address (AAAA: no answer), except the names in `dead`, which do not exist (NXDOMAIN).
struct Dns {
    port: u16,
    dead: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
}

impl Dns {
    fn start() -> Dns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let port = sock.local_addr().unwrap().port();
        let dead: Arc<Mutex<HashSet<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (dead.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n], &d.lock().unwrap()) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        Dns { port, dead, stop }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The reply to one query: the question echoed, one A record of 127.0.0.1 for an A query.
fn answer(q: &[u8], dead: &HashSet<String>) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let (mut i, mut labels) = (12, Vec::new());
    while *q.get(i)? != 0 {
        let l = q[i] as usize;
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + l)?).to_ascii_lowercase());
        i += 1 + l;
    }
    let qend = i + 5;
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let name = labels.join(".");
    let nx = dead.contains(&name);
    let a = qtype == 1 && !nx;
    let mut r = q[..2].to_vec(); // id
    r.extend_from_slice(&[0x81, if nx { 0x83 } else { 0x80 }]); // response, RD, RA, rcode
    r.extend_from_slice(&[0, 1, 0, u8::from(a), 0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..qend)?);
    if a {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1]);
    }
    Some(r)
}

/// pebble on this node's spare ports, trusting nothing but its own test CA.
struct Pebble {
    child: Child,
    dir: PathBuf,
    /// The CA of pebble's own HTTPS (what the node's `acme.ca_bundle` names).
    api_ca: PathBuf,
    api: u16,
    mgmt: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port`, resolving through `dns`.
    fn start(n: &TestNode, dns: &Dns) -> Pebble {
        let dir = n.root.join("pebble");
        std::fs::create_dir_all(&dir).unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &dir,
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-days",
                    "2",
                    "-subj",
                    "/CN=pebble test CA",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign",
                ],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                &["req"][..],
                &ec,
                &["-subj", "/CN=localhost", "-keyout", "api.key", "-out", "api.csr"],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("api.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "api.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "api.ext",
                "-out",
                "api.pem",
            ],
        );
        let base = 20_005 + n.slot * 10;
        let (api, mgmt, tls) = (base as u16, (base + 1) as u16, (base + 2) as u16);
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"), "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.join("api.pem"), "privateKey": dir.join("api.key"),
            "httpPort": n.http_port(), "tlsPort": tls, "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", dns.port)])
            // No artificial validation delays; every order validated anew (no reused authorizations).
            .envs([("PEBBLE_VA_NOSLEEP", "1"), ("PEBBLE_AUTHZREUSE", "0")])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start pebble");
        let p = Pebble {
            child,
            api_ca: dir.join("ca.pem"),
            dir,
            api,
            mgmt,
        };
        assert!(
            eventually(Duration::from_secs(30), || std::net::TcpStream::connect((
                "127.0.0.1",
                mgmt
            ))
            .is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", api)).is_ok()),
            "pebble did not start: {}",
            p.log()
        );
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// The root pebble issues under (made anew at each start), as a PEM file.
    fn issuing_root(&self) -> PathBuf {
        let path = self.dir.join("issuing-root.pem");
        let o = Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&self.api_ca)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt))
            .output()
            .unwrap();
        assert!(
            o.status.success() && !o.stdout.is_empty(),
            "cannot fetch pebble's root: {o:?}"
        );
        std::fs::write(&path, &o.stdout).unwrap();
        path
    }
}

/// GET https://HOST/ through the router, trusting only `root`: (curl succeeded, body, the
/// served certificate's serial as curl saw it).
fn https_get(n: &TestNode, host: &str, root: &Path) -> (bool, String, String) {
    let port = n.https_port();
    let o = Command::new("curl")
        .args(["-sS", "-m", "30", "-v", "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg(format!("https://{host}:{port}/"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), err)
}

/// The serial number of the certificate served for `host` (openssl s_client).
fn served_serial(n: &TestNode, host: &str) -> String {
    let mut c = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", n.https_port()),
            "-servername",
            host,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pem = Vec::new();
    std::io::Read::read_to_end(c.stdout.as_mut().unwrap(), &mut pem).unwrap();
    let _ = c.wait();
    let mut x = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(x.stdin.as_mut().unwrap(), &pem).unwrap();
    drop(x.stdin.take());
    String::from_utf8_lossy(&x.wait_with_output().unwrap().stdout)
        .trim()
        .to_string()
}

/// The `domain.acme` events of APP, as JSON.
fn acme_events(n: &TestNode, app: &str) -> Vec<serde_json::Value> {
    let out = n.ok(&["events", "--app", app, "--json"]);
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "domain.acme")
        .collect()
}

fn prerequisites(test: &str) -> bool {
    if !nix_is_root() {
        skipped(test, "needs root");
        return false;
    }
    if Command::new("pebble").arg("-h").output().is_err() {
        skipped(
            test,
            "pebble is not installed (Debian package `pebble`; scripts/deps.sh installs it)",
        );
        return false;
    }
    true
}

#[test]
fn acme_issues_serves_renews_and_survives_a_failed_challenge() {
    if !prerequisites(&test_of(module_path!())) {
        return;
    }
    let n = TestNode::new();
    let dns = Dns::start();
    let pebble = Pebble::start(&n, &dns);
    // `init` wrote the [acme] section with its defaults: the directory becomes pebble's.
    n.set_config(
        "directory = \"https://acme-v02.api.letsencrypt.org/directory\"",
        &format!(
            "directory = \"https://127.0.0.1:{}/dir\"\nemail = \"ops@shop.test\"\nca_bundle = \"{}\"",
            pebble.api,
            pebble.api_ca.display()
        ),
    );
    let key = n.add_user("dev");
    let _daemon = n.start_daemon();
    let repo = example_repo(&n, "static");
    n.ok(&["app", "create", "shop", "--cartridge", "static", "--owner", "dev"]);
    let (ok, out) = push_as(&n, &key, &repo, "shop", "main");
    assert!(ok, "push failed: {out}");

    // Issue, over SSH as the app's owner; served without a restart.
    let host = "www.shop.test";
    let t = std::time::Instant::now();
    let o = n.ssh(&key, &[], Some(&format!("domain add shop {host} --acme")), b"");
    assert!(
        o.status.success(),
        "domain add --acme: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let root = pebble.issuing_root();
    let served = || https_get(&n, host, &root);
    assert!(
        eventually(Duration::from_secs(90), || served().0),
        "no certificate from pebble served for {host}: {:?}\nevents: {:?}\npebble: {}",
        served(),
        acme_events(&n, "shop"),
        pebble.log()
    );
    eprintln!(
        "measured: `domain add --acme` to the certificate served: {:?}",
        t.elapsed()
    );
    let (_, body, _) = served();
    assert!(
        body.contains("<html") || body.contains("<!"),
        "the app's page over HTTPS, got: {body}"
    );
    let ev = acme_events(&n, "shop");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        (ev[0]["detail"]["action"].as_str(), ev[0]["detail"]["result"].as_str()),
        (Some("issue"), Some("ok"))
    );
    let list = n.ok(&["domain", "list", "shop"]);
    assert!(list.contains(&format!("{host}  acme: valid until")), "{list}");
    // Root-only, the key never world- or group-readable.
    use std::os::unix::fs::PermissionsExt;
    for f in [
        format!("certs/shop@{host}.key"),
        format!("certs/shop@{host}.crt"),
        "acme/account.key".into(),
    ] {
        let mode = std::fs::metadata(n.root.join(&f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // Bad input: clear words, nothing asked of the CA.
    let e = n.fails(&["domain", "renew", "shop", "nothere.shop.test"]);
    assert!(e.contains("nothere.shop.test is not a host name of shop"), "{e}");
    let e = n.fails(&["domain", "renew", "shop", "shop.localhost"]);
    assert!(e.contains("has no ACME certificate") && e.contains("--acme"), "{e}");
    let first = served_serial(&n, host);
    assert!(first.starts_with("serial="), "{first}");

    // Force-renew: a new certificate, served by the same daemon. With plain HTTP redirected to
    // HTTPS, the router still answers the challenge itself on port 80.
    n.ok(&["domain", "redirect", "shop", "on"]);
    let t = std::time::Instant::now();
    n.ok(&["domain", "renew", "shop", host]);
    assert!(
        eventually(Duration::from_secs(90), || served_serial(&n, host) != first),
        "the renewed certificate is not served: events {:?}",
        acme_events(&n, "shop")
    );
    eprintln!(
        "measured: `domain renew` to the new certificate served: {:?}",
        t.elapsed()
    );
    let second = served_serial(&n, host);
    assert!(served().0, "the renewed certificate chains to pebble's root");
    let ev = acme_events(&n, "shop");
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(
        (ev[1]["detail"]["action"].as_str(), ev[1]["detail"]["result"].as_str()),
        (Some("renew"), Some("ok"))
    );

    // A failing challenge (the name no longer resolves for the CA): the old certificate keeps
    // serving, the failure is an event and shows in `domain list`.
    dns.dead.lock().unwrap().insert(host.to_string());
    n.ok(&["domain", "renew", "shop", host]);
    assert!(
        eventually(Duration::from_secs(90), || acme_events(&n, "shop").len() == 3),
        "no event for the failed renewal: {:?}",
        acme_events(&n, "shop")
    );
    let ev = acme_events(&n, "shop");
    let d = &ev[2]["detail"];
    assert_eq!(
        (d["action"].as_str(), d["result"].as_str()),
        (Some("renew"), Some("failed")),
        "{ev:?}"
    );
    assert!(
        d["error"].as_str().unwrap_or("").contains(host),
        "the error names the host: {d}"
    );
    assert_eq!(served_serial(&n, host), second, "the previous certificate still serves");
    assert!(served().0, "HTTPS still works with the previous certificate");
    let list = n.ok(&["domain", "list", "shop"]);
    assert!(list.contains("last attempt failed"), "{list}");

    // A host the app already answers to is switched to ACME by `domain add --acme`, once.
    let api = "api.shop.test";
    n.ok(&["domain", "add", "shop", api]);
    assert!(!https_get(&n, api, &root).0, "self-signed before the switch");
    n.ok(&["domain", "add", "shop", api, "--acme"]);
    assert!(
        eventually(Duration::from_secs(90), || https_get(&n, api, &root).0),
        "no ACME certificate for {api} after the switch: {:?}",
        acme_events(&n, "shop")
    );
    let e = n.fails(&["domain", "add", "shop", api, "--acme"]);
    assert!(e.contains("already gets its certificate over ACME"), "{e}");
    assert!(
        !_daemon.log_text().contains("PRIVATE KEY"),
        "no key in the daemon's log"
    );
}

#[test]
fn node_wide_acme_covers_every_host_but_hand_installed_ones_and_backs_off_after_a_failure() {
    if !prerequisites(&test_of(module_path!())) {
        return;
    }
    let n = TestNode::new();
    let dns = Dns::start();
    let pebble = Pebble::start(&n, &dns);
    let domain = format!("{}.test", n.name);
    n.set_config("domain = \"localhost\"", &format!("domain = \"{domain}\""));
    n.set_config(
        "enabled = false\ndirectory = \"https://acme-v02.api.letsencrypt.org/directory\"",
        &format!(
            "enabled = true\nemail = \"ops@{domain}\"\ndirectory = \"https://127.0.0.1:{}/dir\"\nca_bundle = \"{}\"",
            pebble.api,
            pebble.api_ca.display()
        ),
    );
    let _daemon = n.start_daemon();
    let root = pebble.issuing_root();
    let (own, alias, dead, manual) = (
        format!("blog.{domain}"),
        "www.blog.test".to_string(),
        "dead.blog.test".to_string(),
        "hand.blog.test".to_string(),
    );
    dns.dead.lock().unwrap().insert(dead.clone());
    // The hand-installed certificate is in place before ACME may look at the host.
    n.ok(&["app", "create", "blog", "--cartridge", "static"]);
    let (crt, key) = make_cert(&n.root.join("hand"), &manual, "hand");
    n.ok(&["domain", "add", "blog", &manual]);
    let mut c = n
        .cmd()
        .args(["domain", "cert", "blog", &manual])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let bundle = [std::fs::read(&crt).unwrap(), std::fs::read(&key).unwrap()].concat();
    std::io::Write::write_all(c.stdin.as_mut().unwrap(), &bundle).unwrap();
    drop(c.stdin.take());
    assert!(c.wait().unwrap().success(), "domain cert failed");
    n.ok(&["domain", "add", "blog", &alias]);
    n.ok(&["domain", "add", "blog", &dead]);

    // Without `--acme`: the app's own name and the alias get certificates from pebble.
    for h in [&own, &alias] {
        assert!(
            eventually(Duration::from_secs(90), || https_get(&n, h, &root).0),
            "no ACME certificate served for {h}: events {:?}",
            acme_events(&n, "blog")
        );
    }
    // The name the CA cannot resolve fails, is recorded, and waits for its backoff.
    assert!(
        eventually(Duration::from_secs(90), || acme_events(&n, "blog")
            .iter()
            .any(|e| e["detail"]["host"] == dead.as_str())),
        "no event for {dead}"
    );
    // A later pass (a new host added, and served) leaves the failed host to its backoff.
    let later = "later.blog.test";
    n.ok(&["domain", "add", "blog", later]);
    assert!(
        eventually(Duration::from_secs(90), || https_get(&n, later, &root).0),
        "no ACME certificate served for {later}"
    );
    let ev = acme_events(&n, "blog");
    let failed: Vec<_> = ev.iter().filter(|e| e["detail"]["host"] == dead.as_str()).collect();
    assert_eq!(failed.len(), 1, "one attempt, then the backoff: {ev:?}");
    let d = &failed[0]["detail"];
    assert_eq!(
        (d["action"].as_str(), d["result"].as_str()),
        (Some("issue"), Some("failed")),
        "{d}"
    );
    assert_eq!(d["failures"], 1, "{d}");
    assert!(!https_get(&n, &dead, &root).0, "{dead} is served self-signed meanwhile");
    let list = n.ok(&["domain", "list", "blog"]);
    let line = list.lines().find(|l| l.starts_with(&dead)).unwrap_or("");
    assert!(line.contains("acme: pending; last attempt failed"), "{list}");
    // The hand-installed certificate is kept: no ACME attempt, no ACME line.
    assert!(ev.iter().all(|e| e["detail"]["host"] != manual.as_str()), "{ev:?}");
    assert!(list.lines().any(|l| l == manual), "{list}");
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&crt)
        .output()
        .unwrap();
    let hand = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(hand.starts_with("serial="), "{hand}");
    assert_eq!(
        served_serial(&n, &manual),
        hand,
        "the hand-installed certificate serves"
    );
}
