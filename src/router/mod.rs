//! The HTTP router: a synchronous HTTP/1.1 reverse proxy that routes by Host to an app's backends with
//! pooled keep-alive upstream connections, streamed bodies, upgrade tunnelling, TLS by SNI, idle-app waking,
//! per-app access logs and Prometheus metrics. Plain-HTTP client connections live on one epoll loop per core
//! (`evloop`), which forwards short bodiless exchanges itself and hands anything else to a connection thread
//! for that request; TLS client connections have a thread each (`accept`). Client connections are capped.
//!
//! `gearshift daemon` builds a [`RouteTable`] from the apps on disk and calls [`Router::set_routes`] on
//! every change; the switch is atomic and in-flight requests finish on the backends they started on.

// The public API is not wired into `gearshift daemon` yet: remove once it is integrated.
#![allow(dead_code)]

mod accept;
mod evloop;
mod heads;
mod http;
mod metrics;
mod pages;
mod pool;
mod blocking;
#[cfg(test)]
mod tests;
mod tls;
mod tunnel;

pub use tls::CertStore;

use anyhow::{bail, Context, Result};
use metrics::{AppMetrics, Metrics};
use pool::{BackendState, PoolLimits};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Timeouts and limits. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Time for a whole request head to arrive (counted from the connection's accept, or from the first
    /// byte of a later request): a client sending one byte a second is cut after this.
    pub header_timeout: Duration,
    /// How long a keep-alive client connection may sit between requests.
    pub idle_timeout: Duration,
    /// Longest pause while reading a request body or writing to a client.
    pub body_timeout: Duration,
    /// Longest wait for the backend's response head or its next body bytes (tunnels have none).
    pub upstream_timeout: Duration,
    /// Largest request head; larger gets 431.
    pub max_header_bytes: usize,
    /// Client connections served at once; new ones over it get a 503 and are closed.
    pub max_connections: usize,
    /// How long a request to an idle app is held while the app wakes; then 503.
    pub wake_timeout: Duration,
    /// Port named in HTTP→HTTPS redirects (443 is left out of the URL).
    pub https_port: u16,
    /// Idle upstream connections kept per backend.
    pub max_idle_per_backend: usize,
    /// Idle upstream connections older than this are closed.
    pub upstream_idle_timeout: Duration,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// How long a backend that refused a connection is skipped.
    pub backend_down_for: Duration,
    /// Stack reserved per connection thread (only touched pages cost memory).
    pub thread_stack: usize,
    /// Event-loop threads for plain HTTP (0: one per core).
    pub event_loops: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(300),
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            wake_timeout: Duration::from_secs(30),
            https_port: 443,
            max_idle_per_backend: 64,
            upstream_idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            backend_down_for: Duration::from_secs(5),
            thread_stack: 256 * 1024,
            event_loops: 0,
        }
    }
}

impl RouterConfig {
    fn pool_limits(&self) -> PoolLimits {
        PoolLimits {
            max_idle: self.max_idle_per_backend,
            idle_timeout: self.upstream_idle_timeout,
            probe_after: Duration::from_secs(1),
            down_for: self.backend_down_for,
            connect_timeout: self.connect_timeout,
        }
    }
}

/// One place an app answers: a gear's listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// The integrator's name for it (gear id), shown in metrics.
    pub id: String,
}

/// An app's entry: the host names it answers to and where its ready backends are.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// App name, used for logs and metrics.
    pub app: String,
    /// Host names (`APP.DOMAIN` and aliases), matched case-insensitively without port.
    pub hosts: Vec<String>,
    /// Ready backends, balanced round robin. Empty: the [`Waker`] is asked (idle or stopped app).
    pub backends: Vec<Backend>,
    /// Answer plain-HTTP requests with a 301 to HTTPS.
    pub https_redirect: bool,
}

/// The complete routing state; replaced as a whole by [`Router::set_routes`].
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// The routes; a host listed twice goes to the later route.
    pub routes: Vec<Route>,
}

