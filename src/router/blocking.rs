//! The blocking engine: a connection thread serves a connection with blocking socket calls. TLS client
//! connections live here for their whole life (read request heads, route, forward over a pooled upstream
//! connection, stream bodies both ways, relay the response, log it; repeat while keep-alive lasts); the
//! event loop hands plain connections here for one request at a time when an exchange is not short.

use super::body::{encode, ToClient};
use super::conn::{find_head_end, Conn, Done, HeadErr, Outcome, IDLE_TRIM_AFTER};
use super::heads::{parse_request, parse_response, Req, Resp};
use super::http::{ChunkScanner, Framing};
use super::pages;
use super::pool::{looks_alive, BackendState, InFlight, Upstream};
use super::route::LiveRoute;
use super::shared::Inner;
use super::stream::ClientStream;
use super::tunnel;
use super::wake::WakeResult;
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::borrow::Cow;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Client read buffer while streaming a request body.
const BODY_BUF: usize = 32 * 1024;

/// Serves one accepted TLS client connection until it closes.
pub(super) fn serve_tls_connection(inner: &Arc<Inner>, stream: TcpStream, tls: Arc<ServerConfig>) {
    let accepted = Instant::now();
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(inner.cfg.body_timeout));
    let peer_ip = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let client = match ServerConnection::new(tls) {
        Ok(c) => ClientStream::Tls(Box::new(StreamOwned::new(c, stream))),
        Err(_) => return,
    };
    let mut conn = Conn::new(inner.clone(), client, peer_ip, true);
    conn.run(accepted);
    conn.local.release(&inner.limits);
    if let ClientStream::Tls(t) = &mut conn.client {
        t.conn.send_close_notify();
        let _ = t.conn.complete_io(&mut t.sock);
    }
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

impl Conn {
    fn run(&mut self, accepted: Instant) {
        let mut deadline = Some(accepted + self.inner.cfg.header_timeout);
        loop {
            let head_len = match self.read_head(deadline) {
                Ok(n) => n,
                Err(HeadErr::Closed) => return,
                Err(HeadErr::TooLarge) => return self.head_error(431),
                Err(HeadErr::Timeout) => return self.head_error(408),
            };
            deadline = None;
            if self.request(head_len) == Outcome::Close {
                return;
            }
        }
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
    pub(super) fn request(&mut self, head_len: usize) -> Outcome {
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
        if !self.tls {
            if let Some(answer) = inner.challenges.answer(&self.s.host, &self.s.path) {
                let n = pages::write_text(&mut self.client, &answer, req.head, !can_keep).unwrap_or(0);
                let done = Done {
                    status: 200,
                    bytes_in: head_len as u64,
                    bytes_out: n,
                };
                self.finish(None, t0, &done, req.minor);
                return if can_keep { Outcome::Keep } else { Outcome::Close };
            }
        }
        if !self.lookup_route() {
            return self.page(None, &req, 404, can_keep, t0);
        }
        self.with_route(|c, route| c.routed(&req, route, t0))
            .unwrap_or(Outcome::Close)
    }

    /// Handles a request whose route is known.
    fn routed(&mut self, req: &Req, route: &Arc<LiveRoute>, t0: Instant) -> Outcome {
        if !self.enter_app(route) {
            return self.page(Some(route), req, 503, false, t0);
        }
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
            match inner.wakes.wake(&route.app, inner.cfg.wake_timeout) {
                WakeResult::Ready(list) if !list.is_empty() => {
                    woken = list.iter().map(|b| inner.routes.backend_state(b)).collect::<Vec<_>>();
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

    /// For the event loop: forwards the request it routed (its upstream head is in `s.out`), starting
    /// with backend `first` and choosing an upstream connection as usual.
    pub(super) fn forward_from_loop(&mut self, req: &Req, first: usize, t0: Instant) -> Outcome {
        self.with_route(|c, route| c.forward(req, route, &route.backends, t0, Some(first)))
            .unwrap_or(Outcome::Close)
    }

    /// For the event loop: relays the response to `req` from `up`, whose first `ulen` bytes are in `ubuf`.
    pub(super) fn relay_from_loop(
        &mut self,
        req: &Req,
        b: InFlight,
        up: TcpStream,
        ulen: usize,
        t0: Instant,
    ) -> Outcome {
        let done = Done {
            bytes_in: req.head_len as u64,
            ..Done::default()
        };
        self.with_route(
            |c, route| match c.relay(req, route, b, up, ulen, 0, true, false, done, t0) {
                Ok(o) => o,
                Err(Fail::Status(s)) => c.page(Some(route), req, s, false, t0),
                Err(_) => Outcome::Close,
            },
        )
        .unwrap_or(Outcome::Close)
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
        self.alloc_upstream_buf();
        let keep = req.keep_alive && !body_incomplete;
        let resp = self.response_head(req, &mut up, &mut ulen, keep, replayable)?;
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

    /// Reads the response head (its first `*ulen` bytes may be in `ubuf` already), skipping interim
    /// responses; the head to send the client is in `s.out` then.
    fn response_head(
        &mut self,
        req: &Req,
        up: &mut TcpStream,
        ulen: &mut usize,
        keep: bool,
        replayable: bool,
    ) -> Result<Resp, Fail> {
        loop {
            if *ulen > 0 {
                match parse_response(&self.ubuf[..*ulen], &mut self.s.out, req, keep, &self.s.upgrade) {
                    Ok(None) if *ulen == self.ubuf.len() => return Err(Fail::Status(502)),
                    Ok(None) => {}
                    Err(s) => return Err(Fail::Status(s)),
                    Ok(Some(r)) if (100..200).contains(&r.status) && r.status != 101 => {
                        // Interim responses (100 Continue, 103) are not relayed.
                        self.ubuf.copy_within(r.head_len..*ulen, 0);
                        *ulen -= r.head_len;
                        continue;
                    }
                    Ok(Some(r)) => return Ok(r),
                }
            }
            match up.read(&mut self.ubuf[*ulen..]) {
                Ok(0) | Err(_) if *ulen == 0 => {
                    let retry = replayable && (req.idempotent || req.framing == Framing::None);
                    return Err(if retry { Fail::Retryable } else { Fail::Status(502) });
                }
                Ok(0) => return Err(Fail::Status(502)),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Fail::Status(504))
                }
                Err(_) => return Err(Fail::Status(502)),
                Ok(n) => *ulen += n,
            }
        }
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
}

/// Why streaming a request body stopped.
enum BodyErr {
    Client,
    Upstream,
    Bad,
}
