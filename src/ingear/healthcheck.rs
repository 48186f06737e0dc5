//! app.json's `healthchecks` in Dokku's format (`{"healthchecks": {"web": [{"type": "startup",
//! "path": "/ready", "content": "ok", "attempts": 3, "timeout": 5, "wait": 5, "initialDelay": 0}]}}`):
//! the `startup` checks of `web` gate a switch as `app health` does. A check is one of Dokku's
//! strategies: `path` (GET on the new web process's `$PORT`, 2xx and, with `content`, that text
//! in the body), `uptime` (the process stays up N seconds), `listening` (it accepts connections,
//! which every switch waits for anyway) or `command` (exits 0 in the deployment). `liveness` and
//! `readiness` checks are not run (as on Dokku's docker-local scheduler). Unknown keys are
//! ignored, as Dokku does.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The longest a check may take, all attempts included (the supervisor answers a switch
/// within 60 s, after the new process listens).
pub const MAX_SECONDS: u64 = 50;

/// One entry of `healthchecks.TYPE`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Healthcheck {
    #[serde(default, rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub path: Option<String>,
    pub content: Option<String>,
    pub uptime: Option<u64>,
    #[serde(default)]
    pub listening: bool,
    pub command: Option<Vec<String>>,
    pub scheme: Option<String>,
    #[serde(default)]
    pub http_headers: Vec<Header>,
    pub attempts: Option<u32>,
    pub timeout: Option<u64>,
    pub wait: Option<u64>,
    pub initial_delay: Option<u64>,
    /// A failure is only reported.
    #[serde(default)]
    pub warn: bool,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// What a check does.
#[derive(Debug, PartialEq)]
pub enum Strategy<'a> {
    Path(&'a str),
    Uptime(u64),
    Listening,
    Command(&'a [String]),
}

impl Healthcheck {
    /// Whether it gates a switch (`startup`, Dokku's default type).
    pub fn is_startup(&self) -> bool {
        self.kind.is_empty() || self.kind == "startup"
    }

    /// Its name as the pusher sees it.
    pub fn label(&self) -> String {
        match (&self.name, self.strategy()) {
            (Some(n), _) => format!("'{n}'"),
            (None, Ok(Strategy::Path(p))) => format!("GET {p}"),
            (None, Ok(Strategy::Uptime(s))) => format!("uptime {s}s"),
            (None, Ok(Strategy::Command(c))) => format!("command `{}`", c.join(" ")),
            _ => "listening".into(),
        }
    }

    pub fn strategy(&self) -> Result<Strategy<'_>> {
        let set = [
            self.path.is_some(),
            self.uptime.is_some(),
            self.listening,
            self.command.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            bail!("give one of path, uptime, listening or command per check");
        }
        Ok(match (&self.path, self.uptime, &self.command) {
            (Some(p), _, _) => Strategy::Path(p),
            (_, Some(s), _) => Strategy::Uptime(s),
            (_, _, Some(c)) => Strategy::Command(c),
            _ => Strategy::Listening,
        })
    }

    fn attempts(&self) -> u32 {
        self.attempts.unwrap_or(3).max(1)
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or(5).max(1))
    }
    fn wait(&self) -> Duration {
        Duration::from_secs(self.wait.unwrap_or(5))
    }
    fn initial_delay(&self) -> Duration {
        Duration::from_secs(self.initial_delay.unwrap_or(0))
    }

    /// The longest it can take, every attempt failing.
    pub fn worst_case(&self) -> Duration {
        match self.strategy() {
            Ok(Strategy::Uptime(s)) => Duration::from_secs(s),
            _ => self.initial_delay() + (self.timeout() + self.wait()) * self.attempts() - self.wait(),
        }
    }

    /// Refuses what gearshift cannot honour, with what to change.
    pub fn validate(&self) -> Result<()> {
        let label = self.label();
        if !matches!(self.kind.as_str(), "" | "startup" | "liveness" | "readiness") {
            bail!(
                "healthcheck {label}: type '{}' is not startup, liveness or readiness",
                self.kind
            );
        }
        match self.strategy().with_context(|| format!("healthcheck {label}"))? {
            Strategy::Path(p) if !p.starts_with('/') || p.len() > 1024 || !p.bytes().all(|b| b.is_ascii_graphic()) => {
                bail!("healthcheck {label}: '{}' is not a path: give an absolute one such as /health (printable ASCII, no spaces)", p.escape_default())
            }
            Strategy::Command([]) => bail!("healthcheck {label}: the command is empty"),
            _ => {}
        }
        if let Some(s) = self.scheme.as_deref().filter(|s| *s != "http") {
            bail!("healthcheck {label}: scheme '{s}' is not supported: the web process is checked over plain http on $PORT (the router terminates TLS); remove it");
        }
        if self.worst_case() > Duration::from_secs(MAX_SECONDS) {
            bail!(
                "healthcheck {label} may take {}s (initialDelay + attempts x (timeout + wait)); gearshift waits at most {MAX_SECONDS}s: lower attempts, timeout or wait",
                self.worst_case().as_secs()
            );
        }
        Ok(())
    }
}

