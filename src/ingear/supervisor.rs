//! The gear's supervisor. It lives in the gear's init (pid 1 of the gear, the gear's uid, no
//! privileges), so a gear's app keeps running when the daemon restarts, and a crash never needs
//! root to recover. It starts the web process of the live deployment (the Procfile's `web:`, or
//! the cartridge's `bin/start`), restarts it with growing delays when it crashes, stops it
//! (cartridge `bin/stop`, then SIGTERM, then SIGKILL), and sends its output to rotated logs.
//!
//! Zero-downtime switches: the web process listens on one of two ports (`$PORT`, 8080 or 8081).
//! `switch` starts the live deployment beside the running one on the other port, waits until it
//! is ready (accepts connections and, with an app health path, answers GET PATH with 2xx),
//! makes it live, and keeps the old one draining until the router has
//! moved over (`release`) or a grace period ends.
//!
//! Control: one-line commands, one JSON line back, on /run/gearshift/control.sock inside the
//! gear, and on the abstract socket `@gearshift-control` of the gear's network namespace (how
//! the daemon reaches it without touching the gear's files).

use crate::gear::control::{self, Command};
use crate::gear::layout;
use crate::gear::meta::GearInfo;
use crate::ingear::appjson;
use crate::ingear::cron;
use crate::ingear::healthcheck;
use crate::ingear::procenv::live_repo;
use crate::ingear::procfile;
use crate::ingear::proclog::{last_lines, note, spawn_logged, wait_copied};
use crate::ingear::workers::{self, Workers};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long an old web process keeps serving after a switch when no router releases it.
const DRAIN_MAX: Duration = Duration::from_secs(10);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a switch may take from the new process's start (`control::ctl` waits 60 s).
const SWITCH_MAX: Duration = Duration::from_secs(55);
/// How long the processes of an app without web must stay up for its deployment to go live.
const SETTLE: Duration = Duration::from_secs(3);
/// How many of its last output lines a failed process shows.
const LAST_LINES: usize = 10;
/// How long a failure waits for the failed process's output to be all in its log.
const COPY_WAIT: Duration = Duration::from_secs(1);

/// What `status` reports.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Status {
    /// stopped, running, crashed (waiting to restart), crash-looping.
    pub state: String,
    pub pid: Option<i32>,
    /// The port the live web process listens on.
    pub port: u16,
    pub since: u64,
    pub restarts: u32,
    /// Consecutive crashes without a minute of uptime (the backoff's count; a crash loop).
    pub streak: u32,
    pub last_exit: Option<String>,
    pub deployment: Option<String>,
    pub command: Option<String>,
    /// A web process still finishing its requests after a switch: (pid, port).
    pub draining: Option<(i32, u16)>,
    /// Bumped on every change; `watch N` waits for it to move past N.
    pub generation: u64,
    /// The other process types' processes: (`worker.1`, pid while it runs).
    pub processes: Vec<(String, Option<i32>)>,
    /// Every process type: (name, quantity asked for, how many run), web first.
    pub types: Vec<(String, u32, u32)>,
}

struct Inner {
    status: Status,
    /// Whether the app should be running (persisted across gear restarts).
    wanted: bool,
    started_at: Option<Instant>,
    waiters: HashMap<i32, Sender<i32>>,
}

struct Sup {
    inner: Mutex<Inner>,
    /// Held through each command that changes which processes run (start, stop, switch,
    /// scale): two at once would each start a web process on the same spare port (a push's
    /// rollback racing its settler did), and the loser's crash would replace the live one.
    ops: Mutex<()>,
    /// The Procfile's other process types.
    workers: Arc<Workers>,
    /// Scheduled jobs running now.
    cron: cron::Running,
    changed: Condvar,
}

type Shared = Arc<Sup>;

