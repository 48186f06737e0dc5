//! The gear's supervisor. It lives in the gear's init (pid 1 of the gear, the gear's uid, no
//! privileges), so a gear's app keeps running when the daemon restarts, and a crash never needs
//! root to recover. It starts the web process of the live deployment (the Procfile's `web:`, or
//! the cartridge's `bin/start`), restarts it with growing delays when it crashes, stops it
//! (cartridge `bin/stop`, then SIGTERM, then SIGKILL), and sends its output to rotated logs.
//! Control: one line commands on /run/gearshift/control.sock, one JSON line back.

use crate::gear::meta::GearInfo;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the control socket lives inside the gear.
pub const CONTROL_SOCKET: &str = "/run/gearshift/control.sock";
/// The web process's log, rotated by size.
const LOG_MAX_BYTES: u64 = 5 << 20;
const LOG_KEEP: u32 = 3;
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What `status` reports.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Status {
    /// stopped, running, crashed (waiting to restart), crash-looping.
    pub state: String,
    pub pid: Option<i32>,
    pub since: u64,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub deployment: Option<String>,
    pub command: Option<String>,
}

struct Inner {
    status: Status,
    /// Whether the app should be running (persisted across gear restarts).
    wanted: bool,
    /// Consecutive crashes without a minute of uptime, for the backoff.
    streak: u32,
    started_at: Option<Instant>,
    waiters: HashMap<i32, Sender<i32>>,
    /// Bumped on every start/stop so a stale delayed restart does nothing.
    generation: u64,
}

type Shared = Arc<Mutex<Inner>>;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/".into()))
}

fn wanted_file() -> PathBuf {
    home().join("app-root/runtime/.gearshift-wanted")
}

fn log_dir() -> PathBuf {
    home().join("app-root/logs")
}

/// Appends a line from gearshift itself to the web log.
fn note(msg: &str) {
    let _ = std::fs::create_dir_all(log_dir());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir().join("web.log"))
    {
        let _ = writeln!(f, "[gearshift {}] {msg}", crate::clock::iso_now());
    }
}

/// The live deployment's repository directory, resolved.
pub fn live_repo() -> Option<PathBuf> {
    std::fs::canonicalize(home().join("app-root/repo"))
        .ok()
        .filter(|p| p.is_dir())
}

/// The web command: the Procfile's `web:` line, else the cartridge's `bin/start`.
fn web_command(repo: &Path) -> Result<Vec<String>> {
    if let Ok(procfile) = std::fs::read_to_string(repo.join("Procfile")) {
        if let Some(cmd) = procfile.lines().find_map(|l| l.trim().strip_prefix("web:")) {
            let cmd = cmd.trim();
            if cmd.is_empty() {
                bail!("the Procfile's web: line is empty");
            }
            return Ok(vec!["/bin/sh".into(), "-c".into(), format!("exec {cmd}")]);
        }
    }
    let start = Path::new("/opt/gearshift/cartridge/bin/start");
    if start.is_file() {
        return Ok(vec![start.display().to_string()]);
    }
    bail!("no web process: add a Procfile with a web: line, or use a cartridge with bin/start")
}

fn spawn_logged(argv: &[String], repo: &Path, info: &GearInfo) -> Result<std::process::Child> {
    let (rd, wr) = std::io::pipe().context("cannot create a log pipe")?;
    let child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(info.env_pairs())
        .env("OPENSHIFT_REPO_DIR", format!("{}/", repo.display()))
        .current_dir(repo)
        .stdin(std::process::Stdio::null())
        .stdout(wr.try_clone()?)
        .stderr(wr)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", argv.join(" ")))?;
    std::thread::spawn(move || copy_to_log(rd));
    Ok(child)
}