/// How a check reaches the new web process.
pub struct Target<'a> {
    pub addr: SocketAddr,
    /// The Host header (the app's DNS name).
    pub host: &'a str,
    /// When the process started.
    pub started: Instant,
    /// When the switch must have answered (its caller waits at most 60 s).
    pub deadline: Instant,
    /// How the process ended, once it has.
    pub exited: &'a dyn Fn() -> Option<String>,
    /// Runs a command check's argv in the deployment, at most the given time.
    pub run: &'a dyn Fn(&[String], Duration) -> Result<()>,
}

/// Runs `check` against `target` until it passes, its attempts are used up or `deadline`.
pub fn run(check: &Healthcheck, target: &Target) -> Result<()> {
    let label = check.label();
    let gone = |t: &Target| -> Result<()> {
        match (t.exited)() {
            Some(how) => bail!("healthcheck {label} failed: the new web process exited ({how})"),
            None => Ok(()),
        }
    };
    let strategy = check.strategy()?;
    if let Strategy::Uptime(s) = strategy {
        while target.started.elapsed() < Duration::from_secs(s) {
            gone(target)?;
            std::thread::sleep(Duration::from_millis(50));
        }
        return gone(target);
    }
    pause_until(target.started + check.initial_delay(), target)?;
    let mut last = String::new();
    for attempt in 1..=check.attempts() {
        gone(target)?;
        let result = match strategy {
            Strategy::Path(path) => http_check(check, path, target),
            Strategy::Command(argv) => (target.run)(argv, check.timeout()),
            _ => std::net::TcpStream::connect_timeout(&target.addr, check.timeout())
                .map(|_| ())
                .context("does not accept connections"),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("{e:#}"),
        }
        if attempt < check.attempts() {
            pause_until(Instant::now() + check.wait(), target)?;
        }
    }
    bail!(
        "app.json healthcheck {label} failed after {} attempt(s): {last}",
        check.attempts()
    )
}