impl Sup {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn bump(s: &Sup, g: &mut Inner) {
    g.status.generation += 1;
    s.changed.notify_all();
}

fn wanted_file() -> PathBuf {
    layout::in_home(layout::WANTED)
}

/// The web command: the Procfile's `web:` line, else the cartridge's `bin/start`.
fn web_command(repo: &Path) -> Result<Vec<String>> {
    if let Some(cmd) = procfile::command(repo, "web")? {
        return Ok(procfile::shell_argv(&cmd));
    }
    let start = crate::ingear::procenv::cartridge_dir().join("bin/start");
    if start.is_file() {
        return Ok(vec![start.display().to_string()]);
    }
    bail!("no web process: add a Procfile with a web: line, or use a cartridge with bin/start")
}

/// The environment with the web port set to `port` (`PORT` and the cartridge's `*_PORT`).
fn env_with_port(info: &GearInfo, port: u16) -> Vec<(String, String)> {
    let base = info.port.to_string();
    info.env_pairs()
        .into_iter()
        .map(|(k, v)| {
            if k == "PORT" || (k.starts_with("OPENSHIFT_") && k.ends_with("_PORT") && v == base) {
                (k, port.to_string())
            } else {
                (k, v)
            }
        })
        .collect()
}

/// Starts the web process of deployment `repo` on `port`; returns its pid (not yet live).
fn spawn_web(repo: &Path, port: u16) -> Result<(i32, String, String)> {
    let info = GearInfo::load_in_gear()?;
    let argv = web_command(repo)?;
    let tag = format!("web.{}", info.index + 1);
    let child = spawn_logged(&argv, repo, env_with_port(&info, port), "web", &tag)?;
    let pid = child.id() as i32;
    // The reaper thread waits for it; the Child handle is not needed.
    drop(child);
    let deployment = repo
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    note(&format!("started {} on port {port} (pid {pid})", argv.join(" ")));
    Ok((pid, argv.join(" "), deployment.unwrap_or_default()))
}

/// Starts one process of a non-web type (the workers' [`workers::Spawn`]).
fn spawn_worker(repo: &Path, name: &str, index: u32, command: &str) -> Result<i32> {
    let info = GearInfo::load_in_gear()?;
    let log = workers::log_name(name, index);
    let tag = format!("{name}.{index}");
    let child = spawn_logged(&procfile::shell_argv(command), repo, info.env_pairs(), &log, &tag)?;
    let pid = child.id() as i32;
    drop(child);
    note(&format!("started {tag}: {command} (pid {pid})"));
    Ok(pid)
}

/// Runs the other process types' processes of the live deployment, as many as asked for.
fn start_workers(s: &Sup) {
    if let Some(repo) = live_repo() {
        start_workers_of(s, &repo);
    }
}

/// Runs the other process types' processes of deployment `repo` (replacing any other's).
fn start_workers_of(s: &Sup, repo: &Path) {
    let procs = procfile::read(repo).ok().flatten().unwrap_or_default();
    let app = appjson::read(repo).unwrap_or_default();
    let (scaled, first) = GearInfo::load_in_gear().map_or((Default::default(), true), |i| (i.formation, i.index == 0));
    s.workers
        .replace(repo, &workers::quantities(&procs, &app, &scaled, first));
}

/// Whether the live deployment runs a web process in this gear (see [`workers::web_quantity`]).
fn runs_web() -> bool {
    live_repo().is_none_or(|repo| runs_web_in(&repo))
}

/// Whether deployment `repo` runs a web process in this gear.
fn runs_web_in(repo: &Path) -> bool {
    let app = appjson::read(repo).unwrap_or_default();
    let scaled = GearInfo::load_in_gear().map(|i| i.formation).unwrap_or_default();
    workers::web_quantity(&app, &scaled) > 0
}

/// The repository of deployment `id` (a directory under `app-deployments`), resolved.
fn deployment_repo(id: &str) -> Result<PathBuf> {
    if !layout::is_deployment_id(id) {
        bail!("'{}' is not a deployment id", id.escape_default());
    }
    let repo = layout::in_home(layout::DEPLOYMENTS).join(id).join("repo");
    std::fs::canonicalize(&repo)
        .ok()
        .filter(|p| p.is_dir())
        .with_context(|| format!("no deployment {id} in this gear (see `gearshift deploy list`)"))
}

/// Points `app-root/repo` at deployment `id`, atomically: from now on it is the live one.
fn activate_link(id: &str) -> Result<()> {
    let link = layout::in_home(layout::REPO);
    let tmp = layout::in_home(layout::REPO_NEXT);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(layout::repo_link(id), &tmp).context("cannot make the app-root/repo link")?;
    if link.is_dir() && !link.is_symlink() {
        // The empty directory gear creation made, before the first deploy.
        let _ = std::fs::remove_dir(&link);
    }
    std::fs::rename(&tmp, &link).context("cannot switch app-root/repo")
}

/// The live deployment's id (the directory holding its repo).
fn live_deployment() -> Option<String> {
    live_repo()?
        .parent()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// Every process type with its quantity and how many of it run, web first.
fn types(g: &Inner, workers: &Workers) -> Vec<(String, u32, u32)> {
    let running = workers.list();
    let mut out = vec![(
        "web".to_string(),
        u32::from(runs_web()),
        u32::from(g.status.pid.is_some()),
    )];
    for (name, n) in workers.wanted() {
        let up = running
            .iter()
            .filter(|(p, pid)| pid.is_some() && p.rsplit_once('.').is_some_and(|(t, _)| t == name))
            .count() as u32;
        out.push((name, n, up));
    }
    out
}

fn make_live(s: &Sup, g: &mut Inner, pid: i32, port: u16, command: String, deployment: String) {
    g.status.state = "running".into();
    g.status.pid = Some(pid);
    g.status.port = port;
    g.status.since = crate::clock::now();
    g.status.command = Some(command);
    g.status.deployment = Some(deployment);
    g.started_at = Some(Instant::now());
    bump(s, g);
}

fn start_locked(s: &Sup, g: &mut Inner) -> Result<()> {
    if g.status.pid.is_some() {
        return Ok(());
    }
    if !runs_web() {
        // An app without web: its other processes are all it runs.
        g.status.state = "running".into();
        g.status.since = crate::clock::now();
        g.status.deployment = live_deployment();
        g.status.command = None;
        bump(s, g);
        return Ok(());
    }
    let port = if g.status.port == 0 {
        GearInfo::load_in_gear()?.port
    } else {
        g.status.port
    };
    let repo = live_repo().context("nothing is deployed yet: git push first")?;
    let (pid, cmd, dep) = spawn_web(&repo, port)?;
    make_live(s, g, pid, port, cmd, dep);
    Ok(())
}

fn set_wanted(g: &mut Inner, wanted: bool) {
    g.wanted = wanted;
    let _ = std::fs::write(wanted_file(), if wanted { "running\n" } else { "stopped\n" });
}

/// Runs a helper (cartridge bin/stop) and waits for it through the reaper, at most `limit`.
fn run_helper(s: &Sup, argv: &[String], repo: &Path, limit: Duration) {
    let Ok(info) = GearInfo::load_in_gear() else { return };
    let (tx, rx) = channel();
    let mut g = s.lock();
    if let Ok(child) = spawn_logged(argv, repo, info.env_pairs(), "web", &format!("web.{}", info.index + 1)) {
        g.waiters.insert(child.id() as i32, tx);
        drop(g);
        let _ = rx.recv_timeout(limit);
    }
}

/// SIGTERM to a web process and its group, SIGKILL after the grace period; waits until the
/// reaper has seen it exit.
fn terminate(s: &Sup, pid: i32, gone: impl Fn(&Inner) -> bool) {
    let signal = |sig| {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    };
    signal(nix::sys::signal::Signal::SIGTERM);
    let t = Instant::now();
    let mut last_term = Instant::now();
    while !gone(&s.lock()) {
        if t.elapsed() > STOP_GRACE {
            signal(nix::sys::signal::Signal::SIGKILL);
        } else if last_term.elapsed() > Duration::from_millis(500) {
            // A just-started process may not have made its own group yet.
            signal(nix::sys::signal::Signal::SIGTERM);
            last_term = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn release(s: &Sup) {
    let draining = s.lock().status.draining;
    if let Some((pid, port)) = draining {
        terminate(s, pid, |g| g.status.draining.map(|d| d.0) != Some(pid));
        note(&format!("stopped the previous web process on port {port} (pid {pid})"));
    }
}

fn stop(s: &Sup) -> Result<()> {
    release(s);
    let (pid, repo) = {
        let mut g = s.lock();
        set_wanted(&mut g, false);
        bump(s, &mut g);
        (g.status.pid, live_repo())
    };
    // A scheduled job running now ends with the app.
    s.cron.stop(STOP_GRACE);
    let Some(pid) = pid else {
        s.workers.stop();
        s.lock().status.state = "stopped".into();
        return Ok(());
    };
    let stop_hook = crate::ingear::procenv::cartridge_dir().join("bin/stop");
    if let (true, Some(repo)) = (stop_hook.is_file(), &repo) {
        run_helper(s, &[stop_hook.display().to_string()], repo, STOP_GRACE);
    }
    s.workers.stop();
    terminate(s, pid, |g| g.status.pid != Some(pid));
    note(&format!("stopped (pid {pid})"));
    Ok(())
}

fn start(s: &Sup) -> Result<()> {
    let mut g = s.lock();
    set_wanted(&mut g, true);
    g.status.streak = 0;
    if g.status.pid.is_some() {
        return Ok(());
    }
    start_locked(s, &mut g)?;
    drop(g);
    start_workers(s);
    Ok(())
}

/// Waits until the web process on `port` is ready: it accepts connections and, with a health
/// path, answers it 2xx. `exited` tells (how) the process ended meanwhile, which fails the wait.
fn wait_ready(info: &GearInfo, port: u16, exited: &dyn Fn() -> Option<String>) -> Result<()> {
    let addr = std::net::SocketAddr::from((info.ip, port));
    let limit = info
        .health_timeout
        .map(|s| Duration::from_secs(s.into()))
        .unwrap_or(READY_TIMEOUT);
    let t = Instant::now();
    let mut listening = false;
    let mut last = String::new();
    loop {
        if !listening {
            listening = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        }
        if listening {
            let Some(path) = &info.health_path else { return Ok(()) };
            match health_get(info, addr, path) {
                Ok(code) if (200..300).contains(&code) => return Ok(()),
                Ok(code) => last = format!("answered {code}"),
                Err(e) => last = format!("failed: {e:#}"),
            }
        }
        if let Some(how) = exited() {
            bail!("the new web process exited ({how}): see `gearshift logs {}`", info.app);
        }
        if t.elapsed() > limit {
            match (&info.health_path, listening) {
                (Some(path), true) => bail!(
                    "the new deployment is not healthy: GET {path} {last} (not 2xx) for {}s; fix the app or change its health path with `gearshift app health {}`",
                    limit.as_secs(),
                    info.app
                ),
                _ => bail!(
                    "the new web process does not accept connections on port {port} after {}s",
                    limit.as_secs()
                ),
            }
        }
        // Until it listens, poll finely: a wake's first request is held on this.
        let pause = if listening { 100 } else { 1 };
        std::thread::sleep(Duration::from_millis(pause));
    }
}

/// app.json's `healthchecks.web` startup checks against the new web process on `port`, in
/// order; the first failing one (unless it only warns) fails the switch.
fn startup_checks(
    s: &Shared,
    info: &GearInfo,
    repo: &Path,
    port: u16,
    started: Instant,
    exited: &dyn Fn() -> Option<String>,
) -> Result<()> {
    let app = appjson::read(repo).unwrap_or_default();
    let run = |argv: &[String], limit: Duration| run_check_command(s, info, repo, port, argv, limit);
    let target = healthcheck::Target {
        addr: std::net::SocketAddr::from((info.ip, port)),
        host: info
            .env
            .get("OPENSHIFT_APP_DNS")
            .map(String::as_str)
            .unwrap_or("localhost"),
        started,
        deadline: started + SWITCH_MAX,
        exited,
        run: &run,
    };
    for check in app.startup_checks() {
        match healthcheck::run(check, &target) {
            Ok(()) => note(&format!("healthcheck {} passed", check.label())),
            Err(e) if check.warn => note(&format!("warning: {e:#}")),
            Err(e) => {
                note(&format!("{e:#}"));
                return Err(e);
            }
        }
    }
    Ok(())
}

/// A command healthcheck: `argv` in the deployment with the new process's environment, its
/// output in the web log; exit 0 within `limit` passes.
fn run_check_command(s: &Sup, info: &GearInfo, repo: &Path, port: u16, argv: &[String], limit: Duration) -> Result<()> {
    let (tx, rx) = channel();
    let pid = {
        let mut g = s.lock();
        let child = spawn_logged(argv, repo, env_with_port(info, port), "web", "healthcheck")?;
        let pid = child.id() as i32;
        g.waiters.insert(pid, tx);
        pid
    };
    match rx.recv_timeout(limit) {
        Ok(0) => Ok(()),
        Ok(code) => bail!("`{}` failed with exit code {code}", argv.join(" ")),
        Err(_) => {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            bail!("`{}` did not finish within {}s", argv.join(" "), limit.as_secs())
        }
    }
}

/// One health check: GET `path` on `addr`; returns the HTTP status code.
fn health_get(info: &GearInfo, addr: std::net::SocketAddr, path: &str) -> Result<u16> {
    let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).context("cannot connect")?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    let host = info
        .env
        .get("OPENSHIFT_APP_DNS")
        .map(String::as_str)
        .unwrap_or("localhost");
    // One write: a server answering after the request line must not find a half-sent head.
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gearshift-health\r\nConnection: close\r\n\r\n");
    c.write_all(request.as_bytes()).context("cannot send the request")?;
    let mut line = String::new();
    BufReader::new(c.take(1024)).read_line(&mut line).context("no answer")?;
    let mut words = line.split_whitespace();
    match (words.next(), words.next().and_then(|c| c.parse().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => bail!("not an HTTP answer: {:?}", line.trim_end()),
    }
}

/// `start wait` and `restart`: waits until the live web process is ready (as a new deployment must be);
/// fails when it exits first.
fn wait_started(s: &Shared) -> Result<()> {
    let info = GearInfo::load_in_gear()?;
    let (pid, port) = {
        let g = s.lock();
        (g.status.pid, g.status.port)
    };
    if pid.is_none() && !runs_web() {
        return Ok(());
    }
    let exited = || {
        let g = s.lock();
        (g.status.pid != pid || pid.is_none())
            .then(|| g.status.last_exit.clone().unwrap_or_else(|| "no exit status".into()))
    };
    wait_ready(&info, port, &exited)
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|st| !st.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        .unwrap_or(false)
}

/// Kills a web process that never went live, and its group.
fn kill_unborn(pid: i32) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
}

/// Makes deployment `to` live (`None`: the live one again, a restart), without a moment of
/// downtime: its web process starts beside the running one, on the other port, and once it is
/// ready (`wait_ready`, the startup checks) the `app-root/repo` link moves to it and it becomes
/// live, in one step under the status lock; the old one drains. Without a running web process
/// this is a plain start (and waits until it listens). Whoever asked may die meanwhile: the
/// link and the live process never part. On failure nothing changed: the previous deployment
/// stays live and running (its other processes too), the link where it was. A switch to the
/// deployment that is live and running already does nothing (a settler making sure the
/// previous deployment is back, after an interrupted switch, waits for it here).
fn switch(s: &Shared, to: Option<&str>) -> Result<()> {
    release(s);
    let info = GearInfo::load_in_gear()?;
    let repo = match to {
        Some(id) => deployment_repo(id)?,
        None => live_repo().context("nothing is deployed yet: git push first")?,
    };
    let (old, old_port, was_wanted) = {
        let mut g = s.lock();
        let running = g.wanted && g.status.state == "running";
        if to.is_some() && running && to == live_deployment().as_deref() && g.status.deployment.as_deref() == to {
            return Ok(());
        }
        let was_wanted = g.wanted;
        set_wanted(&mut g, true);
        g.status.streak = 0;
        (
            g.status.pid,
            if g.status.port == 0 { info.port } else { g.status.port },
            was_wanted,
        )
    };
    let r = if runs_web_in(&repo) {
        switch_web(s, &info, &repo, to, old, old_port)
    } else {
        switch_without_web(s, &repo, to, old)
    };
    if r.is_err() {
        set_wanted(&mut s.lock(), was_wanted);
    }
    r
}

/// [`switch`] for a deployment with a web process.
fn switch_web(
    s: &Shared,
    info: &GearInfo,
    repo: &Path,
    to: Option<&str>,
    old: Option<i32>,
    old_port: u16,
) -> Result<()> {
    let port = if old.is_some() {
        if old_port == info.port {
            info.port + 1
        } else {
            info.port
        }
    } else {
        old_port
    };
    // Until it is live, its exit goes to us, not to the crash handling. The lock is held while
    // spawning, so the reaper cannot see the pid before the waiter is in place.
    let (tx, rx) = channel();
    let (pid, cmd, dep) = {
        let mut g = s.lock();
        let r = spawn_web(repo, port)?;
        g.waiters.insert(r.0, tx);
        r
    };
    let started = Instant::now();
    let exited = || rx.try_recv().ok().map(|code| format!("exit code {code}"));
    let ready = wait_ready(info, port, &exited).and_then(|_| startup_checks(s, info, repo, port, started, &exited));
    s.lock().waiters.remove(&pid);
    if let Err(e) = ready {
        kill_unborn(pid);
        // The pusher is shown the log's last lines: all of them.
        wait_copied(pid, COPY_WAIT);
        return Err(e);
    }
    crate::fault::reached("during-switch");
    let mut g = s.lock();
    let live = if alive(pid) {
        to.map_or(Ok(()), activate_link)
    } else {
        Err(anyhow::anyhow!(
            "the new web process exited right after it started listening"
        ))
    };
    if let Err(e) = live {
        drop(g);
        kill_unborn(pid);
        wait_copied(pid, COPY_WAIT);
        return Err(e);
    }
    g.status.draining = old.map(|p| (p, old_port));
    make_live(s, &mut g, pid, port, cmd, dep);
    drop(g);
    start_workers_of(s, repo);
    if let Some(old) = old {
        let s2 = s.clone();
        std::thread::spawn(move || {
            std::thread::sleep(DRAIN_MAX);
            if s2.lock().status.draining.map(|d| d.0) == Some(old) {
                release(&s2);
            }
        });
    }
    Ok(())
}

/// Makes a deployment without web live: its other processes replace the running ones and must
/// stay up for [`SETTLE`]; then the link moves and the previous web process (if the previous
/// deployment had one) stops. A process that exits before fails the switch with its last
/// output, and the live deployment's processes run again.
fn switch_without_web(s: &Shared, repo: &Path, to: Option<&str>, old_web: Option<i32>) -> Result<()> {
    let settled = settle_workers(s, repo).and_then(|_| to.map_or(Ok(()), activate_link));
    if let Err(e) = settled {
        s.workers.stop();
        start_workers(s);
        return Err(e);
    }
    if let Some(pid) = old_web {
        terminate(s, pid, |g| g.status.pid != Some(pid));
        note(&format!(
            "stopped the web process (pid {pid}): the new deployment has none"
        ));
    }
    let mut g = s.lock();
    g.status.pid = None;
    g.status.port = 0;
    g.status.state = "running".into();
    g.status.since = crate::clock::now();
    g.status.command = None;
    g.status.deployment = live_deployment();
    bump(s, &mut g);
    Ok(())
}

/// Starts the other processes of deployment `repo` and waits [`SETTLE`]: fails when none is
/// asked for, or one exits meanwhile (with its last output).
fn settle_workers(s: &Shared, repo: &Path) -> Result<()> {
    start_workers_of(s, repo);
    let wanted = s.workers.wanted();
    if wanted.iter().all(|(_, n)| *n == 0) {
        bail!(
            "nothing to run: app.json's formation runs no web process and no other process type (give a type such as worker a quantity, in app.json or with `app scale`)"
        );
    }
    let t = Instant::now();
    while t.elapsed() < SETTLE {
        if let Some((who, how, pid)) = s.workers.first_exit() {
            wait_copied(pid, COPY_WAIT);
            let (name, index) = who.rsplit_once('.').unwrap_or((&who, "1"));
            let log = workers::log_name(name, index.parse().unwrap_or(1));
            bail!(
                "{who} exited ({how}) within {}s of starting; its last output:\n{}",
                SETTLE.as_secs(),
                last_lines(&log, LAST_LINES)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::fault::reached("during-switch");
    Ok(())
}

/// `scale`: the quantities changed (`app scale`): web starts or stops in this gear, the other
/// types' processes are added or removed (the ones that stay keep running).
fn rescale(s: &Shared) -> Result<()> {
    let (wanted, pid) = {
        let g = s.lock();
        (g.wanted, g.status.pid)
    };
    if !wanted {
        return Ok(());
    }
    match (runs_web(), pid) {
        (true, None) => {
            let mut g = s.lock();
            start_locked(s, &mut g)?;
        }
        (false, Some(pid)) => {
            {
                let mut g = s.lock();
                g.wanted = false;
            }
            terminate(s, pid, |g| g.status.pid != Some(pid));
            let mut g = s.lock();
            g.wanted = true;
            g.status.state = "running".into();
            g.status.port = 0;
            g.status.command = None;
            bump(s, &mut g);
        }
        _ => {}
    }
    start_workers(s);
    Ok(())
}

/// Runs the scheduled jobs at the start of every minute (UTC), in gear 0, while the app is
/// wanted running (a stopped app runs none; an idle one has no supervisor at all).
fn scheduler(s: Shared) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let next = (now.as_secs() / 60 + 1) * 60;
        std::thread::sleep(Duration::from_secs(next) - now);
        if s.lock().wanted {
            run_due(&s, next as i64);
        }
    }
}

/// Starts the jobs due in `minute`, each unless its previous run still goes on.
fn run_due(s: &Sup, minute: i64) {
    let Ok(info) = GearInfo::load_in_gear() else { return };
    let Some(repo) = live_repo() else { return };
    if info.index != 0 {
        return;
    }
    let jobs = match appjson::read(&repo).and_then(|app| cron::jobs(&repo, &app)) {
        Ok(j) => j,
        Err(e) => return note(&format!("cron: {e:#}")),
    };
    for (i, job) in jobs.iter().enumerate().filter(|(_, j)| j.due(minute)) {
        let tag = format!("cron.{}", i + 1);
        let key = format!("{}\0{}\0{}", job.source, job.schedule, job.command);
        let started = s.cron.start(&key, || {
            let child = spawn_logged(&job.argv(), &repo, info.env_pairs(), "cron", &tag)?;
            Ok(child.id() as i32)
        });
        match started {
            Ok(Some(pid)) => note(&format!("{tag}: started {} (pid {pid})", job.command)),
            Ok(None) => note(&format!("{tag}: skipped, its previous run is still going")),
            Err(e) => note(&format!("{tag}: cannot start {}: {e:#}", job.command)),
        }
    }
}

/// Called by the reaper when a process exits.
fn exited(s: &Shared, pid: i32, code: i32) {
    if s.workers.exited(pid, code) || s.cron.exited(pid) {
        return;
    }
    let mut g = s.lock();
    if let Some(tx) = g.waiters.remove(&pid) {
        let _ = tx.send(code);
        return;
    }
    let desc = if code >= 128 {
        format!("killed by signal {}", code - 128)
    } else {
        format!("exit code {code}")
    };
    if g.status.draining.map(|d| d.0) == Some(pid) {
        g.status.draining = None;
        bump(s, &mut g);
        return;
    }
    if g.status.pid != Some(pid) {
        return;
    }
    g.status.pid = None;
    g.status.last_exit = Some(desc.clone());
    bump(s, &mut g);
    if !g.wanted {
        g.status.state = "stopped".into();
        return;
    }
    // A crash: restart after 1, 2, 4 ... 60 s; a minute of uptime resets the streak.
    if g.started_at.is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
        g.status.streak = 0;
    }
    g.status.streak += 1;
    g.status.restarts += 1;
    let delay = Duration::from_secs(1u64 << (g.status.streak - 1).min(6)).min(Duration::from_secs(60));
    g.status.state = if g.status.streak >= 5 {
        "crash-looping".into()
    } else {
        "crashed".into()
    };
    note(&format!(
        "web process {desc}; restarting in {}s (crash {} in a row)",
        delay.as_secs(),
        g.status.streak
    ));
    let generation = g.status.generation;
    let s2 = s.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let mut g = s2.lock();
        if g.wanted && g.status.generation == generation && g.status.pid.is_none() {
            if let Err(e) = start_locked(&s2, &mut g) {
                note(&format!("restart failed: {e:#}"));
            }
        }
    });
}

fn reaper(s: Shared) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a valid local int.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            continue;
        };
        exited(&s, pid, code);
    }
}

