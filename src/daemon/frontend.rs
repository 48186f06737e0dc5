//! The daemon's front door: the router, fed with routes from the apps on disk and the live
//! ports their gears' supervisors report. One watcher thread (`watch.rs`) long-polls every
//! gear's supervisor (`watch`), so a zero-downtime switch reaches the route table at once; the
//! old web process is released once the router has moved over. Idle apps are woken by their first
//! request (held, not redirected), and apps without requests for `idle_after_secs` are idled.
//! Each pass of the refresh loop also looks for OOM kills (`oom.rs`).

use super::metrics::{DaemonCounters, GearCollector, GearSeen};
use super::watch::{Sink, Watcher};
use crate::app::{self, App};
use crate::gear::{control, isolation::network::netns_path, Gear};
use crate::node::events::{self, Event};
use crate::node::Node;
use crate::router::{
    AccessLog, Backend, CertStore, Route, RouteTable, Router, RouterConfig, TrustedProxies, WakeResult, Waker,
};
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the router needs to know of one gear.
#[derive(Debug, Clone, Default)]
struct GearView {
    app: String,
    /// The live web process's address, when it runs.
    live: Option<SocketAddr>,
    /// The supervisor's count of web process restarts, as last seen.
    restarts: Option<u64>,
    /// The supervisor's switch generation `live` was read at: a watcher's older reply (one
    /// sent before a push's `sync_app`) must not move the route back.
    generation: u64,
    /// The supervisor's last status and when it came (None: it does not answer), for the
    /// daemon's index (`index.rs`).
    status: Option<(Arc<serde_json::Value>, Instant)>,
}

struct Front {
    node: Node,
    config_path: PathBuf,
    router: Arc<Router>,
    gears: Mutex<HashMap<String, GearView>>,
    apps: Mutex<Vec<App>>,
    /// The mtime of `apps/` when `apps` was last read.
    apps_stamp: Mutex<Option<std::time::SystemTime>>,
    /// The records as parsed, so a listing parses only the changed ones.
    records: Mutex<app::records::Records>,
    stop: Arc<AtomicBool>,
    certs: Arc<CertStore>,
    /// The configured certificate files the router serves, by host: (cert, key) mtimes.
    cert_files: Mutex<HashMap<String, CertStamp>>,
    /// Follows every gear's supervisor (set once, right after the front is made).
    watcher: std::sync::OnceLock<Watcher>,
    /// Apps the router is waking or woke: (a wake in progress, when it last began or ended).
    /// A wake is activity: automatic idling never idles an app under its wake.
    wakes: Mutex<HashMap<String, (bool, Instant)>>,
    counters: DaemonCounters,
    dashboard: super::dashboard::Dashboard,
}

/// When a host's certificate and key files were last changed.
type CertStamp = (Option<std::time::SystemTime>, Option<std::time::SystemTime>);

impl Front {
    /// Rebuilds the route table from the apps and the gears' live ports.
    fn publish(&self) {
        let apps = self.apps.lock().unwrap().clone();
        let gears = self.gears.lock().unwrap().clone();
        let mut t = RouteTable::default();
        for a in &apps {
            let backends = a
                .gears
                .iter()
                .filter_map(|g| {
                    gears
                        .get(&g.id)
                        .and_then(|v| v.live)
                        .map(|addr| Backend { addr, id: g.id.clone() })
                })
                .collect();
            let hosts = crate::app::domain::hosts(&self.node, a);
            t.add(Route {
                app: a.name.clone(),
                hosts,
                backends,
                https_redirect: a.https_redirect,
            });
        }
        self.router.set_routes(t);
    }

