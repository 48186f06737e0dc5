//! One client connection's state, shared by both engines: the event loop (`evloop`) and the connection
//! threads (`blocking`). Its buffers, the route cache, the upstream connections it keeps, and what both
//! engines do alike: answer with the router's own pages, and log and count each request.

use super::heads::{Req, Scratch};
use super::metrics::AppSlot;
use super::pages;
use super::pool::LocalConns;
use super::route::{LiveRoute, RouteCache};
use super::shared::Inner;
use super::stream::ClientStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Client read buffer to start with: enough for nearly every request head.
pub(super) const SMALL_BUF: usize = 4 * 1024;
/// A keep-alive client connection idle this long releases its upstream connections to the shared pools and
/// frees its upstream buffer.
pub(super) const IDLE_TRIM_AFTER: Duration = Duration::from_secs(2);
/// Upstream read buffer: response heads must fit; bodies are relayed in pieces of this size at most.
const UPSTREAM_BUF: usize = 32 * 1024;

/// Whether the client connection goes on after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Keep,
    Close,
}

/// Why no request head could be read.
pub(super) enum HeadErr {
    Closed,
    TooLarge,
    Timeout,
}

/// What was sent for one request, for the log and the metrics.
#[derive(Default)]
pub(super) struct Done {
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One client connection's state, served by a connection thread (TLS) or by the event loop, which hands
/// it to a thread for whatever is not a short plain exchange.
pub(super) struct Conn {
    pub(super) inner: Arc<Inner>,
    pub(super) client: ClientStream,
    pub(super) peer_ip: String,
    pub(super) tls: bool,
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) ubuf: Vec<u8>,
    pub(super) local: LocalConns,
    cur_timeout: Option<Duration>,
    pub(super) s: Scratch,
    log_secs: u64,
    log_time: String,
    /// The last route looked up.
    pub(super) route: RouteCache,
    /// Counted in `active_connections` and its address's connections by the event loop:
    /// uncounted when dropped.
    pub(super) gauge: Option<std::net::IpAddr>,
    /// The request in progress, counted against its app's `max_connections_per_app`.
    pub(super) app_slot: Option<AppSlot>,
    /// The last [`Conn::poll_head`] read the client socket until it had nothing more.
    pub(super) drained: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.local.release(&self.inner.limits);
        if let Some(ip) = self.gauge {
            self.inner.metrics.active_connections.fetch_sub(1, Relaxed);
            self.inner.release_ip_slot(ip);
        }
    }
}

/// Offset just past the blank line ending a head, searching from `from`.
pub(super) fn find_head_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(p) = b[i..].iter().position(|&c| c == b'\n') {
        let j = i + p;
        match (b.get(j + 1), b.get(j + 2)) {
            (Some(b'\n'), _) => return Some(j + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(j + 3),
            _ => i = j + 1,
        }
    }
    None
}

impl Conn {
    /// A connection with empty buffers.
    pub(super) fn new(inner: Arc<Inner>, client: ClientStream, peer_ip: String, tls: bool) -> Conn {
        Conn {
            inner,
            client,
            peer_ip,
            tls,
            buf: vec![0; SMALL_BUF],
            start: 0,
            end: 0,
            ubuf: Vec::new(),
            local: LocalConns::default(),
            cur_timeout: None,
            s: Scratch::default(),
            log_secs: 0,
            log_time: String::new(),
            route: RouteCache::default(),
            gauge: None,
            app_slot: None,
            drained: false,
        }
    }

    /// True when buffered bytes or the socket may hold more request bytes.
    pub(super) fn has_buffered(&self) -> bool {
        self.end > self.start
    }

    /// Sets the client socket's read timeout, skipping the syscall when it is already set.
    pub(super) fn client_timeout(&mut self, d: Duration) {
        if self.cur_timeout != Some(d) {
            let _ = self.client.tcp().set_read_timeout(Some(d));
            self.cur_timeout = Some(d);
        }
    }

