//! What `gearshift top` shows: the counters of every gear an actor may see, read at one instant
//! (cgroup, quota, the host veth, the router's per-app request counters), and the rates
//! between two such readings. Reading is cheap and happens only while someone asks.

use super::{condition::Seen, App};
use crate::gear::{self, isolation::quota, Gear};
use crate::node::Node;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// One gear's counters at one instant.
#[derive(Debug, Clone, Default)]
pub struct GearCounters {
    pub app: String,
    pub gear: u32,
    pub state: String,
    pub cpu_usage_usec: u64,
    /// The profile's CPU quota, in thousandths of a core.
    pub cpu_quota_millis: u64,
    pub memory_bytes: u64,
    pub memory_limit: u64,
    pub oom_kills: u64,
    pub pids: u64,
    pub pids_limit: u64,
    pub disk_bytes: Option<u64>,
    pub disk_limit: Option<u64>,
    /// Bytes the gear received and sent (the host veth's tx and rx).
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
}

/// Every visible gear, with the router's request totals per app, read at `at`.
#[derive(Debug, Clone)]
pub struct Reading {
    pub at: Instant,
    pub gears: Vec<GearCounters>,
    /// App -> requests answered since the daemon started; None when the daemon's admin port
    /// does not answer.
    pub requests: Option<BTreeMap<String, u64>>,
    /// App -> the router's latency histogram: cumulative counts by upper bound (seconds).
    pub latency: BTreeMap<String, Vec<(f64, u64)>>,
}

/// One line of `top`: a gear's usage now and its rates since the previous reading.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub app: String,
    pub gear: u32,
    pub state: String,
    /// Percent of one core.
    pub cpu_percent: f64,
    /// The profile's quota, in percent of one core.
    pub cpu_quota_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit: u64,
    pub oom_kills: u64,
    pub pids: u64,
    pub pids_limit: u64,
    pub disk_bytes: Option<u64>,
    pub disk_limit: Option<u64>,
    /// Bytes per second into and out of the gear.
    pub net_rx_rate: Option<f64>,
    pub net_tx_rate: Option<f64>,
    /// The app's requests per second (the same for each of its gears); None when the router's
    /// counters are not reachable.
    pub requests_per_sec: Option<f64>,
    /// The 95th percentile of the app's request latency since the previous reading, in
    /// milliseconds (from the router's histogram); None without requests in between.
    pub p95_ms: Option<f64>,
}

/// Reads the counters of every gear of `apps` (those an actor may manage, with their states).
pub fn read(node: &Node, apps: &[Seen]) -> Result<Reading> {
    let router = router_metrics(node.config.admin_port);
    let ids: Vec<(&str, u32)> = (apps.iter().flat_map(|s| &s.app.gears))
        .map(|g| (g.id.as_str(), g.uid))
        .collect();
    let disks = quota::usages(node, &ids);
    let mut gears = Vec::new();
    for s in apps {
        let state = s.state().to_string();
        for g in &s.app.gears {
            gears.push(gear_counters(node, &s.app, g, &state, disks.get(&g.id).copied()));
        }
    }
    let (requests, latency) = match router {
        Some(text) => (Some(parse_requests(&text)), parse_latency(&text)),
        None => (None, BTreeMap::new()),
    };
    Ok(Reading {
        at: Instant::now(),
        gears,
        requests,
        latency,
    })
}

fn gear_counters(node: &Node, a: &App, g: &Gear, state: &str, disk: Option<quota::Usage>) -> GearCounters {
    let s = gear::cgroup(node, g).map(|c| c.stats()).unwrap_or_default();
    let cpu_quota_millis = node
        .config
        .profile(&g.profile)
        .and_then(|p| p.limits())
        .map_or(0, |l| l.cpu_millis);
    let stat = |f: &str| -> Option<u64> {
        let p = format!("/sys/class/net/{}/statistics/{f}", g.veth_host());
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    };
    GearCounters {
        app: a.name.clone(),
        gear: g.index,
        state: state.to_string(),
        cpu_usage_usec: s.cpu_usage_usec,
        cpu_quota_millis,
        memory_bytes: s.memory_bytes,
        memory_limit: s.memory_limit,
        oom_kills: s.oom_kills,
        pids: s.pids,
        pids_limit: s.pids_limit,
        disk_bytes: disk.map(|d| d.bytes),
        disk_limit: disk.and_then(|d| d.limit_bytes),
        // What leaves the host end goes into the gear.
        net_rx_bytes: stat("tx_bytes"),
        net_tx_bytes: stat("rx_bytes"),
    }
}

