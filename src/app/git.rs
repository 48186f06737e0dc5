//! git over SSH: the app's bare repository lives in its gear, and git-receive-pack /
//! git-upload-pack run inside the gear as the gear's uid, within its limits (a huge push fills
//! the gear's quota, never the host's disk). The pre-receive hook in the repository runs the
//! deploy pipeline (`gearshift gear pre-receive`) before git accepts the ref.

use crate::app;
use crate::gear::layout::is_deployment_id;
use crate::ingear::deploy::{Deployment, Step, STEPS};
use crate::node::events::{self, Event};
use crate::node::Node;
use crate::ssh::auth::Actor;
use anyhow::Result;

/// Which git service the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GitService {
    #[value(name = "git-receive-pack")]
    ReceivePack,
    #[value(name = "git-upload-pack")]
    UploadPack,
}

impl GitService {
    pub fn program(self) -> &'static str {
        match self {
            GitService::ReceivePack => "git-receive-pack",
            GitService::UploadPack => "git-upload-pack",
        }
    }

    /// The command run in the gear for it: `gearshift gear git-serve` sets the parent-death
    /// signal after its exec into the gear, then becomes git (`ingear/git_serve.rs`).
    fn argv(self, repo: &str) -> [String; 5] {
        [
            "/opt/gearshift/bin/gearshift",
            "gear",
            "git-serve",
            self.program(),
            repo,
        ]
        .map(String::from)
    }
}

/// Serves `service` for `app` on the caller's stdio (the SSH channel) and returns its exit code.
/// A push being watched for the event log: `deploy.start` is recorded when it begins,
/// `deploy.result` when it ends (by whoever outlives it: the daemon for pushes over SSH, whose
/// worker dies with the client's session).
pub struct PushEvents {
    app: String,
    owner: Option<String>,
    by: Actor,
    before: Option<String>,
    /// When the push began (`clock::now`).
    since: u64,
}

/// The live deployment of an app (gear 0's repo link), if any.
fn live_deployment(node: &Node, a: &app::App) -> Option<String> {
    let g = a.gears.first()?;
    // `../app-deployments/ID/repo`
    let t = std::fs::read_link(g.home(node).join(crate::gear::layout::REPO)).ok()?;
    Some(t.parent()?.file_name()?.to_string_lossy().into_owned())
}

/// At most this much of a deployment's record is read: the gear writes it.
const RECORD_CAP: u64 = 64 * 1024;
/// At most this many deployments are looked at for a push's.
const LIST_CAP: usize = 4096;

/// The push's deployment and the pipeline's steps its record in gear 0 holds: `after` when one
/// went live, else the newest one begun since the push did (a failed build). The record is the
/// gear's: read without following its symlinks, capped, and only known step names are kept.
fn push_steps(node: &Node, a: &app::App, after: Option<&str>, since: u64) -> Option<(String, Vec<Step>)> {
    use crate::gear::layout::DEPLOYMENTS;
    let home = a.gears.first()?.home(node);
    let id = match after {
        Some(id) => id.to_string(),
        None => {
            let ids = crate::gear::home_file::list_gear_dir(&home, DEPLOYMENTS, LIST_CAP).ok()?;
            ids.into_iter().filter(|i| is_deployment_id(i)).max()?
        }
    };
    if !is_deployment_id(&id) {
        return None;
    }
    let rel = format!("{DEPLOYMENTS}/{id}/metadata.toml");
    let text = crate::gear::home_file::read_gear_file_capped(&home, &rel, RECORD_CAP).ok()?;
    let d: Deployment = toml::from_str(&text).ok()?;
    if after.is_none() && d.time < since {
        return None;
    }
    let steps = (d.steps.into_iter())
        .filter(|s| STEPS.contains(&s.name.as_str()))
        .take(STEPS.len())
        .collect();
    Some((id, steps))
}

impl PushEvents {
    /// Records `deploy.start` of a push by `actor` to `app_name`; None (nothing recorded) when
    /// the app does not exist or is not the actor's.
    pub fn start(node: &Node, actor: &Actor, app_name: &str) -> Option<PushEvents> {
        let a = app::load_for(node, actor, app_name).ok()?;
        let w = PushEvents {
            app: a.name.clone(),
            owner: a.owner.clone(),
            by: actor.clone(),
            before: live_deployment(node, &a),
            since: crate::clock::now(),
        };
        events::record(node, w.event("deploy.start"));
        Some(w)
    }