    /// Makes room after `buf[end..]` for more of a head of at most `max` bytes: moves the partial
    /// head to the front, and grows a full small buffer to the limit.
    pub(super) fn room_for_head(&mut self, max: usize) -> Result<(), HeadErr> {
        if self.end - self.start >= max {
            return Err(HeadErr::TooLarge);
        }
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                // A head larger than the small buffer: grow to the limit.
                self.buf.resize(max.max(SMALL_BUF), 0);
            }
        }
        Ok(())
    }

    /// Allocates the upstream read buffer unless it is there (it is freed by [`Conn::trim`]).
    pub(super) fn alloc_upstream_buf(&mut self) {
        if self.ubuf.is_empty() {
            self.ubuf = vec![0; UPSTREAM_BUF];
        }
    }

    /// Looks up the route of the request in progress (`s.host`); false: no app has this host.
    pub(super) fn lookup_route(&mut self) -> bool {
        self.route.lookup(&self.inner.routes, &self.s.host, &mut self.local)
    }

    /// Runs `f` with the route [`Conn::lookup_route`] found, taken out of the cache while `f` uses the
    /// connection. None: there is no route.
    pub(super) fn with_route<R>(&mut self, f: impl FnOnce(&mut Conn, &Arc<LiveRoute>) -> R) -> Option<R> {
        let cached = self.route.take()?;
        let r = f(self, &cached.route);
        self.route.put(cached);
        Some(r)
    }

    /// Answers a request head that did not arrive in time or was too large; the connection closes after.
    pub(super) fn head_error(&mut self, status: u16) {
        let _ = pages::write_error(&mut self.client, status, "", false, true);
    }

    /// Answers with one of the router's own pages and logs it.
    pub(super) fn page(
        &mut self,
        route: Option<&LiveRoute>,
        req: &Req,
        status: u16,
        keep: bool,
        t0: Instant,
    ) -> Outcome {
        let n = pages::write_error(&mut self.client, status, &self.s.host, req.head, !keep).unwrap_or(0);
        let done = Done {
            status,
            bytes_in: req.head_len as u64,
            bytes_out: n,
        };
        self.finish(route, t0, &done, req.minor);
        if keep {
            Outcome::Keep
        } else {
            Outcome::Close
        }
    }

    /// Counts the request in progress against `route`'s app; false (nothing counted) when the app
    /// already serves `max_connections_per_app` requests: answer 503.
    pub(super) fn enter_app(&mut self, route: &LiveRoute) -> bool {
        self.app_slot = None;
        self.app_slot = route.metrics.enter(self.inner.cfg.max_connections_per_app);
        if self.app_slot.is_none() {
            self.inner.metrics.rejected_app_requests.fetch_add(1, Relaxed);
            let cap = self.inner.cfg.max_connections_per_app;
            self.inner.log_cap(|| {
                format!(
                    "app '{}' is serving {cap} requests at once (router.max_connections_per_app): answering more 503",
                    route.app
                )
            });
        }
        self.app_slot.is_some()
    }

    /// Logs the request and counts it.
    pub(super) fn finish(&mut self, route: Option<&LiveRoute>, t0: Instant, d: &Done, minor: u8) {
        self.app_slot = None;
        let m = route.map(|r| &*r.metrics).unwrap_or(&self.inner.metrics.unknown_host);
        let took = t0.elapsed();
        m.record(d.status, d.bytes_in, d.bytes_out, took);
        let log = &self.inner.access_log;
        if !log.enabled() {
            return;
        }
        let now = crate::clock::now();
        if now != self.log_secs {
            self.log_secs = now;
            self.log_time = crate::clock::iso(now);
        }
        let us = took.as_micros();
        let s = &mut self.s;
        s.line.clear();
        use std::fmt::Write as _;
        // Query strings carry tokens and reset links: the log names only that there was one.
        let path = match s.path.split_once('?') {
            Some((p, _)) => (p, "?[query]"),
            None => (s.path.as_str(), ""),
        };
        let _ = write!(
            s.line,
            "{} {} \"{} {}{} HTTP/1.{minor}\" {} {} {}.{}ms host={} rid={}",
            self.log_time,
            self.peer_ip,
            s.method,
            path.0,
            path.1,
            d.status,
            d.bytes_out,
            us / 1000,
            us % 1000 / 100,
            s.host,
            s.rid
        );
        log.log(route.map(|r| r.app.as_str()).unwrap_or(""), &s.line);
    }

    /// Gives back what only active requests need (the connection is idle).
    pub(super) fn trim(&mut self) {
        self.ubuf = Vec::new();
        if self.start == self.end && self.buf.len() > SMALL_BUF {
            self.buf = vec![0; SMALL_BUF];
            self.start = 0;
            self.end = 0;
        }
        self.local.release(&self.inner.limits);
    }
}