    /// Runs a gearshift CLI verb as a child process (single-threaded: gear spawning needs it).
    fn verb(&self, args: &[&str], limit: Duration) -> Result<()> {
        let mut child = std::process::Command::new("/proc/self/exe")
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("cannot run gearshift")?;
        let t = Instant::now();
        loop {
            if let Some(st) = child.try_wait()? {
                anyhow::ensure!(st.success(), "`gearshift {}` failed ({st})", args.join(" "));
                return Ok(());
            }
            if t.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("`gearshift {}` took longer than {limit:?}", args.join(" "));
            }
            // A wake is held on this: poll finely (a try_wait is one cheap syscall).
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Front {
    /// Loads the configured certificates (`gearshift domain cert`) of every host of `apps` whose
    /// files are new or changed since the last look, and forgets those whose files are gone, so
    /// a running router serves a certificate as soon as it is installed.
    fn load_certs(&self, apps: &[App]) -> Result<()> {
        let mut seen = self.cert_files.lock().unwrap();
        let mut hosts = HashSet::new();
        let mut failed = Vec::new();
        for a in apps {
            for h in crate::app::domain::hosts(&self.node, a) {
                let (cp, kp) = crate::app::domain::cert_paths(&self.node, &a.name, &h);
                let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
                let stamp = (mtime(&cp), mtime(&kp));
                hosts.insert(h.clone());
                if seen.get(&h) == Some(&stamp) {
                    continue;
                }
                seen.insert(h.clone(), stamp);
                match (std::fs::read(&cp), std::fs::read(&kp)) {
                    (Ok(cert), Ok(key)) => {
                        if let Err(e) = self.certs.add_pem(&[h.as_str()], &cert, &key) {
                            failed.push(format!("{h}: {e:#}"));
                        }
                    }
                    _ => self.certs.remove(&h),
                }
            }
        }
        seen.retain(|h, _| {
            let keep = hosts.contains(h);
            if !keep {
                self.certs.remove(h);
            }
            keep
        });
        anyhow::ensure!(
            failed.is_empty(),
            "cannot use the certificate of {} (install a matching PEM certificate and key with `gearshift domain cert`)",
            failed.join("; ")
        );
        Ok(())
    }
}

/// The route feeder, as the rest of the daemon sees it.
#[derive(Clone)]
pub struct Routes(Arc<Front>);

impl Routes {
    /// The app records as the feeder last read them.
    pub fn apps(&self) -> Vec<App> {
        self.0.apps.lock().unwrap().clone()
    }

    /// Whether the route table holds an app named `name`.
    pub fn holds(&self, name: &str) -> bool {
        self.0.apps.lock().unwrap().iter().any(|a| a.name == name)
    }

    /// Puts `app`'s hosts and its gears' live web processes into the route table now (not at
    /// the watchers' pace), so a client told that a push, start or rollback succeeded reaches
    /// the new process with its very next request. An app whose record is gone (destroyed)
    /// leaves the table now: its hosts answer 404 with the next request, not 502 until the
    /// feeder's next pass.
    pub fn sync_app(&self, name: &str) -> Result<()> {
        let front = &self.0;
        crate::names::check_app_name(name)?;
        if !app::path(&front.node, name).exists() {
            front.apps.lock().unwrap().retain(|a| a.name != name);
            front.gears.lock().unwrap().retain(|_, v| v.app != name);
            front.publish();
            return Ok(());
        }
        let a = app::load(&front.node, name)?;
        front.poke(name);
        for g in &a.gears {
            // Bounded: a supervisor that does not answer (frozen) must not hold the client; a
            // slow one whose init runs keeps what the watcher last saw of it.
            let status = control::status_within(&netns_path(&g.netns())).ok();
            if status.is_none() && crate::gear::init_pid(&front.node, g).is_some() {
                continue;
            }
            let generation = status
                .as_ref()
                .and_then(|v| v["status"]["generation"].as_u64())
                .unwrap_or(0);
            let live = status.and_then(|v| {
                let st = &v["status"];
                let port = st["port"].as_u64().filter(|p| *p > 0 && *p < 65536)?;
                st["pid"].as_i64().map(|_| SocketAddr::from((g.ip, port as u16)))
            });
            let mut gears = front.gears.lock().unwrap();
            let v = gears.entry(g.id.clone()).or_default();
            v.app = g.app.clone();
            v.live = live;
            v.generation = generation;
        }
        {
            let mut apps = front.apps.lock().unwrap();
            match apps.iter_mut().find(|x| x.name == a.name) {
                Some(x) => *x = a,
                None => apps.push(a),
            }
        }
        front.publish();
        Ok(())
    }
}

/// A supervisor status the watcher heard this recently is current: a supervisor answers every
/// long poll within 25 s, also when nothing changed, so an older one may be frozen (and is
/// asked again).
const STATUS_CURRENT: Duration = Duration::from_secs(30);

impl Routes {
    /// The app records, read again first when `apps/` changed since they were last read (or
    /// changed within the last 2 s: its mtime is coarser than a rename or two).
    pub fn fresh_apps(&self) -> Result<Vec<App>> {
        let front = &self.0;
        let m = std::fs::metadata(front.node.apps_dir()).and_then(|m| m.modified()).ok();
        let mut held = front.apps.lock().unwrap();
        let mut stamp = front.apps_stamp.lock().unwrap();
        let recent = m.is_none_or(|m| m.elapsed().is_ok_and(|e| e < Duration::from_secs(2)));
        if *stamp != m || m.is_none() || recent {
            *held = front.records.lock().unwrap().list(&front.node)?;
            *stamp = m;
        }
        Ok(held.clone())
    }

    /// The status the watcher last heard from gear `id`'s supervisor, if it is current.
    pub fn known_status(&self, id: &str) -> Option<serde_json::Value> {
        let gears = self.0.gears.lock().unwrap();
        let (st, at) = gears.get(id)?.status.as_ref()?;
        (at.elapsed() < STATUS_CURRENT).then(|| (**st).clone())
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.0.node
    }
}

impl Front {
    /// Looks at `app`'s gears' supervisors again now (it was started, deployed or woken).
    fn poke(&self, app: &str) {
        if let Some(w) = self.watcher.get() {
            w.poke(app);
        }
    }
}

impl Sink for Front {
    fn node(&self) -> &Node {
        &self.node
    }

    fn set_live(&self, gear: &Gear, live: Option<SocketAddr>, generation: Option<u64>) {
        let changed = {
            let mut gears = self.gears.lock().unwrap();
            let v = gears.entry(gear.id.clone()).or_default();
            v.app = gear.app.clone();
            // An unreachable supervisor (stopped, restarting) counts again from 0.
            let current = generation.is_none_or(|g| g >= v.generation);
            let changed = current && v.live != live;
            if current {
                v.live = live;
                v.generation = generation.unwrap_or(0);
            }
            if generation.is_none() {
                v.status = None;
            }
            changed
        };
        if changed {
            self.publish();
        }
    }

    fn status(&self, gear: &Gear, status: &serde_json::Value, seen_restarts: &mut Option<u64>) {
        // The first reply of a gear comes before its `set_live`: the view starts here.
        let mut gears = self.gears.lock().unwrap();
        let v = gears.entry(gear.id.clone()).or_default();
        v.app = gear.app.clone();
        v.restarts = status["restarts"].as_u64();
        v.status = Some((Arc::new(status.clone()), Instant::now()));
        drop(gears);
        note_restarts(&self.node, gear, status, seen_restarts);
    }

    fn in_flight(&self, addr: SocketAddr) -> usize {
        self.router.in_flight(addr)
    }

    fn gone(&self, gear: &Gear) {
        self.gears.lock().unwrap().remove(&gear.id);
        self.publish();
    }

    fn idle(&self, gear: &Gear) -> bool {
        // A wake under way or just done: the record may not say so yet.
        let waking = (self.wakes.lock().unwrap().get(&gear.app))
            .is_some_and(|(now, at)| *now || at.elapsed() < Duration::from_secs(10));
        let apps = self.apps.lock().unwrap();
        !waking && apps.iter().any(|a| a.name == gear.app && a.idle)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Records a `process.crash` event when the supervisor's restart count moved since `seen`
/// (the first look only sets it; a new supervisor starts counting again).
fn note_restarts(node: &Node, gear: &Gear, status: &serde_json::Value, seen: &mut Option<u64>) {
    let Some(now) = status["restarts"].as_u64() else {
        return;
    };
    if let Some(before) = *seen {
        if now > before {
            let owner = app::load(node, &gear.app).ok().and_then(|a| a.owner);
            let e = Event::new("process.crash", "gearshift").app(&gear.app, owner.as_deref());
            events::record(
                node,
                e.detail(serde_json::json!({
                    "gear": gear.index, "process": "web", "last_exit": status["last_exit"],
                    "restarts": now, "state": status["state"],
                })),
            );
        }
    }
    *seen = Some(now);
}

/// Wakes idle apps (and stopped ones where `wake_stopped` is set) for the router.
struct GearWaker(Mutex<Option<Arc<Front>>>);

impl Waker for GearWaker {
    fn wake(&self, app_name: &str, deadline: Instant) -> WakeResult {
        let Some(front) = self.0.lock().unwrap().clone() else {
            return WakeResult::NotRunning;
        };
        let Ok(a) = app::load(&front.node, app_name) else {
            return WakeResult::NotRunning;
        };
        if !a.idle && !front.node.config.wake_stopped {
            return WakeResult::NotRunning;
        }
        let limit = deadline.saturating_duration_since(Instant::now());
        let t = Instant::now();
        front.wakes.lock().unwrap().insert(app_name.to_string(), (true, t));
        let woke = front.verb(&["app", "start", app_name], limit);
        front
            .wakes
            .lock()
            .unwrap()
            .insert(app_name.to_string(), (false, Instant::now()));
        front.counters.wake(app_name, woke.is_ok(), t.elapsed());
        let e = Event::new("app.wake", "gearshift").app(app_name, a.owner.as_deref());
        let detail = match &woke {
            Ok(()) => serde_json::json!({"result": "ok", "ms": t.elapsed().as_millis() as u64}),
            Err(err) => serde_json::json!({"result": "failed", "error": format!("{err:#}")}),
        };
        events::record(&front.node, e.detail(detail));
        if woke.is_err() {
            return WakeResult::TimedOut;
        }
        front.poke(app_name);
        let mut backends = Vec::new();
        for g in &a.gears {
            if let Ok(v) = control::command(&netns_path(&g.netns()), "status") {
                if let Some(p) = v["status"]["port"].as_u64().filter(|p| *p > 0 && *p < 65536) {
                    backends.push(Backend {
                        addr: SocketAddr::from((g.ip, p as u16)),
                        id: g.id.clone(),
                    });
                }
            }
        }
        if backends.is_empty() {
            WakeResult::TimedOut
        } else {
            WakeResult::Ready(backends)
        }
    }
}

/// Per-app access logs under `<data_root>/logs/access/APP.log` (root only: 0640 in 0750
/// directories; they hold clients' addresses and query strings).
struct Access {
    dir: PathBuf,
    files: Mutex<HashMap<String, std::fs::File>>,
}

impl AccessLog for Access {
    fn log(&self, app: &str, line: &str) {
        let name = if app.is_empty() { "_unknown" } else { app };
        let mut files = self.files.lock().unwrap();
        if !files.contains_key(name) {
            let _ = crate::state::log_dir(&self.dir);
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(self.dir.join(format!("{name}.log")))
            {
                Ok(f) => {
                    files.insert(name.to_string(), f);
                }
                Err(_) => return,
            }
        }
        if let Some(f) = files.get_mut(name) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// How often the app records are read again although neither `apps/` nor `certs/` changed: a
/// change within the same timestamp as the last read would otherwise wait for the next one.
const FULL_PASS: Duration = Duration::from_secs(30);

/// Keeps the app list and the watcher's gears in step with the apps on disk, and idles apps
/// without requests. The records are read only when `apps/` or `certs/` changed (every record
/// and certificate is written by a rename there, which updates the directory's mtime), so a
/// node of 500 quiet apps reads none of them between changes; a new app, alias or certificate
/// is served within 100 ms.
fn refresh_loop(front: Arc<Front>) {
    let mut oom = super::oom::OomWatch::default();
    let mut sampled: Option<Instant> = None;
    // per app: request count, live web processes, and when either last changed
    let mut last_seen: HashMap<String, (u64, Vec<Option<SocketAddr>>, Instant)> = HashMap::new();
    let certs_dir = front.node.root().join("certs");
    let mtime = || {
        let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        (m(&front.node.apps_dir()), m(&certs_dir))
    };
    let mut read_at = None;
    let mut followed: HashSet<String> = HashSet::new();
    while !front.stop.load(Ordering::Relaxed) {
        // Taken before reading, so a change made while this pass reads is seen by the next one.
        let seen = mtime();
        let full = read_at
            .as_ref()
            .is_none_or(|(_, at): &(_, Instant)| at.elapsed() > FULL_PASS);
        let stale = full || read_at.as_ref().is_some_and(|(m, _)| *m != seen);
        if stale {
            if full {
                front.records.lock().unwrap().forget();
            }
            // Listed under the lock, so an app put in by `Routes::sync_app` meanwhile is not
            // dropped by a list read before it.
            let listed = {
                let mut held = front.apps.lock().unwrap();
                let listed = front.records.lock().unwrap().list(&front.node);
                listed.inspect(|apps| {
                    *held = apps.clone();
                    *front.apps_stamp.lock().unwrap() = seen.0;
                })
            };
            if let Ok(apps) = listed {
                read_at = Some((seen, Instant::now()));
                let gears: Vec<Gear> = apps.iter().flat_map(|a| a.gears.iter().cloned()).collect();
                let ids: HashSet<String> = gears.iter().map(|g| g.id.clone()).collect();
                if ids != followed {
                    if let Some(w) = front.watcher.get() {
                        w.set_gears(gears);
                    }
                    followed = ids;
                }
                // A record changed: an app started by a command that did not pass through the
                // daemon is looked at now, not after its gears' pause.
                for a in apps.iter().filter(|a| !a.idle) {
                    front.poke(&a.name);
                }
                front.publish();
                if let Err(e) = front.load_certs(&apps) {
                    eprintln!("gearshift daemon: {e:#}");
                }
            }
        }
        {
            let apps = front.apps.lock().unwrap().clone();
            oom.check(&front.node, &apps);
            if sampled.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(60)) {
                front.dashboard.sample(&apps, &front.router.stats().requests_by_app);
                sampled = Some(Instant::now());
            }
        }
        let idle_after = front.node.config.idle_after_secs;
        if idle_after > 0 {
            let stats = front.router.stats();
            let apps: Vec<(String, Option<String>)> = (front.apps.lock().unwrap().iter())
                .filter(|a| !a.idle)
                .map(|a| (a.name.clone(), a.owner.clone()))
                .collect();
            let mut live_of: HashMap<String, Vec<Option<SocketAddr>>> = HashMap::new();
            for v in front.gears.lock().unwrap().values() {
                live_of.entry(v.app.clone()).or_default().push(v.live);
            }
            let wakes = front.wakes.lock().unwrap().clone();
            for (name, owner) in &apps {
                // Activity: a request, a wake (under way, or since the last look), or a change
                // of the live web processes (a deploy, a start). A push in progress refuses the
                // idle (it is retried later).
                let count = stats.requests_by_app.get(name).copied().unwrap_or(0);
                let mut live = live_of.remove(name).unwrap_or_default();
                live.sort();
                let entry = last_seen
                    .entry(name.clone())
                    .or_insert_with(|| (count, live.clone(), Instant::now()));
                let woken = wakes.get(name).is_some_and(|(now, at)| *now || *at > entry.2);
                if entry.0 != count || entry.1 != live || woken {
                    *entry = (count, live, Instant::now());
                } else if entry.2.elapsed() > Duration::from_secs(idle_after) {
                    if front.verb(&["app", "idle", name], Duration::from_secs(30)).is_ok() {
                        let e = Event::new("app.idle", "gearshift").app(name, owner.as_deref());
                        events::record(
                            &front.node,
                            e.detail(serde_json::json!({"idle_after_secs": idle_after})),
                        );
                    }
                    entry.2 = Instant::now();
                }
            }
        }
        for _ in 0..20 {
            if front.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
            if mtime() != seen {
                break;
            }
        }
    }
}

fn listen(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} (another service on that port?)"))
}

/// The gears of the apps the daemon knows, with their supervisors' restart counts.
fn gears_seen(front: &Front) -> Vec<GearSeen> {
    let views = front.gears.lock().unwrap().clone();
    let apps = front.apps.lock().unwrap();
    apps.iter()
        .flat_map(|a| a.gears.iter())
        .map(|g| GearSeen {
            gear: g.clone(),
            restarts: views.get(&g.id).and_then(|v| v.restarts),
        })
        .collect()
}

/// The dashboard's page (`/`) and the JSON it polls (`/dashboard.json`), on the admin port.
fn dashboard_pages(front: std::sync::Weak<Front>) -> crate::router::AdminPages {
    Arc::new(move |path: &str| {
        let page = |content_type, body: Vec<u8>| Some(crate::router::AdminPage { content_type, body });
        match path.split('?').next().unwrap_or("") {
            "/" | "/dashboard" => page("text/html; charset=utf-8", super::dashboard::PAGE.as_bytes().to_vec()),
            "/dashboard.json" => {
                let f = front.upgrade()?;
                let apps = f.apps.lock().unwrap().clone();
                let v = f.dashboard.json(&apps, &f.router.stats().requests_by_app);
                page("application/json", v.to_string().into_bytes())
            }
            _ => None,
        }
    })
}

/// Starts the router on the node's HTTP, HTTPS and admin ports, and its feeders; the admin
/// port's `/metrics` carries the gears' series and `counters`.
pub fn start(
    node: &Node,
    config_path: &std::path::Path,
    stop: Arc<AtomicBool>,
    counters: DaemonCounters,
) -> Result<(Arc<Router>, Routes)> {
    let c = &node.config;
    let cfg = RouterConfig {
        https_port: c.https_port,
        trusted_proxies: TrustedProxies::parse(&c.router.trusted_proxies).map_err(anyhow::Error::msg)?,
        max_connections_per_ip: c.router.max_connections_per_ip,
        max_connections_per_app: c.router.max_connections_per_app,
        ..RouterConfig::default()
    };
    let waker = Arc::new(GearWaker(Mutex::new(None)));
    let access = Arc::new(Access {
        dir: node.root().join("logs/access"),
        files: Mutex::new(HashMap::new()),
    });
    let router = Arc::new(Router::new(cfg, waker.clone(), access));
    let certs = Arc::new(CertStore::new());
    let front = Arc::new(Front {
        node: node.clone(),
        config_path: config_path.to_path_buf(),
        router: router.clone(),
        gears: Mutex::new(HashMap::new()),
        apps: Mutex::new(Vec::new()),
        apps_stamp: Mutex::new(None),
        records: Mutex::new(app::records::Records::default()),
        stop,
        certs: certs.clone(),
        cert_files: Mutex::new(HashMap::new()),
        watcher: std::sync::OnceLock::new(),
        wakes: Mutex::new(HashMap::new()),
        counters: counters.clone(),
        dashboard: super::dashboard::Dashboard::new(node.clone()),
    });
    let sink: Arc<dyn Sink> = front.clone();
    let _ = front
        .watcher
        .set(Watcher::start(sink).context("cannot start the gears' watcher")?);
    front.load_certs(&app::list(node)?)?;
    *waker.0.lock().unwrap() = Some(front.clone());
    router.serve_http(listen(SocketAddr::from(([0, 0, 0, 0], c.http_port)))?);
    router.serve_https(listen(SocketAddr::from(([0, 0, 0, 0], c.https_port)))?, certs)?;
    let mut registry = prometheus_client::registry::Registry::default();
    counters.register(&mut registry);
    let weak = Arc::downgrade(&front);
    let list = Box::new(move || weak.upgrade().map(|f| gears_seen(&f)).unwrap_or_default());
    let gears = GearCollector::new(node.clone(), list).context("cannot start the gears' sampler")?;
    registry.register_collector(Box::new(gears));
    router.serve_admin(
        listen(SocketAddr::from(([127, 0, 0, 1], c.admin_port)))?,
        registry,
        Some(dashboard_pages(Arc::downgrade(&front))),
        public_admin(node)?,
    )?;
    let routes = Routes(front.clone());
    std::thread::Builder::new()
        .name("routes".into())
        .spawn(move || refresh_loop(front))?;
    Ok((router, routes))
}

/// The exposed admin listener (`admin_listen`), if set.
fn public_admin(node: &Node) -> Result<Option<crate::router::PublicAdmin>> {
    let Some((addr, tls, hash)) = admin_settings(node)? else {
        return Ok(None);
    };
    let listener = listen(addr)?;
    Ok(Some(crate::router::PublicAdmin {
        listener,
        tls,
        allows: Arc::new(move |auth| crate::node::admin_login::allows(&hash, auth)),
    }))
}

/// What the exposed admin listener needs (address, TLS, the login's hash), if `admin_listen` is
/// set; an error saying what is missing otherwise (the daemon checks before it starts anything).
pub fn admin_settings(node: &Node) -> Result<Option<(SocketAddr, Arc<rustls::ServerConfig>, String)>> {
    use crate::node::admin_login;
    let c = &node.config;
    let Some(addr) = c.admin_listen_addr()? else {
        return Ok(None);
    };
    let Some(host) = &c.admin_host else {
        anyhow::bail!("admin_listen is set but admin_host is not: name the host its TLS certificate is for");
    };
    let pem = admin_login::cert_path(node);
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(&pem) {
        if m.uid() != 0 || m.mode() & 0o077 != 0 {
            anyhow::bail!(
                "{} holds the admin port's private key but others may read or change it: chown root and chmod 600 it",
                pem.display()
            );
        }
    }
    let bundle = std::fs::read(&pem).with_context(|| {
        format!(
            "admin_listen is set but there is no TLS certificate for {host}: put its chain and key (PEM) in {} (mode 0600)",
            pem.display()
        )
    })?;
    let tls = crate::router::admin_tls(&bundle, host).with_context(|| format!("cannot use {}", pem.display()))?;
    let hash = admin_login::load(node)?;
    Ok(Some((addr, tls, hash)))
}
