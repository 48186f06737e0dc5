//! An app's one state, computed from what its gears' supervisors report (never from the
//! record alone, which only knows the app was created): what `app list`, `app show` and
//! `app status` print, and whether the app is serving.

use super::App;
use crate::gear::{layout, Gear};
use crate::node::Node;

/// What an app is doing, as users see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppState {
    /// The record is not complete yet (`creating`).
    Creating(String),
    /// Created, nothing pushed yet.
    NeverDeployed,
    /// A push is building or switching, and nothing serves yet.
    Building,
    /// Every gear's web process runs.
    Running,
    /// Some gears run, the others do not.
    Partial { up: usize, of: usize },
    /// The web process keeps exiting; the supervisor restarts it with a backoff.
    Crashed { restarts: u64, last_exit: Option<String> },
    /// No processes; the next request wakes it.
    Idle,
    /// Stopped (by `app stop`, or the gears are down).
    Stopped,
    /// A gear's init runs but its supervisor does not answer (frozen, overloaded), and no gear
    /// serves.
    Unreachable,
}

impl AppState {
    /// Whether requests get an answer (an idle app wakes on its next request).
    pub fn serving(&self) -> bool {
        matches!(self, AppState::Running | AppState::Partial { .. } | AppState::Idle)
    }
}

impl std::fmt::Display for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppState::Creating(s) => write!(f, "{s}"),
            AppState::NeverDeployed => write!(f, "never deployed"),
            AppState::Building => write!(f, "building"),
            AppState::Running => write!(f, "running"),
            AppState::Partial { up, of } => write!(f, "partial ({up} of {of} gears)"),
            AppState::Crashed { restarts, last_exit } => {
                write!(f, "crashed (restarts {restarts}")?;
                if let Some(e) = last_exit {
                    write!(f, ", last exit {}", e.strip_prefix("exit code ").unwrap_or(e))?;
                }
                write!(f, ")")
            }
            AppState::Idle => write!(f, "idle"),
            AppState::Stopped => write!(f, "stopped"),
            AppState::Unreachable => write!(f, "not answering"),
        }
    }
}

/// Crashes in a row after which a web process just restarted is counted as crash-looping, not
/// running, until it has been up for [`LOOP_CLEARS_AFTER`] seconds (the supervisor's own rule).
const LOOP_STREAK: u64 = 2;
const LOOP_CLEARS_AFTER: u64 = 60;

/// The state from the record's `status`, whether a deployment was ever made live, the idle
/// flag, and each gear's supervisor status (`{"state", "since", "restarts", "streak",
/// "last_exit"}`) at unix time `now`.
pub fn compute(record_status: &str, deployed: bool, idle: bool, gears: &[serde_json::Value], now: u64) -> AppState {
    if record_status != "ready" {
        return AppState::Creating(record_status.to_string());
    }
    let state = |g: &serde_json::Value| {
        let s = g["state"].as_str().unwrap_or("down");
        // A process restarted in a crash loop runs only until it exits again.
        let looping = g["streak"].as_u64().unwrap_or(0) >= LOOP_STREAK
            && now.saturating_sub(g["since"].as_u64().unwrap_or(0)) < LOOP_CLEARS_AFTER;
        if s == "running" && looping {
            "crash-looping".to_string()
        } else {
            s.to_string()
        }
    };
    let up = gears.iter().filter(|g| state(g) == "running").count();
    if up > 0 {
        return if up == gears.len() {
            AppState::Running
        } else {
            AppState::Partial { up, of: gears.len() }
        };
    }
    if !deployed {
        return AppState::NeverDeployed;
    }
    if let Some(g) = gears
        .iter()
        .filter(|g| matches!(state(g).as_str(), "crashed" | "crash-looping"))
        .max_by_key(|g| g["restarts"].as_u64().unwrap_or(0))
    {
        return AppState::Crashed {
            restarts: g["restarts"].as_u64().unwrap_or(0),
            last_exit: g["last_exit"].as_str().map(String::from),
        };
    }
    if !idle && gears.iter().any(|g| state(g) == "unreachable") {
        return AppState::Unreachable;
    }
    if idle || (!gears.is_empty() && gears.iter().all(|g| state(g) == "idle")) {
        return AppState::Idle;
    }
    AppState::Stopped
}

/// Whether a deployment was ever made live in gear `g` (its repo is a link into a deployment).
pub fn deployed(node: &Node, g: &Gear) -> bool {
    std::fs::symlink_metadata(g.home(node).join(layout::REPO)).is_ok_and(|m| m.file_type().is_symlink())
}

/// `state`, unless a push is in progress and nothing serves: then the app is building.
pub fn with_push(state: AppState, pushing: bool) -> AppState {
    if pushing && !state.serving() && !matches!(state, AppState::Creating(_)) {
        AppState::Building
    } else {
        state
    }
}

/// Whether a push to the app is in progress (it holds the host-side push lock).
pub fn pushing(node: &Node, app: &str) -> bool {
    matches!(
        crate::state::Lock::try_exclusive(&super::push_lock(node, app)),
        Ok(None)
    )
}

/// The state of `app`, asking each gear's supervisor; also returns their statuses.
pub fn of(node: &Node, app: &App) -> (AppState, Vec<serde_json::Value>) {
    let s = seen(node, app, &|_| None);
    (s.state(), s.gears)
}

