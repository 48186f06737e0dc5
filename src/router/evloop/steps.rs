//! The event loop's steps on a connection: non-blocking, for short plain-HTTP exchanges. Whatever they
//! cannot finish goes to a connection thread (`blocking`) with the connection.

use crate::router::body::{encode, ToClient};
use crate::router::challenges::PREFIX;
use crate::router::conn::{find_head_end, Conn, Done, HeadErr};
use crate::router::heads::{parse_request, parse_response, Req};
use crate::router::http::Framing;
use crate::router::pool::{BackendState, InFlight};
use crate::router::stream::recv_nb;
use std::io::{self, ErrorKind};
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// What the event loop learned from the response bytes read so far.
pub(super) enum EvResp {
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
pub(super) struct Pending {
    pub req: Req,
    /// Index of the backend in the route.
    pub bi: usize,
    pub b: InFlight,
    pub up: TcpStream,
    pub t0: Instant,
}

impl Conn {
    /// Reads without blocking until `buf[start..]` holds a whole head. Ok(None): wait for the socket.
    pub(super) fn poll_head(&mut self) -> Result<Option<usize>, HeadErr> {
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
    pub(super) fn ev_route(&mut self, head_len: usize) -> Option<(Req, usize, Instant)> {
        let t0 = Instant::now();
        let inner = &*self.inner;
        let head = &self.buf[self.start..self.start + head_len];
        let req = parse_request(head, &mut self.s, inner, &self.peer_ip, self.tls).ok()?;
        if req.framing != Framing::None || req.upgrade || self.tls || self.s.path.starts_with(PREFIX) {
            return None;
        }
        if !self.lookup_route() {
            return None;
        }
        let route = self.route.current()?;
        if route.https_redirect || route.backends.is_empty() {
            return None;
        }
        let n = route.backends.len();
        let first = if n == 1 { 0 } else { route.rr.fetch_add(1, Relaxed) % n };
        let i = (0..n).map(|k| (first + k) % n).find(|&i| route.backends[i].is_up())?;
        // Over the app's cap: a connection thread answers the 503 (and logs it).
        self.app_slot = None;
        self.app_slot = Some(route.metrics.enter(self.inner.cfg.max_connections_per_app)?);
        self.start += head_len;
        Some((req, i, t0))
    }

    /// The route of the request in progress (set by [`Conn::ev_route`]).
    pub(super) fn ev_backend(&self, i: usize) -> Option<&Arc<BackendState>> {
        self.route.current()?.backends.get(i)
    }

    /// An idle upstream connection to `b`: the connection's own, else one from the shared pool.
    pub(super) fn take_local(&mut self, b: &Arc<BackendState>) -> Option<(Arc<BackendState>, TcpStream)> {
        self.local
            .take(b)
            .or_else(|| Some((b.clone(), b.take_idle(&self.inner.limits, false)?)))
    }

    /// Keeps an upstream connection for later requests of this connection.
    pub(super) fn keep_local(&mut self, b: Arc<BackendState>, up: TcpStream) {
        self.local.keep(b, up, &self.inner.limits);
    }

    /// The upstream head [`Conn::ev_route`] wrote.
    pub(super) fn upstream_head(&self) -> &[u8] {
        &self.s.out
    }

    /// Reads response bytes without blocking into `ubuf[*ulen..]`. Ok(true): the socket may hold more.
    pub(super) fn read_upstream(&mut self, up: &TcpStream, ulen: &mut usize) -> io::Result<bool> {
        self.alloc_upstream_buf();
        let room = self.ubuf.len() - *ulen;
        let n = recv_nb(up, &mut self.ubuf[*ulen..])?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        *ulen += n;
        Ok(n == room)
    }

    /// Looks at the first `ulen` response bytes: the whole short response goes into `s.out` for the client.
    pub(super) fn ev_response(&mut self, req: &Req, ulen: usize) -> EvResp {
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
    pub(super) fn client_out(&self) -> &[u8] {
        &self.s.out
    }

    /// Logs and counts a request the event loop answered.
    pub(super) fn ev_finish(&mut self, req: &Req, t0: Instant, status: u16, bytes_out: u64) {
        let done = Done {
            status,
            bytes_in: req.head_len as u64,
            bytes_out,
        };
        self.with_route(|c, route| c.finish(Some(route), t0, &done, req.minor));
    }

    /// Answers `status` for the request in progress and logs it; the connection closes after.
    pub(super) fn ev_fail(&mut self, req: &Req, t0: Instant, status: u16) {
        self.with_route(|c, route| c.page(Some(route), req, status, false, t0));
    }
}
