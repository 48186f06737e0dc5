//! The Procfile's other process types (`worker:`, `clock:` ...), supervised beside the web
//! process: as many of each as app.json's `formation` says (Dokku's default: 0), each with its
//! own log (`app-root/logs/TYPE.log`), restarted after a crash with growing delays (1, 2, 4 ...
//! 60 s). They are replaced once a new deployment's web process is live; `release` is not a
//! process type that runs (the deploy runs it once).

use super::appjson::AppJson;
use super::procfile::Process;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Starts one process: (deployment, type, index, command) -> pid. The supervisor's, with its
/// logging.
pub type Spawn = fn(&Path, &str, u32, &str) -> anyhow::Result<i32>;

/// How many of each non-web process type run: `app scale`'s quantity (`scaled`, kept in the
/// app record), else app.json's `formation`, else 0. Only gear 0 runs them (`first_gear`): a
/// scaled app's other gears are web gears.
pub fn quantities(
    procs: &[Process],
    app: &AppJson,
    scaled: &BTreeMap<String, u32>,
    first_gear: bool,
) -> Vec<(Process, u32)> {
    procs
        .iter()
        .filter(|p| p.name != "web" && p.name != "release")
        .map(|p| {
            let n = scaled
                .get(&p.name)
                .copied()
                .or_else(|| app.formation.get(&p.name).and_then(|f| f.quantity))
                .unwrap_or(0);
            (p.clone(), if first_gear { n } else { 0 })
        })
        .collect()
}

/// How many web processes a gear runs (0 or 1): `app scale APP web=0`, else app.json's
/// `formation.web.quantity` (0 makes a worker-only app), else 1.
pub fn web_quantity(app: &AppJson, scaled: &BTreeMap<String, u32>) -> u32 {
    let n = scaled
        .get("web")
        .copied()
        .or_else(|| app.formation.get("web").and_then(|f| f.quantity))
        .unwrap_or(1);
    n.min(1)
}

/// The log a process writes: `worker.log` for `worker.1`, `worker.2.log` for `worker.2`.
pub fn log_name(name: &str, index: u32) -> String {
    if index == 1 {
        name.to_string()
    } else {
        format!("{name}.{index}")
    }
}

/// One running (or restarting) process: `worker.1`.
struct Proc {
    name: String,
    index: u32,
    command: String,
    repo: PathBuf,
    pid: Option<i32>,
    streak: u32,
    started: Instant,
}

#[derive(Default)]
struct State {
    procs: Vec<Proc>,
    /// Bumped on every replace: a restart scheduled for an older set is dropped.
    generation: u64,
    /// Every type and its quantity, as last asked (quantity 0 included).
    want: Vec<(String, u32)>,
    /// Exits since the last replace (`worker.1`, `exit code 1`, its pid), oldest first.
    exits: Vec<(String, String, i32)>,
}

/// The gear's processes other than web.
pub struct Workers {
    state: Mutex<State>,
    spawn: Spawn,
    note: fn(&str),
}

