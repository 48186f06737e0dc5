//! Counters, their Prometheus text rendering, and the loopback-only admin listener that serves them.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Per-app request counters.
#[derive(Debug, Default)]
pub struct AppMetrics {
    /// Responses by status class: index 0 = 1xx … 4 = 5xx.
    pub by_class: [AtomicU64; 5],
    /// Bytes received from clients (heads and bodies).
    pub bytes_in: AtomicU64,
    /// Bytes sent to clients (heads and bodies).
    pub bytes_out: AtomicU64,
    /// Requests being served now (held while the app wakes, forwarded, or relayed).
    pub active: AtomicUsize,
}

/// One request counted in its app's `active` gauge until dropped.
pub struct AppSlot(Arc<AppMetrics>);

impl Drop for AppSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

impl AppMetrics {
    /// Counts one finished request.
    pub fn record(&self, status: u16, bytes_in: u64, bytes_out: u64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
    }

    /// Counts a request as active unless the app already serves `cap` (None: over the cap).
    pub fn enter(self: &Arc<Self>, cap: usize) -> Option<AppSlot> {
        if self.active.fetch_add(1, Relaxed) >= cap {
            self.active.fetch_sub(1, Relaxed);
            return None;
        }
        Some(AppSlot(self.clone()))
    }

    /// Requests of all classes.
    pub fn total(&self) -> u64 {
        self.by_class.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// Router-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Client connections open now.
    pub active_connections: AtomicI64,
    /// Client connections accepted since start.
    pub connections_total: AtomicU64,
    /// Client connections closed at once because the cap (all, or one client's) was reached.
    pub rejected_connections: AtomicU64,
    /// Requests answered 503 because their app already had `max_connections_per_app` in flight.
    pub rejected_app_requests: AtomicU64,
    /// Requests for a host no route knows.
    pub unknown_host: AppMetrics,
}

/// Escapes a Prometheus label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition of `m`, `apps` and the backends' connect errors.
pub fn render(m: &Metrics, apps: &[(String, Arc<AppMetrics>)], backends: &[(String, String, u64)]) -> String {
    let mut o = String::new();
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    o.push_str("# HELP gearshift_router_requests_total Requests answered, by app and status class.\n");
    o.push_str("# TYPE gearshift_router_requests_total counter\n");
    let all = apps
        .iter()
        .map(|(a, m)| (a.as_str(), &**m))
        .chain([("", &m.unknown_host)]);
    for (app, am) in all.clone() {
        for (i, c) in classes.iter().enumerate() {
            let n = am.by_class[i].load(Relaxed);
            if n > 0 {
                let _ = writeln!(
                    o,
                    "gearshift_router_requests_total{{app=\"{}\",class=\"{c}\"}} {n}",
                    label(app)
                );
            }
        }
    }
    for (name, help, get) in [
        (
            "gearshift_router_request_bytes_total",
            "Bytes received from clients.",
            0,
        ),
        ("gearshift_router_response_bytes_total", "Bytes sent to clients.", 1),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (app, am) in all.clone() {
            let v = if get == 0 {
                am.bytes_in.load(Relaxed)
            } else {
                am.bytes_out.load(Relaxed)
            };
            let _ = writeln!(o, "{name}{{app=\"{}\"}} {v}", label(app));
        }
    }
    o.push_str("# HELP gearshift_router_upstream_connect_errors_total Failed connections to a backend.\n");
    o.push_str("# TYPE gearshift_router_upstream_connect_errors_total counter\n");
    for (addr, id, n) in backends {
        let _ = writeln!(
            o,
            "gearshift_router_upstream_connect_errors_total{{backend=\"{}\",id=\"{}\"}} {n}",
            label(addr),
            label(id)
        );
    }
    let _ = writeln!(
        o,
        "# HELP gearshift_router_active_connections Client connections open now.\n\
         # TYPE gearshift_router_active_connections gauge\ngearshift_router_active_connections {}\n\
         # HELP gearshift_router_connections_total Client connections accepted.\n\
         # TYPE gearshift_router_connections_total counter\ngearshift_router_connections_total {}\n\
         # HELP gearshift_router_rejected_connections_total Client connections refused over the cap.\n\
         # TYPE gearshift_router_rejected_connections_total counter\ngearshift_router_rejected_connections_total {}\n\
         # HELP gearshift_router_rejected_app_requests_total Requests answered 503 over an app's cap.\n\
         # TYPE gearshift_router_rejected_app_requests_total counter\ngearshift_router_rejected_app_requests_total {}",
        m.active_connections.load(Relaxed),
        m.connections_total.load(Relaxed),
        m.rejected_connections.load(Relaxed),
        m.rejected_app_requests.load(Relaxed),
    );
    o
}

/// Serves `GET /metrics` (and `/healthz`) on an admin listener, one short-lived thread per connection.
pub fn serve_admin(listener: TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let render = render.clone();
        let _ = std::thread::Builder::new().name("router-admin".into()).spawn(move || {
            let _ = answer(conn, &*render);
        });
    }
}

fn answer(mut conn: TcpStream, render: &dyn Fn() -> String) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let path = loop {
        let n = conn.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => break req.path.unwrap_or("/").to_string(),
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => return Ok(()),
        }
    };
    // The metrics name every app and gear: root's only (any local user can reach loopback).
    let root = || {
        let (peer, ours) = (conn.peer_addr().ok()?, conn.local_addr().ok()?);
        super::peer::uid_of(peer, ours)
    };
    let (status, ctype, body) = match path.as_str() {
        "/metrics" if root() != Some(0) => (
            "403 Forbidden",
            "text/plain",
            "the router's metrics name every app and gear: read them as root (sudo)\n".to_string(),
        ),
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", render()),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())
}