impl RouteTable {
    /// Adds a route.
    pub fn add(&mut self, route: Route) -> &mut Self {
        self.routes.push(route);
        self
    }
}

/// What waking an app gave.
#[derive(Debug, Clone)]
pub enum WakeResult {
    /// The app answers now at these backends.
    Ready(Vec<Backend>),
    /// The app is stopped and is not to be woken: 502.
    NotRunning,
    /// It did not come up in time: 503.
    TimedOut,
}

/// Called when a request reaches an app with no backend; the request is held until it returns.
/// Concurrent requests for the same app share one call.
pub trait Waker: Send + Sync {
    /// Starts `app` and returns its backends once it answers, giving up at `deadline`.
    fn wake(&self, app: &str, deadline: Instant) -> WakeResult;
}

/// A [`Waker`] for routers without idling: every app without backends is stopped.
pub struct NoWaker;

impl Waker for NoWaker {
    fn wake(&self, _app: &str, _deadline: Instant) -> WakeResult {
        WakeResult::NotRunning
    }
}

/// Receives one access-log line per request, for the daemon to write to the app's log.
pub trait AccessLog: Send + Sync {
    /// `app` is empty for unknown hosts.
    fn log(&self, app: &str, line: &str);
    /// False skips formatting lines altogether.
    fn enabled(&self) -> bool {
        true
    }
}

/// Discards access-log lines.
pub struct NoAccessLog;

impl AccessLog for NoAccessLog {
    fn log(&self, _app: &str, _line: &str) {}
    fn enabled(&self) -> bool {
        false
    }
}

/// A snapshot of the router's counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Client connections open now.
    pub active_connections: i64,
    /// Client connections accepted.
    pub connections_total: u64,
    /// Client connections refused over the cap.
    pub rejected_connections: u64,
    /// Requests answered, all apps and unknown hosts.
    pub requests_total: u64,
    /// Failed upstream connects, all backends.
    pub upstream_connect_errors: u64,
    /// Requests answered per app.
    pub requests_by_app: HashMap<String, u64>,
}

/// An app's route as the proxy uses it: backends resolved to their shared pools.
pub(crate) struct LiveRoute {
    pub app: String,
    pub hosts: Vec<String>,
    pub backends: Vec<Arc<BackendState>>,
    pub rr: AtomicUsize,
    pub https_redirect: bool,
    pub metrics: Arc<AppMetrics>,
}

/// One in-progress wake shared by the requests waiting for it.
#[derive(Default)]
struct WakeSlot {
    result: Mutex<Option<WakeResult>>,
    done: Condvar,
}

/// Everything connection threads share.
pub(crate) struct Inner {
    pub cfg: RouterConfig,
    pub limits: PoolLimits,
    table: RwLock<Arc<HashMap<String, Arc<LiveRoute>>>>,
    backends: Mutex<HashMap<SocketAddr, Arc<BackendState>>>,
    /// Backends dropped from the table, while requests to them may still be in flight.
    retired: Mutex<Vec<std::sync::Weak<BackendState>>>,
    apps: Mutex<HashMap<String, Arc<AppMetrics>>>,
    waker: Arc<dyn Waker>,
    pub access_log: Arc<dyn AccessLog>,
    pub metrics: Metrics,
    wakes: Mutex<HashMap<String, Arc<WakeSlot>>>,
    stopping: AtomicBool,
    listeners: Mutex<Vec<SocketAddr>>,
    rid_key: u64,
    rid_counter: AtomicU64,
    /// Bumped on every route table change, so connections may cache their last lookup.
    pub generation: AtomicU64,
}