/// One app and everything its state is computed from: what `app list` and `gearshift status`
/// print, read from the files and the supervisors, or answered by the daemon's index.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub app: App,
    /// Each gear's supervisor status (`{"state", "since", "restarts", ...}`).
    pub gears: Vec<serde_json::Value>,
    /// Whether a deployment was ever made live.
    pub deployed: bool,
    /// Whether a push is in progress.
    pub pushing: bool,
    /// How many of the gears' inits run.
    pub inits: usize,
}

impl Seen {
    /// The app's one state, now.
    pub fn state(&self) -> AppState {
        let a = &self.app;
        let state = compute(&a.status, self.deployed, a.idle, &self.gears, crate::clock::now());
        with_push(state, self.pushing)
    }
}

/// `app` as it is now. `known` is a supervisor status already at hand for a gear whose init
/// runs (the daemon's watcher follows every supervisor); the others are asked.
pub fn seen(node: &Node, app: &App, known: &dyn Fn(&Gear) -> Option<serde_json::Value>) -> Seen {
    let mut inits = 0;
    let gears = app
        .gears
        .iter()
        .map(|g| {
            let init = crate::gear::init_pid(node, g).is_some();
            inits += usize::from(init);
            let down = || serde_json::json!({"state": "down", "pid": null, "port": 0, "restarts": 0});
            match known(g) {
                _ if app.idle => super::lifecycle::status_of(node, app, g).unwrap_or_else(|_| down()),
                // No init, no supervisor to ask (a namespace switch saved per stopped gear).
                _ if !init => down(),
                Some(st) => st,
                None => super::lifecycle::status_of(node, app, g).unwrap_or_else(|_| down()),
            }
        })
        .collect();
    Seen {
        gears,
        deployed: app.gears.first().is_some_and(|g| deployed(node, g)),
        pushing: pushing(node, &app.name),
        inits,
        app: app.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_push_in_progress_shows_only_where_nothing_serves() {
        assert_eq!(with_push(AppState::NeverDeployed, true), AppState::Building);
        assert_eq!(with_push(AppState::Stopped, true), AppState::Building);
        assert_eq!(with_push(AppState::Running, true), AppState::Running);
        assert_eq!(with_push(AppState::NeverDeployed, false), AppState::NeverDeployed);
        assert_eq!(
            with_push(AppState::Creating("creating".into()), true),
            AppState::Creating("creating".into())
        );
        assert_eq!(AppState::Building.to_string(), "building");
    }

    #[test]
    fn states() {
        let run = json!({"state": "running", "restarts": 0});
        let stop = json!({"state": "stopped", "restarts": 0});
        let down = json!({"state": "down", "restarts": 0});
        let crash = json!({"state": "crash-looping", "restarts": 6, "last_exit": "exit code 3"});
        let idle = json!({"state": "idle", "restarts": 0});
        let s =
            |st: &str, dep: bool, idle: bool, g: Vec<serde_json::Value>| compute(st, dep, idle, &g, 1000).to_string();
        assert_eq!(s("creating", false, false, vec![]), "creating");
        assert_eq!(s("ready", false, false, vec![stop.clone()]), "never deployed");
        assert_eq!(s("ready", false, false, vec![down.clone()]), "never deployed");
        assert_eq!(s("ready", true, false, vec![run.clone()]), "running");
        assert_eq!(
            s("ready", true, false, vec![run.clone(), crash.clone()]),
            "partial (1 of 2 gears)"
        );
        assert_eq!(
            s("ready", true, false, vec![crash.clone()]),
            "crashed (restarts 6, last exit 3)"
        );
        let sig = json!({"state": "crashed", "restarts": 1, "last_exit": "killed by signal 9"});
        assert_eq!(
            s("ready", true, false, vec![sig]),
            "crashed (restarts 1, last exit killed by signal 9)"
        );
        assert_eq!(s("ready", true, true, vec![idle.clone()]), "idle");
        assert_eq!(s("ready", true, false, vec![idle.clone(), idle]), "idle");
        assert_eq!(s("ready", true, false, vec![stop]), "stopped");
        assert_eq!(s("ready", true, false, vec![down.clone()]), "stopped");
        let frozen = json!({"state": "unreachable", "restarts": 0});
        assert_eq!(s("ready", true, false, vec![frozen.clone(), down]), "not answering");
        assert_eq!(
            s("ready", true, false, vec![frozen.clone(), run.clone()]),
            "partial (1 of 2 gears)"
        );
        assert!(!compute("ready", true, false, &[frozen], 1000).serving());
        // Running again after crashes in a row: still a crash loop, until a minute up.
        let again = json!({"state": "running", "since": 990, "restarts": 4, "streak": 3, "last_exit": "exit code 3"});
        assert_eq!(
            s("ready", true, false, vec![again.clone()]),
            "crashed (restarts 4, last exit 3)"
        );
        let settled = json!({"state": "running", "since": 900, "restarts": 4, "streak": 3});
        assert_eq!(s("ready", true, false, vec![settled]), "running");
        let once = json!({"state": "running", "since": 990, "restarts": 1, "streak": 1});
        assert_eq!(s("ready", true, false, vec![once]), "running");
        assert!(compute("ready", true, false, &[run], 1000).serving());
        assert!(!compute("ready", true, false, &[crash], 1000).serving());
        assert!(!compute("ready", true, false, &[again], 1000).serving());
        assert!(!compute("ready", false, false, &[], 1000).serving());
    }
}
