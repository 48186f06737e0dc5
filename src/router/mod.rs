//! The HTTP router: a synchronous HTTP/1.1 reverse proxy that routes by Host to an app's backends with
//! pooled keep-alive upstream connections, streamed bodies, upgrade tunnelling, TLS by SNI, idle-app waking,
//! per-app access logs and Prometheus metrics. Plain-HTTP client connections live on one epoll loop per core
//! (`evloop`), which forwards short bodiless exchanges itself and hands anything else to a connection thread
//! for that request; TLS client connections have a thread each (`accept`). Client connections are capped.
//!
//! `gearshift daemon` builds a [`RouteTable`] from the apps on disk and calls [`Router::set_routes`] on
//! every change; the switch is atomic and in-flight requests finish on the backends they started on.
//!
//! The parts, in layers: each part `use`s only parts named before it, and none uses this file.
//! - what every connection shares: `pool` (upstream connections per backend), `peer` (which local
//!   user a loopback peer is), `metrics` (root's only on the admin port), `forwarded` (whose
//!   forwarded headers are believed), `config`,
//!   `route` (the live table and the one route lookup, cached per connection), `wake` (waking idle apps),
//!   `access_log`, `shared` (all of it together);
//! - HTTP/1 on the wire: `stream` (the client socket, plain or TLS), `http` (framing), `heads` (parse and
//!   rewrite heads), `body` (response bodies to the client), `pages` (the router's own answers), `tunnel`
//!   (after a 101), `tls` (certificates by SNI);
//! - the connection engines: `conn` (one client connection's state and what both engines do alike),
//!   `blocking` (a connection thread with blocking calls), `accept` (the connection cap; TLS connections,
//!   a thread each), `evloop` (plain HTTP on epoll loops that hand what is not short to `blocking`);
//! - `challenges` (ACME HTTP-01 answers, in `shared`) sits beside `route`;
//! - beside them: `admin` (the loopback admin listener: `/metrics` and the integrator's pages).

mod accept;
mod access_log;
mod admin;
mod blocking;
mod body;
mod challenges;
mod config;
mod conn;
mod evloop;
mod forwarded;
mod heads;
mod http;
mod metrics;
mod pages;
mod peer;
mod pool;
mod route;
mod shared;
mod stream;
#[cfg(test)]
mod tests;
mod tls;
mod tunnel;
mod wake;

pub use access_log::AccessLog;
pub use admin::{AdminPage, AdminPages, PublicAdmin};
pub use challenges::Challenges;
pub use config::RouterConfig;
pub use forwarded::TrustedProxies;
pub use metrics::quantile;
pub use route::{Backend, Route, RouteTable};
pub use tls::{admin_tls, CertStore};
pub use wake::{WakeResult, Waker};

use anyhow::{bail, Context, Result};
use shared::Inner;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A snapshot of the router's counters (the daemon reads requests per app to find idle apps; the rest is
/// on the admin listener's `/metrics`, and here for tests).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Requests answered per app.
    pub requests_by_app: HashMap<String, u64>,
    /// Client connections accepted.
    #[cfg(test)]
    pub connections_total: u64,
    /// Client connections refused over the cap.
    #[cfg(test)]
    pub rejected_connections: u64,
    /// Failed upstream connects, all backends.
    #[cfg(test)]
    pub upstream_connect_errors: u64,
}

/// The router: cheap to clone, shared by its listeners.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl Router {
    /// A router with an empty route table.
    pub fn new(cfg: RouterConfig, waker: Arc<dyn Waker>, access_log: Arc<dyn AccessLog>) -> Self {
        let inner = Inner::new(cfg, waker, access_log);
        Router { inner: Arc::new(inner) }
    }

    /// Replaces the route table atomically. Pools of backends still named are kept; others are dropped
    /// once their in-flight requests finish.
    pub fn set_routes(&self, table: RouteTable) {
        self.inner.routes.replace(table);
    }

    /// The ACME HTTP-01 answers this router gives on plain HTTP (the daemon's ACME client fills them).
    pub fn challenges(&self) -> Arc<Challenges> {
        self.inner.challenges.clone()
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
            let r = inner.routes.get(host)?;
            Some((r.app.clone(), r.hosts.clone()))
        });
        let cfg = tls::server_config(certs, lookup)?;
        Ok(self.serve(listener, Some(cfg)))
    }

    /// Serves `/metrics` (Prometheus text: the router's series, then `registry`'s), `/healthz` and
    /// `pages` on a loopback-only admin listener, and on `public` (TLS and a login) if given.
    pub fn serve_admin(
        &self,
        listener: TcpListener,
        mut registry: prometheus_client::registry::Registry,
        pages: Option<AdminPages>,
        public: Option<PublicAdmin>,
    ) -> Result<JoinHandle<()>> {
        let addr = listener.local_addr().context("admin listener address")?;
        if !addr.ip().is_loopback() {
            bail!("the router's admin listener must be on loopback, not {addr}");
        }
        registry.register_collector(Box::new(admin::RouterCollector(Arc::downgrade(&self.inner))));
        let registry = Arc::new(registry);
        if let Some(public) = public {
            let (registry, pages) = (registry.clone(), pages.clone());
            std::thread::Builder::new()
                .name("router-admin-tls".into())
                .spawn(move || admin::serve_public(public, registry, pages))
                .context("cannot start the exposed admin listener thread")?;
        }
        std::thread::Builder::new()
            .name("router-admin".into())
            .spawn(move || admin::serve(listener, registry, pages))
            .context("cannot start the admin listener thread")
    }

    /// Requests being forwarded to the backend at `addr` now, including one the table no longer names:
    /// after switching a deployment, stop the old one once this reaches 0.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        self.inner.routes.in_flight(addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for (app, am) in self.inner.routes.app_metrics() {
            s.requests_by_app.insert(app, am.total());
        }
        #[cfg(test)]
        {
            let m = &self.inner.metrics;
            s.connections_total = m.connections_total.load(Relaxed);
            s.rejected_connections = m.rejected_connections.load(Relaxed);
            s.upstream_connect_errors = self.inner.routes.backend_errors().iter().map(|b| b.2).sum();
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
        match tls {
            None => evloop::serve(self.inner.clone(), listener),
            Some(tls) => accept::serve(self.inner.clone(), listener, tls),
        }
    }
}
