//! The control protocol between a gear's supervisor and everyone who asks it, both sides:
//! one command line in, one JSON line out (`{"ok", "result" | "error", "status"}`).
//!
//! Inside the gear the supervisor listens on a path (`gearshift gear ctl` connects there) and
//! on the abstract socket `@gearshift-control`. The host reaches the abstract one without
//! touching the gear's files: the calling thread enters the gear's network namespace just long
//! enough to connect (abstract sockets belong to a network namespace), then returns. The socket
//! stays connected across the switch back.

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// Where the control socket lives inside the gear.
pub const CONTROL_SOCKET: &str = "/run/gearshift/control.sock";
/// The abstract control socket's name (scoped to the gear's network namespace).
pub const CONTROL_ABSTRACT: &str = "gearshift-control";

/// What the supervisor is asked.
#[derive(Debug)]
pub enum Command {
    Start,
    /// Start and answer once the web process is ready.
    StartWait,
    Stop,
    /// Stop, start, and answer once ready.
    Restart,
    /// Start a deployment (`switch ID`; plain `switch`: the live one again) beside the running
    /// web process and make it live once ready: the supervisor moves the `app-root/repo` link
    /// in the same step, so what is recorded live and what runs never part.
    Switch(Option<String>),
    /// The router has moved over: the old web process may go.
    Release,
    RestartIfWanted,
    /// The quantities changed (`app scale`): start or stop processes to match.
    Scale,
    Status,
    /// Long poll: answer when the status generation moves past N.
    Watch(u64),
    /// Anything else: answered with this error.
    Unknown(anyhow::Error),
}

/// Parses one command line.
pub fn parse(line: &str) -> Command {
    let mut words = line.split_whitespace();
    match (words.next().unwrap_or(""), words.next()) {
        ("start", None) => Command::Start,
        ("start", Some("wait")) => Command::StartWait,
        ("stop", None) => Command::Stop,
        ("restart", None) => Command::Restart,
        ("switch", id) => Command::Switch(id.map(String::from)),
        ("release", None) => Command::Release,
        ("restart-if-wanted", None) => Command::RestartIfWanted,
        ("scale", None) => Command::Scale,
        ("status", None) => Command::Status,
        ("watch", Some(n)) => Command::Watch(n.parse().unwrap_or(0)),
        (other, _) => Command::Unknown(anyhow::anyhow!("unknown command '{}'", other.escape_default())),
    }
}

/// Server side: reads one command from a connection (at most 256 bytes, within 5 s).
pub fn read_command(stream: &UnixStream) -> Result<Command> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(stream.take(256)).read_line(&mut line)?;
    Ok(parse(&line))
}

/// Server side: answers a command with its result and the supervisor's status.
pub fn reply(stream: &UnixStream, result: Result<&str>, status: &impl serde::Serialize) -> Result<()> {
    let out = match result {
        Ok(r) => serde_json::json!({"ok": true, "result": r, "status": status}),
        Err(e) => serde_json::json!({"ok": false, "error": format!("{e:#}"), "status": status}),
    };
    let mut w = stream;
    w.write_all(format!("{out}\n").as_bytes())?;
    Ok(())
}

/// Server side: binds both control sockets (the path, and the abstract one); a socket that
/// cannot be bound is reported to `note` and left out.
pub fn listen(note: fn(&str)) -> Vec<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    // Made with the gear's /run (mounts.rs), where Landlock lets it be written; a gear started
    // before that has none yet.
    let _ = std::fs::create_dir_all(crate::gear::isolation::mounts::RUN_DIR);
    let _ = std::fs::remove_file(CONTROL_SOCKET);
    let abstract_listener = || -> Result<UnixListener> {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(CONTROL_ABSTRACT.as_bytes())?;
        Ok(UnixListener::bind_addr(&addr)?)
    };
    let listeners = [
        abstract_listener().map_err(|e| note(&format!("cannot listen on @{CONTROL_ABSTRACT}: {e}"))),
        UnixListener::bind(CONTROL_SOCKET).map_err(|e| note(&format!("cannot listen on {CONTROL_SOCKET}: {e}"))),
    ];
    listeners.into_iter().flatten().collect()
}

