//! Plain-HTTP client connections on a few event-loop threads (epoll, edge-triggered), one per core.
//!
//! The loop does the common case without blocking and without a thread switch per request: it reads a
//! request head, and for a bodiless request to a healthy backend over an upstream connection the client
//! connection already holds, sends the head, waits for the response and, when the whole response arrived
//! in one piece (the usual short answer), writes it to the client. Everything else (request bodies,
//! streamed or large responses, upgrades, waking idle apps, redirects, error pages, the first request
//! that has to connect upstream) is handed with the connection to a connection thread, which runs the
//! blocking code of `blocking` for that one request and gives the connection back.
//!
//! Sockets stay in blocking mode (with their timeouts) for the threads; the loop uses MSG_DONTWAIT.

mod steps;
mod threads;

use super::accept::{admit, back_off};
use super::conn::{Conn, HeadErr, Outcome, IDLE_TRIM_AFTER};
use super::heads::Req;
use super::pool::{BackendState, InFlight};
use super::shared::Inner;
use super::stream::{send_nb, ClientStream};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use steps::{EvResp, Pending};
use threads::Threads;

/// How often timeouts are checked.
const TICK: Duration = Duration::from_millis(250);
/// Connections accepted per wakeup, so that both loops take a share of a burst.
const ACCEPT_BATCH: usize = 8;

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_WAKE: u64 = u64::MAX - 1;

/// Starts the event loops for `listener`; the handle is the first loop's.
pub fn serve(inner: Arc<Inner>, listener: TcpListener) -> JoinHandle<()> {
    let _ = listener.set_nonblocking(true);
    let n = match inner.cfg.event_loops {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()).min(8),
        n => n,
    };
    let threads = Arc::new(Threads::new(inner.cfg.thread_stack));
    let inboxes = (0..n)
        .map(|_| Returns::new().map(Arc::new))
        .collect::<io::Result<Vec<_>>>()
        .expect("cannot create the router's eventfds");
    let load = Arc::new(Load {
        conns: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        inboxes,
    });
    let mut first = None;
    for id in 0..n {
        let l = listener.try_clone().expect("cannot clone the router's listener");
        let w = Worker::new(inner.clone(), l, threads.clone(), load.clone(), id)
            .expect("cannot start the router's event loop");
        let h = std::thread::Builder::new()
            .name("router-loop".into())
            .spawn(move || w.run())
            .expect("cannot start the router's event loop thread");
        first.get_or_insert(h);
    }
    first.expect("at least one event loop")
}

/// Client connections per loop, and each loop's inbox. A loop that accepts a connection while it holds
/// more than its share passes it to the least loaded loop, so that a burst of connections (a benchmark or
/// a load balancer opening its pool) is spread evenly.
struct Load {
    conns: Vec<AtomicUsize>,
    inboxes: Vec<Arc<Returns>>,
}

/// Connections a loop may hold over the least loaded one and still keep a new one itself.
const SLACK: usize = 2;

impl Load {
    /// The loop that is to serve a connection loop `id` accepted: `id`, or the least loaded one.
    fn target(&self, id: usize) -> usize {
        let mine = self.conns[id].load(Relaxed);
        let (min_id, min) = (self.conns.iter().map(|c| c.load(Relaxed)).enumerate())
            .min_by_key(|&(_, c)| c)
            .unwrap_or((id, mine));
        if mine > min + SLACK {
            min_id
        } else {
            id
        }
    }
}

/// A loop's inbox: connections coming back from connection threads (None: it closed), connections
/// another loop accepted for it, and the eventfd that says so.
struct Returns {
    q: Mutex<Vec<(usize, Option<Box<Conn>>)>>,
    new: Mutex<Vec<(TcpStream, SocketAddr)>>,
    efd: OwnedFd,
}

