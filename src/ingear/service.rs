//! The supervisor of an add-on gear (a database or cache, `crate::addon`): pid 1 of the gear,
//! the gear's uid, no privileges. It initialises the service's data on first start (PostgreSQL:
//! a copy of the node's template cluster, its own `pg_hba.conf`, then the add-on's role, with
//! the password root left in the meta directory, and database), then runs the service on the gear's address and restarts it with growing
//! delays whenever it exits; it is never stopped or idled. Output goes to
//! `app-root/logs/service.log`. The control sockets answer `status` (what the host waits on).

use crate::gear::control::{self, Command};
use crate::gear::layout;
use crate::gear::meta::GearInfo;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The service's output (postgres's stderr), appended to.
pub const SERVICE_LOG: &str = "app-root/logs/service.log";
/// Where root leaves the initial password for the gear (removed once the add-on is created).
pub const INIT_PASSWORD: &str = "/opt/gearshift/meta/addon-init.pw";
/// The node's template cluster, in the kit bound at /opt/gearshift/cartridge.
const TEMPLATE: &str = "/opt/gearshift/cartridge/template";
/// The template cluster's superuser (`addon::kit`).
pub const TEMPLATE_SUPERUSER: &str = "gearshift";
/// PostgreSQL's data directory, under the home.
pub const PGDATA: &str = "app-root/data/pgdata";
/// Descriptor variables naming the add-on's first user and database.
pub const USER_VAR: &str = "GEARSHIFT_ADDON_USER";
pub const DB_VAR: &str = "GEARSHIFT_ADDON_DB";

/// What `status` reports.
#[derive(Debug, Clone, Serialize, Default)]
struct Status {
    /// initialising, running, crashed (waiting to restart), failed (cannot initialise).
    state: String,
    pid: Option<i32>,
    restarts: u32,
    last_exit: Option<String>,
}

type Shared = Arc<Mutex<Status>>;

fn set(s: &Shared, f: impl FnOnce(&mut Status)) {
    f(&mut s.lock().unwrap_or_else(|e| e.into_inner()));
}

fn note(msg: &str) {
    let path = layout::in_home(SERVICE_LOG);
    let _ = std::fs::create_dir_all(layout::in_home(layout::LOGS));
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "[gearshift {}] {msg}", crate::clock::iso_now());
    }
}

fn log_file() -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout::in_home(SERVICE_LOG))
        .context("cannot open the service log")
}

/// The service's binaries, as the gear sees them (its install directory is bound there).
fn bin(name: &str) -> PathBuf {
    Path::new("/opt/gearshift/cartridge/bin").join(name)
}

fn run_logged(cmd: &mut std::process::Command, what: &str) -> Result<()> {
    let log = log_file()?;
    let st = cmd
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st}); see {SERVICE_LOG}");
    }
    Ok(())
}

/// First start: a copy of the node's template cluster (`addon::kit`, made by initdb once per
/// node) with an hba that lets the gear's own uid in through the socket and asks every network
/// client for its password. Done into a temporary directory renamed into place, so a crash
/// part-way starts over. The add-on's role and database are made once the server runs
/// (`ensure_database`).
fn init_postgresql() -> Result<()> {
    let data = layout::in_home(PGDATA);
    if data.join("PG_VERSION").exists() {
        return Ok(());
    }
    let tmp = layout::in_home(&format!("{PGDATA}.init"));
    let _ = std::fs::remove_dir_all(&tmp);
    run_logged(
        std::process::Command::new("cp").args(["-R", TEMPLATE]).arg(&tmp),
        "copying the template cluster",
    )?;
    run_logged(
        std::process::Command::new("chmod")
            .args(["-R", "u+rwX,go-rwx"])
            .arg(&tmp),
        "chmod of the data directory",
    )?;
    std::fs::write(
        tmp.join("pg_hba.conf"),
        "# gearshift: inside the gear, its own uid; from the network, the add-on's password\nlocal all all peer map=gear\nhost all all 0.0.0.0/0 scram-sha-256\n",
    )
    .context("cannot write pg_hba.conf")?;
    std::fs::write(
        tmp.join("pg_ident.conf"),
        format!("# gearshift: the gear's one uid may be any database user\ngear /^(.*)$ {TEMPLATE_SUPERUSER}\ngear /^(.*)$ \\1\n"),
    )
    .context("cannot write pg_ident.conf")?;
    // One syncfs instead of file-by-file fsync: the data is durable before it is used.
    let dir = std::fs::File::open(&tmp)?;
    // SAFETY: syncfs takes a valid open descriptor and touches no memory of ours.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
        bail!("syncfs failed: {}", std::io::Error::last_os_error());
    }
    std::fs::rename(&tmp, &data).context("cannot move the new data directory into place")?;
    Ok(())
}

/// Runs one SQL statement as the template's superuser through the socket; an object that
/// already exists (a restart part-way) counts as done.
/// Runs one statement as the template's superuser; Ok(Err(why)) when the server refused it
/// (not up yet, or an error other than "already exists").
fn psql(info: &GearInfo, sql: &str) -> Result<std::result::Result<(), String>> {
    let o = std::process::Command::new(bin("psql"))
        .args([
            "-h",
            "/tmp",
            "-p",
            &info.port.to_string(),
            "-U",
            TEMPLATE_SUPERUSER,
            "-d",
            "postgres",
            "-Atqc",
            sql,
        ])
        .env_clear()
        .env("PGCONNECT_TIMEOUT", "2")
        .stdin(Stdio::null())
        .output()
        .context("cannot run psql")?;
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() || err.contains("already exists") {
        Ok(Ok(()))
    } else {
        Ok(Err(err.trim().to_string()))
    }
}

