//! Scheduled jobs, run inside the gear by its supervisor: OpenShift v2's
//! `.openshift/cron/{minutely,hourly,daily,weekly,monthly}/*` (every executable file) and
//! app.json's `cron` entries (Dokku's `[{"command": "...", "schedule": "*/5 * * * *"}]`).
//! Schedules are parsed by croner (5 fields, UTC: the node's clock); a job whose previous run
//! is still going is skipped, never started twice. Each run is `cron.N` in the logs.

use super::appjson::AppJson;
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

/// OpenShift v2's cron folders and the schedule each stands for.
const FOLDERS: [(&str, &str); 5] = [
    ("minutely", "* * * * *"),
    ("hourly", "0 * * * *"),
    ("daily", "0 0 * * *"),
    ("weekly", "0 0 * * 0"),
    ("monthly", "0 0 1 * *"),
];

/// One scheduled job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its schedule as written (or its folder's).
    pub schedule: String,
    /// The shell command (app.json), or the script's path in the deployment.
    pub command: String,
    /// Where it comes from: `app.json` or `.openshift/cron/hourly`.
    pub source: String,
    cron: croner::Cron,
    /// Run as a script (an executable file) rather than through the shell.
    script: bool,
}

impl Job {
    /// The argv that runs it.
    pub fn argv(&self) -> Vec<String> {
        if self.script {
            vec![self.command.clone()]
        } else {
            super::procfile::shell_argv(&self.command)
        }
    }

    /// Whether it is due in the minute starting at unix time `minute`.
    pub fn due(&self, minute: i64) -> bool {
        chrono::DateTime::from_timestamp(minute - minute.rem_euclid(60), 0)
            .is_some_and(|t| self.cron.is_time_matching(&t).unwrap_or(false))
    }
}

/// Parses one schedule (5 fields: minute hour day month weekday).
fn parse(schedule: &str) -> Result<croner::Cron> {
    if schedule.split_whitespace().count() != 5 {
        bail!("cron schedule {schedule:?} does not have 5 fields (minute hour day-of-month month day-of-week, e.g. */5 * * * *)");
    }
    croner::Cron::from_str(schedule).map_err(|e| anyhow::anyhow!("cron schedule {schedule:?} is not valid: {e}"))
}

/// Every job of deployment `repo`; a bad app.json schedule is an error (it fails the push).
pub fn jobs(repo: &Path, app: &AppJson) -> Result<Vec<Job>> {
    let mut out = Vec::new();
    for (folder, schedule) in FOLDERS {
        let dir = repo.join(".openshift/cron").join(folder);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<_> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| {
                e.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            out.push(Job {
                schedule: schedule.into(),
                command: f.display().to_string(),
                source: format!(".openshift/cron/{folder}"),
                cron: parse(schedule)?,
                script: true,
            });
        }
    }
    for (i, e) in app.cron.iter().enumerate() {
        if e.command.trim().is_empty() {
            bail!("app.json cron entry {}: its command is empty", i + 1);
        }
        let cron = parse(&e.schedule).map_err(|err| anyhow::anyhow!("app.json cron entry {}: {err:#}", i + 1))?;
        out.push(Job {
            schedule: e.schedule.clone(),
            command: e.command.clone(),
            source: "app.json".into(),
            cron,
            script: false,
        });
    }
    Ok(out)
}

/// The jobs running now: job key -> pid (so that none starts while its previous run goes on).
#[derive(Default)]
pub struct Running {
    pids: Mutex<HashMap<String, i32>>,
}

impl Running {
    /// Starts job `key` with `spawn` unless its previous run goes on: its pid, or `None` when
    /// skipped. Spawned under the lock, so the reaper cannot report the pid before it is known.
    pub fn start(&self, key: &str, spawn: impl FnOnce() -> Result<i32>) -> Result<Option<i32>> {
        let mut m = self.lock();
        if m.contains_key(key) {
            return Ok(None);
        }
        let pid = spawn()?;
        m.insert(key.to_string(), pid);
        Ok(Some(pid))
    }

    /// The reaper's report: whether `pid` was a job's run.
    pub fn exited(&self, pid: i32) -> bool {
        let mut m = self.lock();
        let before = m.len();
        m.retain(|_, p| *p != pid);
        m.len() != before
    }

    /// Ends every running job (`app stop`): SIGTERM to each job's process group, SIGKILL to
    /// what is left after `grace`; returns once the reaper has seen them all exit (or after
    /// another `grace`).
    pub fn stop(&self, grace: std::time::Duration) {
        use nix::sys::signal::{killpg, Signal};
        let signal = |sig| {
            for pid in self.lock().values() {
                let _ = killpg(nix::unistd::Pid::from_raw(*pid), sig);
            }
        };
        signal(Signal::SIGTERM);
        let t = std::time::Instant::now();
        let mut killed = false;
        while !self.lock().is_empty() && t.elapsed() < grace * 2 {
            if !killed && t.elapsed() > grace {
                signal(Signal::SIGKILL);
                killed = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_app_json_entries_with_their_schedules() {
        let dir = std::env::temp_dir().join(format!("gearshift-cron-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (f, mode) in [
            ("minutely/tick", 0o755),
            ("hourly/report", 0o755),
            ("daily/README", 0o644),
        ] {
            let p = dir.join(".openshift/cron").join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let app = super::super::appjson::parse(
            r#"{"cron": [{"command": "python manage.py clearsessions", "schedule": "*/5 * * * *"}]}"#,
        )
        .unwrap();
        let jobs = jobs(&dir, &app).unwrap();
        let seen: Vec<(&str, &str)> = jobs.iter().map(|j| (j.schedule.as_str(), j.source.as_str())).collect();
        assert_eq!(
            seen,
            [
                ("* * * * *", ".openshift/cron/minutely"),
                ("0 * * * *", ".openshift/cron/hourly"),
                ("*/5 * * * *", "app.json"),
            ]
        );
        // 2026-01-01 00:00 UTC is due for all three; 00:01 only for the minutely one.
        let t = 1_767_225_600;
        assert!(jobs.iter().all(|j| j.due(t + 30)));
        assert_eq!(jobs.iter().filter(|j| j.due(t + 60)).count(), 1);
        assert_eq!(jobs[2].argv()[2], "exec python manage.py clearsessions");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_schedules_fail_with_the_entry() {
        for bad in ["* * * *", "61 * * * *", "* * * * * *", "often"] {
            let app =
                super::super::appjson::parse(&format!(r#"{{"cron": [{{"command": "x", "schedule": "{bad}"}}]}}"#))
                    .unwrap();
            let e = format!("{:#}", jobs(Path::new("/nonexistent"), &app).unwrap_err());
            assert!(e.contains("app.json cron entry 1"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_job_never_runs_twice_at_once() {
        let r = Running::default();
        assert_eq!(r.start("a", || Ok(42)).unwrap(), Some(42));
        assert_eq!(r.start("a", || panic!("started twice")).unwrap(), None);
        assert_eq!(r.start("b", || Ok(43)).unwrap(), Some(43));
        assert!(!r.exited(7));
        assert!(r.exited(42));
        assert_eq!(r.start("a", || Ok(44)).unwrap(), Some(44));
    }
}
