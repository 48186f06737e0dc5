//! The node heals what breaks under its running gears, without a daemon restart. One thread,
//! every [`EVERY`], compares the node's network (the bridge up with the gateway address, the
//! nftables table with every rule of its chains) and every gear that should run (its init
//! alive; its veth on the bridge and up; its address and default route; its token bucket) with
//! what they should be, by cheap reads only: sysfs and /proc per gear, one `nft` and one `tc`
//! listing per pass. What differs in two looks [`CONFIRM`] apart (a gear being created, woken
//! or idled only passes through such a state; the second look and the repair hold the node
//! lock, as `app scale` and `app destroy` do) is repaired by the daemon start's own repair,
//! `gearshift node up` (a child process: starting a gear's init needs a single-threaded
//! process), and each finding is recorded as a `node.repair` event with what became of it.

use crate::addon;
use crate::app::App;
use crate::gear::{self, isolation::network, Gear};
use crate::node::events::{self, Event};
use crate::node::Node;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the node is compared with what it should be.
pub const EVERY: Duration = Duration::from_secs(3);
/// How long after a first look a finding is looked at again before it is repaired.
const CONFIRM: Duration = Duration::from_millis(500);
/// The longest a repair (`node up`) may take.
const REPAIR_LIMIT: Duration = Duration::from_secs(120);

/// One thing that differs from what it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The app (or add-on) whose gear it concerns, with its owner; None: the node's own.
    pub app: Option<(String, Option<String>)>,
    /// What differs, for people.
    pub what: String,
}

/// What the reconciler needs of the rest of the daemon.
pub struct Hooks {
    /// The apps as the daemon last read them (no file is read for a pass that finds nothing).
    pub apps: Box<dyn Fn() -> Vec<App> + Send>,
    /// Called for each app after a repair touched it (its routes are read again).
    pub repaired: Box<dyn Fn(&str) + Send>,
}

/// Starts the reconciler's thread; it ends with `stop`.
pub fn start(node: Node, config_path: PathBuf, stop: Arc<AtomicBool>, hooks: Hooks) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("reconcile".into())
        .spawn(move || run(&node, &config_path, &stop, &hooks))
        .map(drop)
}

fn run(node: &Node, config_path: &std::path::Path, stop: &AtomicBool, hooks: &Hooks) {
    let mut next = Instant::now() + EVERY;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        next = Instant::now() + EVERY;
        let apps = (hooks.apps)();
        finish_changes(node, &apps);
        let first = survey(node, &apps);
        if first.is_empty() {
            continue;
        }
        std::thread::sleep(CONFIRM);
        // Under the node lock, which `app scale` and `app destroy` hold while they add and
        // remove gears: a gear they are making or taking away is not started again.
        let Ok(lock) = node.lock() else { continue };
        // The records as they are now: an app destroyed or idled meanwhile is not repaired.
        let Ok(apps) = crate::app::list(node) else { continue };
        let confirmed: Vec<Finding> = survey(node, &apps).into_iter().filter(|f| first.contains(f)).collect();
        if confirmed.is_empty() {
            continue;
        }
        for f in &confirmed {
            eprintln!("gearshift daemon: repairing: {}", line(f));
        }
        let repair = repair(config_path);
        let after = crate::app::list(node)
            .map(|apps| survey(node, &apps))
            .unwrap_or_default();
        for f in &confirmed {
            let result = match (&repair, after.contains(f)) {
                (Ok(()), false) => serde_json::json!({"found": f.what, "result": "repaired"}),
                (Ok(()), true) => serde_json::json!({"found": f.what, "result": "still wrong after `node up`"}),
                (Err(e), _) => serde_json::json!({"found": f.what, "result": "not repaired", "error": e}),
            };
            let mut e = Event::new("node.repair", "gearshift");
            if let Some((app, owner)) = &f.app {
                e = e.app(app, owner.as_deref());
            }
            events::record(node, e.detail(result));
        }
        drop(lock);
        let mut touched: Vec<&str> = confirmed
            .iter()
            .filter_map(|f| f.app.as_ref().map(|a| a.0.as_str()))
            .collect();
        touched.dedup();
        for app in touched {
            (hooks.repaired)(app);
        }
        if confirmed.iter().any(|f| f.app.is_none()) {
            for a in &apps {
                (hooks.repaired)(&a.name);
            }
        }
    }
}

/// Finishes the changes of an app's environment or formation whose command died on the way
/// (`app/apply.rs`), each recorded as a `node.repair` event.
fn finish_changes(node: &Node, apps: &[App]) {
    for a in apps.iter().filter(|a| a.applying.is_some()) {
        let found = "a change of its environment or formation was interrupted";
        let result = match crate::app::apply::finish(node, &a.name) {
            Ok(false) => continue,
            Ok(true) => serde_json::json!({"found": found, "result": "repaired"}),
            Err(e) => serde_json::json!({"found": found, "result": "put back", "error": format!("{e:#}")}),
        };
        eprintln!("gearshift daemon: '{}': {found}: {}", a.name, result["result"]);
        events::record(
            node,
            Event::new("node.repair", "gearshift")
                .app(&a.name, a.owner.as_deref())
                .detail(result),
        );
    }
}

fn line(f: &Finding) -> String {
    match &f.app {
        Some((app, _)) => format!("'{app}': {}", f.what),
        None => f.what.clone(),
    }
}

/// Runs the daemon start's repair, `gearshift node up`, and waits for it (Err: why it failed).
fn repair(config_path: &std::path::Path) -> Result<(), String> {
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg("--config")
        .arg(config_path)
        .args(["node", "up"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run `gearshift node up`: {e}"))?;
    let t = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("`gearshift node up` failed ({st}); see the daemon's log")),
            Ok(None) if t.elapsed() > REPAIR_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`gearshift node up` took longer than {REPAIR_LIMIT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for `gearshift node up`: {e}")),
        }
    }
}

/// What differs now: the node's network, then every gear that should run (the gears of apps
/// neither idle nor being created, and of every add-on).
pub fn survey(node: &Node, apps: &[App]) -> Vec<Finding> {
    let mut found: Vec<Finding> = network::node_drift(&network::NodeNet::from_config(&node.config))
        .into_iter()
        .map(|what| Finding { app: None, what })
        .collect();
    let mut gears: Vec<(&Gear, Option<String>)> = apps
        .iter()
        .filter(|a| !a.idle && a.status != "creating")
        .flat_map(|a| a.gears.iter().map(|g| (g, a.owner.clone())))
        .collect();
    let addons = addon::list(node).unwrap_or_default();
    gears.extend(
        addons
            .iter()
            .filter(|a| a.status != "creating")
            .flat_map(|a| a.gears.first().map(|g| (g, a.owner.clone()))),
    );
    let limited = gears.iter().any(|(g, _)| {
        node.config
            .profile(&g.profile)
            .is_ok_and(|p| p.limits().is_ok_and(|l| l.bandwidth_kbit > 0))
    });
    // Only a bandwidth-limited gear needs the host's token buckets listed.
    let shaped = limited.then(|| gear::isolation::tc::shaped_devices().ok()).flatten();
    for (g, owner) in gears {
        let what = gear::drift(node, g, shaped.as_ref()).unwrap_or_else(|e| vec![format!("{e:#}")]);
        found.extend(what.into_iter().map(|w| Finding {
            app: Some((g.app.clone(), owner.clone())),
            what: format!("gear {}: {w}", g.index),
        }));
    }
    found
}
