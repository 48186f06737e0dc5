//! Add-ons as a developer uses them over SSH: PostgreSQL, MariaDB and Redis add-ons in gears of
//! their own, linked to apps that read and write rows through the linked URL with real client
//! libraries (psycopg and PyMySQL from PyPI, `redis` from npm), served through the router;
//! other users' apps, unlinked apps and the host's non-root users cannot reach them; rows
//! survive kill -9 of the server and of the daemon; unlink takes access away; destroy is
//! refused while linked.

mod common;
use common::*;
use std::path::Path;
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

/// Python that tries a TCP connection to IP:PORT and prints "connected" or why not.
fn connect_script(ip: &str, port: u16) -> String {
    format!(
        "import socket\ntry:\n socket.create_connection(('{ip}', {port}), timeout=3); print('connected')\nexcept Exception as e: print('failed:', e)"
    )
}

/// From inside APP's gear: can it open a TCP connection to IP:5432? ("connected" or why not)
fn probe(n: &TestNode, app: &str, ip: &str) -> String {
    probe_port(n, app, ip, 5432)
}

fn probe_port(n: &TestNode, app: &str, ip: &str, port: u16) -> String {
    let (_, o, e) = n.sh(
        app,
        &format!("python3 -c \"{}\"", connect_script(ip, port).replace('"', "\\\"")),
    );
    format!("{o}{e}").trim().to_string()
}

/// From the host, as UID: can it open a TCP connection to IP:PORT?
fn probe_from_host(uid: u32, ip: &str, port: u16) -> String {
    let o = Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
            "--",
        ])
        .args(["/usr/bin/python3", "-c", &connect_script(ip, port)])
        .output()
        .unwrap();
    format!("{}{}", out(&o.stdout), out(&o.stderr)).trim().to_string()
}

/// The process of the add-on gear with uid UID whose command line starts with PREFIX.
fn server_pid(uid: u64, prefix: &str) -> Option<i32> {
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
        (owner == uid && String::from_utf8_lossy(&cmd).starts_with(prefix)).then_some(pid)
    })
}

/// The node's allowed gear-to-gear connections, for a failure's message.
fn links_now(n: &TestNode) -> String {
    let o = Command::new("nft")
        .args(["list", "set", "inet", &format!("gearshift_{}", n.name), "gear_links"])
        .output()
        .unwrap();
    let neigh = Command::new("ip")
        .args(["neigh", "show", "dev", &n.name])
        .output()
        .unwrap();
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", n.name)).unwrap_or_default();
    format!(
        "gear_links: {}{}; the host's neighbours on the bridge (MAC {}): {}",
        out(&o.stdout),
        out(&o.stderr),
        mac.trim(),
        out(&neigh.stdout)
    )
}

/// What APP's gear knows of its neighbours (its ARP table), for a failure's message.
fn gear_neighbours(n: &TestNode, app: &str) -> String {
    let (_, o, e) = n.sh(app, "cat /proc/net/arp; ip -o link show eth0 2>/dev/null");
    format!("{app}'s neighbours: {o}{e}")
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// Where an app's client library comes from: PyPI or npm (the example as a user pushes it), or,
/// in the offline test VM (`GEARSHIFT_TEST_OFFLINE=1`), the same library from Debian's package
/// (scripts/vm/packages.txt), which the app imports from the host's read-only /usr.
#[derive(Clone, Copy)]
enum Client {
    Registry,
    Distro,
}

/// The client library's source for TEST: `None` (the test is left out, recorded) when offline
/// and `probe` (a command that finds the library) fails. (Not `node -e require(...)`: root's
/// unconfined node dies without execmem in the enforcing VM; a gear may.)
fn client_source(test: &str, library: &str, package: &str, probe: &[&str]) -> Option<Client> {
    if std::env::var_os("GEARSHIFT_TEST_OFFLINE").is_none_or(|v| v != "1") {
        return Some(Client::Registry);
    }
    let installed = Command::new(probe[0])
        .args(&probe[1..])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        offline_leaves_out(
            test,
            &format!("{library} from its registry (Debian's {package} instead)"),
        );
        Some(Client::Distro)
    } else {
        offline_leaves_out(
            test,
            &format!("the whole test ({library} from its registry; Debian's {package} is not installed)"),
        );
        None
    }
}