/// Copies a process's output into web.log, rotating by size.
fn copy_to_log(mut rd: std::io::PipeReader) {
    let path = log_dir().join("web.log");
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match rd.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if std::fs::metadata(&path)
            .map(|m| m.len() > LOG_MAX_BYTES)
            .unwrap_or(false)
        {
            for i in (1..LOG_KEEP).rev() {
                let _ = std::fs::rename(
                    log_dir().join(format!("web.log.{i}")),
                    log_dir().join(format!("web.log.{}", i + 1)),
                );
            }
            let _ = std::fs::rename(&path, log_dir().join("web.log.1"));
        }
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
            let _ = f.write_all(&buf[..n]);
        }
    }
}

fn start_locked(s: &Shared, g: &mut Inner) -> Result<()> {
    if g.status.pid.is_some() {
        return Ok(());
    }
    let info = GearInfo::load_in_gear()?;
    let repo = live_repo().context("nothing is deployed yet: git push first")?;
    let argv = web_command(&repo)?;
    let child = spawn_logged(&argv, &repo, &info)?;
    let pid = child.id() as i32;
    // The reaper thread waits for it; the Child handle is not needed.
    drop(child);
    g.generation += 1;
    g.status = Status {
        state: "running".into(),
        pid: Some(pid),
        since: now(),
        restarts: g.status.restarts,
        last_exit: g.status.last_exit.clone(),
        deployment: repo
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned()),
        command: Some(argv.join(" ")),
    };
    g.started_at = Some(Instant::now());
    let _ = s;
    note(&format!("started {} (pid {pid})", argv.join(" ")));
    Ok(())
}

fn set_wanted(g: &mut Inner, wanted: bool) {
    g.wanted = wanted;
    let _ = std::fs::write(wanted_file(), if wanted { "running\n" } else { "stopped\n" });
}

/// Runs a helper (cartridge bin/stop) and waits for it through the reaper, at most `limit`.
fn run_helper(s: &Shared, argv: &[String], repo: &Path, limit: Duration) {
    let Ok(info) = GearInfo::load_in_gear() else { return };
    let (tx, rx) = channel();
    let mut g = s.lock().unwrap();
    if let Ok(child) = spawn_logged(argv, repo, &info) {
        g.waiters.insert(child.id() as i32, tx);
        drop(g);
        let _ = rx.recv_timeout(limit);
    }
}

