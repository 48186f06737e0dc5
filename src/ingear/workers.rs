//! The Procfile's other process types (`worker:`, `clock:` ...), supervised beside the web
//! process: as many of each as app.json's `formation` says (Dokku's default: 0), each with its
//! own log (`app-root/logs/TYPE.log`), restarted after a crash with growing delays (1, 2, 4 ...
//! 60 s). They are replaced once a new deployment's web process is live; `release` is not a
//! process type that runs (the deploy runs it once).

use super::appjson::AppJson;
use super::procfile::Process;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Starts one process: (deployment, type, command) -> pid. The supervisor's, with its logging.
pub type Spawn = fn(&Path, &str, &str) -> anyhow::Result<i32>;

/// How many of each non-web process type run: app.json's `formation`, else 0.
pub fn quantities(procs: &[Process], app: &AppJson) -> Vec<(Process, u32)> {
    procs
        .iter()
        .filter(|p| p.name != "web" && p.name != "release")
        .map(|p| {
            let n = app.formation.get(&p.name).and_then(|f| f.quantity).unwrap_or(0);
            (p.clone(), n)
        })
        .collect()
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

    /// Stops every process and starts `want` (from deployment `repo`) instead.
    pub fn replace(&self, repo: &Path, want: &[(Process, u32)]) {
        let old = {
            let mut s = self.lock();
            s.generation += 1;
            let old: Vec<i32> = s.procs.drain(..).filter_map(|p| p.pid).collect();
            for (p, n) in want {
                for index in 1..=*n {
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
                    match (self.spawn)(repo, &p.name, &p.command) {
                        Ok(pid) => proc_.pid = Some(pid),
                        Err(e) => (self.note)(&format!("{}.{index}: cannot start: {e:#}", p.name)),
                    }
                    s.procs.push(proc_);
                }
            }
            old
        };
        for pid in old {
            terminate(pid);
        }
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
        let delay = Duration::from_secs(1u64 << (p.streak - 1).min(6)).min(Duration::from_secs(60));
        (self.note)(&format!(
            "{}.{} exited ({}); restarting in {}s",
            p.name,
            p.index,
            if code >= 128 {
                format!("signal {}", code - 128)
            } else {
                format!("exit code {code}")
            },
            delay.as_secs()
        ));
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
                match (me.spawn)(&p.repo, &p.name, &p.command) {
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
        let q: Vec<(String, u32)> = quantities(&procs, &app).into_iter().map(|(p, n)| (p.name, n)).collect();
        assert_eq!(q, [("worker".to_string(), 2), ("clock".to_string(), 0)]);
    }
}
