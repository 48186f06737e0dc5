//! The router's timeouts and limits.

use super::forwarded::TrustedProxies;
use super::pool::PoolLimits;
use std::time::Duration;

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
    /// Client connections open at once from one IP address; more get a 503 and are closed.
    pub max_connections_per_ip: usize,
    /// Requests one app is served at once (forwarded, relayed, or held while it wakes); more get a
    /// 503, so one slow or never-answering app cannot take the router's threads from the others.
    pub max_connections_per_app: usize,
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
    /// Peers (load balancers) whose forwarded headers and request id are kept; everyone else's are
    /// replaced by the router's.
    pub trusted_proxies: TrustedProxies,
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
            max_connections_per_ip: 256,
            max_connections_per_app: 1024,
            wake_timeout: Duration::from_secs(30),
            https_port: 443,
            max_idle_per_backend: 64,
            upstream_idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            backend_down_for: Duration::from_secs(5),
            thread_stack: 256 * 1024,
            event_loops: 0,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

impl RouterConfig {
    pub(crate) fn pool_limits(&self) -> PoolLimits {
        PoolLimits {
            max_idle: self.max_idle_per_backend,
            idle_timeout: self.upstream_idle_timeout,
            probe_after: Duration::from_secs(1),
            down_for: self.backend_down_for,
            connect_timeout: self.connect_timeout,
        }
    }
}
