//! The node's event log: what happened to apps, users and the node, who did it, when. One JSON
//! object a line in `<data_root>/logs/events.jsonl` (root only, 0640), appended under an
//! exclusive lock and rotated to `events.jsonl.1` past [`ROTATE_AT`] bytes.
//!
//! Recording never fails the operation it describes: an event that cannot be written is
//! reported on stderr and dropped.

use super::Node;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// The log is rotated once it is this large (one older file is kept).
pub const ROTATE_AT: u64 = 8 << 20;

/// One thing that happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Unix time, seconds.
    pub time: u64,
    /// What happened: `deploy.start`, `deploy.result`, `deploy.rollback`, `process.crash`,
    /// `app.idle`, `app.wake`, `domain.add`, `user.add` ...
    pub kind: String,
    /// The app it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The app's owner when it happened (what a user's `events` is filtered by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Who did it: `root` (the node's console), an SSH user, or `gearshift` (the daemon itself).
    pub by: String,
    /// The fingerprint of the SSH key `by` logged in with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The details: a result, an exit code, a host name.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl Event {
    pub fn new(kind: &str, by: &str) -> Event {
        Event {
            time: crate::clock::now(),
            kind: kind.to_string(),
            app: None,
            owner: None,
            by: by.to_string(),
            key: None,
            detail: serde_json::Value::Null,
        }
    }

    /// Done by `actor` (root, or an SSH user with their key).
    pub fn by(kind: &str, actor: &crate::ssh::auth::Actor) -> Event {
        Event {
            key: actor.key.clone(),
            ..Event::new(kind, &actor.who())
        }
    }

    /// The event concerns `app`, owned by `owner`.
    pub fn app(mut self, app: &str, owner: Option<&str>) -> Event {
        self.app = Some(app.to_string());
        self.owner = owner.map(String::from);
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Event {
        self.detail = detail;
        self
    }

    /// Whether `user` (None: an admin) may see it: admins see everything, a user the events
    /// of the apps they owned.
    pub fn visible_to(&self, user: Option<&str>) -> bool {
        match user {
            None => true,
            Some(u) => self.owner.as_deref() == Some(u),
        }
    }

    /// One line for people: `2026-12-02 13:30:56  deploy.result  shop  by alice  {"result":"ok"}`.
    pub fn line(&self) -> String {
        let when = chrono::DateTime::from_timestamp(self.time as i64, 0)
            .map_or(self.time.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        let mut l = format!(
            "{when}  {:<15} {:<14} by {}",
            self.kind,
            self.app.as_deref().unwrap_or("-"),
            self.by
        );
        if let Some(k) = &self.key {
            l.push_str(&format!(" ({k})"));
        }
        if !self.detail.is_null() {
            l.push_str(&format!("  {}", self.detail));
        }
        l
    }
}

pub fn path(node: &Node) -> PathBuf {
    node.root().join("logs").join("events.jsonl")
}

/// Appends `e`; a failure is reported on stderr, never returned.
pub fn record(node: &Node, e: Event) {
    if let Err(err) = append(node, &e) {
        eprintln!("gearshift: could not record the event {}: {err:#}", e.kind);
    }
}

fn append(node: &Node, e: &Event) -> Result<()> {
    open(node)?.write(e)
}

/// The event log, opened (and rotated when due) before a verb whose process may join a gear,
/// where the node's paths are not the node's: recording its outcome then opens no path.
#[derive(Debug)]
pub struct Opened {
    lock: std::fs::File,
    log: std::fs::File,
}

/// Opens the log to append to, rotating it first when it is due.
pub fn open(node: &Node) -> Result<Opened> {
    let p = path(node);
    let dir = p.parent().context("no logs directory")?;
    crate::state::log_dir(dir)?;
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join("events.lock"))
        .context("cannot open the event log's lock")?;
    flock(&lock, libc::LOCK_EX)?;
    if std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) >= ROTATE_AT {
        std::fs::rename(&p, p.with_extension("jsonl.1")).context("cannot rotate the event log")?;
    }
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(&p)
        .with_context(|| format!("cannot open {}", p.display()))?;
    flock(&lock, libc::LOCK_UN)?;
    Ok(Opened { lock, log })
}

impl Opened {
    /// Appends `e`; a failure is reported on stderr, never returned.
    pub fn record(self, e: Event) {
        if let Err(err) = self.write(&e) {
            eprintln!("gearshift: could not record the event {}: {err:#}", e.kind);
        }
    }

    fn write(mut self, e: &Event) -> Result<()> {
        flock(&self.lock, libc::LOCK_EX)?;
        let mut line = serde_json::to_string(e)?;
        line.push('\n');
        self.log
            .write_all(line.as_bytes())
            .context("cannot write the event log")
    }
}

fn flock(f: &std::fs::File, op: libc::c_int) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor `f` owns; no memory is touched.
    if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot lock the event log");
    }
    Ok(())
}

/// Every event from `offset` on in the current file (the rotated one first when `offset` is
/// 0), keeping those `keep` accepts; returns them and the offset to continue from.
pub fn read_from(node: &Node, offset: u64, keep: &dyn Fn(&Event) -> bool) -> Result<(Vec<Event>, u64)> {
    let p = path(node);
    let mut out = Vec::new();
    let mut parse = |text: &[u8]| {
        for l in text.split(|b| *b == b'\n') {
            if let Ok(e) = serde_json::from_slice::<Event>(l) {
                if keep(&e) {
                    out.push(e);
                }
            }
        }
    };
    if offset == 0 {
        if let Ok(old) = std::fs::read(p.with_extension("jsonl.1")) {
            parse(&old);
        }
    }
    let Ok(f) = std::fs::File::open(&p) else {
        return Ok((out, 0));
    };
    let len = f.metadata()?.len();
    // Rotated since: start over in the new file.
    let offset = if len < offset { 0 } else { offset };
    let mut r = std::io::BufReader::new(f);
    r.seek(std::io::SeekFrom::Start(offset))?;
    let mut text = Vec::new();
    let mut end = offset;
    loop {
        let mut l = Vec::new();
        let n = r.read_until(b'\n', &mut l)?;
        // A line still being written is read next time.
        if n == 0 || !l.ends_with(b"\n") {
            break;
        }
        end += n as u64;
        text.extend_from_slice(&l);
    }
    parse(&text);
    Ok((out, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_see_their_own_apps_events() {
        let e = Event::new("deploy.result", "alice").app("shop", Some("alice"));
        assert!(e.visible_to(None));
        assert!(e.visible_to(Some("alice")));
        assert!(!e.visible_to(Some("bob")));
        let u = Event::new("user.add", "root");
        assert!(u.visible_to(None));
        assert!(!u.visible_to(Some("alice")));
    }

    #[test]
    fn lines_round_trip() {
        let e = Event::new("process.crash", "gearshift")
            .app("shop", None)
            .detail(serde_json::json!({"exit": "exit code 3"}));
        let back: Event = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        assert!(e.line().contains("process.crash"), "{}", e.line());
        assert!(e.line().contains("exit code 3"), "{}", e.line());
    }
}
