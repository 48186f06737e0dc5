//! One client connection: read request heads, route, forward over a pooled upstream connection, stream
//! bodies both ways, relay the response, log it; repeat while keep-alive lasts.

use super::heads::{parse_request, parse_response, Req, Scratch};
use super::http::{ChunkScanner, Framing};
use super::pool::{looks_alive, BackendState, InFlight, LocalConns, Upstream};
use super::{pages, tunnel, Inner, LiveRoute, WakeResult};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::borrow::Cow;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Client read buffer to start with: enough for nearly every request head.
const SMALL_BUF: usize = 4 * 1024;
/// Client read buffer while streaming a request body.
const BODY_BUF: usize = 32 * 1024;
/// A keep-alive client connection idle this long releases its upstream connections to the shared pools and
/// frees its upstream buffer.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(2);
/// Upstream read buffer: response heads must fit; bodies are relayed in pieces of this size at most.
const UPSTREAM_BUF: usize = 32 * 1024;

/// The client side of a connection, plain or TLS.
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (rustls, blocking).
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl ClientStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(t) => &t.sock,
        }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf),
            // A peer closing without close_notify is an ordinary end of stream for HTTP/1 framing.
            ClientStream::Tls(t) => match t.read(buf) {
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write(buf),
            ClientStream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush(),
            ClientStream::Tls(t) => t.flush(),
        }
    }
}

/// Serves one accepted client connection until it closes.
pub fn serve_connection(inner: &Arc<Inner>, stream: TcpStream, tls: Option<Arc<ServerConfig>>) {
    let accepted = Instant::now();
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(inner.cfg.body_timeout));
    let peer_ip = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let is_tls = tls.is_some();
    let client = match tls {
        None => ClientStream::Plain(stream),
        Some(cfg) => match ServerConnection::new(cfg) {
            Ok(c) => ClientStream::Tls(Box::new(StreamOwned::new(c, stream))),
            Err(_) => return,
        },
    };
    let mut conn = Conn::new(inner.clone(), client, peer_ip, is_tls);
    conn.run(accepted);
    conn.local.release(&inner.limits);
    if let ClientStream::Tls(t) = &mut conn.client {
        t.conn.send_close_notify();
        let _ = t.conn.complete_io(&mut t.sock);
    }
}

/// Whether the client connection goes on after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Keep,
    Close,
}

/// Why no request head could be read.
pub(crate) enum HeadErr {
    Closed,
    TooLarge,
    Timeout,
}

/// An exchange that failed before anything reached the client.
enum Fail {
    /// Nothing the backend could have acted on was lost: the request may go to a fresh connection.
    Retryable,
    /// Answer with this status page and close.
    Status(u16),
    /// The client is gone or the response was cut: just close.
    Close,
}

/// What was sent for one request, for the log and the metrics.
#[derive(Default)]
struct Done {
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
}

/// How the response body travels to the client.
enum ToClient {
    /// Bytes as they come, `remaining` of them (u64::MAX: until the backend closes).
    Raw(u64),
    /// Chunked passed through as is.
    Chunked(ChunkScanner),
    /// Chunked decoded for an HTTP/1.0 client.
    Dechunk(ChunkScanner),
    /// Close-delimited body re-chunked for an HTTP/1.1 client.
    Rechunk,
}

/// One client connection's state, served by a connection thread (TLS) or by the event loop, which hands
/// it to a thread for whatever is not a short plain exchange.
pub(crate) struct Conn {
    inner: Arc<Inner>,
    pub(crate) client: ClientStream,
    peer_ip: String,
    tls: bool,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    ubuf: Vec<u8>,
    local: LocalConns,
    cur_timeout: Option<Duration>,
    s: Scratch,
    log_secs: u64,
    log_time: String,
    /// The last route looked up: (table generation, host, route). Reused without touching the table's
    /// lock while the table is unchanged and the host is the same (the usual keep-alive case).
    route_cache: Option<(u64, String, Arc<LiveRoute>)>,
    /// Counted in `active_connections` by the event loop: uncounted when dropped.
    pub(crate) gauge: bool,
    /// The last [`Conn::poll_head`] read the client socket until it had nothing more.
    pub(crate) drained: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.local.release(&self.inner.limits);
        if self.gauge {
            self.inner.metrics.active_connections.fetch_sub(1, Relaxed);
        }
    }
}

