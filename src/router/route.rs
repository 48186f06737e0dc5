//! Routes: the table the integrator gives ([`RouteTable`]), the live table the proxy reads (hosts to
//! routes with their backends' shared pools), and the one route lookup both connection engines use
//! ([`RouteCache`]: a connection's last lookup, reused while the table is unchanged).

use super::metrics::AppMetrics;
use super::pool::{BackendState, LocalConns};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

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
    /// Ready backends, balanced round robin. Empty: the [`Waker`](super::Waker) is asked (idle or
    /// stopped app).
    pub backends: Vec<Backend>,
    /// Answer plain-HTTP requests with a 301 to HTTPS.
    pub https_redirect: bool,
}

/// The complete routing state; replaced as a whole by [`Router::set_routes`](super::Router::set_routes).
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

/// An app's route as the proxy uses it: backends resolved to their shared pools.
pub(crate) struct LiveRoute {
    pub app: String,
    pub hosts: Vec<String>,
    pub backends: Vec<Arc<BackendState>>,
    pub rr: AtomicUsize,
    pub https_redirect: bool,
    pub metrics: Arc<AppMetrics>,
}

/// The live routing state: hosts to routes, the backends' shared state, per-app metrics.
#[derive(Default)]
pub(crate) struct Routes {
    table: RwLock<Arc<HashMap<String, Arc<LiveRoute>>>>,
    backends: Mutex<HashMap<SocketAddr, Arc<BackendState>>>,
    /// Backends dropped from the table, while requests to them may still be in flight.
    retired: Mutex<Vec<Weak<BackendState>>>,
    apps: Mutex<HashMap<String, Arc<AppMetrics>>>,
    /// Bumped on every table change, so connections may cache their last lookup.
    generation: AtomicU64,
}

impl Routes {
    /// The route for a normalized host.
    pub fn get(&self, host: &str) -> Option<Arc<LiveRoute>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).get(host).cloned()
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

    /// Replaces the table atomically. Pools of backends still named are kept; others are dropped once
    /// their in-flight requests finish.
    pub fn replace(&self, table: RouteTable) {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|w| w.strong_count() > 0);
        for (addr, s) in backends.iter() {
            if !new_backends.get(addr).is_some_and(|n| Arc::ptr_eq(n, s)) {
                retired.push(Arc::downgrade(s));
            }
        }
        drop(retired);
        *backends = new_backends;
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(hosts);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Requests being forwarded to the backend at `addr` now, including one the table no longer names.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        let current = (self.backends.lock().unwrap_or_else(|e| e.into_inner()))
            .get(&addr)
            .map(|s| s.in_flight());
        let retired: usize = (self.retired.lock().unwrap_or_else(|e| e.into_inner()).iter())
            .filter_map(|w| w.upgrade())
            .filter(|s| s.addr == addr)
            .map(|s| s.in_flight())
            .sum();
        current.unwrap_or(0) + retired
    }

    /// Every app's metrics, sorted by app name.
    pub fn app_metrics(&self) -> Vec<(String, Arc<AppMetrics>)> {
        let a = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = a.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    }

    /// The current backends: (address, id, failed connects).
    pub fn backend_errors(&self) -> Vec<(String, String, u64)> {
        let b = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        b.values()
            .map(|s| {
                (
                    s.addr.to_string(),
                    s.id.clone(),
                    s.connect_errors.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// A connection's last route lookup, reused without touching the table's lock while the table is
/// unchanged and the host is the same (the usual keep-alive case).
#[derive(Default)]
pub(crate) struct RouteCache(Option<Cached>);

/// A cached lookup: the route of `host` in table `generation`.
pub(crate) struct Cached {
    generation: u64,
    host: String,
    pub route: Arc<LiveRoute>,
}

impl RouteCache {
    /// Looks up the route for `host`, from the cache while it is current, else from the table; false
    /// when no route has that host (the cache is empty then). When a cached entry is replaced, the
    /// upstream connections the client kept to backends no longer routed to are closed (in `local`), so
    /// that a replaced deployment drains.
    pub fn lookup(&mut self, routes: &Routes, host: &str, local: &mut LocalConns) -> bool {
        let generation = routes.generation.load(Ordering::Acquire);
        self.0 = match self.0.take() {
            Some(c) if c.generation == generation && c.host == host => Some(c),
            Some(Cached { host: mut h, .. }) => {
                local.retain(|b| routes.is_current(b));
                routes.get(host).map(|route| {
                    h.clear();
                    h.push_str(host);
                    Cached {
                        generation,
                        host: h,
                        route,
                    }
                })
            }
            None => routes.get(host).map(|route| Cached {
                generation,
                host: host.to_string(),
                route,
            }),
        };
        self.0.is_some()
    }

    /// The route of the last successful [`RouteCache::lookup`].
    pub fn current(&self) -> Option<&Arc<LiveRoute>> {
        self.0.as_ref().map(|c| &c.route)
    }

    /// Takes the entry out, for the connection to use its route while it is borrowed mutably; put back
    /// with [`RouteCache::put`].
    pub fn take(&mut self) -> Option<Cached> {
        self.0.take()
    }

    /// Puts back what [`RouteCache::take`] gave.
    pub fn put(&mut self, c: Cached) {
        self.0 = Some(c);
    }
}