/// The daemon's loopback admin port's `/metrics` (None when it does not answer).
fn router_metrics(port: u16) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    if !body.starts_with("HTTP/1.") {
        return None;
    }
    Some(body)
}

/// `gearshift_router_request_duration_seconds_bucket{app="A",le="B"} N` per app, in order.
pub fn parse_latency(text: &str) -> BTreeMap<String, Vec<(f64, u64)>> {
    let mut out: BTreeMap<String, Vec<(f64, u64)>> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("gearshift_router_request_duration_seconds_bucket{app=\"") else {
            continue;
        };
        let Some((app, tail)) = rest.split_once("\",le=\"") else {
            continue;
        };
        let Some((le, tail)) = tail.split_once('"') else {
            continue;
        };
        let bound = if le == "+Inf" {
            Some(f64::INFINITY)
        } else {
            le.parse().ok()
        };
        let n = tail.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok());
        if let (Some(b), Some(n), false) = (bound, n, app.is_empty()) {
            out.entry(app.to_string()).or_default().push((b, n));
        }
    }
    out
}

/// The p95 in milliseconds of the requests between two cumulative histograms of one app.
fn p95_between(before: Option<&Vec<(f64, u64)>>, now: Option<&Vec<(f64, u64)>>) -> Option<f64> {
    let now = now?;
    let mut prev_cum = 0;
    let buckets: Vec<(f64, u64)> = now
        .iter()
        .map(|&(bound, cum)| {
            let old = before.and_then(|b| b.iter().find(|x| x.0 == bound)).map_or(0, |x| x.1);
            let delta = cum.saturating_sub(old);
            let inside = delta.saturating_sub(prev_cum);
            prev_cum = delta;
            (bound, inside)
        })
        .collect();
    crate::router::quantile(&buckets, 0.95).map(|s| (s * 1e4).round() / 10.0)
}

/// Sums `gearshift_router_requests_total{app="A",class=...} N` per app.
pub fn parse_requests(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("gearshift_router_requests_total{app=\"") else {
            continue;
        };
        let Some((app, tail)) = rest.split_once('"') else {
            continue;
        };
        let Some(n) = tail.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        if !app.is_empty() {
            *out.entry(app.to_string()).or_insert(0) += n;
        }
    }
    out
}