/// Sleeps until `t`, failing early when the process exits meanwhile or `t` is past the deadline.
fn pause_until(t: Instant, target: &Target) -> Result<()> {
    if t > target.deadline {
        bail!(
            "out of time: a switch must be done within {}s of the new process's start (lower initialDelay, attempts or wait)",
            (target.deadline - target.started).as_secs()
        );
    }
    while Instant::now() < t {
        if let Some(how) = (target.exited)() {
            bail!("the new web process exited ({how})");
        }
        std::thread::sleep((t - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

/// One GET: 2xx and, with `content`, that text in the body.
fn http_check(check: &Healthcheck, path: &str, target: &Target) -> Result<()> {
    let timeout = check.timeout();
    let mut c = std::net::TcpStream::connect_timeout(&target.addr, timeout).context("cannot connect")?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(timeout))?;
    let mut head = format!("GET {path} HTTP/1.1\r\n");
    let overrides = |n: &str| check.http_headers.iter().any(|h| h.name.eq_ignore_ascii_case(n));
    if !overrides("host") {
        head.push_str(&format!("Host: {}\r\n", target.host));
    }
    for h in &check.http_headers {
        if h.name.contains(['\r', '\n', ':']) || h.value.contains(['\r', '\n']) {
            bail!("header {:?} is not a valid header", h.name);
        }
        head.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    head.push_str("User-Agent: gearshift-healthcheck\r\nConnection: close\r\n\r\n");
    c.write_all(head.as_bytes()).context("cannot send the request")?;
    let answer = read_answer(&mut c)?;
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    let code: u16 = match status_line.split_whitespace().collect::<Vec<_>>()[..] {
        [v, code, ..] if v.starts_with("HTTP/") => code.parse().unwrap_or(0),
        _ => bail!("not an HTTP answer: {:?}", status_line),
    };
    if !(200..300).contains(&code) {
        bail!("GET {path} answered {code} (not 2xx)");
    }
    if let Some(want) = &check.content {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if !body.contains(want.as_str()) {
            bail!("GET {path} answered {code} without {want:?} in its body");
        }
    }
    Ok(())
}

/// An HTTP answer (at most 1 MiB): until the server closes, or, from one that keeps the
/// connection open despite `Connection: close`, until its `Content-Length` body is complete.
fn read_answer(c: &mut std::net::TcpStream) -> Result<Vec<u8>> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = c.read(&mut buf).context("no complete answer")?;
        if n == 0 || answer.len() + n > 1 << 20 {
            return Ok(answer);
        }
        answer.extend_from_slice(&buf[..n]);
        let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        if length.is_some_and(|len| answer.len() >= end + 4 + len) {
            return Ok(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn check(json: &str) -> Healthcheck {
        serde_json::from_str(json).unwrap()
    }

    /// A server answering each connection with the next of `answers`.
    fn serve(answers: Vec<&'static str>) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut heads, mut open) = (Vec::new(), Vec::new());
            for a in answers {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).unwrap();
                heads.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                c.write_all(a.as_bytes()).unwrap();
                // Kept open, as a server ignoring `Connection: close` would.
                open.push(c);
            }
            heads
        });
        (addr, h)
    }

    fn target<'a>(addr: SocketAddr, exited: &'a dyn Fn() -> Option<String>) -> Target<'a> {
        Target {
            addr,
            host: "shop.example.com",
            started: Instant::now(),
            deadline: Instant::now() + Duration::from_secs(55),
            exited,
            run: &|_, _| bail!("no commands here"),
        }
    }

    #[test]
    fn dokku_fields_parse_with_their_defaults_and_unknown_keys() {
        let c = check(
            r#"{"type": "startup", "name": "web check", "description": "d", "path": "/ready", "content": "ok",
               "attempts": 2, "timeout": 3, "wait": 1, "initialDelay": 4, "port": 5000, "onFailure": {}}"#,
        );
        assert_eq!(c.strategy().unwrap(), Strategy::Path("/ready"));
        assert_eq!(c.label(), "'web check'");
        assert_eq!(c.worst_case(), Duration::from_secs(4 + 3 + 1 + 3));
        c.validate().unwrap();
        let d = check("{}");
        assert!(d.is_startup());
        assert_eq!(d.strategy().unwrap(), Strategy::Listening);
        assert_eq!(d.worst_case(), Duration::from_secs(5 * 3 + 5 * 2));
        assert!(!check(r#"{"type": "liveness"}"#).is_startup());
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_what_to_change() {
        let e = |j: &str| format!("{:#}", check(j).validate().unwrap_err());
        assert!(e(r#"{"path": "/", "uptime": 3}"#).contains("one of path, uptime"));
        assert!(e(r#"{"path": "/", "scheme": "https"}"#).contains("scheme 'https' is not supported"));
        assert!(e(r#"{"path": "/", "attempts": 10}"#).contains("may take 95s"));
        assert!(e(r#"{"path": "ready"}"#).contains("is not a path"));
        assert!(e(r#"{"type": "boot"}"#).contains("type 'boot'"));
        assert!(e(r#"{"command": []}"#).contains("empty"));
    }

    #[test]
    fn a_path_check_retries_until_2xx_with_its_content() {
        let (addr, h) = serve(vec![
            "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbusy",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready",
        ]);
        let c = check(
            r#"{"path": "/ready?x=1", "content": "ready", "wait": 0, "attempts": 3, "httpHeaders": [{"name": "X-Forwarded-Proto", "value": "https"}]}"#,
        );
        run(&c, &target(addr, &|| None)).unwrap();
        let heads = h.join().unwrap();
        assert!(
            heads[0].starts_with("GET /ready?x=1 HTTP/1.1\r\nHost: shop.example.com\r\n"),
            "{}",
            heads[0]
        );
        assert!(heads[0].contains("X-Forwarded-Proto: https\r\n"), "{}", heads[0]);
    }

    #[test]
    fn a_failing_check_names_itself_and_its_last_answer() {
        let (addr, h) = serve(vec![
            "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
        ]);
        let c = check(r#"{"name": "db ready", "path": "/db", "attempts": 2, "wait": 0}"#);
        let e = format!("{:#}", run(&c, &target(addr, &|| None)).unwrap_err());
        assert_eq!(
            e,
            "app.json healthcheck 'db ready' failed after 2 attempt(s): GET /db answered 500 (not 2xx)"
        );
        h.join().unwrap();
        let mut late = target(addr, &|| None);
        late.deadline = Instant::now();
        let e = format!(
            "{:#}",
            run(&check(r#"{"path": "/", "initialDelay": 1}"#), &late).unwrap_err()
        );
        assert!(e.contains("out of time: a switch must be done within 0s"), "{e}");
        let exited = || Some("exit code 1".to_string());
        let e = format!(
            "{:#}",
            run(&check(r#"{"uptime": 5}"#), &target(addr, &exited)).unwrap_err()
        );
        assert!(
            e.contains("uptime 5s failed: the new web process exited (exit code 1)"),
            "{e}"
        );
    }
}