/// Marks (in the data directory) that the add-on's database exists.
const DB_MADE: &str = "gearshift-database-created";

/// Creates the add-on's role (with the password root left in the meta directory) and database
/// once, through the server's socket in the gear's /tmp (peer authentication, mapped to the
/// template's superuser); waits for the server to accept. Gives up after 30 s (the caller then
/// waits for the server's exit).
fn ensure_database(info: &GearInfo) -> Result<()> {
    let marker = layout::in_home(PGDATA).join(DB_MADE);
    if marker.exists() {
        return Ok(());
    }
    let user = info
        .env
        .get(USER_VAR)
        .context("the descriptor names no add-on user")?
        .replace('"', "");
    let db = info
        .env
        .get(DB_VAR)
        .context("the descriptor names no add-on database")?
        .replace('"', "");
    let password = std::fs::read_to_string(INIT_PASSWORD)
        .with_context(|| format!("cannot read {INIT_PASSWORD} (destroy and create the add-on again)"))?;
    if !password.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("the add-on's initial password is not alphanumeric");
    }
    let steps = [
        format!("CREATE ROLE \"{user}\" SUPERUSER LOGIN PASSWORD '{}'", password.trim()),
        format!("CREATE DATABASE \"{db}\" OWNER \"{user}\""),
    ];
    let t = Instant::now();
    for sql in &steps {
        while let Err(why) = psql(info, sql)? {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("cannot create the add-on's role and database {db}: psql: {why} (see {SERVICE_LOG})");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    std::fs::write(&marker, b"").context("cannot mark the database created")?;
    Ok(())
}

fn spawn_postgresql(info: &GearInfo) -> Result<std::process::Child> {
    let log = log_file()?;
    std::process::Command::new(bin("postgres"))
        .arg("-D")
        .arg(layout::in_home(PGDATA))
        .args(["-c", &format!("listen_addresses={}", info.ip)])
        .args(["-c", &format!("port={}", info.port)])
        .args(["-c", "unix_socket_directories=/tmp"])
        .args(["-c", "shared_buffers=32MB", "-c", "max_connections=50"])
        .env_clear()
        .envs(info.env_pairs())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start postgres")
}

/// The delay before restart number `streak` (1 s doubling to 30 s).
pub fn backoff(streak: u32) -> Duration {
    Duration::from_secs((1u64 << streak.min(5)).min(30))
}

/// Waits until the service `pid` ends, reaping every other process that ends meanwhile
/// (orphans are ours as pid 1); returns its exit code.
fn wait_service(pid: i32) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a valid local int.
        let got = unsafe { libc::waitpid(-1, &mut status, 0) };
        if got == pid {
            return if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            };
        }
        if got < 0 {
            return -1;
        }
    }
}

fn serve(s: Shared, l: std::os::unix::net::UnixListener) {
    for stream in l.incoming().flatten() {
        let s = s.clone();
        std::thread::spawn(move || {
            let reply = match control::read_command(&stream) {
                Ok(Command::Status) => Ok("status"),
                Ok(Command::Watch(_)) => Ok("status"),
                Ok(_) => Err(anyhow::anyhow!(
                    "an add-on's service always runs: only `status` is answered"
                )),
                Err(e) => Err(e),
            };
            let st = s.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let _ = control::reply(&stream, reply, &st);
        });
    }
}

/// Runs the add-on's supervisor forever (the gear's pid 1, after confinement).
pub fn run() -> ! {
    let s: Shared = Arc::new(Mutex::new(Status {
        state: "initialising".into(),
        ..Default::default()
    }));
    for l in control::listen(note) {
        let s2 = s.clone();
        std::thread::spawn(move || serve(s2, l));
    }
    // One thread waits for processes (no reaper beside it, which would take the exit of
    // initdb from `Command::status`).
    let mut streak = 0;
    loop {
        let started = Instant::now();
        let res = GearInfo::load_in_gear().and_then(|info| {
            if info.cartridge != "postgresql" {
                bail!("this gearshift cannot run a '{}' add-on", info.cartridge);
            }
            init_postgresql()?;
            let pid = spawn_postgresql(&info)?.id() as i32;
            if let Err(e) = ensure_database(&info) {
                // Not running until the add-on's role and database exist: stop and try again.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
                wait_service(pid);
                return Err(e);
            }
            Ok(pid)
        });
        let exit = match res {
            Ok(pid) => {
                set(&s, |st| {
                    st.state = "running".into();
                    st.pid = Some(pid);
                });
                let code = wait_service(pid);
                format!("exit code {code}")
            }
            Err(e) => format!("{e:#}"),
        };
        if started.elapsed() > Duration::from_secs(60) {
            streak = 0;
        }
        let delay = backoff(streak);
        streak += 1;
        note(&format!("service ended ({exit}); restarting in {delay:?}"));
        set(&s, |st| {
            st.state = "crashed".into();
            st.pid = None;
            st.restarts += 1;
            st.last_exit = Some(exit.clone());
        });
        std::thread::sleep(delay);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_grows_to_thirty_seconds() {
        let s: Vec<u64> = (0..8).map(|n| super::backoff(n).as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