fn handle(s: &Shared, stream: UnixStream) -> Result<()> {
    let command = control::read_command(&stream)?;
    let _one_at_a_time = match command {
        Command::Start
        | Command::StartWait
        | Command::Stop
        | Command::Restart
        | Command::Switch(_)
        | Command::Scale
        | Command::RestartIfWanted => Some(s.ops.lock().unwrap_or_else(|e| e.into_inner())),
        Command::Release | Command::Status | Command::Watch(_) | Command::Unknown(_) => None,
    };
    let reply = match command {
        Command::Start => start(s).map(|_| "started"),
        Command::StartWait => start(s).and_then(|_| wait_started(s)).map(|_| "started"),
        Command::Stop => stop(s).map(|_| "stopped"),
        Command::Restart => stop(s)
            .and_then(|_| start(s))
            .and_then(|_| wait_started(s))
            .map(|_| "restarted"),
        Command::Switch(to) => switch(s, to.as_deref()).map(|_| "switched"),
        Command::Scale => rescale(s).map(|_| "scaled"),
        Command::Release => {
            release(s);
            Ok("released")
        }
        Command::RestartIfWanted => {
            if s.lock().wanted {
                switch(s, None).map(|_| "restarted")
            } else {
                Ok("not running")
            }
        }
        Command::Status => Ok("status"),
        Command::Watch(n) => {
            // Long poll: answer when the generation moves past N (or after 25 s).
            let g = s.lock();
            let _ = s
                .changed
                .wait_timeout_while(g, Duration::from_secs(25), |g| g.status.generation <= n);
            Ok("status")
        }
        Command::Unknown(e) => Err(e),
    };
    let mut status = {
        let g = s.lock();
        let mut st = g.status.clone();
        st.types = types(&g, &s.workers);
        st
    };
    status.processes = s.workers.list();
    control::reply(&stream, reply, &status)
}

