//! The node's series on the admin port's `/metrics`, beside the router's: per gear what the
//! kernel counts (cgroup cpu, memory, OOM kills, pids; quota; the host veth) and the
//! supervisor's restarts; per app the daemon's own counters (deploys by result, wakes and how
//! long they took).
//!
//! A scrape reads no gear's files: it formats the last sample, which a thread of its own takes
//! at most once every [`SAMPLE_EVERY`], and only while someone scrapes (until [`SAMPLE_WHILE`]
//! after the last scrape; then it sleeps until the next one). So a scrape costs the formatting of
//! its series whatever the number of gears, and a node nobody scrapes reads nothing. The first
//! scrape after such a quiet spell waits for one fresh sample rather than serve old values.
//! Disk usage, the one costly reading (a `btrfs qgroup show --sync`, or a walk of the home), is
//! read apart: a sample that finds it older than [`DISK_TTL`] starts one background refresh and
//! keeps what was read before (nothing, the first time).

use crate::gear::isolation::{cgroup::GearCgroup, quota};
use crate::gear::Gear;
use crate::node::Node;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a gear's disk usage is reused before it is read again.
pub const DISK_TTL: Duration = Duration::from_secs(60);
/// The gears are sampled at most this often.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Sampling goes on this long after the last scrape (Prometheus' default interval is a minute).
pub const SAMPLE_WHILE: Duration = Duration::from_secs(90);
/// How long the first scrape after a quiet spell waits for its fresh sample.
const FIRST_WAIT: Duration = Duration::from_secs(3);

/// Disk usage by gear id, with when it was read.
type DiskCache = HashMap<String, (Instant, Option<quota::Usage>)>;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn wake_histogram() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// The daemon's own counters (cheap to clone: the families are shared).
#[derive(Clone)]
pub struct DaemonCounters {
    deploys: Family<Labels, Counter>,
    wakes: Family<Labels, Counter>,
    wake_seconds: Histograms,
}

impl DaemonCounters {
    pub fn new() -> DaemonCounters {
        DaemonCounters {
            deploys: Family::default(),
            wakes: Family::default(),
            wake_seconds: Family::new_with_constructor(wake_histogram),
        }
    }

    /// A push to `app` ended: `result` is `deployed` or `failed`.
    pub fn deploy(&self, app: &str, result: &str) {
        let labels = vec![("app", app.to_string()), ("result", result.to_string())];
        self.deploys.get_or_create(&labels).inc();
    }

    /// A request woke `app` (or failed to) after `took`.
    pub fn wake(&self, app: &str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "failed" };
        self.wakes
            .get_or_create(&vec![("app", app.to_string()), ("result", result.to_string())])
            .inc();
        if ok {
            self.wake_seconds
                .get_or_create(&vec![("app", app.to_string())])
                .observe(took.as_secs_f64());
        }
    }

    /// Puts the counters into `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "gearshift_app_deploys",
            "Pushes that ended, by app and result",
            self.deploys.clone(),
        );
        r.register(
            "gearshift_app_wakes",
            "Idle apps woken by a request, by app and result",
            self.wakes.clone(),
        );
        r.register(
            "gearshift_app_wake_duration_seconds",
            "Time from the first request to an idle app until it answered, by app",
            self.wake_seconds.clone(),
        );
    }
}

/// One gear as the collector sees it: the record and the supervisor's restart count.
#[derive(Debug, Clone)]
pub struct GearSeen {
    pub gear: Gear,
    /// Web process restarts the gear's supervisor counted since it started (None: not known).
    pub restarts: Option<u64>,
}

/// The gears to read at a scrape.
pub type GearList = Box<dyn Fn() -> Vec<GearSeen> + Send + Sync>;

/// Serves the gears' series from the sampler's last sample.
pub struct GearCollector(Arc<Sampler>);

impl std::fmt::Debug for GearCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GearCollector").finish_non_exhaustive()
    }
}

