//! Upstream side: per-backend idle connection pools, passive health, and connecting.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared state of one backend address: its idle keep-alive connections and its health.
#[derive(Debug)]
pub struct BackendState {
    /// Where the backend listens.
    pub addr: SocketAddr,
    /// The integrator's name for it (a gear id), for logs and metrics.
    pub id: String,
    idle: Mutex<Vec<(TcpStream, Instant)>>,
    /// Milliseconds since `epoch` until which the backend is skipped (0: healthy).
    down_until_ms: AtomicU64,
    epoch: Instant,
    /// Failed connection attempts.
    pub connect_errors: AtomicU64,
    /// Requests being forwarded to it now.
    in_flight: AtomicUsize,
}

/// A request in flight to a backend, counted until finished or dropped; owns the backend's `Arc`.
pub struct InFlight(Option<Arc<BackendState>>);

impl InFlight {
    /// Counts a request to `b`.
    pub fn new(b: Arc<BackendState>) -> Self {
        b.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Some(b))
    }

    /// Uncounts it and gives the backend back.
    pub fn finish(mut self) -> Arc<BackendState> {
        let b = self.0.take().expect("InFlight holds its backend until finished");
        b.in_flight.fetch_sub(1, Ordering::Relaxed);
        b
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An upstream connection in use, and whether it came from a pool (and so may be stale).
#[derive(Debug)]
pub struct Upstream {
    /// The connection.
    pub stream: TcpStream,
    /// True when it was reused: a failure before any response byte may just mean it went stale.
    pub reused: bool,
}

/// Limits for pooling upstream connections.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Idle connections kept per backend.
    pub max_idle: usize,
    /// An idle connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
    /// Connections idle longer than this are probed (a non-blocking peek) before reuse.
    pub probe_after: Duration,
    /// How long a backend that refused a connection is skipped.
    pub down_for: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl BackendState {
    /// A backend with an empty pool, healthy.
    pub fn new(addr: SocketAddr, id: String) -> Self {
        BackendState {
            addr,
            id,
            idle: Mutex::new(Vec::new()),
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            connect_errors: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Requests being forwarded to this backend now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// True unless the backend recently refused a connection.
    pub fn is_up(&self) -> bool {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        until == 0 || self.epoch.elapsed().as_millis() as u64 >= until
    }

    /// Skips this backend for `d` (passive health).
    pub fn mark_down(&self, d: Duration) {
        let until = (self.epoch.elapsed() + d).as_millis() as u64;
        self.down_until_ms.store(until.max(1), Ordering::Relaxed);
        // Its pooled connections are likely dead too.
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn mark_up(&self) {
        if self.down_until_ms.load(Ordering::Relaxed) != 0 {
            self.down_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// An idle pooled connection that still looks alive, or a new one. `probe`: check every pooled
    /// connection (for requests that cannot be replayed), not only long-idle ones.
    pub fn get(&self, limits: &PoolLimits, probe: bool) -> std::io::Result<Upstream> {
        match self.take_idle(limits, probe) {
            Some(stream) => Ok(Upstream { stream, reused: true }),
            None => self.connect(limits),
        }
    }

    /// An idle pooled connection that still looks alive, if any.
    pub fn take_idle(&self, limits: &PoolLimits, probe: bool) -> Option<TcpStream> {
        loop {
            let (stream, since) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            let idle = since.elapsed();
            if idle > limits.idle_timeout {
                continue;
            }
            if (probe || idle > limits.probe_after) && !looks_alive(&stream) {
                continue;
            }
            return Some(stream);
        }
    }

    /// A fresh connection (TCP_NODELAY); a failure marks the backend down.
    pub fn connect(&self, limits: &PoolLimits) -> std::io::Result<Upstream> {
        match TcpStream::connect_timeout(&self.addr, limits.connect_timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                self.mark_up();
                Ok(Upstream { stream, reused: false })
            }
            Err(e) => {
                self.connect_errors.fetch_add(1, Ordering::Relaxed);
                self.mark_down(limits.down_for);
                Err(e)
            }
        }
    }

    /// Returns a connection that finished a response cleanly to the pool (or closes it when full).
    pub fn put(&self, stream: TcpStream, limits: &PoolLimits) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < limits.max_idle {
            idle.push((stream, Instant::now()));
        }
    }
}

/// A pooled connection the backend has closed shows EOF (or an error) to a non-blocking peek.
pub fn looks_alive(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv on a valid, owned socket fd into a 1-byte stack buffer; MSG_PEEK|MSG_DONTWAIT neither
    // consumes data nor blocks.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    // -1 with EAGAIN: nothing to read, still open. 0: closed. >0: unsolicited bytes, unusable.
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// Upstream connections a client connection keeps for itself between its requests, so that steady
/// keep-alive traffic never touches the shared pool's lock.
#[derive(Default)]
pub struct LocalConns {
    conns: Vec<(Arc<BackendState>, TcpStream)>,
}

/// How many upstream connections a client connection keeps to itself.
const LOCAL_MAX: usize = 4;

impl LocalConns {
    /// Takes this connection's own idle connection to `b`, if any (with the `Arc` it was kept under, so
    /// that keeping it again costs no reference count traffic).
    pub fn take(&mut self, b: &Arc<BackendState>) -> Option<(Arc<BackendState>, TcpStream)> {
        let i = self.conns.iter().position(|(s, _)| Arc::ptr_eq(s, b))?;
        Some(self.conns.swap_remove(i))
    }

    /// Keeps `stream` for the next request to `b`; overflow goes to the shared pool.
    pub fn keep(&mut self, b: Arc<BackendState>, stream: TcpStream, limits: &PoolLimits) {
        if self.conns.len() >= LOCAL_MAX {
            let (ob, os) = self.conns.remove(0);
            ob.put(os, limits);
        }
        self.conns.push((b, stream));
    }

    /// Closes kept connections whose backend fails `keep`.
    pub fn retain(&mut self, keep: impl Fn(&Arc<BackendState>) -> bool) {
        self.conns.retain(|(b, _)| keep(b));
    }

    /// Hands every kept connection back to the shared pools (the client connection is closing).
    pub fn release(&mut self, limits: &PoolLimits) {
        for (b, s) in self.conns.drain(..) {
            b.put(s, limits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    impl BackendState {
        /// Number of idle pooled connections.
        fn idle_count(&self) -> usize {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
        }
    }

    fn limits() -> PoolLimits {
        PoolLimits {
            max_idle: 2,
            idle_timeout: Duration::from_secs(30),
            probe_after: Duration::ZERO,
            down_for: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn stale_pooled_connection_is_skipped() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = BackendState::new(l.local_addr().unwrap(), "b".into());
        let up = b.get(&limits(), false).unwrap();
        assert!(!up.reused);
        let (server_side, _) = l.accept().unwrap();
        b.put(up.stream, &limits());
        drop(server_side); // the backend closes its idle connection
        std::thread::sleep(Duration::from_millis(50));
        let up = b.get(&limits(), false).unwrap();
        assert!(!up.reused, "a closed pooled connection must not be reused");
    }

    #[test]
    fn refused_marks_down_then_recovers() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let b = BackendState::new(addr, "b".into());
        assert!(b.get(&limits(), false).is_err());
        assert!(!b.is_up());
        std::thread::sleep(Duration::from_millis(350));
        assert!(b.is_up());
        assert_eq!(b.connect_errors.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn pool_is_bounded() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = BackendState::new(l.local_addr().unwrap(), "b".into());
        for _ in 0..4 {
            let up = b.connect(&limits()).unwrap();
            b.put(up.stream, &limits());
        }
        assert_eq!(b.idle_count(), 2);
    }
}