fn serve(s: Shared, l: UnixListener) {
    for stream in l.incoming().flatten() {
        let s = s.clone();
        std::thread::spawn(move || {
            let _ = handle(&s, stream);
        });
    }
}

/// Runs the supervisor forever (as the gear's pid 1, after confinement). Both control sockets
/// listen before the web process starts ([`crate::gear::ensure_running`] waits for them).
pub fn run() -> ! {
    let wanted = std::fs::read_to_string(wanted_file())
        .map(|t| t.trim() == "running")
        .unwrap_or(false);
    let s: Shared = Arc::new(Sup {
        inner: Mutex::new(Inner {
            status: Status {
                state: "stopped".into(),
                ..Default::default()
            },
            wanted,
            started_at: None,
            waiters: HashMap::new(),
        }),
        ops: Mutex::new(()),
        workers: Workers::new(spawn_worker, note),
        cron: cron::Running::default(),
        changed: Condvar::new(),
    });
    let r = s.clone();
    std::thread::spawn(move || reaper(r));
    let c = s.clone();
    std::thread::spawn(move || scheduler(c));
    for l in control::listen(note) {
        let s2 = s.clone();
        std::thread::spawn(move || serve(s2, l));
    }
    // A push whose gear died mid-switch: its journal says which deployment is live (the
    // settling switch goes through the control sockets, which listen by now).
    crate::ingear::deploy::settle_at_boot();
    if wanted {
        let mut g = s.lock();
        if let Err(e) = start_locked(&s, &mut g) {
            note(&format!("cannot start at boot: {e:#}"));
        }
        drop(g);
        start_workers(&s);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: Option<&str>, timeout: Option<u32>) -> GearInfo {
        GearInfo {
            app: "shop".into(),
            gear_id: "g".into(),
            index: 0,
            uid: 0,
            ip: std::net::Ipv4Addr::LOCALHOST,
            port: 8080,
            domain: "localhost".into(),
            cartridge: "python".into(),
            deploy_branches: vec![],
            keep_deployments: 3,
            env: Default::default(),
            health_path: path.map(String::from),
            health_timeout: timeout,
            url: String::new(),
            ssh: String::new(),
            formation: Default::default(),
        }
    }

    /// A server answering every request with `code`, after recording its request line.
    fn server(code: u16) -> (u16, std::sync::mpsc::Receiver<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let mut r = BufReader::new(&c);
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let _ = tx.send(line.trim_end().to_string());
                // The rest of the head, so closing does not reset the connection.
                let mut h = String::from("-");
                while h.trim_end() != "" {
                    h.clear();
                    if r.read_line(&mut h).unwrap_or(0) == 0 {
                        break;
                    }
                }
                let _ = write!(&c, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
            }
        });
        (port, rx)
    }

    #[test]
    fn ready_needs_a_2xx_health_answer_when_a_path_is_set() {
        let exit = || None;
        let (ok, requests) = server(204);
        wait_ready(&info(Some("/healthz?deep=1"), Some(2)), ok, &exit).unwrap();
        // The first connection is the bare "accepts connections" probe.
        let first = requests.iter().find(|l| !l.is_empty());
        assert_eq!(first.as_deref(), Some("GET /healthz?deep=1 HTTP/1.1"));
        let (bad, _) = server(500);
        let t = Instant::now();
        let e = format!(
            "{:#}",
            wait_ready(&info(Some("/healthz"), Some(1)), bad, &exit).unwrap_err()
        );
        assert!(e.contains("GET /healthz answered 500 (not 2xx) for 1s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
        // Without a health path, listening is enough.
        wait_ready(&info(None, Some(1)), bad, &exit).unwrap();
    }
}