/// The example's repository; with `Client::Distro`, without the dependency list the build
/// would install from the registry.
fn client_repo(n: &TestNode, example: &str, client: Client) -> std::path::PathBuf {
    let dir = example_repo(n, example);
    if let Client::Distro = client {
        let _ = std::fs::remove_file(dir.join("requirements.txt"));
        let pkg = dir.join("package.json");
        if let Ok(text) = std::fs::read_to_string(&pkg) {
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v.as_object_mut().unwrap().remove("dependencies");
            std::fs::write(&pkg, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        }
        git(&dir, &["add", "-A"]);
        git(
            &dir,
            &["commit", "-q", "-m", "the client library from the distribution"],
        );
    }
    dir
}

/// The postmaster of the add-on gear with uid UID (its children rename themselves).
fn postmaster(uid: u64) -> Option<i32> {
    server_pid(uid, "/opt/gearshift/cartridge/bin/postgres\0-D")
}

#[test]
fn postgresql_addon_linked_over_ssh_isolated_durable_and_unlinked() {
    require_root!();
    if !Path::new("/usr/lib/postgresql").exists() && !Path::new("/usr/bin/initdb").exists() {
        skip!("the postgresql package is not installed (make deps)");
    }
    let Some(client) = client_source(
        &test_name!(),
        "psycopg",
        "python3-psycopg",
        &["python3", "-c", "import psycopg"],
    ) else {
        return;
    };
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
    let dir = client_repo(n, "python-postgres", client);
    let (ok, log) = push_as(n, &key, &dir, "notes", "main");
    assert!(ok, "{log}");
    assert_eq!(get(n, "notes", "/add?note=one"), (200, "notes: one\n".into()));
    assert_eq!(get(n, "notes", "/add?note=two"), (200, "notes: one,two\n".into()));
    let (_, env, _) = n.sh(
        "notes",
        "echo $OPENSHIFT_POSTGRESQL_DB_HOST:$OPENSHIFT_POSTGRESQL_DB_PORT",
    );
    assert_eq!(env.trim(), format!("{ip}:5432"));
    // A linked variable is not set by hand too (the link's value would win unseen).
    let e = ssh_fails(n, &key, "env set notes DATABASE_URL=postgres://elsewhere/db");
    assert!(
        e.contains("gets DATABASE_URL from an add-on link") && e.contains("--as"),
        "{e}"
    );

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
    let r = probe(n, "other", &ip);
    assert_eq!(r, "connected", "{}; {}", links_now(n), gear_neighbours(n, "other"));
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

    // backup -> destroy -> create -> restore: the same rows, through a new password.
    backup_destroy_create_restore(&d, "postgresql", "notesdb", "notes", b"PGDMP", "notes: one,two,three\n");
    let show: serde_json::Value = serde_json::from_str(&ssh_ok(n, &key, "addon show notesdb --json")).unwrap();
    let ip = show["gears"][0]["ip"].as_str().unwrap().to_string();

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

/// What the MariaDB and Redis tests share: an add-on of KIND created over SSH, linked to a new
/// app of CARTRIDGE running EXAMPLE (its client library from CLIENT); returns (add-on ip, add-on gear uid, link output).
fn linked_example(
    d: &DevNode,
    kind: &str,
    addon: &str,
    app: &str,
    cartridge: &str,
    example: &str,
    client: Client,
) -> (String, u64, String) {
    let n = &d.n;
    let key = &d.key;
    let t = Instant::now();
    let created = ssh_ok(n, key, &format!("addon create {kind} {addon}"));
    eprintln!("addon create {kind}: {:?}", t.elapsed());
    assert!(
        created.contains(&format!("created {kind} add-on '{addon}'")),
        "{created}"
    );
    let show: serde_json::Value = serde_json::from_str(&ssh_ok(n, key, &format!("addon show {addon} --json"))).unwrap();
    assert_eq!(show["service"]["state"], "running", "{show}");
    let ip = show["gears"][0]["ip"].as_str().unwrap().to_string();
    let uid = show["gears"][0]["uid"].as_u64().unwrap();
    ssh_ok(n, key, &format!("app create {app} --cartridge {cartridge}"));
    // The longest start the node allows (50 s, not 30): in the test VM, under emulation, node's
    // start has come close to 30 s and once passed it.
    ssh_ok(n, key, &format!("app health {app} / --timeout 50"));
    let linked = ssh_ok(n, key, &format!("addon link {app} {addon}"));
    let dir = client_repo(n, example, client);
    let (ok, log) = push_as(n, key, &dir, app, "main");
    assert!(ok, "{log}");
    let port = show["port"].as_u64().unwrap() as u16;
    let r = probe_port(n, app, &ip, port);
    assert_eq!(
        r,
        "connected",
        "the linked app cannot reach {ip}:{port}; {}",
        links_now(n)
    );
    assert_eq!(get(n, app, "/add?note=one"), (200, "notes: one\n".into()));
    assert_eq!(get(n, app, "/add?note=two"), (200, "notes: one,two\n".into()));
    (ip, uid, linked)
}

/// `addon backup` over SSH, then destroy, create under the same name, `addon restore` from the
/// file, link again: APP's page is EXPECTED again (MAGIC: what the dump's head holds). A restore into an add-on with data, and of
/// something that is not a dump, are refused.
fn backup_destroy_create_restore(d: &DevNode, kind: &str, addon: &str, app: &str, magic: &[u8], expected: &str) {
    let (n, key) = (&d.n, &d.key);
    let o = n.ssh(key, &[], Some(&format!("addon backup {addon}")), b"");
    assert!(o.status.success(), "addon backup: {}", out(&o.stderr));
    let dump = o.stdout;
    let head = &dump[..dump.len().min(256)];
    assert!(
        head.windows(magic.len()).any(|w| w == magic),
        "not a {kind} dump: {:?}",
        out(head)
    );
    let o = n.ssh(key, &[], Some(&format!("addon restore {addon}")), &dump);
    assert!(!o.status.success(), "a restore into a full add-on was accepted");
    assert!(out(&o.stderr).contains("--force"), "{}", out(&o.stderr));
    ssh_ok(n, key, &format!("addon destroy {addon} --confirm {addon} --force"));
    let t = Instant::now();
    ssh_ok(n, key, &format!("addon create {kind} {addon}"));
    eprintln!("addon create {kind}, the template made: {:?}", t.elapsed());
    let o = n.ssh(
        key,
        &[],
        Some(&format!("addon restore {addon}")),
        b"this is not a dump\n",
    );
    assert!(!o.status.success(), "garbage was restored");
    let o = n.ssh(key, &[], Some(&format!("addon restore {addon}")), &dump);
    assert!(o.status.success(), "addon restore: {}", out(&o.stderr));
    ssh_ok(n, key, &format!("addon link {app} {addon}"));
    let show: serde_json::Value = serde_json::from_str(&ssh_ok(n, key, &format!("addon show {addon} --json"))).unwrap();
    let (ip, port) = (
        show["gears"][0]["ip"].as_str().unwrap(),
        show["port"].as_u64().unwrap() as u16,
    );
    assert_eq!(
        get(n, app, "/"),
        (200, expected.to_string()),
        "after restore (from the app: {}; {}; host neighbour: {})",
        probe_port(n, app, ip, port),
        links_now(n),
        out(&Command::new("ip").args(["neigh", "show", ip]).output().unwrap().stdout)
    );
}

/// Nothing outside the link reaches IP:PORT: another user's app, an unlinked app of the same
/// user, a non-root user of the host (root, the daemon, may: it waits for new add-ons).
fn only_the_link_reaches(d: &DevNode, ip: &str, port: u16) {
    let n = &d.n;
    n.ok(&["app", "create", "bobapp", "--cartridge", "python", "--owner", "bob"]);
    n.ok(&["app", "create", "unlinked", "--cartridge", "python", "--owner", "dev"]);
    for app in ["bobapp", "unlinked"] {
        let r = probe_port(n, app, ip, port);
        assert!(r.starts_with("failed"), "{app} reached the add-on: {r}");
    }
    let r = probe_from_host(65534, ip, port);
    assert!(r.starts_with("failed"), "a non-root host user reached the add-on: {r}");
    assert_eq!(probe_from_host(0, ip, port), "connected");
}

#[test]
fn mariadb_addon_serves_pymysql_through_its_mysql_url_isolated_and_durable() {
    require_root!();
    if !Path::new("/usr/sbin/mariadbd").exists() && !Path::new("/usr/libexec/mariadbd").exists() {
        skip!("the mariadb-server package is not installed (make deps)");
    }
    let Some(client) = client_source(
        &test_name!(),
        "PyMySQL",
        "python3-pymysql",
        &["python3", "-c", "import pymysql"],
    ) else {
        return;
    };
    let d = dev_node();
    let n = &d.n;
    n.add_user("bob");
    let (ip, uid, linked) = linked_example(&d, "mariadb", "shopdb", "shop", "python", "python-mariadb", client);
    for v in ["DATABASE_URL", "MARIADB_URL", "OPENSHIFT_MYSQL_DB_HOST"] {
        assert!(linked.contains(v), "{linked}");
    }
    let (_, env, _) = n.sh(
        "shop",
        "echo $OPENSHIFT_MYSQL_DB_HOST:$OPENSHIFT_MYSQL_DB_PORT; test \"$MARIADB_URL\" = \"$DATABASE_URL\" && echo ${DATABASE_URL%%:*}",
    );
    assert_eq!(env.trim(), format!("{ip}:3306\nmysql"));
    only_the_link_reaches(&d, &ip, 3306);

    // kill -9 of mariadbd: the supervisor restarts it; committed rows are there.
    let pid = server_pid(uid, "/usr/sbin/mariadbd").expect("no mariadbd in the add-on's gear");
    kill9(pid);
    assert!(
        eventually(Duration::from_secs(60), || get(n, "shop", "/")
            == (200, "notes: one,two\n".into())),
        "rows did not come back after kill -9 of mariadbd: {:?}",
        get(n, "shop", "/")
    );
    assert_ne!(server_pid(uid, "/usr/sbin/mariadbd"), Some(pid));

    backup_destroy_create_restore(&d, "mariadb", "shopdb", "shop", b"-- MariaDB dump", "notes: one,two\n");
}

#[test]
fn redis_addon_serves_node_redis_through_redis_url_isolated_and_durable() {
    require_root!();
    if !Path::new("/usr/bin/redis-server").exists() {
        skip!("the redis-server package is not installed (make deps)");
    }
    let Some(client) = client_source(
        &test_name!(),
        "redis (npm)",
        "node-redis",
        &["test", "-e", "/usr/share/nodejs/redis/package.json"],
    ) else {
        return;
    };
    let mut d = dev_node();
    d.n.add_user("bob");
    let (ip, uid, linked) = linked_example(&d, "redis", "cache", "board", "nodejs", "node-redis", client);
    assert!(
        linked.contains("REDIS_URL") && linked.contains("OPENSHIFT_REDIS_HOST"),
        "{linked}"
    );
    let n = &d.n;
    let (_, env, _) = n.sh("board", "echo ${REDIS_URL%%:*} $OPENSHIFT_REDIS_PORT");
    assert_eq!(env.trim(), "redis 6379");
    only_the_link_reaches(&d, &ip, 6379);

    // A second Redis add-on: REDIS_URL is taken, --as names another variable.
    ssh_ok(n, &d.key, "addon create redis sessions");
    let e = ssh_fails(n, &d.key, "addon link board sessions");
    assert!(e.contains("already gets REDIS_URL") && e.contains("--as"), "{e}");
    ssh_ok(n, &d.key, "addon link board sessions --as SESSIONS_URL");
    let (_, env, _) = n.sh(
        "board",
        "test \"$SESSIONS_URL\" != \"$REDIS_URL\" && echo ${SESSIONS_URL%%:*}",
    );
    assert_eq!(env.trim(), "redis");

    // kill -9 of redis-server, then of the daemon: acknowledged writes are there.
    let pid =
        server_pid(uid, "/opt/gearshift/cartridge/bin/redis-server").expect("no redis-server in the add-on's gear");
    kill9(pid);
    assert!(
        eventually(Duration::from_secs(60), || get(n, "board", "/")
            == (200, "notes: one,two\n".into())),
        "the notes did not come back after kill -9 of redis-server: {:?}",
        get(n, "board", "/")
    );
    d.daemon.kill9();
    d.daemon = d.n.start_daemon();
    let n = &d.n;
    assert!(
        eventually(Duration::from_secs(30), || get(n, "board", "/add?note=three").0 == 200),
        "the app lost its add-on after a daemon restart: {:?}",
        get(n, "board", "/")
    );
    assert_eq!(get(n, "board", "/"), (200, "notes: one,two,three\n".into()));

    ssh_ok(n, &d.key, "addon unlink board sessions");
    backup_destroy_create_restore(&d, "redis", "cache", "board", b"REDIS", "notes: one,two,three\n");
}

/// Issue 14: add-ons were not counted, so an SSH user held to one app could still create any
/// number of add-on gears of any profile. `limits.max_addons_per_user` caps them, apart from
/// apps, and `limits.user_profiles` holds for them too.
#[test]
fn users_add_ons_are_held_to_the_nodes_limits() {
    require_root!();
    if !Path::new("/usr/bin/redis-server").exists() {
        skip!("the redis-server package is not installed (make deps)");
    }
    let n = TestNode::new();
    n.set_config("max_apps_per_user = 0", "max_apps_per_user = 1");
    n.set_config("max_addons_per_user = 0", "max_addons_per_user = 1");
    n.set_config("user_profiles = []", "user_profiles = [\"small\"]");
    let alice = n.add_user("alice");
    let _daemon = n.start_daemon();
    let ssh = |cmd: &str| n.ssh(&alice, &[], Some(cmd), b"");

    let o = ssh("addon create redis big --profile large");
    assert!(!o.status.success(), "a large add-on was created: {}", out(&o.stdout));
    assert!(
        out(&o.stderr).contains("profile 'large' is not open to users on this node"),
        "{}",
        out(&o.stderr)
    );
    // Apps and add-ons are counted apart: one of each.
    let o = ssh("app create web");
    assert!(o.status.success(), "{}", out(&o.stderr));
    let o = ssh("addon create redis cache");
    assert!(o.status.success(), "{}", out(&o.stderr));
    let o = ssh("addon create redis more");
    assert!(!o.status.success(), "a second add-on was created: {}", out(&o.stdout));
    let e = out(&o.stderr);
    assert!(
        e.contains("cannot create another add-on: user 'alice' has 1 add-on(s), the most this node allows (limits.max_addons_per_user = 1)"),
        "{e}"
    );
    assert!(!n.root.join("addons/more.toml").exists(), "a record was left");
    let list = out(&ssh("addon list").stdout);
    assert!(list.contains("cache") && !list.contains("more"), "{list}");

    // Root at the console is not limited, and what it gives alice counts against her.
    n.ok(&["addon", "create", "redis", "given", "--owner", "alice"]);
    let o = ssh("addon destroy cache --confirm cache");
    assert!(o.status.success(), "{}", out(&o.stderr));
    let o = ssh("addon create redis more");
    assert!(
        !o.status.success(),
        "the add-on root gave was not counted: {}",
        out(&o.stdout)
    );
    assert!(out(&o.stderr).contains("has 1 add-on(s)"), "{}", out(&o.stderr));
    n.ok(&["addon", "destroy", "given", "--confirm", "given"]);
    let o = ssh("addon create redis more");
    assert!(o.status.success(), "a freed place was not given: {}", out(&o.stderr));
}

/// An add-on whose service cannot start (here: a disk quota smaller than PostgreSQL's data
/// directory) fails its create within seconds, not at the end of the start timeout, says what
/// the service said (its log goes with its gear), and leaves nothing: no record, no gear.
#[test]
fn a_failed_add_on_create_says_why_and_keeps_nothing() {
    require_root!();
    if !Path::new("/usr/lib/postgresql").exists() && !Path::new("/usr/bin/initdb").exists() {
        skip!("the postgresql package is not installed (make deps)");
    }
    let d = dev_node();
    let n = &d.n;
    n.add_profile("cramped", "256M", 1.0, 128, "4M", "8mbit");
    let t = Instant::now();
    let o = n.gs(&["addon", "create", "postgresql", "cramped", "--profile", "cramped"]);
    let took = t.elapsed();
    let e = out(&o.stderr);
    eprintln!("addon create in a 4 MiB quota, {took:?}:\n{e}");
    assert!(!o.status.success(), "created in 4 MiB: {}", out(&o.stdout));
    assert!(e.contains("nothing was kept"), "{e}");
    assert!(e.contains("failed to start 3 times"), "{e}");
    assert!(
        e.contains("the service's last output (app-root/logs/service.log):"),
        "{e}"
    );
    assert!(
        e.contains("Disk quota exceeded") || e.contains("No space left"),
        "the service's own words are missing: {e}"
    );
    // Three failed starts 1, 2 and 4 s apart (after the node's first PostgreSQL template, and
    // under the test VM's emulation), not the 150 s a slow start is given.
    assert!(took < Duration::from_secs(120), "{took:?}");
    assert!(!n.root.join("addons/cramped.toml").exists(), "a record was left");
    let list = n.ok(&["addon", "list"]);
    assert!(!list.contains("cramped"), "{list}");
    // The node has no app: no gear home may be left at all.
    let left: Vec<_> = std::fs::read_dir(n.root.join("gears"))
        .expect("the node's gears directory")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "a gear home was left: {left:?}");
}
