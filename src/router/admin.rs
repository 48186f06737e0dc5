//! The loopback admin listener: `/metrics` (the router's series and whatever the integrator's
//! collectors add, in Prometheus text format by `prometheus-client`), `/healthz`, and the
//! integrator's own pages. Everything is read at the moment it is asked for.

use super::shared::Inner;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// One answer of an integrator's page.
#[derive(Debug, Clone)]
pub struct AdminPage {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// The integrator's pages: a path (with its query) to an answer, None for "not mine".
pub type AdminPages = Arc<dyn Fn(&str) -> Option<AdminPage> + Send + Sync>;

/// The router's own series, read from its counters at each scrape.
#[derive(Debug)]
pub(super) struct RouterCollector(pub Weak<Inner>);

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Collector for RouterCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let apps = inner.routes.app_metrics();
        // Requests for a host no route knows count under app="". An app no request reached
        // yet has no series (a node of idle apps scrapes in a few lines per app).
        let all: Vec<(&str, &super::metrics::AppMetrics)> = (apps.iter())
            .map(|(a, m)| (a.as_str(), &**m))
            .chain([("", &inner.metrics.unknown_host)])
            .filter(|(_, m)| m.total() > 0)
            .collect();
        let help = "Requests answered, by app and status class";
        let mut m = enc.encode_descriptor("gearshift_router_requests", help, None, MetricType::Counter)?;
        for (app, am) in &all {
            for (i, class) in CLASSES.iter().enumerate() {
                let n = am.by_class[i].load(Relaxed);
                if n > 0 {
                    let labels = [("app", *app), ("class", class)];
                    ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let help = "Time from a request's head to its response's last byte, by app";
        let mut m = enc.encode_descriptor(
            "gearshift_router_request_duration_seconds",
            help,
            None,
            MetricType::Histogram,
        )?;
        for (app, am) in &all {
            let (sum, count, buckets) = am.latency.snapshot();
            let labels = [("app", *app)];
            m.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        for (name, help, out) in [
            (
                "gearshift_router_request_bytes",
                "Bytes received from clients, by app",
                false,
            ),
            ("gearshift_router_response_bytes", "Bytes sent to clients, by app", true),
        ] {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (app, am) in &all {
                let v = if out { &am.bytes_out } else { &am.bytes_in };
                ConstCounter::new(v.load(Relaxed)).encode(m.encode_family(&[("app", *app)])?)?;
            }
        }
        let help = "Failed connections to a backend";
        let mut m = enc.encode_descriptor(
            "gearshift_router_upstream_connect_errors",
            help,
            None,
            MetricType::Counter,
        )?;
        for (addr, id, n) in inner.routes.backend_errors() {
            let labels = [("backend", addr.as_str()), ("id", id.as_str())];
            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
        }
        let c = &inner.metrics;
        let help = "Client connections open now";
        let m = enc.encode_descriptor("gearshift_router_active_connections", help, None, MetricType::Gauge)?;
        ConstGauge::new(c.active_connections.load(Relaxed)).encode(m)?;
        for (name, help, v) in [
            (
                "gearshift_router_connections",
                "Client connections accepted",
                &c.connections_total,
            ),
            (
                "gearshift_router_rejected_connections",
                "Client connections refused over the cap",
                &c.rejected_connections,
            ),
            (
                "gearshift_router_rejected_app_requests",
                "Requests answered 503 over an app's cap",
                &c.rejected_app_requests,
            ),
        ] {
            let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v.load(Relaxed)).encode(m)?;
        }
        Ok(())
    }
}

/// The Prometheus text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; a collector's error leaves what was written.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// Whether an `Authorization` header's value (None: no header) is the admin login.
pub type LoginCheck = Arc<dyn Fn(Option<&str>) -> bool + Send + Sync>;

/// The exposed admin listener (`admin_listen`): TLS, and a login instead of the loopback
/// peer's uid.
pub struct PublicAdmin {
    pub listener: TcpListener,
    pub tls: Arc<rustls::ServerConfig>,
    pub allows: LoginCheck,
}

/// Who may read the pages that name apps and gears.
enum Gate {
    /// Root, found by the loopback peer's uid.
    Root,
    /// The admin login, over TLS.
    Login(LoginCheck),
}

/// Serves the admin listener, one short-lived thread per connection.
pub(super) fn serve(listener: TcpListener, registry: Arc<Registry>, pages: Option<AdminPages>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (registry, pages) = (registry.clone(), pages.clone());
        let _ = std::thread::Builder::new().name("router-admin".into()).spawn(move || {
            let root = (conn.peer_addr().ok())
                .zip(conn.local_addr().ok())
                .and_then(|(peer, ours)| super::peer::uid_of(peer, ours))
                == Some(0);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = answer(conn, &registry, pages.as_ref(), Gate::Root, root);
        });
    }
}

/// Serves the exposed admin listener: TLS only (a plain HTTP request fails its handshake).
pub(super) fn serve_public(public: PublicAdmin, registry: Arc<Registry>, pages: Option<AdminPages>) {
    for conn in public.listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (registry, pages, tls, allows) = (
            registry.clone(),
            pages.clone(),
            public.tls.clone(),
            public.allows.clone(),
        );
        let _ = std::thread::Builder::new()
            .name("router-admin-tls".into())
            .spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(tls) = rustls::ServerConnection::new(tls) else {
                    return;
                };
                let stream = rustls::StreamOwned::new(tls, conn);
                let _ = answer(stream, &registry, pages.as_ref(), Gate::Login(allows), false);
            });
    }
}

/// Answers one request; `root`: the loopback peer is root (`Gate::Root`).
fn answer<S: Read + Write>(
    mut conn: S,
    registry: &Registry,
    pages: Option<&AdminPages>,
    gate: Gate,
    root: bool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let (path, authorization) = loop {
        let n = conn.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let auth = (req.headers.iter())
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::to_string);
                break (req.path.unwrap_or("/").to_string(), auth);
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => return Ok(()),
        }
    };
    // Everything but /healthz names apps and gears: root's only on loopback (any local user
    // can reach it), the admin login's on the exposed listener.
    let denied = match &gate {
        Gate::Root => (!root).then_some((
            "403 Forbidden",
            "the admin port's pages name every app and gear: read them as root (sudo)\n",
        )),
        Gate::Login(allows) => (!allows(authorization.as_deref())).then_some((
            "401 Unauthorized",
            "log in as admin (the password set by `gearshift node admin-password`)\n",
        )),
    };
    let (status, ctype, body) = match (path.as_str(), denied) {
        ("/healthz", _) => ("200 OK", "text/plain", b"ok\n".to_vec()),
        (_, Some((status, why))) => (status, "text/plain", why.as_bytes().to_vec()),
        ("/metrics", None) => (
            "200 OK",
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            encode(registry).into_bytes(),
        ),
        (p, None) => match pages.and_then(|f| f(p)) {
            Some(page) => ("200 OK", page.content_type, page.body),
            None => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
        },
    };
    let login = if status.starts_with("401") {
        "WWW-Authenticate: Basic realm=\"gearshift admin\", charset=\"UTF-8\"\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{login}Connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(&body)?;
    conn.flush()
}
