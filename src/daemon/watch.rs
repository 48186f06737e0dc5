//! One thread follows every gear's supervisor (its long poll `watch GEN`), instead of a thread
//! per gear: the open long polls wait in one `poll(2)`, so an idle node of 500 gears costs the
//! daemon a few hundred bytes per gear, not a thread stack each. A gear whose supervisor does not
//! answer (stopped, starting) is looked at again after a growing pause (250 ms up to 2 s; only
//! its init's pid file is read, no namespace is entered, while no init runs), a gear of an idle
//! app once a minute, and any at once when [`Watcher::poke`] says its app changed (a start, a
//! push, a wake).

use crate::gear::{control, isolation::network::netns_path, Gear};
use crate::node::Node;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first pause before looking again at a gear whose supervisor did not answer.
const RETRY_MIN: Duration = Duration::from_millis(250);
/// The longest such pause.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// The pause for a gear of an idle app: only a wake starts it, and a wake pokes.
const RETRY_IDLE: Duration = Duration::from_secs(60);
/// A long poll the supervisor has not answered in this long is dropped and sent again (it
/// answers within 25 s).
const POLL_MAX: Duration = Duration::from_secs(60);

/// What the watcher tells the rest of the daemon.
pub trait Sink: Send + Sync + 'static {
    fn node(&self) -> &Node;
    /// A gear's live web process (None: none runs, or its supervisor does not answer), read at
    /// the supervisor's switch `generation` (None: it did not answer).
    fn set_live(&self, gear: &Gear, live: Option<SocketAddr>, generation: Option<u64>);
    /// A gear's supervisor answered with this status (`restarts`, `state` ...).
    fn status(&self, gear: &Gear, status: &serde_json::Value, seen_restarts: &mut Option<u64>);
    /// Requests in flight to a backend.
    fn in_flight(&self, addr: SocketAddr) -> usize;
    /// The gear is gone from the node.
    fn gone(&self, gear: &Gear);
    /// The gear's app is idle: nothing but a wake (which pokes) starts it.
    fn idle(&self, gear: &Gear) -> bool;
    fn stopping(&self) -> bool;
}

/// The watcher's inbox: the gears to follow and the apps to look at again now.
#[derive(Default)]
struct Inbox {
    gears: Option<Vec<Gear>>,
    poked: Vec<String>,
}

/// The handle the daemon keeps.
pub struct Watcher {
    inbox: Arc<Mutex<Inbox>>,
    wake: Arc<OwnedFd>,
}

impl Watcher {
    /// Starts the watcher thread.
    pub fn start(sink: Arc<dyn Sink>) -> std::io::Result<Watcher> {
        // SAFETY: eventfd has no pointer arguments; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let (i, w) = (inbox.clone(), wake.clone());
        std::thread::Builder::new()
            .name("watch-gears".into())
            .spawn(move || run(sink, i, w))?;
        Ok(Watcher { inbox, wake })
    }

    /// The gears to follow from now on (the others are dropped).
    pub fn set_gears(&self, gears: Vec<Gear>) {
        self.inbox.lock().unwrap().gears = Some(gears);
        self.ring();
    }

    /// Looks at `app`'s gears again now, not after their pause.
    pub fn poke(&self, app: &str) {
        self.inbox.lock().unwrap().poked.push(app.to_string());
        self.ring();
    }

    fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
}

/// One followed gear.
struct Follow {
    gear: Gear,
    ns: PathBuf,
    generation: u64,
    restarts: Option<u64>,
    /// The long poll in flight, with what it has read so far.
    poll: Option<(UnixStream, Vec<u8>, Instant)>,
    retry_at: Instant,
    pause: Duration,
    /// The old web process a release was asked for (once per process).
    releasing: Option<SocketAddr>,
}

impl Follow {
    fn new(gear: Gear) -> Follow {
        Follow {
            ns: netns_path(&gear.netns()),
            gear,
            generation: 0,
            restarts: None,
            poll: None,
            retry_at: Instant::now(),
            pause: RETRY_MIN,
            releasing: None,
        }
    }

    /// Not answering: no live process, and look again after a growing pause.
    fn down(&mut self, sink: &dyn Sink) {
        self.poll = None;
        self.generation = 0;
        sink.set_live(&self.gear, None, None);
        let pause = if sink.idle(&self.gear) { RETRY_IDLE } else { self.pause };
        self.retry_at = Instant::now() + pause;
        self.pause = next_pause(self.pause);
    }

    /// Sends the long poll; false when the supervisor cannot be reached.
    fn send(&mut self, node: &Node) -> bool {
        if crate::gear::init_pid(node, &self.gear).is_none() {
            return false;
        }
        let Ok(mut s) = control::connect(&self.ns) else {
            return false;
        };
        if s.write_all(format!("watch {}\n", self.generation).as_bytes()).is_err() || s.set_nonblocking(true).is_err() {
            return false;
        }
        self.poll = Some((s, Vec::new(), Instant::now()));
        true
    }
}

/// The pause after `p` for a gear that still does not answer.
pub fn next_pause(p: Duration) -> Duration {
    (p * 2).clamp(RETRY_MIN, RETRY_MAX)
}

/// What a reply line says: (live web process, old one draining).
pub fn addresses(gear_ip: std::net::Ipv4Addr, status: &serde_json::Value) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let port_of = |v: &serde_json::Value| v.as_u64().filter(|p| *p > 0 && *p < 65536).map(|p| p as u16);
    let live = status["pid"]
        .as_i64()
        .and(port_of(&status["port"]))
        .map(|p| SocketAddr::from((gear_ip, p)));
    let draining = port_of(&status["draining"][1]).map(|p| SocketAddr::from((gear_ip, p)));
    (live, draining)
}