impl Returns {
    fn new() -> io::Result<Returns> {
        // SAFETY: eventfd returns a new fd or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Returns {
            q: Mutex::new(Vec::new()),
            new: Mutex::new(Vec::new()),
            // SAFETY: `efd` is a fresh fd nobody else owns.
            efd: unsafe { OwnedFd::from_raw_fd(efd) },
        })
    }

    fn give_back(&self, slot: usize, conn: Option<Box<Conn>>) {
        self.q.lock().unwrap_or_else(|e| e.into_inner()).push((slot, conn));
        self.wake();
    }

    fn pass(&self, stream: TcpStream, peer: SocketAddr) {
        self.new.lock().unwrap_or_else(|e| e.into_inner()).push((stream, peer));
        self.wake();
    }

    fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write of 8 bytes from a stack buffer to an eventfd this struct owns.
        unsafe { libc::write(self.efd.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

/// Where a connection is in its request cycle.
enum St {
    /// Waiting for a request head (`head`: some bytes came, the header timeout runs).
    Head { head: bool },
    /// The request went upstream; `ulen` response bytes are in the connection's upstream buffer.
    Await(Box<Pending>, usize),
    /// Writing the response: `pos` bytes of it written.
    Write {
        req: Req,
        t0: Instant,
        status: u16,
        keep: bool,
        pos: usize,
    },
    /// With a connection thread.
    Away,
}

struct Slot {
    conn: Option<Box<Conn>>,
    st: St,
    /// An idle upstream connection registered with this loop's epoll (for the next request).
    up: Option<(Arc<BackendState>, TcpStream)>,
    /// When the current wait gives up.
    deadline: Instant,
    /// When an idle connection gives back its buffers (None: done, or not idle).
    trim_at: Option<Instant>,
    /// An edge said the client socket is readable and it was not read since.
    readable: bool,
}

struct Worker {
    inner: Arc<Inner>,
    ep: OwnedFd,
    listener: Option<TcpListener>,
    load: Arc<Load>,
    id: usize,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    returns: Arc<Returns>,
    threads: Arc<Threads>,
}

fn ep_ctl(ep: &OwnedFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: epoll_ctl on an epoll fd we own, for a valid fd, with a valid event struct on the stack.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const CLIENT_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
const UP_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

fn client_token(i: usize) -> u64 {
    (i as u64) << 1
}

fn up_token(i: usize) -> u64 {
    ((i as u64) << 1) | 1
}

impl Worker {
    fn new(
        inner: Arc<Inner>,
        listener: TcpListener,
        threads: Arc<Threads>,
        load: Arc<Load>,
        id: usize,
    ) -> io::Result<Worker> {
        // SAFETY: epoll_create1 returns a new fd or -1; a new fd is owned by the OwnedFd alone.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ep` is a fresh fd nobody else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let returns = load.inboxes[id].clone();
        ep_ctl(
            &ep,
            libc::EPOLL_CTL_ADD,
            listener.as_raw_fd(),
            (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
            TOKEN_LISTENER,
        )?;
        ep_ctl(
            &ep,
            libc::EPOLL_CTL_ADD,
            returns.efd.as_raw_fd(),
            libc::EPOLLIN as u32,
            TOKEN_WAKE,
        )?;
        Ok(Worker {
            inner,
            ep,
            listener: Some(listener),
            load,
            id,
            slots: Vec::new(),
            free: Vec::new(),
            returns,
            threads,
        })
    }

    fn run(mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            // SAFETY: epoll_wait on our epoll fd into `events`, valid for `events.len()` entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.ep.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    wait.as_millis() as libc::c_int + 1,
                )
            };
            for ev in events.iter().take(n.max(0) as usize) {
                let (token, bits) = (ev.u64, ev.events);
                match token {
                    TOKEN_LISTENER => self.accept(),
                    TOKEN_WAKE => self.take_returns(),
                    t if t & 1 == 0 => self.on_client((t >> 1) as usize, bits),
                    t => self.on_upstream((t >> 1) as usize),
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                self.tick(now);
                if self.listener.is_none() && self.slots.iter().all(Option::is_none) {
                    return;
                }
            }
        }
    }

    fn stop_listening(&mut self) {
        if let Some(l) = self.listener.take() {
            let _ = ep_ctl(&self.ep, libc::EPOLL_CTL_DEL, l.as_raw_fd(), 0, 0);
        }
    }

    fn accept(&mut self) {
        let inner = self.inner.clone();
        for _ in 0..ACCEPT_BATCH {
            let Some(l) = &self.listener else { return };
            let (stream, peer) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    back_off(&e);
                    return;
                }
            };
            if inner.is_stopping() {
                self.stop_listening();
                return;
            }
            if !admit(&inner, &stream, peer.ip()) {
                continue;
            }
            let target = self.load.target(self.id);
            if target != self.id {
                self.load.conns[target].fetch_add(1, Relaxed);
                self.load.inboxes[target].pass(stream, peer);
                continue;
            }
            self.load.conns[self.id].fetch_add(1, Relaxed);
            self.adopt(stream, peer);
        }
    }

    /// Serves a new client connection (already counted in `load`).
    fn adopt(&mut self, stream: TcpStream, peer: SocketAddr) {
        let inner = self.inner.clone();
        {
            let _ = stream.set_nodelay(true);
            let _ = stream.set_write_timeout(Some(inner.cfg.body_timeout));
            let fd = stream.as_raw_fd();
            let mut conn = Box::new(Conn::new(
                inner.clone(),
                ClientStream::Plain(stream),
                peer.ip().to_string(),
                false,
            ));
            conn.gauge = Some(peer.ip());
            let i = self.free.pop().unwrap_or_else(|| {
                self.slots.push(None);
                self.slots.len() - 1
            });
            if ep_ctl(&self.ep, libc::EPOLL_CTL_ADD, fd, CLIENT_EVENTS, client_token(i)).is_err() {
                self.free.push(i);
                self.load.conns[self.id].fetch_sub(1, Relaxed);
                return;
            }
            self.slots[i] = Some(Slot {
                conn: Some(conn),
                st: St::Head { head: true },
                up: None,
                deadline: Instant::now() + inner.cfg.header_timeout,
                trim_at: None,
                readable: true,
            });
            // Clients usually send the request right after connecting: it may be here already.
            self.read_head(i);
        }
    }

    /// Frees a slot; its connection (if here) closes and its upstream connections go to the pools.
    fn close(&mut self, i: usize) {
        if let Some(mut slot) = self.slots[i].take() {
            self.load.conns[self.id].fetch_sub(1, Relaxed);
            if let Some((b, s)) = slot.up.take() {
                let _ = ep_ctl(&self.ep, libc::EPOLL_CTL_DEL, s.as_raw_fd(), 0, 0);
                b.put(s, &self.inner.limits);
            }
            self.free.push(i);
        }
    }

    /// Hands the connection to a connection thread for `job`; it comes back through `returns`.
    fn handoff(&mut self, i: usize, job: impl FnOnce(&mut Conn) -> Outcome + Send + 'static) {
        let Some(slot) = self.slots[i].as_mut() else { return };
        let Some(mut conn) = slot.conn.take() else { return };
        if let Some((b, s)) = slot.up.take() {
            let _ = ep_ctl(&self.ep, libc::EPOLL_CTL_DEL, s.as_raw_fd(), 0, 0);
            conn.keep_local(b, s);
        }
        slot.st = St::Away;
        let returns = self.returns.clone();
        self.threads.submit(Box::new(move || {
            let outcome = job(&mut conn);
            returns.give_back(i, (outcome == Outcome::Keep).then_some(conn));
        }));
    }

    fn take_returns(&mut self) {
        let mut b = [0u8; 8];
        // SAFETY: read of up to 8 bytes into a stack buffer from our non-blocking eventfd.
        unsafe { libc::read(self.returns.efd.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
        let passed = std::mem::take(&mut *self.returns.new.lock().unwrap_or_else(|e| e.into_inner()));
        for (stream, peer) in passed {
            self.adopt(stream, peer);
        }
        let back = std::mem::take(&mut *self.returns.q.lock().unwrap_or_else(|e| e.into_inner()));
        for (i, conn) in back {
            match conn {
                None => self.close(i),
                Some(conn) => {
                    if let Some(slot) = self.slots[i].as_mut() {
                        slot.conn = Some(conn);
                        // Bytes may have come while it was away: look.
                        slot.readable = true;
                        self.idle(i);
                    }
                }
            }
        }
    }

    /// The connection waits for its next request (reading at once whatever is there).
    fn idle(&mut self, i: usize) {
        let now = Instant::now();
        let Some(slot) = self.slots[i].as_mut() else { return };
        slot.st = St::Head { head: false };
        slot.deadline = now + self.inner.cfg.idle_timeout;
        slot.trim_at = Some(now + IDLE_TRIM_AFTER);
        let pending = slot.readable || slot.conn.as_ref().is_some_and(|c| c.has_buffered());
        if pending {
            self.read_head(i);
        }
    }

    fn on_client(&mut self, i: usize, bits: u32) {
        let Some(Some(slot)) = self.slots.get_mut(i) else {
            return;
        };
        if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            slot.readable = true;
        }
        match slot.st {
            St::Head { .. } if slot.readable => self.read_head(i),
            St::Write { .. } if bits & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 => self.write(i),
            _ => {}
        }
    }

    fn read_head(&mut self, i: usize) {
        let inner = self.inner.clone();
        let Some(slot) = self.slots[i].as_mut() else { return };
        let Some(conn) = slot.conn.as_mut() else { return };
        let r = conn.poll_head();
        if conn.drained {
            slot.readable = false;
        }
        match r {
            Ok(None) => {
                if conn.has_buffered() {
                    if let St::Head { head: false } = slot.st {
                        slot.st = St::Head { head: true };
                        slot.deadline = Instant::now() + inner.cfg.header_timeout;
                        slot.trim_at = None;
                    }
                }
            }
            Ok(Some(head_len)) => self.begin(i, head_len),
            Err(HeadErr::Closed) => self.close(i),
            Err(HeadErr::TooLarge) => {
                conn.head_error(431);
                self.close(i);
            }
            Err(HeadErr::Timeout) => self.close(i),
        }
    }

    /// A whole request head is buffered: forward it from here, or hand it to a thread.
    fn begin(&mut self, i: usize, head_len: usize) {
        let Some(slot) = self.slots[i].as_mut() else { return };
        let Some(conn) = slot.conn.as_mut() else { return };
        let Some((req, bi, t0)) = conn.ev_route(head_len) else {
            return self.handoff(i, move |c| c.request(head_len));
        };
        let Some(b) = conn.ev_backend(bi) else {
            return self.handoff(i, move |c| c.forward_from_loop(&req, bi, t0));
        };
        // The upstream connection: the one registered here, else one the connection keeps.
        let (barc, up) = match slot.up.take() {
            Some((a, s)) if Arc::ptr_eq(&a, b) => (a, s),
            other => {
                let b = b.clone();
                if let Some((a, s)) = other {
                    let _ = ep_ctl(&self.ep, libc::EPOLL_CTL_DEL, s.as_raw_fd(), 0, 0);
                    // One to a backend no longer routed to is closed, so that a replaced deployment drains.
                    if self.inner.routes.is_current(&a) {
                        conn.keep_local(a, s);
                    }
                }
                match conn.take_local(&b) {
                    Some((a, s))
                        if ep_ctl(&self.ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), UP_EVENTS, up_token(i)).is_ok() =>
                    {
                        (a, s)
                    }
                    Some((a, s)) => {
                        conn.keep_local(a, s);
                        return self.handoff(i, move |c| c.forward_from_loop(&req, bi, t0));
                    }
                    None => return self.handoff(i, move |c| c.forward_from_loop(&req, bi, t0)),
                }
            }
        };
        let head = conn.upstream_head();
        match send_nb(&up, head) {
            Ok(n) if n == head.len() => {}
            // A stale or busy upstream connection: dropped (which unregisters it); a thread retries.
            _ => return self.handoff(i, move |c| c.forward_from_loop(&req, bi, t0)),
        }
        slot.st = St::Await(
            Box::new(Pending {
                req,
                bi,
                b: InFlight::new(barc),
                up,
                t0,
            }),
            0,
        );
        slot.deadline = Instant::now() + self.inner.cfg.upstream_timeout;
        slot.trim_at = None;
    }

    fn on_upstream(&mut self, i: usize) {
        let Some(Some(slot)) = self.slots.get_mut(i) else {
            return;
        };
        if slot.conn.is_none() || !matches!(slot.st, St::Await(..)) {
            return;
        }
        let St::Await(p, mut ulen) = std::mem::replace(&mut slot.st, St::Away) else {
            return;
        };
        let Some(conn) = slot.conn.as_mut() else { return };
        loop {
            match conn.read_upstream(&p.up, &mut ulen) {
                Ok(more) => match conn.ev_response(&p.req, ulen) {
                    EvResp::More if more => continue,
                    EvResp::More => {
                        slot.st = St::Await(p, ulen);
                        return;
                    }
                    EvResp::Slow => {
                        let _ = ep_ctl(&self.ep, libc::EPOLL_CTL_DEL, p.up.as_raw_fd(), 0, 0);
                        return self.handoff(i, move |c| {
                            let Pending { req, b, up, t0, .. } = *p;
                            c.relay_from_loop(&req, b, up, ulen, t0)
                        });
                    }
                    EvResp::Ready {
                        upstream_ok,
                        keep,
                        status,
                    } => {
                        let Pending { req, b, up, t0, .. } = *p;
                        if upstream_ok {
                            slot.up = Some((b.finish(), up));
                        }
                        slot.st = St::Write {
                            req,
                            t0,
                            status,
                            keep,
                            pos: 0,
                        };
                        slot.deadline = Instant::now() + self.inner.cfg.body_timeout;
                        return self.write(i);
                    }
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    slot.st = St::Await(p, ulen);
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) if ulen == 0 => {
                    // Closed before answering (a stale kept connection): a thread retries elsewhere.
                    let Pending { req, t0, bi, .. } = *p;
                    return self.handoff(i, move |c| c.forward_from_loop(&req, bi, t0));
                }
                Err(_) => {
                    let _ = ep_ctl(&self.ep, libc::EPOLL_CTL_DEL, p.up.as_raw_fd(), 0, 0);
                    return self.handoff(i, move |c| {
                        let Pending { req, b, up, t0, .. } = *p;
                        c.relay_from_loop(&req, b, up, ulen, t0)
                    });
                }
            }
        }
    }

    /// Writes the prepared response; when all of it is out, logs it and waits for the next request.
    fn write(&mut self, i: usize) {
        let Some(slot) = self.slots[i].as_mut() else { return };
        let Some(conn) = slot.conn.as_mut() else { return };
        let St::Write {
            req,
            t0,
            status,
            keep,
            ref mut pos,
        } = slot.st
        else {
            return;
        };
        let out = conn.client_out();
        while *pos < out.len() {
            match send_nb(conn.client.tcp(), &out[*pos..]) {
                Ok(n) => *pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    slot.deadline = Instant::now() + self.inner.cfg.body_timeout;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    let n = *pos as u64;
                    conn.ev_finish(&req, t0, status, n);
                    return self.close(i);
                }
            }
        }
        let n = out.len() as u64;
        conn.ev_finish(&req, t0, status, n);
        if keep {
            self.idle(i);
        } else {
            self.close(i);
        }
    }

    /// Timeouts, and giving back what idle connections hold.
    fn tick(&mut self, now: Instant) {
        if self.inner.is_stopping() {
            self.stop_listening();
        }
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots[i].as_mut() else { continue };
            let Some(conn) = slot.conn.as_mut() else { continue };
            if slot.trim_at.is_some_and(|t| now >= t) {
                slot.trim_at = None;
                if let Some((b, s)) = slot.up.take() {
                    let _ = ep_ctl(&self.ep, libc::EPOLL_CTL_DEL, s.as_raw_fd(), 0, 0);
                    b.put(s, &self.inner.limits);
                }
                conn.trim();
            }
            if now < slot.deadline {
                continue;
            }
            match std::mem::replace(&mut slot.st, St::Away) {
                St::Head { head: true } if conn.has_buffered() => conn.head_error(408),
                St::Await(p, _) => {
                    let Pending { req, t0, up, .. } = *p;
                    drop(up);
                    conn.ev_fail(&req, t0, 504);
                }
                St::Write {
                    req, t0, status, pos, ..
                } => conn.ev_finish(&req, t0, status, pos as u64),
                _ => {}
            }
            self.close(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_over_its_share_passes_new_connections_to_the_least_loaded() {
        let load = Load {
            conns: (0..3).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: Vec::new(),
        };
        assert!((0..3).all(|i| load.target(i) == i));
        load.conns[0].store(SLACK + 1, Relaxed);
        load.conns[1].store(1, Relaxed);
        assert_eq!(load.target(0), 2, "more than SLACK over the least loaded loop");
        assert_eq!((load.target(1), load.target(2)), (1, 2));
        load.conns[2].store(1, Relaxed);
        assert_eq!(load.target(0), 0, "within SLACK of every other loop again");
    }
}