/// Sends one command to the supervisor of the gear we are in.
pub fn ctl(cmd: &str) -> Result<serde_json::Value> {
    let s = UnixStream::connect(CONTROL_SOCKET)
        .with_context(|| format!("cannot reach the gear's supervisor at {CONTROL_SOCKET}"))?;
    exchange(s, cmd)
}

/// One command over a connected control socket.
pub fn exchange(s: UnixStream, cmd: &str) -> Result<serde_json::Value> {
    exchange_within(s, cmd, Duration::from_secs(60))
}

/// One command over a connected control socket, whose reply must come within `limit`.
fn exchange_within(mut s: UnixStream, cmd: &str, limit: Duration) -> Result<serde_json::Value> {
    s.set_read_timeout(Some(limit))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(s.take(MAX_REPLY as u64)).read_line(&mut reply)?;
    parse_reply(&reply)
}

/// The longest reply line a client reads.
pub const MAX_REPLY: usize = 64 * 1024;

/// A reply line: its JSON when the supervisor says `ok`, else its error.
pub fn parse_reply(line: &str) -> Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(line).context("the supervisor's reply is not JSON")?;
    if v["ok"] != true {
        bail!("{}", v["error"].as_str().unwrap_or("the supervisor refused"));
    }
    Ok(v)
}

/// Connects to the supervisor of the gear whose network namespace is at `netns`.
pub fn connect(netns: &Path) -> Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let host = File::open("/proc/thread-self/ns/net").context("cannot open this thread's network namespace")?;
    let gear = File::open(netns).with_context(|| format!("gear network namespace {} is missing", netns.display()))?;
    setns(&gear, CloneFlags::CLONE_NEWNET).context("cannot enter the gear's network namespace")?;
    // At level s0: the supervisor's end of the connection takes this socket's level, and a
    // gear may not use one at root's login range.
    let r = crate::gear::isolation::selinux::with_sockets_at_s0(|| {
        std::os::unix::net::SocketAddr::from_abstract_name(CONTROL_ABSTRACT.as_bytes())
            .and_then(|a| UnixStream::connect_addr(&a))
    });
    if let Err(e) = setns(&host, CloneFlags::CLONE_NEWNET) {
        // Never carry on in a gear's network namespace.
        eprintln!("gearshift: cannot return to the host network namespace: {e}");
        std::process::abort();
    }
    r?.context("the gear's supervisor does not answer (is the gear running?)")
}

/// Sends one command to a gear's supervisor and returns its JSON reply.
pub fn command(netns: &Path, cmd: &str) -> Result<serde_json::Value> {
    exchange(connect(netns)?, cmd)
}

/// How long a user's `app status` waits for a supervisor's status: one that answers later does
/// not answer (it is frozen or overloaded), and the user is told so.
pub const STATUS_WAIT: Duration = Duration::from_secs(5);

/// The supervisor's `status`, within [`STATUS_WAIT`].
pub fn status_within(netns: &Path) -> Result<serde_json::Value> {
    exchange_within(connect(netns)?, "status", STATUS_WAIT)
        .with_context(|| format!("the supervisor did not tell its status within {STATUS_WAIT:?}"))
}

/// What restarts a gear whose supervisor does not answer.
pub const UNREACHABLE_FIX: &str = "`gearshift app idle APP` then `gearshift app start APP` restart its gears";

/// One line for a supervisor status: state, pid and age, deployment, restarts, last exit.
pub fn status_line(st: &serde_json::Value) -> String {
    let mut line = match st["state"].as_str().unwrap_or("?") {
        "idle" => return "idle (no processes; the next request wakes it)".into(),
        "down" => return "down (the gear's init is not running; `gearshift app start` starts it)".into(),
        "unreachable" => return format!("not answering (the gear's init runs, but its supervisor does not answer: frozen or overloaded; {UNREACHABLE_FIX})"),
        s => s.to_string(),
    };
    if let Some(p) = st["pid"].as_i64() {
        line += &format!(
            " (pid {p}, since {})",
            crate::clock::ago(st["since"].as_u64().unwrap_or(0))
        );
    }
    if let Some(d) = st["deployment"].as_str() {
        line += &format!(", deployment {d}");
    }
    line += &format!(", restarts {}", st["restarts"]);
    if let Some(e) = st["last_exit"].as_str() {
        line += &format!(", last exit: {e}");
    }
    line
}