fn stop(s: &Shared) -> Result<()> {
    let (pid, repo) = {
        let mut g = s.lock().unwrap();
        set_wanted(&mut g, false);
        g.generation += 1;
        (g.status.pid, live_repo())
    };
    let Some(pid) = pid else {
        s.lock().unwrap().status.state = "stopped".into();
        return Ok(());
    };
    let stop_hook = Path::new("/opt/gearshift/cartridge/bin/stop");
    if let (true, Some(repo)) = (stop_hook.is_file(), &repo) {
        run_helper(s, &[stop_hook.display().to_string()], repo, STOP_GRACE);
    }
    // The process and its group (a just-started process may not have made its group yet).
    let signal = |sig| {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    };
    signal(nix::sys::signal::Signal::SIGTERM);
    let t = Instant::now();
    let mut last_term = Instant::now();
    while s.lock().unwrap().status.pid == Some(pid) {
        if t.elapsed() > STOP_GRACE {
            signal(nix::sys::signal::Signal::SIGKILL);
        } else if last_term.elapsed() > Duration::from_millis(500) {
            signal(nix::sys::signal::Signal::SIGTERM);
            last_term = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    note(&format!("stopped (pid {pid})"));
    Ok(())
}

fn start(s: &Shared) -> Result<()> {
    let s2 = s.clone();
    let mut g = s.lock().unwrap();
    set_wanted(&mut g, true);
    g.streak = 0;
    start_locked(&s2, &mut g)
}

/// Called by the reaper when a process exits.
fn exited(s: &Shared, pid: i32, code: i32) {
    let mut g = s.lock().unwrap();
    if let Some(tx) = g.waiters.remove(&pid) {
        let _ = tx.send(code);
        return;
    }
    if g.status.pid != Some(pid) {
        return;
    }
    let desc = if code >= 128 {
        format!("killed by signal {}", code - 128)
    } else {
        format!("exit code {code}")
    };
    g.status.pid = None;
    g.status.last_exit = Some(desc.clone());
    if !g.wanted {
        g.status.state = "stopped".into();
        return;
    }
    // A crash: restart after 1, 2, 4 ... 60 s; a minute of uptime resets the streak.
    if g.started_at.is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
        g.streak = 0;
    }
    g.streak += 1;
    g.status.restarts += 1;
    let delay = Duration::from_secs(1u64 << (g.streak - 1).min(6)).min(Duration::from_secs(60));
    g.status.state = if g.streak >= 5 {
        "crash-looping".into()
    } else {
        "crashed".into()
    };
    note(&format!(
        "web process {desc}; restarting in {}s (crash {} in a row)",
        delay.as_secs(),
        g.streak
    ));
    let generation = g.generation;
    let s2 = s.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let s3 = s2.clone();
        let mut g = s2.lock().unwrap();
        if g.wanted && g.generation == generation && g.status.pid.is_none() {
            if let Err(e) = start_locked(&s3, &mut g) {
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
            std::thread::sleep(Duration::from_millis(200));
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
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(256)).read_line(&mut line)?;
    let reply = match line.trim() {
        "start" => start(s).map(|_| "started"),
        "stop" => stop(s).map(|_| "stopped"),
        "restart" => stop(s).and_then(|_| start(s)).map(|_| "restarted"),
        "restart-if-wanted" => {
            let wanted = s.lock().unwrap().wanted;
            if wanted {
                stop(s).and_then(|_| start(s)).map(|_| "restarted")
            } else {
                Ok("not running")
            }
        }
        "status" => Ok("status"),
        other => Err(anyhow::anyhow!("unknown command '{}'", other.escape_default())),
    };
    let status = s.lock().unwrap().status.clone();
    let out = match reply {
        Ok(r) => serde_json::json!({"ok": true, "result": r, "status": status}),
        Err(e) => serde_json::json!({"ok": false, "error": format!("{e:#}"), "status": status}),
    };
    (&stream).write_all(format!("{out}\n").as_bytes())?;
    Ok(())
}

/// Runs the supervisor forever (as the gear's pid 1, after confinement).
pub fn run() -> ! {
    let _ = std::fs::create_dir_all("/run/gearshift");
    let _ = std::fs::remove_file(CONTROL_SOCKET);
    let listener = UnixListener::bind(CONTROL_SOCKET);
    let wanted = std::fs::read_to_string(wanted_file())
        .map(|t| t.trim() == "running")
        .unwrap_or(false);
    let s: Shared = Arc::new(Mutex::new(Inner {
        status: Status {
            state: "stopped".into(),
            ..Default::default()
        },
        wanted,
        streak: 0,
        started_at: None,
        waiters: HashMap::new(),
        generation: 0,
    }));
    let r = s.clone();
    std::thread::spawn(move || reaper(r));
    if wanted {
        let s2 = s.clone();
        let mut g = s.lock().unwrap();
        if let Err(e) = start_locked(&s2, &mut g) {
            note(&format!("cannot start at boot: {e:#}"));
        }
    }
    match listener {
        Ok(l) => {
            for stream in l.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = handle(&s, stream);
                });
            }
        }
        Err(e) => note(&format!("cannot listen on {CONTROL_SOCKET}: {e}")),
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Sends one command to the supervisor of the gear we are in.
pub fn ctl(cmd: &str) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(CONTROL_SOCKET)
        .with_context(|| format!("cannot reach the gear's supervisor at {CONTROL_SOCKET}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(s.take(64 * 1024)).read_line(&mut reply)?;
    let v: serde_json::Value = serde_json::from_str(&reply).context("the supervisor's reply is not JSON")?;
    if v["ok"] != true {
        bail!("{}", v["error"].as_str().unwrap_or("the supervisor refused"));
    }
    Ok(v)
}