fn run(sink: Arc<dyn Sink>, inbox: Arc<Mutex<Inbox>>, wake: Arc<OwnedFd>) {
    let mut follows: HashMap<String, Follow> = HashMap::new();
    while !sink.stopping() {
        let (gears, poked) = {
            let mut i = inbox.lock().unwrap();
            (i.gears.take(), std::mem::take(&mut i.poked))
        };
        if let Some(gears) = gears {
            let keep: std::collections::HashSet<&str> = gears.iter().map(|g| g.id.as_str()).collect();
            follows.retain(|id, f| {
                let k = keep.contains(id.as_str());
                if !k {
                    sink.gone(&f.gear);
                }
                k
            });
            for g in gears {
                follows.entry(g.id.clone()).or_insert_with(|| Follow::new(g));
            }
        }
        let now = Instant::now();
        for f in follows.values_mut().filter(|f| f.poll.is_none()) {
            if poked.contains(&f.gear.app) {
                f.retry_at = now;
                f.pause = RETRY_MIN;
            }
        }
        // Send the long polls that are due.
        for f in follows.values_mut() {
            if f.poll.as_ref().is_some_and(|p| p.2.elapsed() > POLL_MAX) {
                f.poll = None;
                f.retry_at = now;
            }
            if f.poll.is_none() && f.retry_at <= now {
                if f.send(sink.node()) {
                    f.pause = RETRY_MIN;
                } else {
                    f.down(&*sink);
                }
            }
        }
        // Wait for a reply, the inbox, or the next retry.
        let next = follows
            .values()
            .filter(|f| f.poll.is_none())
            .map(|f| f.retry_at)
            .min()
            .map_or(Duration::from_millis(500), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(500));
        let mut ids: Vec<&String> = Vec::new();
        let mut fds = vec![libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for (id, f) in &follows {
            if let Some((s, _, _)) = &f.poll {
                ids.push(id);
                fds.push(libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        // SAFETY: fds is a live, correctly sized array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, next.as_millis() as i32 + 1) };
        if n <= 0 {
            continue;
        }
        if fds[0].revents != 0 {
            let mut b = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live buffer from our eventfd.
            unsafe { libc::read(wake.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
        }
        let ready: Vec<String> = ids
            .iter()
            .zip(&fds[1..])
            .filter(|(_, p)| p.revents != 0)
            .map(|(id, _)| (*id).clone())
            .collect();
        for id in ready {
            if let Some(f) = follows.get_mut(&id) {
                read_reply(&sink, f);
            }
        }
    }
}

/// Reads what a gear's long poll has to say; acts on a whole reply.
fn read_reply(sink: &Arc<dyn Sink>, f: &mut Follow) {
    let Some((s, buf, _)) = &mut f.poll else {
        return;
    };
    let mut chunk = [0u8; 4096];
    let line = loop {
        match s.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    break Some(String::from_utf8_lossy(&buf[..end]).into_owned());
                }
                if buf.len() > control::MAX_REPLY {
                    break None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break None,
        }
    };
    f.poll = None;
    let Some(Ok(v)) = line.map(|l| control::parse_reply(&l)) else {
        f.down(&**sink);
        return;
    };
    let st = &v["status"];
    sink.status(&f.gear, st, &mut f.restarts);
    f.generation = st["generation"].as_u64().unwrap_or(0);
    let (live, draining) = addresses(f.gear.ip, st);
    sink.set_live(&f.gear, live, Some(f.generation));
    match draining.filter(|d| Some(*d) != live) {
        Some(old) if f.releasing != Some(old) => {
            f.releasing = Some(old);
            release_when_drained(sink, f.ns.clone(), old);
        }
        Some(_) => {}
        None => f.releasing = None,
    }
    // The next long poll goes out at once.
    f.retry_at = Instant::now();
}

/// Once the requests already sent to the old web process are answered (the route table no
/// longer names it), the supervisor may stop it: asked from a thread of its own (one per
/// deployment switch), so the other gears' polls are not held up by a slow drain.
fn release_when_drained(sink: &Arc<dyn Sink>, ns: PathBuf, old: SocketAddr) {
    let sink = sink.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        while sink.in_flight(old) > 0 && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = control::command(&ns, "release");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap() {
        let mut p = RETRY_MIN;
        let mut seen = vec![p];
        for _ in 0..6 {
            p = next_pause(p);
            seen.push(p);
        }
        assert_eq!(seen[1], Duration::from_millis(500));
        assert_eq!(*seen.last().unwrap(), RETRY_MAX);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn addresses_from_a_status() {
        let ip = std::net::Ipv4Addr::new(10, 0, 0, 5);
        let st = serde_json::json!({"pid": 42, "port": 8081, "draining": [41, 8080]});
        let (live, old) = addresses(ip, &st);
        assert_eq!(live, Some("10.0.0.5:8081".parse().unwrap()));
        assert_eq!(old, Some("10.0.0.5:8080".parse().unwrap()));
        let (live, old) = addresses(ip, &serde_json::json!({"pid": null, "port": 8080, "draining": null}));
        assert_eq!((live, old), (None, None));
        let (live, _) = addresses(ip, &serde_json::json!({"pid": 1, "port": 70000}));
        assert_eq!(live, None);
    }
}