/// Reads every gear's counters, in its own thread, while someone scrapes.
struct Sampler {
    node: Node,
    gears: GearList,
    disk: Arc<Mutex<DiskCache>>,
    /// A background disk refresh runs.
    refreshing: Arc<AtomicBool>,
    taken: Mutex<Taken>,
    /// Rung when a scrape wakes the sampler and when a sample is taken.
    rung: Condvar,
}

/// The last sample, and when it was taken and last asked for.
#[derive(Default)]
struct Taken {
    samples: Arc<Vec<Sample>>,
    at: Option<Instant>,
    asked: Option<Instant>,
}

impl Taken {
    /// Whether the sampler is (still) at work: someone scraped within [`SAMPLE_WHILE`].
    fn wanted(&self) -> bool {
        self.asked.is_some_and(|a| a.elapsed() < SAMPLE_WHILE)
    }
}

/// One gear's values at one scrape.
struct Sample {
    labels: [(&'static str, String); 2],
    cpu_seconds: f64,
    memory: u64,
    memory_limit: u64,
    oom_kills: u64,
    pids: u64,
    disk: Option<quota::Usage>,
    rx: Option<u64>,
    tx: Option<u64>,
    restarts: Option<u64>,
}

impl GearCollector {
    /// Starts the sampler thread (asleep until the first scrape).
    pub fn new(node: Node, gears: GearList) -> std::io::Result<GearCollector> {
        let sampler = Arc::new(Sampler {
            node,
            gears,
            disk: Arc::new(Mutex::new(HashMap::new())),
            refreshing: Arc::new(AtomicBool::new(false)),
            taken: Mutex::new(Taken::default()),
            rung: Condvar::new(),
        });
        let s = sampler.clone();
        std::thread::Builder::new()
            .name("gear-sampler".into())
            .spawn(move || s.run())?;
        Ok(GearCollector(sampler))
    }

    /// The last sample; wakes the sampler, and waits for a fresh sample when the last one is
    /// older than a sampling spell (or there is none).
    fn samples(&self) -> Arc<Vec<Sample>> {
        let s = &self.0;
        let now = Instant::now();
        let mut t = s.lock();
        if !t.wanted() {
            s.rung.notify_all();
        }
        t.asked = Some(now);
        if t.at.is_none_or(|at| at.elapsed() > SAMPLE_WHILE) {
            t = (s.rung)
                .wait_timeout_while(t, FIRST_WAIT, |t| t.at.is_none_or(|at| at < now))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        t.samples.clone()
    }
}

impl Sampler {
    fn lock(&self) -> MutexGuard<'_, Taken> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Samples every [`SAMPLE_EVERY`] while someone scrapes; sleeps otherwise.
    fn run(&self) {
        loop {
            {
                let mut t = self.lock();
                while !t.wanted() {
                    t = self.rung.wait(t).unwrap_or_else(|e| e.into_inner());
                }
            }
            let samples = Arc::new(self.read());
            {
                let mut t = self.lock();
                t.samples = samples;
                t.at = Some(Instant::now());
            }
            self.rung.notify_all();
            std::thread::sleep(SAMPLE_EVERY);
        }
    }

    /// Reads the disk usage of `stale` gears in a thread of its own (one such thread at a time).
    fn refresh_disk(&self, stale: Vec<Gear>) {
        if stale.is_empty() || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (node, disk, refreshing) = (self.node.clone(), self.disk.clone(), self.refreshing.clone());
        let spawned = std::thread::Builder::new().name("disk-usage".into()).spawn(move || {
            // All at once: on btrfs one `btrfs qgroup show`, not two processes per gear.
            let ids: Vec<(&str, u32)> = stale.iter().map(|g| (g.id.as_str(), g.uid)).collect();
            let mut usages = quota::usages(&node, &ids);
            let mut d = disk.lock().unwrap_or_else(|e| e.into_inner());
            for g in stale {
                let u = usages.remove(&g.id);
                d.insert(g.id, (Instant::now(), u));
            }
            refreshing.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.refreshing.store(false, Ordering::Release);
        }
    }

    /// Every gear's values now.
    fn read(&self) -> Vec<Sample> {
        let parents: Vec<PathBuf> = self.node.state().map(|s| s.cgroup_parents).unwrap_or_default();
        let gears = (self.gears)();
        let disk: DiskCache = {
            let mut d = self.disk.lock().unwrap_or_else(|e| e.into_inner());
            let ids: std::collections::HashSet<&str> = gears.iter().map(|g| g.gear.id.as_str()).collect();
            d.retain(|id, _| ids.contains(id.as_str()));
            d.clone()
        };
        let stale = (gears.iter())
            .filter(|g| disk.get(&g.gear.id).is_none_or(|(at, _)| at.elapsed() > DISK_TTL))
            .map(|g| g.gear.clone())
            .collect();
        self.refresh_disk(stale);
        gears
            .into_iter()
            .map(|GearSeen { gear: g, restarts }| {
                let s = GearCgroup::new(&parents, &g.cgroup_name()).stats();
                let stat = |f: &str| -> Option<u64> {
                    let p = format!("/sys/class/net/{}/statistics/{f}", g.veth_host());
                    std::fs::read_to_string(p).ok()?.trim().parse().ok()
                };
                Sample {
                    labels: [("app", g.app.clone()), ("gear", g.index.to_string())],
                    cpu_seconds: s.cpu_usage_usec as f64 / 1e6,
                    memory: s.memory_bytes,
                    memory_limit: s.memory_limit,
                    oom_kills: s.oom_kills,
                    pids: s.pids,
                    disk: disk.get(&g.id).and_then(|d| d.1),
                    // What leaves the host end goes into the gear.
                    rx: stat("tx_bytes"),
                    tx: stat("rx_bytes"),
                    restarts,
                }
            })
            .collect()
    }
}

impl Collector for GearCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let samples = self.samples();
        let samples = samples.as_slice();
        type Get = fn(&Sample) -> Option<u64>;
        let counters: [(&str, &str, Get); 4] = [
            (
                "gearshift_gear_oom_kills",
                "Processes the kernel killed for memory",
                |s| Some(s.oom_kills),
            ),
            ("gearshift_gear_network_receive_bytes", "Bytes the gear received", |s| {
                s.rx
            }),
            ("gearshift_gear_network_transmit_bytes", "Bytes the gear sent", |s| s.tx),
            (
                "gearshift_gear_process_restarts",
                "Web process restarts by the gear's supervisor since it started",
                |s| s.restarts,
            ),
        ];
        let mut m = enc.encode_descriptor(
            "gearshift_gear_cpu_seconds",
            "CPU time the gear's processes used",
            None,
            MetricType::Counter,
        )?;
        for s in samples {
            ConstCounter::new(s.cpu_seconds).encode(m.encode_family(&s.labels)?)?;
        }
        for (name, help, get) in counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in samples {
                if let Some(v) = get(s) {
                    ConstCounter::new(v).encode(m.encode_family(&s.labels)?)?;
                }
            }
        }
        let gauges: [(&str, &str, Get); 5] = [
            ("gearshift_gear_memory_bytes", "Memory the gear uses now", |s| {
                Some(s.memory)
            }),
            ("gearshift_gear_memory_limit_bytes", "The gear's memory limit", |s| {
                Some(s.memory_limit)
            }),
            ("gearshift_gear_pids", "Processes and threads in the gear now", |s| {
                Some(s.pids)
            }),
            ("gearshift_gear_disk_bytes", "Disk the gear's home uses", |s| {
                s.disk.map(|d| d.bytes)
            }),
            ("gearshift_gear_disk_limit_bytes", "The gear's disk quota", |s| {
                s.disk.and_then(|d| d.limit_bytes)
            }),
        ];
        for (name, help, get) in gauges {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in samples {
                if let Some(v) = get(s) {
                    ConstGauge::new(v as i64).encode(m.encode_family(&s.labels)?)?;
                }
            }
        }
        Ok(())
    }
}