    fn event(&self, kind: &str) -> Event {
        Event::by(kind, &self.by).app(&self.app, self.owner.as_deref())
    }

    /// The app pushed to.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Records a `deploy.step` per step of the push's pipeline (`deploy.switch` for the switch),
    /// from its deployment's record.
    fn record_steps(&self, node: &Node, a: &app::App, after: Option<&str>) {
        let Some((id, steps)) = push_steps(node, a, after, self.since) else {
            return;
        };
        for s in steps {
            let (kind, mut detail) = if s.name == "switch" {
                ("deploy.switch", serde_json::json!({"previous": self.before}))
            } else {
                ("deploy.step", serde_json::json!({"step": s.name}))
            };
            detail["deployment"] = id.clone().into();
            detail["ok"] = s.ok.into();
            detail["ms"] = s.ms.into();
            events::record(node, self.event(kind).detail(detail));
        }
    }

    /// Records the push's steps, then `deploy.result`: git-receive-pack ends well even when the hook refused the push,
    /// so what tells is whether another deployment went live; returns whether one did.
    pub fn end(self, node: &Node, code: i32) -> bool {
        let a = app::load(node, &self.app).ok();
        let after = a.as_ref().and_then(|a| live_deployment(node, a));
        let deployed = after.is_some() && after != self.before;
        if let Some(a) = &a {
            self.record_steps(node, a, after.as_deref().filter(|_| deployed));
        }
        let detail = if deployed {
            serde_json::json!({"result": "deployed", "deployment": after, "previous": self.before})
        } else {
            serde_json::json!({"result": "not deployed", "exit_code": code})
        };
        events::record(node, self.event("deploy.result").detail(detail));
        deployed
    }
}

/// Serves `service` for `app` on the caller's stdio (the SSH channel) and returns its exit code.
pub fn serve(node: &Node, actor: &Actor, app_name: &str, service: GitService) -> Result<i32> {
    let a = app::load_for(node, actor, app_name)?;
    let repo = crate::gear::layout::inner_git_repo(&a.name);
    // Held (shared) while the push runs, so the app is not idled under it.
    let _pushing = match service {
        GitService::ReceivePack => Some(crate::state::Lock::shared(&app::push_lock(node, &a.name))?),
        GitService::UploadPack => None,
    };
    // An app without a cartridge records the one its push detected, outside the gear.
    if service == GitService::UploadPack || (a.gears.len() < 2 && !a.cartridge.is_empty()) {
        // Never a pty: the git protocol is binary.
        return app::run_in_gear_plain(node, actor, &a.name, 0, &service.argv(&repo));
    }
    // A scaled app (or one without a cartridge yet): the push deploys in gear 0; then every other
    // gear takes that deployment.
    // The push runs in a child, so this process stays outside the gear for the hand-over.
    // SAFETY: single-threaded process (CLI or worker); the child leaves with _exit.
    let code = match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let argv = service.argv(&repo);
            let code = app::run_in_gear_plain(node, actor, &a.name, 0, &argv).unwrap_or(1);
            // SAFETY: leave the forked child without running destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None)? {
            nix::sys::wait::WaitStatus::Exited(_, c) => c,
            _ => 1,
        },
    };
    if code == 0 {
        if a.cartridge.is_empty() {
            // The push is live either way; the next push detects again.
            if let Err(e) = record_detected(node, &a.name) {
                eprintln!("gearshift: cannot record the detected cartridge: {e:#}");
            }
        }
        for g in a.gears.iter().skip(1) {
            if let Err(e) = app::replicate(node, &a, g) {
                eprintln!("gearshift: {e:#}");
            }
        }
    }
    Ok(code)
}

/// After a successful push to app `app_name`, which had no cartridge: records the one its
/// gear 0 detected (`ingear/detect.rs`), so that its gears start with it from now on.
fn record_detected(node: &Node, app_name: &str) -> Result<()> {
    let app = app::load(node, app_name)?;
    let Some(g) = app.gears.first() else { return Ok(()) };
    if !app.cartridge.is_empty() {
        return Ok(());
    }
    let text = crate::gear::home_file::read_gear_file(&g.home(node), crate::ingear::detect::DETECTED)?;
    let name = app::cartridge::find(node, text.trim())?.manifest.name;
    let _lock = node.lock()?;
    let mut app = app::load(node, app_name)?;
    if app.cartridge.is_empty() {
        app.cartridge = name;
        app::save(node, &app)?;
        app::write_descriptors(node, &app)?;
    }
    Ok(())
}