impl Inner {
    /// The route for a normalized host.
    pub fn route(&self, host: &str) -> Option<Arc<LiveRoute>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).get(host).cloned()
    }

    /// True once [`Router::shutdown`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    /// True while `b` is a backend of the current table.
    pub fn is_current(&self, b: &Arc<BackendState>) -> bool {
        let map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&b.addr).is_some_and(|s| Arc::ptr_eq(s, b))
    }

    /// The shared state of a backend address (created unregistered when the table does not know it).
    pub fn backend_state(&self, b: &Backend) -> Arc<BackendState> {
        let map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&b.addr)
            .cloned()
            .unwrap_or_else(|| Arc::new(BackendState::new(b.addr, b.id.clone())))
    }

    /// Wakes `app`, sharing one [`Waker::wake`] call among concurrent requests.
    pub fn wake(&self, app: &str) -> WakeResult {
        let deadline = Instant::now() + self.cfg.wake_timeout;
        let (slot, leader) = {
            let mut w = self.wakes.lock().unwrap_or_else(|e| e.into_inner());
            match w.get(app) {
                Some(s) => (s.clone(), false),
                None => {
                    let s = Arc::new(WakeSlot::default());
                    w.insert(app.to_string(), s.clone());
                    (s, true)
                }
            }
        };
        if leader {
            /// Ends the shared wake even if the waker panics, so later requests start a new one.
            struct Finish<'a>(&'a Inner, &'a str, &'a WakeSlot, Option<WakeResult>);
            impl Drop for Finish<'_> {
                fn drop(&mut self) {
                    self.0.wakes.lock().unwrap_or_else(|e| e.into_inner()).remove(self.1);
                    *self.2.result.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(self.3.take().unwrap_or(WakeResult::TimedOut));
                    self.2.done.notify_all();
                }
            }
            let mut finish = Finish(self, app, &slot, None);
            let r = self.waker.wake(app, deadline);
            finish.3 = Some(r.clone());
            return r;
        }
        let mut res = slot.result.lock().unwrap_or_else(|e| e.into_inner());
        while res.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return WakeResult::TimedOut;
            }
            res = slot.done.wait_timeout(res, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        res.clone().unwrap_or(WakeResult::TimedOut)
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

/// The router: cheap to clone, shared by its listeners.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl Router {
    /// A router with an empty route table.
    pub fn new(cfg: RouterConfig, waker: Arc<dyn Waker>, access_log: Arc<dyn AccessLog>) -> Self {
        let inner = Inner {
            limits: cfg.pool_limits(),
            cfg,
            table: RwLock::new(Arc::new(HashMap::new())),
            backends: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            apps: Mutex::new(HashMap::new()),
            waker,
            access_log,
            metrics: Metrics::default(),
            wakes: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            listeners: Mutex::new(Vec::new()),
            rid_key: random_u64(),
            rid_counter: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        };
        Router { inner: Arc::new(inner) }
    }

    /// Replaces the route table atomically. Pools of backends still named are kept; others are dropped
    /// once their in-flight requests finish.
    pub fn set_routes(&self, table: RouteTable) {
        let inner = &self.inner;
        let mut backends = inner.backends.lock().unwrap_or_else(|e| e.into_inner());
        let mut apps = inner.apps.lock().unwrap_or_else(|e| e.into_inner());
        let mut new_backends = HashMap::new();
        let mut hosts = HashMap::new();
        for r in table.routes {
            let states = r
                .backends
                .iter()
                .map(|b| {
                    let s = backends
                        .get(&b.addr)
                        .filter(|s| s.id == b.id)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(BackendState::new(b.addr, b.id.clone())));
                    new_backends.insert(b.addr, s.clone());
                    s
                })
                .collect();
            let metrics = apps.entry(r.app.clone()).or_default().clone();
            let route_hosts: Vec<String> = r
                .hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect();
            let live = Arc::new(LiveRoute {
                app: r.app,
                hosts: route_hosts.clone(),
                backends: states,
                rr: AtomicUsize::new(0),
                https_redirect: r.https_redirect,
                metrics,
            });
            for h in route_hosts {
                hosts.insert(h, live.clone());
            }
        }
        let mut retired = inner.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|w| w.strong_count() > 0);
        for (addr, s) in backends.iter() {
            if !new_backends.get(addr).is_some_and(|n| Arc::ptr_eq(n, s)) {
                retired.push(Arc::downgrade(s));
            }
        }
        drop(retired);
        *backends = new_backends;
        *inner.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(hosts);
        inner.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Serves plain HTTP on `listener` in a new thread.
    pub fn serve_http(&self, listener: TcpListener) -> JoinHandle<()> {
        self.serve(listener, None)
    }

    /// Serves HTTPS on `listener`, certificates chosen by SNI from `certs` (self-signed per app if none).
    pub fn serve_https(&self, listener: TcpListener, certs: Arc<CertStore>) -> Result<JoinHandle<()>> {
        let weak = Arc::downgrade(&self.inner);
        let lookup: tls::HostLookup = Arc::new(move |host: &str| {
            let inner = weak.upgrade()?;
            let r = inner.route(host)?;
            Some((r.app.clone(), r.hosts.clone()))
        });
        let cfg = tls::server_config(certs, lookup)?;
        Ok(self.serve(listener, Some(cfg)))
    }

    /// Serves `/metrics` (Prometheus text) on a loopback-only admin listener.
    pub fn serve_admin(&self, listener: TcpListener) -> Result<JoinHandle<()>> {
        let addr = listener.local_addr().context("admin listener address")?;
        if !addr.ip().is_loopback() {
            bail!("the router's admin listener must be on loopback, not {addr}");
        }
        let weak = Arc::downgrade(&self.inner);
        let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || {
            weak.upgrade()
                .map(|i| Router { inner: i }.metrics_text())
                .unwrap_or_default()
        });
        std::thread::Builder::new()
            .name("router-admin".into())
            .spawn(move || metrics::serve_admin(listener, render))
            .context("cannot start the admin listener thread")
    }

    /// The metrics in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let apps: Vec<_> = {
            let a = self.inner.apps.lock().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<_> = a.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        let backends: Vec<_> = {
            let b = self.inner.backends.lock().unwrap_or_else(|e| e.into_inner());
            b.values()
                .map(|s| (s.addr.to_string(), s.id.clone(), s.connect_errors.load(Relaxed)))
                .collect()
        };
        metrics::render(&self.inner.metrics, &apps, &backends)
    }

    /// Requests being forwarded to the backend at `addr` now, including one the table no longer names:
    /// after switching a deployment, stop the old one once this reaches 0.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        let current = self
            .inner
            .backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .map(|s| s.in_flight());
        let retired: usize = (self.inner.retired.lock().unwrap_or_else(|e| e.into_inner()).iter())
            .filter_map(|w| w.upgrade())
            .filter(|s| s.addr == addr)
            .map(|s| s.in_flight())
            .sum();
        current.unwrap_or(0) + retired
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let m = &self.inner.metrics;
        let mut s = Stats {
            active_connections: m.active_connections.load(Relaxed),
            connections_total: m.connections_total.load(Relaxed),
            rejected_connections: m.rejected_connections.load(Relaxed),
            requests_total: m.unknown_host.total(),
            ..Stats::default()
        };
        for (app, am) in self.inner.apps.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let n = am.total();
            s.requests_total += n;
            s.requests_by_app.insert(app.clone(), n);
        }
        for b in self.inner.backends.lock().unwrap_or_else(|e| e.into_inner()).values() {
            s.upstream_connect_errors += b.connect_errors.load(Relaxed);
        }
        s
    }

    /// Stops accepting on every listener (open connections finish on their own).
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Relaxed);
        for addr in self.inner.listeners.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
    }

    fn serve(&self, listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> JoinHandle<()> {
        if let Ok(a) = listener.local_addr() {
            self.inner.listeners.lock().unwrap_or_else(|e| e.into_inner()).push(a);
        }
        accept::serve(self.inner.clone(), listener, tls)
    }
}