/// The rows of `now`, with rates since `before` (a gear new in `now` shows zero rates).
pub fn rows(before: &Reading, now: &Reading) -> Vec<Row> {
    let secs = now.at.duration_since(before.at).as_secs_f64().max(0.001);
    let rate = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?) as f64 / secs);
    now.gears
        .iter()
        .map(|g| {
            let prev = before.gears.iter().find(|p| p.app == g.app && p.gear == g.gear);
            let cpu = prev.map_or(0.0, |p| {
                g.cpu_usage_usec.saturating_sub(p.cpu_usage_usec) as f64 / (secs * 1e6) * 100.0
            });
            let req = |r: &Reading| r.requests.as_ref().map(|m| m.get(&g.app).copied().unwrap_or(0));
            Row {
                app: g.app.clone(),
                gear: g.gear,
                state: g.state.clone(),
                cpu_percent: (cpu * 10.0).round() / 10.0,
                cpu_quota_percent: g.cpu_quota_millis as f64 / 10.0,
                memory_bytes: g.memory_bytes,
                memory_limit: g.memory_limit,
                oom_kills: g.oom_kills,
                pids: g.pids,
                pids_limit: g.pids_limit,
                disk_bytes: g.disk_bytes,
                disk_limit: g.disk_limit,
                net_rx_rate: prev.and_then(|p| rate(p.net_rx_bytes, g.net_rx_bytes)),
                net_tx_rate: prev.and_then(|p| rate(p.net_tx_bytes, g.net_tx_bytes)),
                requests_per_sec: rate(req(before), req(now)),
                p95_ms: p95_between(before.latency.get(&g.app), now.latency.get(&g.app)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_summed_per_app() {
        let text = "# HELP x\n\
            gearshift_router_requests_total{app=\"shop\",class=\"2xx\"} 10\n\
            gearshift_router_requests_total{app=\"shop\",class=\"5xx\"} 2\n\
            gearshift_router_requests_total{app=\"blog\",class=\"2xx\"} 7\n\
            gearshift_router_requests_total{app=\"\",class=\"4xx\"} 3\n\
            gearshift_router_request_bytes_total{app=\"shop\"} 99\n";
        let m = parse_requests(text);
        assert_eq!(m.get("shop"), Some(&12));
        assert_eq!(m.get("blog"), Some(&7));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn latency_buckets_are_read_per_app() {
        let text = "gearshift_router_request_duration_seconds_bucket{app=\"shop\",le=\"0.005\"} 2\n\
            gearshift_router_request_duration_seconds_bucket{app=\"shop\",le=\"+Inf\"} 5\n\
            gearshift_router_request_duration_seconds_bucket{app=\"\",le=\"+Inf\"} 9\n\
            gearshift_router_request_duration_seconds_sum{app=\"shop\"} 0.5\n";
        let m = parse_latency(text);
        assert_eq!(m.len(), 1);
        assert_eq!(m["shop"], vec![(0.005, 2), (f64::INFINITY, 5)]);
        assert_eq!(p95_between(None, m.get("shop")), Some(5.0));
        assert_eq!(p95_between(m.get("shop"), m.get("shop")), None);
    }

    #[test]
    fn rates_between_readings() {
        let t0 = Instant::now();
        let g = |cpu, rx| GearCounters {
            app: "shop".into(),
            cpu_usage_usec: cpu,
            cpu_quota_millis: 500,
            net_rx_bytes: Some(rx),
            net_tx_bytes: None,
            ..Default::default()
        };
        let before = Reading {
            at: t0,
            gears: vec![g(1_000_000, 0)],
            requests: Some(BTreeMap::from([("shop".to_string(), 10)])),
            latency: BTreeMap::from([("shop".to_string(), vec![(0.01, 10), (0.1, 10), (f64::INFINITY, 10)])]),
        };
        let now = Reading {
            at: t0 + Duration::from_secs(2),
            gears: vec![g(2_000_000, 4096)],
            requests: Some(BTreeMap::from([("shop".to_string(), 30)])),
            // The 20 requests in between: 10 under 10 ms, 10 between 10 and 100 ms.
            latency: BTreeMap::from([("shop".to_string(), vec![(0.01, 20), (0.1, 30), (f64::INFINITY, 30)])]),
        };
        let r = &rows(&before, &now)[0];
        assert_eq!(r.cpu_percent, 50.0);
        assert_eq!(r.cpu_quota_percent, 50.0);
        assert_eq!(r.net_rx_rate, Some(2048.0));
        assert_eq!(r.net_tx_rate, None);
        assert_eq!(r.requests_per_sec, Some(10.0));
        assert_eq!(r.p95_ms, Some(91.0));
        let unreachable = Reading {
            requests: None,
            ..now.clone()
        };
        assert_eq!(rows(&before, &unreachable)[0].requests_per_sec, None);
        // A gear that appeared in between: no rates yet.
        let fresh = rows(
            &Reading {
                gears: vec![],
                ..before
            },
            &now,
        );
        assert_eq!(fresh[0].cpu_percent, 0.0);
        assert_eq!(fresh[0].net_rx_rate, None);
    }
}
