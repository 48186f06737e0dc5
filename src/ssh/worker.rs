//! `gearshift internal-exec`: one SSH request, in a single-threaded process the daemon forked
//! for it, with the client's stdio as fds 0, 1 and 2 (so gear spawning and TTYs just work).

use crate::app::git::{self, GitService};
use crate::daemon::proto::{Job, JOB_ENV};
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::ssh::command::{GitOp, Request};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// What `ssh gearshift@HOST` with no command prints before the user's apps.
const HELP: &str = "\
gearshift: you are logged in as {user}. What you can send:
  git push/fetch           ssh://LOGIN@HOST:PORT/APP (git-receive-pack / git-upload-pack)
  shell APP                a login shell in the app's gear (use ssh -t)
  run APP CMD [ARGS...]    run a command in the gear
  rsync                    rsync -e 'ssh -p PORT' DIR/ LOGIN@HOST:APP/PATH
  app list | app create NAME --cartridge C | app show APP | app destroy APP --confirm APP
";

/// Runs a CLI verb for a user (the CLI's one grammar, as `cli::dispatch_remote`).
pub type RunVerb = fn(&Path, &Actor, &[String]) -> Result<i32>;

/// Runs the job the daemon put in the environment, with CLI verbs run by `verb`; returns its
/// exit code.
pub fn run(config_path: &Path, verb: RunVerb) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("internal-exec is started by the gearshift daemon only");
    }
    let job: Job = serde_json::from_str(&std::env::var(JOB_ENV).with_context(|| format!("{JOB_ENV} is not set"))?)
        .context("malformed job")?;
    std::env::remove_var(JOB_ENV);
    if let Some((rows, cols)) = job.winsize {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize; harmless when fd 0 is not a terminal.
        unsafe { libc::ioctl(0, libc::TIOCSWINSZ, &ws) };
    }
    let node = Node::load(config_path)?;
    let actor = Actor::user(&job.user, job.admin);
    match job.request {
        Request::Help => {
            print!("{}", HELP.replace("{user}", &job.user));
            println!();
            verb(config_path, &actor, &["app".into(), "list".into()])
        }
        Request::Git { op, app } => {
            let service = match op {
                GitOp::ReceivePack => GitService::ReceivePack,
                GitOp::UploadPack => GitService::UploadPack,
            };
            git::serve(&node, &actor, &app, service)
        }
        // Not a login shell: /etc/profile would put the system's PATH back.
        Request::Shell { app } => crate::app::run_app_command(&node, &actor, &app, 0, &["/bin/bash".into()]),
        Request::Run { app, argv } => crate::app::run_app_command(&node, &actor, &app, 0, &argv),
        Request::Rsync { app, args, path } => {
            let mut argv = vec!["rsync".to_string(), "--server".to_string()];
            argv.extend(args);
            argv.push(".".into());
            argv.push(path);
            crate::app::run_in_gear(&node, &actor, &app, 0, &argv)
        }
        Request::Verb { argv } => verb(config_path, &actor, &argv),
    }
}