/// Offset just past the blank line ending a head, searching from `from`.
fn find_head_end(b: &[u8], from: usize) -> Option<usize> {
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
    pub(crate) fn new(inner: Arc<Inner>, client: ClientStream, peer_ip: String, tls: bool) -> Conn {
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
            route_cache: None,
            gauge: false,
            drained: false,
        }
    }

    fn run(&mut self, accepted: Instant) {
        let mut deadline = Some(accepted + self.inner.cfg.header_timeout);
        loop {
            let head_len = match self.read_head(deadline) {
                Ok(n) => n,
                Err(HeadErr::Closed) => return,
                Err(HeadErr::TooLarge) => {
                    let _ = pages::write_error(&mut self.client, 431, "", false, true);
                    return;
                }
                Err(HeadErr::Timeout) => {
                    let _ = pages::write_error(&mut self.client, 408, "", false, true);
                    return;
                }
            };
            deadline = None;
            if self.request(head_len) == Outcome::Close {
                return;
            }
        }
    }

    /// Sets the client socket's read timeout, skipping the syscall when it is already set.
    fn client_timeout(&mut self, d: Duration) {
        if self.cur_timeout != Some(d) {
            let _ = self.client.tcp().set_read_timeout(Some(d));
            self.cur_timeout = Some(d);
        }
    }

    /// Makes room after `buf[end..]` for more of a head of at most `max` bytes: moves the partial
    /// head to the front, and grows a full small buffer to the limit.
    fn room_for_head(&mut self, max: usize) -> Result<(), HeadErr> {
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

    /// Reads until `buf[start..]` holds a whole head; returns its length. The whole head must arrive by
    /// `deadline` (or within `header_timeout` of its first byte); before any byte the idle timeout runs.
    fn read_head(&mut self, mut deadline: Option<Instant>) -> Result<usize, HeadErr> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let inner = self.inner.clone();
        let cfg = &inner.cfg;
        let max = cfg.max_header_bytes;
        let mut scanned = 0;
        let mut trimmed = false;
        loop {
            if self.end > self.start {
                if let Some(n) = find_head_end(&self.buf[self.start..self.end], scanned) {
                    return Ok(n);
                }
                scanned = (self.end - self.start).saturating_sub(3);
                if deadline.is_none() {
                    deadline = Some(Instant::now() + cfg.header_timeout);
                }
            }
            self.room_for_head(max)?;
            let timeout = match deadline {
                None if !trimmed => cfg.idle_timeout.min(IDLE_TRIM_AFTER),
                None => cfg
                    .idle_timeout
                    .saturating_sub(IDLE_TRIM_AFTER)
                    .max(Duration::from_millis(1)),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(HeadErr::Timeout);
                    }
                    left
                }
            };
            self.client_timeout(timeout);
            let end = self.end;
            match self.client.read(&mut self.buf[end..]) {
                Ok(0) => return Err(HeadErr::Closed),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if deadline.is_none() && !trimmed && cfg.idle_timeout > IDLE_TRIM_AFTER {
                        // Idle for a while: give back what only active requests need, then keep waiting.
                        trimmed = true;
                        self.trim();
                        continue;
                    }
                    return Err(if self.end > self.start {
                        HeadErr::Timeout
                    } else {
                        HeadErr::Closed
                    });
                }
                Err(_) => return Err(HeadErr::Closed),
            }
        }
    }

    /// Handles one request whose head is `buf[start..start + head_len]`.
    pub(crate) fn request(&mut self, head_len: usize) -> Outcome {
        let t0 = Instant::now();
        let inner = &*self.inner;
        let parsed = parse_request(
            &self.buf[self.start..self.start + head_len],
            &mut self.s,
            inner,
            &self.peer_ip,
            self.tls,
        );
        let req = match parsed {
            Ok(r) => r,
            Err(status) => {
                let n = pages::write_error(&mut self.client, status, "", false, true).unwrap_or(0);
                self.finish(
                    None,
                    t0,
                    &Done {
                        status,
                        bytes_in: head_len as u64,
                        bytes_out: n,
                    },
                    1,
                );
                return Outcome::Close;
            }
        };
        debug_assert_eq!(req.head_len, head_len);
        self.start += head_len;
        // Answers the router gives itself leave any request body unread, so the connection closes then.
        let can_keep = req.keep_alive && req.framing == Framing::None;
        let generation = inner.generation.load(std::sync::atomic::Ordering::Acquire);
        let cached = match self.route_cache.take() {
            Some((g, h, r)) if g == generation && h == self.s.host => Some((h, r)),
            Some((_, mut h, _)) => {
                // The table changed: upstream connections this client kept to backends no longer routed
                // to are closed, so that a replaced deployment drains.
                self.local.retain(|b| inner.is_current(b));
                inner.route(&self.s.host).map(|r| {
                    h.clear();
                    h.push_str(&self.s.host);
                    (h, r)
                })
            }
            None => inner.route(&self.s.host).map(|r| (self.s.host.clone(), r)),
        };
        let Some((host, route)) = cached else {
            return self.page(None, &req, 404, can_keep, t0);
        };
        let outcome = self.routed(&req, &route, t0);
        self.route_cache = Some((generation, host, route));
        outcome
    }

    /// Handles a request whose route is known.
    fn routed(&mut self, req: &Req, route: &Arc<LiveRoute>, t0: Instant) -> Outcome {
        let inner = &*self.inner;
        let head_len = req.head_len;
        let can_keep = req.keep_alive && req.framing == Framing::None;
        if route.https_redirect && !self.tls {
            let authority = if inner.cfg.https_port == 443 {
                Cow::Borrowed(self.s.host.as_str())
            } else {
                Cow::Owned(format!("{}:{}", self.s.host, inner.cfg.https_port))
            };
            let n = pages::write_redirect(&mut self.client, &authority, &self.s.path, !can_keep).unwrap_or(0);
            let done = Done {
                status: 301,
                bytes_in: head_len as u64,
                bytes_out: n,
            };
            self.finish(Some(route), t0, &done, req.minor);
            return if can_keep { Outcome::Keep } else { Outcome::Close };
        }
        let woken;
        let backends: &[Arc<BackendState>] = if route.backends.is_empty() {
            match inner.wake(&route.app) {
                WakeResult::Ready(list) if !list.is_empty() => {
                    woken = list.iter().map(|b| inner.backend_state(b)).collect::<Vec<_>>();
                    &woken
                }
                WakeResult::TimedOut => return self.page(Some(route), req, 503, can_keep, t0),
                _ => return self.page(Some(route), req, 502, can_keep, t0),
            }
        } else {
            &route.backends
        };
        self.forward(req, route, backends, t0, None)
    }

    /// Answers with one of the router's own pages and logs it.
    fn page(&mut self, route: Option<&LiveRoute>, req: &Req, status: u16, keep: bool, t0: Instant) -> Outcome {
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

    /// Tries the route's backends round robin (healthy ones first, starting at `first` if given) until one
    /// answers.
    fn forward(
        &mut self,
        req: &Req,
        route: &LiveRoute,
        backends: &[Arc<BackendState>],
        t0: Instant,
        first: Option<usize>,
    ) -> Outcome {
        let limits = self.inner.limits;
        let n = backends.len();
        let first = match first {
            Some(i) if i < n => i,
            _ if n == 1 => 0,
            _ => route.rr.fetch_add(1, Relaxed) % n,
        };
        let mut status = 502;
        // A request that cannot be replayed only goes on a pooled connection that still looks open.
        let probe = !(req.idempotent || req.framing == Framing::None);
        // Healthy backends first, then those marked down (each tried once per request).
        let mut tried = vec![false; n];
        for pass in 0..2 {
            for k in 0..n {
                let i = (first + k) % n;
                let b = &backends[i];
                if tried[i] || b.is_up() != (pass == 0) {
                    continue;
                }
                tried[i] = true;
                let mut fresh = false;
                loop {
                    let mut held = None;
                    let up = if fresh {
                        b.connect(&limits)
                    } else if let Some((arc, stream)) = self.local.take(b).filter(|(_, s)| !probe || looks_alive(s)) {
                        held = Some(arc);
                        Ok(Upstream { stream, reused: true })
                    } else {
                        b.get(&limits, probe)
                    };
                    let Ok(up) = up else { break };
                    let reused = up.reused;
                    if !reused {
                        let _ = up.stream.set_read_timeout(Some(self.inner.cfg.upstream_timeout));
                        let _ = up.stream.set_write_timeout(Some(self.inner.cfg.body_timeout));
                    }
                    let b = held.unwrap_or_else(|| b.clone());
                    match self.exchange(req, route, b, up.stream, t0) {
                        Ok(outcome) => return outcome,
                        Err(Fail::Retryable) if reused && !fresh => fresh = true,
                        Err(Fail::Retryable) => break,
                        Err(Fail::Status(s)) => {
                            status = s;
                            return self.page(Some(route), req, status, false, t0);
                        }
                        Err(Fail::Close) => return Outcome::Close,
                    }
                }
            }
        }
        self.page(Some(route), req, status, false, t0)
    }

    /// Sends the request to `up` and relays the response. Errors happen before the client saw anything.
    fn exchange(
        &mut self,
        req: &Req,
        route: &LiveRoute,
        b: Arc<BackendState>,
        mut up: TcpStream,
        t0: Instant,
    ) -> Result<Outcome, Fail> {
        let b = InFlight::new(b);
        let mut done = Done {
            bytes_in: req.head_len as u64,
            ..Done::default()
        };
        // The part of the body already buffered goes out with the head and can be replayed.
        let avail = &self.buf[self.start..self.end];
        let mut scanner = ChunkScanner::default();
        let (initial, body_left) = match req.framing {
            Framing::None | Framing::UntilClose => (0, 0),
            Framing::Length(n) => {
                let k = (n as usize).min(avail.len());
                (k, n - k as u64)
            }
            Framing::Chunked => {
                let k = scanner.scan(avail, |_| {}).map_err(|_| Fail::Status(400))?;
                (k, u64::from(!scanner.done()))
            }
        };
        let head_out = self.s.out.len();
        self.s
            .out
            .extend_from_slice(&self.buf[self.start..self.start + initial]);
        let sent = up.write_all(&self.s.out);
        self.s.out.truncate(head_out);
        if sent.is_err() {
            return Err(Fail::Retryable);
        }
        let mut replayable = true;
        let mut body_incomplete = false;
        if body_left > 0 {
            // From here on the body is consumed from the client: no replay.
            replayable = false;
            self.start += initial;
            done.bytes_in += initial as u64;
            if req.expect_continue && req.minor == 1 && self.client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
            {
                return Err(Fail::Close);
            }
            match self.stream_request_body(&mut up, req.framing, body_left, scanner) {
                Ok(n) => done.bytes_in += n,
                Err(BodyErr::Client) => return Err(Fail::Close),
                Err(BodyErr::Bad) => return Err(Fail::Status(400)),
                // The backend stopped reading (it may have answered early): relay what it says, then close.
                Err(BodyErr::Upstream) => body_incomplete = true,
            }
        }

        self.relay(req, route, b, up, 0, initial, replayable, body_incomplete, done, t0)
    }

    /// Reads the response head (its first `ulen` bytes may be in `ubuf` already) and relays the response.
    #[allow(clippy::too_many_arguments)]
    fn relay(
        &mut self,
        req: &Req,
        route: &LiveRoute,
        b: InFlight,
        mut up: TcpStream,
        mut ulen: usize,
        initial: usize,
        replayable: bool,
        body_incomplete: bool,
        mut done: Done,
        t0: Instant,
    ) -> Result<Outcome, Fail> {
        if self.ubuf.is_empty() {
            self.ubuf = vec![0; UPSTREAM_BUF];
        }
        let keep = req.keep_alive && !body_incomplete;
        let resp = loop {
            if ulen > 0 {
                match parse_response(&self.ubuf[..ulen], &mut self.s.out, req, keep, &self.s.upgrade) {
                    Ok(None) if ulen == self.ubuf.len() => return Err(Fail::Status(502)),
                    Ok(None) => {}
                    Err(s) => return Err(Fail::Status(s)),
                    Ok(Some(r)) if (100..200).contains(&r.status) && r.status != 101 => {
                        // Interim responses (100 Continue, 103) are not relayed.
                        self.ubuf.copy_within(r.head_len..ulen, 0);
                        ulen -= r.head_len;
                        continue;
                    }
                    Ok(Some(r)) => break r,
                }
            }
            match up.read(&mut self.ubuf[ulen..]) {
                Ok(0) | Err(_) if ulen == 0 => {
                    let retry = replayable && (req.idempotent || req.framing == Framing::None);
                    return Err(if retry { Fail::Retryable } else { Fail::Status(502) });
                }
                Ok(0) => return Err(Fail::Status(502)),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Fail::Status(504))
                }
                Err(_) => return Err(Fail::Status(502)),
                Ok(n) => ulen += n,
            }
        };
        if replayable {
            self.start += initial;
            done.bytes_in += initial as u64;
        }
        done.status = resp.status;
        let client_keep = keep && !(req.minor == 0 && matches!(resp.body, Framing::Chunked | Framing::UntilClose));

        if resp.status == 101 {
            if !req.upgrade {
                return Err(Fail::Status(502));
            }
            if self.client.write_all(&self.s.out).is_err() {
                return Err(Fail::Close);
            }
            done.bytes_out = self.s.out.len() as u64;
            let (to_up, to_client) = tunnel::run(
                &mut self.client,
                up,
                &self.buf[self.start..self.end],
                &self.ubuf[resp.head_len..ulen],
            );
            done.bytes_in += to_up;
            done.bytes_out += to_client;
            self.finish(Some(route), t0, &done, req.minor);
            return Ok(Outcome::Close);
        }

        let mut to_client = ToClient::new(resp.body, req.minor);
        // The head and the body bytes that came with it leave in one write.
        let first = &self.ubuf[resp.head_len..ulen];
        let (used, finished) = match encode(&mut to_client, first, &mut self.s.out) {
            Ok(x) => x,
            Err(_) => return Err(Fail::Status(502)),
        };
        if self.client.write_all(&self.s.out).is_err() {
            self.finish(Some(route), t0, &done, req.minor);
            return Ok(Outcome::Close);
        }
        done.bytes_out = self.s.out.len() as u64;
        let mut upstream_ok = resp.reusable && !body_incomplete && used == first.len();
        if !finished {
            match self.stream_response_body(&mut up, &mut to_client) {
                Ok((n, clean)) => {
                    done.bytes_out += n;
                    upstream_ok &= clean;
                }
                Err(n) => {
                    done.bytes_out += n;
                    self.finish(Some(route), t0, &done, req.minor);
                    return Ok(Outcome::Close);
                }
            }
        }
        if upstream_ok {
            self.local.keep(b.finish(), up, &self.inner.limits);
        }
        self.finish(Some(route), t0, &done, req.minor);
        Ok(if client_keep { Outcome::Keep } else { Outcome::Close })
    }

    /// Streams the rest of a request body (`left` bytes, or chunked) from the client to `up`.
    fn stream_request_body(
        &mut self,
        up: &mut TcpStream,
        framing: Framing,
        mut left: u64,
        mut scanner: ChunkScanner,
    ) -> Result<u64, BodyErr> {
        self.client_timeout(self.inner.cfg.body_timeout);
        if self.buf.len() < BODY_BUF {
            // Bodies move in larger pieces than heads need (shrunk again when the connection idles).
            self.buf.resize(BODY_BUF, 0);
        }
        let mut total = 0u64;
        loop {
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                let n = loop {
                    match self.client.read(&mut self.buf) {
                        Ok(0) => return Err(BodyErr::Client),
                        Ok(n) => break n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return Err(BodyErr::Client),
                    }
                };
                self.end = n;
            }
            let avail = &self.buf[self.start..self.end];
            let (k, finished) = match framing {
                Framing::Length(_) => {
                    let k = (left as usize).min(avail.len());
                    left -= k as u64;
                    (k, left == 0)
                }
                _ => {
                    let k = scanner.scan(avail, |_| {}).map_err(|_| BodyErr::Bad)?;
                    (k, scanner.done())
                }
            };
            up.write_all(&avail[..k]).map_err(|_| BodyErr::Upstream)?;
            self.start += k;
            total += k as u64;
            if finished {
                return Ok(total);
            }
        }
    }

    /// Relays the rest of a response body; Ok((bytes, upstream still clean)), Err(bytes): must close.
    fn stream_response_body(&mut self, up: &mut TcpStream, to: &mut ToClient) -> Result<(u64, bool), u64> {
        let mut total = 0u64;
        loop {
            let want = match to {
                ToClient::Raw(left) => (*left).min(self.ubuf.len() as u64) as usize,
                _ => self.ubuf.len(),
            };
            let n = match up.read(&mut self.ubuf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(total),
            };
            if n == 0 {
                return match to {
                    ToClient::Raw(u64::MAX) => Ok((total, false)),
                    ToClient::Rechunk => {
                        self.client.write_all(b"0\r\n\r\n").map_err(|_| total)?;
                        Ok((total + 5, false))
                    }
                    _ => Err(total),
                };
            }
            let data = &self.ubuf[..n];
            let (used, finished) = match to {
                // Plain bytes go straight from the upstream buffer: no copy.
                ToClient::Raw(left) => {
                    if *left != u64::MAX {
                        *left -= n as u64;
                    }
                    self.client.write_all(data).map_err(|_| total)?;
                    total += n as u64;
                    (n, *left == 0)
                }
                ToClient::Chunked(sc) => {
                    let k = sc.scan(data, |_| {}).map_err(|_| total)?;
                    self.client.write_all(&data[..k]).map_err(|_| total)?;
                    total += k as u64;
                    (k, sc.done())
                }
                _ => {
                    self.s.out.clear();
                    let x = encode(to, data, &mut self.s.out).map_err(|_| total)?;
                    self.client.write_all(&self.s.out).map_err(|_| total)?;
                    total += self.s.out.len() as u64;
                    x
                }
            };
            if finished {
                return Ok((total, used == n));
            }
        }
    }

    /// Logs the request and counts it.
    fn finish(&mut self, route: Option<&LiveRoute>, t0: Instant, d: &Done, minor: u8) {
        let m = route.map(|r| &*r.metrics).unwrap_or(&self.inner.metrics.unknown_host);
        m.record(d.status, d.bytes_in, d.bytes_out);
        let log = &self.inner.access_log;
        if !log.enabled() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if now != self.log_secs {
            self.log_secs = now;
            self.log_time = crate::clock::iso(now);
        }
        let us = t0.elapsed().as_micros();
        let s = &mut self.s;
        s.line.clear();
        use std::fmt::Write as _;
        let _ = write!(
            s.line,
            "{} {} \"{} {} HTTP/1.{minor}\" {} {} {}.{}ms host={} rid={}",
            self.log_time,
            self.peer_ip,
            s.method,
            s.path,
            d.status,
            d.bytes_out,
            us / 1000,
            us % 1000 / 100,
            s.host,
            s.rid
        );
        log.log(route.map(|r| r.app.as_str()).unwrap_or(""), &s.line);
    }
}