impl Workers {
    pub fn new(spawn: Spawn, note: fn(&str)) -> Arc<Workers> {
        Arc::new(Workers {
            state: Mutex::new(State::default()),
            spawn,
            note,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `want` (from deployment `repo`): processes already running the same command of
    /// the same deployment stay, the others stop, the missing ones start.
    pub fn replace(&self, repo: &Path, want: &[(Process, u32)]) {
        let old = {
            let mut s = self.lock();
            s.generation += 1;
            s.exits.clear();
            s.want = want.iter().map(|(p, n)| (p.name.clone(), *n)).collect();
            let mut keep: Vec<Proc> = Vec::new();
            let mut old = Vec::new();
            for p in s.procs.drain(..) {
                let wanted = want
                    .iter()
                    .any(|(w, n)| w.name == p.name && w.command == p.command && p.index <= *n && p.repo == repo);
                if wanted && p.pid.is_some() {
                    keep.push(p);
                } else if let Some(pid) = p.pid {
                    old.push(pid);
                }
            }
            for (p, n) in want {
                for index in 1..=*n {
                    if keep.iter().any(|k| k.name == p.name && k.index == index) {
                        continue;
                    }
                    let mut proc_ = Proc {
                        name: p.name.clone(),
                        index,
                        command: p.command.clone(),
                        repo: repo.to_path_buf(),
                        pid: None,
                        streak: 0,
                        started: Instant::now(),
                    };
                    // Spawned under the lock: the reaper cannot report the pid before it is known.
                    match (self.spawn)(repo, &p.name, index, &p.command) {
                        Ok(pid) => proc_.pid = Some(pid),
                        Err(e) => (self.note)(&format!("{}.{index}: cannot start: {e:#}", p.name)),
                    }
                    keep.push(proc_);
                }
            }
            s.procs = keep;
            old
        };
        for pid in old {
            terminate(pid);
        }
    }

    /// The first process that exited since the last replace: (`worker.1`, how, its pid).
    pub fn first_exit(&self) -> Option<(String, String, i32)> {
        self.lock().exits.first().cloned()
    }

    /// Every type asked for and how many of it (0 included), as last replaced.
    pub fn wanted(&self) -> Vec<(String, u32)> {
        self.lock().want.clone()
    }

    /// Stops every process.
    pub fn stop(&self) {
        self.replace(Path::new("/"), &[]);
    }

    /// `type.N` and its state, for every process.
    pub fn list(&self) -> Vec<(String, Option<i32>)> {
        self.lock()
            .procs
            .iter()
            .map(|p| (format!("{}.{}", p.name, p.index), p.pid))
            .collect()
    }

    /// The reaper's report: whether `pid` was one of ours (then a restart is scheduled).
    pub fn exited(self: &Arc<Self>, pid: i32, code: i32) -> bool {
        let mut s = self.lock();
        let generation = s.generation;
        let Some(i) = s.procs.iter().position(|p| p.pid == Some(pid)) else {
            return false;
        };
        let p = &mut s.procs[i];
        p.pid = None;
        if p.started.elapsed() > Duration::from_secs(60) {
            p.streak = 0;
        }
        p.streak += 1;
        let how = if code >= 128 {
            format!("signal {}", code - 128)
        } else {
            format!("exit code {code}")
        };
        let who = format!("{}.{}", p.name, p.index);
        let delay = Duration::from_secs(1u64 << (p.streak - 1).min(6)).min(Duration::from_secs(60));
        (self.note)(&format!("{who} exited ({how}); restarting in {}s", delay.as_secs()));
        s.exits.push((who, how, pid));
        let me = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let mut s = me.lock();
            if s.generation != generation {
                return;
            }
            let Some(p) = s.procs.get_mut(i) else { return };
            if p.pid.is_none() {
                p.started = Instant::now();
                match (me.spawn)(&p.repo, &p.name, p.index, &p.command) {
                    Ok(pid) => p.pid = Some(pid),
                    Err(e) => (me.note)(&format!("{}.{}: cannot restart: {e:#}", p.name, p.index)),
                }
            }
        });
        true
    }
}

/// SIGTERM to a process and its group, SIGKILL 10 s later if it is still there (in the
/// background: stopping workers never holds up a switch).
fn terminate(pid: i32) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(10));
        // The group only: the pid may have been reused by then, its group id not by a worker.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_formation_asks_for_runs_and_never_release() {
        let procs = super::super::procfile::parse("web: w\nworker: a\nclock: b\nrelease: r\n").unwrap();
        let app = super::super::appjson::parse(r#"{"formation": {"web": {"quantity": 1}, "worker": {"quantity": 2}}}"#)
            .unwrap();
        let q = |scaled: &BTreeMap<String, u32>, first: bool| -> Vec<(String, u32)> {
            quantities(&procs, &app, scaled, first)
                .into_iter()
                .map(|(p, n)| (p.name, n))
                .collect()
        };
        let none = BTreeMap::new();
        assert_eq!(q(&none, true), [("worker".to_string(), 2), ("clock".to_string(), 0)]);
        // `app scale` wins over app.json; only gear 0 runs them.
        let scaled = BTreeMap::from([("clock".to_string(), 1), ("worker".to_string(), 0)]);
        assert_eq!(q(&scaled, true), [("worker".to_string(), 0), ("clock".to_string(), 1)]);
        assert_eq!(q(&scaled, false), [("worker".to_string(), 0), ("clock".to_string(), 0)]);
    }

    #[test]
    fn web_runs_unless_formation_or_scale_says_zero() {
        let app = |t: &str| super::super::appjson::parse(t).unwrap();
        let none = BTreeMap::new();
        assert_eq!(web_quantity(&app("{}"), &none), 1);
        let worker_only = app(r#"{"formation": {"web": {"quantity": 0}, "worker": {"quantity": 1}}}"#);
        assert_eq!(web_quantity(&worker_only, &none), 0);
        assert_eq!(web_quantity(&worker_only, &BTreeMap::from([("web".to_string(), 1)])), 1);
        assert_eq!(web_quantity(&app("{}"), &BTreeMap::from([("web".to_string(), 0)])), 0);
        assert_eq!(log_name("worker", 1), "worker");
        assert_eq!(log_name("worker", 2), "worker.2");
    }
}
