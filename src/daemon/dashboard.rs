//! The dashboard on the admin port: one read-only page (`/`, no external assets, no
//! framework) and the JSON it polls (`/dashboard.json`): the node's CPU, memory and disk, every
//! app with its state, URL, last deploy and an hour of requests and memory (a ring of one
//! point a minute per app, kept in memory), and the recent events.

use crate::app::{condition, App};
use crate::gear::isolation::cgroup::GearCgroup;
use crate::node::events;
use crate::node::Node;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The page itself.
pub const PAGE: &str = include_str!("dashboard.html");
/// One point a minute, an hour of them.
pub const POINTS: usize = 60;
/// How much of the event log's end the page shows from.
const EVENTS_TAIL: u64 = 64 << 10;

/// One app at one minute: its request total and its gears' memory.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Point {
    time: u64,
    requests: u64,
    memory: u64,
}

/// What the page is built from that must be remembered between requests.
#[derive(Debug)]
pub struct Dashboard {
    node: Node,
    history: Mutex<HashMap<String, VecDeque<Point>>>,
    /// The last (busy, total) jiffies of /proc/stat, for the CPU between two polls.
    cpu: Mutex<Option<(u64, u64)>>,
}

impl Dashboard {
    pub fn new(node: Node) -> Dashboard {
        Dashboard {
            node,
            history: Mutex::new(HashMap::new()),
            cpu: Mutex::new(None),
        }
    }

    fn point(&self, parents: &[std::path::PathBuf], a: &App, requests: &HashMap<String, u64>) -> Point {
        let memory = (a.gears.iter())
            .map(|g| GearCgroup::new(parents, &g.cgroup_name()).stats().memory_bytes)
            .sum();
        Point {
            time: crate::clock::now(),
            requests: requests.get(&a.name).copied().unwrap_or(0),
            memory,
        }
    }

    /// Adds this minute's point of every app (the daemon's refresh loop calls it once a minute).
    pub fn sample(&self, apps: &[App], requests: &HashMap<String, u64>) {
        let parents = self.node.state().map(|s| s.cgroup_parents).unwrap_or_default();
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.retain(|name, _| apps.iter().any(|a| &a.name == name));
        for a in apps {
            let ring = h.entry(a.name.clone()).or_default();
            ring.push_back(self.point(&parents, a, requests));
            while ring.len() > POINTS {
                ring.pop_front();
            }
        }
    }

    /// The node's CPU percent (all cores) since the previous call.
    fn cpu_percent(&self) -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3)? + v.get(4).unwrap_or(&0);
        let now = (total - idle, total);
        let before = self.cpu.lock().unwrap_or_else(|e| e.into_inner()).replace(now)?;
        let dt = now.1.checked_sub(before.1).filter(|d| *d > 0)?;
        Some(((now.0.saturating_sub(before.0)) as f64 / dt as f64 * 1000.0).round() / 10.0)
    }

    /// The JSON the page polls.
    pub fn json(&self, apps: &[App], requests: &HashMap<String, u64>) -> serde_json::Value {
        let node = &self.node;
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib = |key: &str| -> Option<u64> {
            let l = meminfo.lines().find(|l| l.starts_with(key))?;
            Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
        };
        let disk = nix::sys::statvfs::statvfs(node.root()).ok().map(|s| {
            let f = s.fragment_size();
            ((s.blocks() - s.blocks_free()) * f, s.blocks() * f)
        });
        let recent = recent_events(node);
        let parents = node.state().map(|s| s.cgroup_parents).unwrap_or_default();
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let apps: Vec<serde_json::Value> = apps
            .iter()
            .map(|a| {
                let (state, _) = condition::of(node, a);
                let mut points: Vec<Point> = history
                    .get(&a.name)
                    .map(|r| r.iter().copied().collect())
                    .unwrap_or_default();
                points.push(self.point(&parents, a, requests));
                let last_deploy = recent
                    .iter()
                    .rev()
                    .find(|e| e.kind == "deploy.result" && e.app.as_deref() == Some(&a.name))
                    .map(|e| serde_json::json!({"time": e.time, "result": e.detail["result"], "by": e.by}));
                serde_json::json!({
                    "name": a.name,
                    "owner": a.owner,
                    "state": state.to_string(),
                    "url": format!("http://{}.{}/", a.name, node.config.domain),
                    "last_deploy": last_deploy,
                    "points": points,
                })
            })
            .collect();
        let events: Vec<&events::Event> = recent.iter().rev().take(20).collect();
        serde_json::json!({
            "node": {
                "name": node.config.name,
                "cpu_percent": self.cpu_percent(),
                "memory_total": kib("MemTotal:"),
                "memory_available": kib("MemAvailable:"),
                "disk_used": disk.map(|d| d.0),
                "disk_total": disk.map(|d| d.1),
            },
            "apps": apps,
            "events": events,
        })
    }
}

/// The events at the end of the log (its last [`EVENTS_TAIL`] bytes), oldest first.
fn recent_events(node: &Node) -> Vec<events::Event> {
    use std::io::{Read, Seek};
    let Ok(mut f) = std::fs::File::open(events::path(node)) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(EVENTS_TAIL);
    let mut text = Vec::new();
    if f.seek(std::io::SeekFrom::Start(from)).is_err() || f.read_to_end(&mut text).is_err() {
        return Vec::new();
    }
    let mut lines = text.split(|b| *b == b'\n');
    if from > 0 {
        lines.next(); // begun mid-line
    }
    lines.filter_map(|l| serde_json::from_slice(l).ok()).collect()
}
