//! What every connection shares: the configuration, the routes, wakes in progress, the access log, the
//! counters, and the request-id generator.

use super::access_log::AccessLog;
use super::challenges::Challenges;
use super::config::RouterConfig;
use super::metrics::Metrics;
use super::pool::PoolLimits;
use super::route::Routes;
use super::wake::{Waker, Wakes};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Everything connection threads and event loops share.
pub(crate) struct Inner {
    pub cfg: RouterConfig,
    pub limits: PoolLimits,
    pub routes: Routes,
    pub wakes: Wakes,
    pub access_log: Arc<dyn AccessLog>,
    /// ACME HTTP-01 answers, given on plain HTTP before any route.
    pub challenges: Arc<Challenges>,
    pub metrics: Metrics,
    pub stopping: AtomicBool,
    /// Addresses served, for [`Router::shutdown`](super::Router::shutdown) to unblock their accepts.
    pub listeners: Mutex<Vec<SocketAddr>>,
    rid_key: u64,
    rid_counter: AtomicU64,
    /// Open client connections per peer address (`max_connections_per_ip`).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The second of the last cap log line (one a second at most).
    cap_logged: AtomicU64,
}

impl Inner {
    pub fn new(cfg: RouterConfig, waker: Arc<dyn Waker>, access_log: Arc<dyn AccessLog>) -> Inner {
        Inner {
            limits: cfg.pool_limits(),
            cfg,
            routes: Routes::default(),
            wakes: Wakes::new(waker),
            access_log,
            challenges: Arc::default(),
            metrics: Metrics::default(),
            stopping: AtomicBool::new(false),
            listeners: Mutex::new(Vec::new()),
            rid_key: random_u64(),
            rid_counter: AtomicU64::new(0),
            per_ip: Mutex::new(HashMap::new()),
            cap_logged: AtomicU64::new(0),
        }
    }

    /// Counts a client connection from `ip` unless that address already has
    /// `max_connections_per_ip` open (false; nothing counted).
    pub fn take_ip_slot(&self, ip: IpAddr) -> bool {
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.cfg.max_connections_per_ip {
            return false;
        }
        *n += 1;
        true
    }

    /// Uncounts a client connection from `ip`.
    pub fn release_ip_slot(&self, ip: IpAddr) {
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }

    /// Writes a line about a cap that refused something to the daemon's log, one a second at most
    /// (a client hammering a cap cannot flood the log).
    pub fn log_cap(&self, line: impl FnOnce() -> String) {
        let now = crate::clock::now();
        if self.cap_logged.swap(now, Relaxed) != now {
            eprintln!("gearshift router: {}", line());
        }
    }

    /// True once [`Router::shutdown`](super::Router::shutdown) was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    /// A random-looking 32-hex-digit request id (a keyed mix of a counter: unique, unpredictable enough).
    pub fn request_id(&self, out: &mut String) {
        let n = self.rid_counter.fetch_add(1, Relaxed);
        let a = splitmix(n ^ self.rid_key);
        let b = splitmix(a ^ self.rid_key.rotate_left(17));
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for v in [a, b] {
            for i in (0..16).rev() {
                out.push(HEX[((v >> (i * 4)) & 0xf) as usize] as char);
            }
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return splitmix(t.as_nanos() as u64 ^ u64::from(std::process::id()));
    }
    u64::from_ne_bytes(b)
}