/// What the event loop learned from the response bytes read so far.
pub(crate) enum EvResp {
    /// The head is not complete yet: wait for more.
    More,
    /// Not a short, complete response: a connection thread relays it.
    Slow,
    /// The whole response is in `s.out`, ready for the client.
    Ready {
        /// The upstream connection may be reused.
        upstream_ok: bool,
        /// The client connection goes on.
        keep: bool,
        status: u16,
    },
}

/// An exchange the event loop is waiting on: the request went to `up`, its response is awaited.
pub(crate) struct Pending {
    pub req: Req,
    /// Index of the backend in the route.
    pub bi: usize,
    pub b: InFlight,
    pub up: TcpStream,
    pub t0: Instant,
}

/// The event loop's side of a connection: non-blocking steps for short plain-HTTP exchanges, and the
/// entry points a connection thread uses to finish what the loop handed over.
impl Conn {
    /// True when buffered bytes or the socket may hold more request bytes.
    pub(crate) fn has_buffered(&self) -> bool {
        self.end > self.start
    }

    /// Reads without blocking until `buf[start..]` holds a whole head. Ok(None): wait for the socket.
    pub(crate) fn poll_head(&mut self) -> Result<Option<usize>, HeadErr> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let max = self.inner.cfg.max_header_bytes;
        self.drained = false;
        loop {
            if self.end > self.start {
                if let Some(n) = find_head_end(&self.buf[self.start..self.end], 0) {
                    return Ok(Some(n));
                }
            }
            self.room_for_head(max)?;
            let room = self.buf.len() - self.end;
            let end = self.end;
            match recv_nb(self.client.tcp(), &mut self.buf[end..]) {
                Ok(0) => return Err(HeadErr::Closed),
                Ok(n) => {
                    self.end += n;
                    if n < room {
                        self.drained = true;
                        // The socket is drained: an edge-triggered wakeup follows any later bytes.
                        return Ok(find_head_end(&self.buf[self.start..self.end], 0));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.drained = true;
                    return Ok(None);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(HeadErr::Closed),
            }
        }
    }

    /// Parses the head and, for a bodiless plain request to a route with a healthy backend, consumes it
    /// and returns (request, backend index, start time) with the upstream head in `s.out`. None: a
    /// connection thread serves this request with [`Conn::request`] (nothing consumed).
    pub(crate) fn ev_route(&mut self, head_len: usize) -> Option<(Req, usize, Instant)> {
        let t0 = Instant::now();
        let inner = &*self.inner;
        let head = &self.buf[self.start..self.start + head_len];
        let req = parse_request(head, &mut self.s, inner, &self.peer_ip, self.tls).ok()?;
        if req.framing != Framing::None || req.upgrade || self.tls {
            return None;
        }
        let generation = inner.generation.load(std::sync::atomic::Ordering::Acquire);
        let fresh = !matches!(&self.route_cache, Some((g, h, _)) if *g == generation && *h == self.s.host);
        if fresh {
            if self.route_cache.is_some() {
                self.local.retain(|b| inner.is_current(b));
            }
            let r = inner.route(&self.s.host)?;
            self.route_cache = Some((generation, self.s.host.clone(), r));
        }
        let route = &self.route_cache.as_ref()?.2;
        if route.https_redirect || route.backends.is_empty() {
            return None;
        }
        let n = route.backends.len();
        let first = if n == 1 { 0 } else { route.rr.fetch_add(1, Relaxed) % n };
        let i = (0..n).map(|k| (first + k) % n).find(|&i| route.backends[i].is_up())?;
        self.start += head_len;
        Some((req, i, t0))
    }

    /// The route of the request in progress (set by [`Conn::ev_route`]).
    pub(crate) fn ev_backend(&self, i: usize) -> Option<&Arc<BackendState>> {
        self.route_cache.as_ref()?.2.backends.get(i)
    }

    /// An idle upstream connection to `b`: the connection's own, else one from the shared pool.
    pub(crate) fn take_local(&mut self, b: &Arc<BackendState>) -> Option<(Arc<BackendState>, TcpStream)> {
        self.local
            .take(b)
            .or_else(|| Some((b.clone(), b.take_idle(&self.inner.limits, false)?)))
    }

    /// Keeps an upstream connection for later requests of this connection.
    pub(crate) fn keep_local(&mut self, b: Arc<BackendState>, up: TcpStream) {
        self.local.keep(b, up, &self.inner.limits);
    }

    /// The upstream head [`Conn::ev_route`] wrote.
    pub(crate) fn upstream_head(&self) -> &[u8] {
        &self.s.out
    }

    /// Reads response bytes without blocking into `ubuf[*ulen..]`. Ok(true): the socket may hold more.
    pub(crate) fn read_upstream(&mut self, up: &TcpStream, ulen: &mut usize) -> io::Result<bool> {
        if self.ubuf.is_empty() {
            self.ubuf = vec![0; UPSTREAM_BUF];
        }
        let room = self.ubuf.len() - *ulen;
        let n = recv_nb(up, &mut self.ubuf[*ulen..])?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        *ulen += n;
        Ok(n == room)
    }

    /// Looks at the first `ulen` response bytes: the whole short response goes into `s.out` for the client.
    pub(crate) fn ev_response(&mut self, req: &Req, ulen: usize) -> EvResp {
        let resp = match parse_response(
            &self.ubuf[..ulen],
            &mut self.s.out,
            req,
            req.keep_alive,
            &self.s.upgrade,
        ) {
            Ok(None) if ulen < self.ubuf.len() => return EvResp::More,
            Ok(Some(r)) if r.status >= 200 => r,
            _ => return EvResp::Slow,
        };
        let mut to_client = ToClient::new(resp.body, req.minor);
        let first = &self.ubuf[resp.head_len..ulen];
        match encode(&mut to_client, first, &mut self.s.out) {
            Ok((used, true)) => EvResp::Ready {
                upstream_ok: resp.reusable && used == first.len(),
                keep: req.keep_alive
                    && !(req.minor == 0 && matches!(resp.body, Framing::Chunked | Framing::UntilClose)),
                status: resp.status,
            },
            _ => EvResp::Slow,
        }
    }

    /// The response for the client [`Conn::ev_response`] prepared.
    pub(crate) fn client_out(&self) -> &[u8] {
        &self.s.out
    }

    /// Logs and counts a request the event loop answered.
    pub(crate) fn ev_finish(&mut self, req: &Req, t0: Instant, status: u16, bytes_out: u64) {
        let Some((g, h, route)) = self.route_cache.take() else {
            return;
        };
        let done = Done {
            status,
            bytes_in: req.head_len as u64,
            bytes_out,
        };
        self.finish(Some(&route), t0, &done, req.minor);
        self.route_cache = Some((g, h, route));
    }

    /// Answers `status` for the request in progress and logs it; the connection closes after.
    pub(crate) fn ev_fail(&mut self, req: &Req, t0: Instant, status: u16) {
        let Some((g, h, route)) = self.route_cache.take() else {
            return;
        };
        self.page(Some(&route), req, status, false, t0);
        self.route_cache = Some((g, h, route));
    }

    /// Answers a request head that did not arrive in time or was too large; the connection closes after.
    pub(crate) fn ev_head_error(&mut self, status: u16) {
        let _ = pages::write_error(&mut self.client, status, "", false, true);
    }

    /// In a connection thread: forwards the request [`Conn::ev_route`] accepted (its upstream head is in
    /// `s.out`), choosing an upstream connection as usual.
    pub(crate) fn ev_forward(&mut self, req: &Req, first: usize, t0: Instant) -> Outcome {
        let Some((g, h, route)) = self.route_cache.take() else {
            return Outcome::Close;
        };
        let outcome = self.forward(req, &route, &route.backends, t0, Some(first));
        self.route_cache = Some((g, h, route));
        outcome
    }

    /// In a connection thread: relays the response to `p` whose first `ulen` bytes are in `ubuf`.
    pub(crate) fn ev_relay(&mut self, p: Pending, ulen: usize) -> Outcome {
        let Some((g, h, route)) = self.route_cache.take() else {
            return Outcome::Close;
        };
        let done = Done {
            bytes_in: p.req.head_len as u64,
            ..Done::default()
        };
        let outcome = match self.relay(&p.req, &route, p.b, p.up, ulen, 0, true, false, done, p.t0) {
            Ok(o) => o,
            Err(Fail::Status(s)) => self.page(Some(&route), &p.req, s, false, p.t0),
            Err(_) => Outcome::Close,
        };
        self.route_cache = Some((g, h, route));
        outcome
    }

    /// Gives back what only active requests need (the connection is idle).
    pub(crate) fn trim(&mut self) {
        self.ubuf = Vec::new();
        if self.start == self.end && self.buf.len() > SMALL_BUF {
            self.buf = vec![0; SMALL_BUF];
            self.start = 0;
            self.end = 0;
        }
        self.local.release(&self.inner.limits);
    }

    /// Whether this connection's idle upstream connection to `b` may be kept (its backend is routed to).
    pub(crate) fn is_current(&self, b: &Arc<BackendState>) -> bool {
        self.inner.is_current(b)
    }
}

/// recv(2) without blocking on a socket that is otherwise blocking.
pub(crate) fn recv_nb(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv on a valid socket fd owned by `s` into `buf`, which is valid for `buf.len()` bytes;
    // MSG_DONTWAIT makes this one call non-blocking without changing the socket's mode.
    let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// send(2) without blocking (and without SIGPIPE) on a socket that is otherwise blocking.
pub(crate) fn send_nb(s: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: send on a valid socket fd owned by `s` from `buf`, valid for `buf.len()` bytes.
    let n = unsafe {
        libc::send(
            s.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Why streaming a request body stopped.
enum BodyErr {
    Client,
    Upstream,
    Bad,
}

impl ToClient {
    /// How a response body framed as `body` goes to a client speaking HTTP/1.`minor`.
    fn new(body: Framing, minor: u8) -> ToClient {
        match body {
            Framing::None => ToClient::Raw(0),
            Framing::Length(n) => ToClient::Raw(n),
            Framing::Chunked if minor == 1 => ToClient::Chunked(ChunkScanner::default()),
            Framing::Chunked => ToClient::Dechunk(ChunkScanner::default()),
            Framing::UntilClose if minor == 1 => ToClient::Rechunk,
            Framing::UntilClose => ToClient::Raw(u64::MAX),
        }
    }
}

/// Encodes `data` for the client into `out` (appending after whatever `out` holds).
/// Returns (bytes of `data` that belong to the body, body finished).
fn encode(to: &mut ToClient, data: &[u8], out: &mut Vec<u8>) -> anyhow::Result<(usize, bool)> {
    Ok(match to {
        ToClient::Raw(left) => {
            let k = if *left == u64::MAX {
                data.len()
            } else {
                (*left as usize).min(data.len())
            };
            out.extend_from_slice(&data[..k]);
            if *left != u64::MAX {
                *left -= k as u64;
            }
            (k, *left == 0)
        }
        ToClient::Chunked(sc) => {
            let k = sc.scan(data, |_| {})?;
            out.extend_from_slice(&data[..k]);
            (k, sc.done())
        }
        ToClient::Dechunk(sc) => {
            let k = sc.scan(data, |d| out.extend_from_slice(d))?;
            (k, sc.done())
        }
        ToClient::Rechunk => {
            if !data.is_empty() {
                let _ = write!(out, "{:x}\r\n", data.len());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            (data.len(), false)
        }
    })
}
