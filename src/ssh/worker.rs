//! `gearshift internal-exec`: one SSH request, in a single-threaded process the daemon forked
//! for it, with the client's stdio as fds 0, 1 and 2 (so gear spawning and TTYs just work).

use crate::app::git::{self, GitService};
use crate::daemon::proto::{Job, JOB_ENV};
use crate::node::{address, Node};
use crate::ssh::auth::Actor;
use crate::ssh::command::{GitOp, Request};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// What `ssh LOGIN@HOST` with no command (or `help`) prints before the user's apps; `{ssh}`
/// is how this user reaches the node, `{remote}` an app's git remote.
const HELP: &str = "\
gearshift: you are logged in as {user}. Send any of these as `{ssh} COMMAND`
(quote arguments as in a shell: env set APP 'KEY=any value'):
  app create APP [--cartridge C] create an app (default: detected at the first push)
  app list | app show APP | app status APP
  app start|stop|restart|idle APP, app scale APP N, app health APP [PATH]
  app destroy APP --confirm APP
  git push {remote} main         deploy (git fetch/clone work too)
  deploy list APP | rollback APP [ID]
  logs APP [-f] [-n N]           the web process's output
  env set APP KEY=VALUE... | env unset APP KEY... | env list APP
  env import APP < .env          set the KEY=VALUE lines of a .env file
  domain add|remove|list APP ...  host names of an app
  run APP CMD [ARGS...]          run a command in the app's gear
  events [--app APP] [-f]        deploys, crashes, idles and wakes of your apps
  top [--once] [--json]          your gears' CPU, memory, disk, network (ssh -t)
  shell APP                      a login shell in the gear (ssh -t)
  rsync -e '{ssh_e}' DIR/ {login}@{host}:APP/PATH
  VERB --help                    the options of a verb
";

/// The extra lines an admin sees in the help.
const ADMIN_HELP: &str = "\
  user ...                       users and their keys (admin)
  doctor                         the node's isolation checks (admin)
  status                         the node at a glance: daemon, sshd, router, apps, disk (admin)
";

fn help(node: &Node, user: &str, admin: bool) -> String {
    let c = &node.config;
    let ssh = address::ssh(c);
    let mut h = HELP
        .replace("{user}", user)
        .replace("{ssh_e}", ssh.rsplit_once(' ').map_or("ssh", |(e, _)| e))
        .replace("{ssh}", &ssh)
        .replace("{remote}", &address::git_remote(c, "APP"))
        .replace("{login}", &c.ssh_user)
        .replace("{host}", &c.domain);
    if admin {
        h.push_str(ADMIN_HELP);
    }
    h
}

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
    let actor = Actor::user(&job.user, job.admin).with_key(job.key.clone());
    // Hints name commands the way this user sends them (over SSH, not `gearshift ...`).
    serve(&node, config_path, &actor, job, verb)
        .map_err(|e| anyhow::anyhow!("{}", address::for_ssh_user(&node.config, &format!("{e:#}"))))
}

fn serve(node: &Node, config_path: &Path, actor: &Actor, job: Job, verb: RunVerb) -> Result<i32> {
    match job.request {
        Request::Help => {
            println!("{}", help(node, &job.user, job.admin));
            verb(config_path, actor, &["app".into(), "list".into()])
        }
        Request::Git { op, app } => {
            if let Err(e) = crate::app::load_for(node, actor, &app) {
                // git prints only its own `fatal:` after this; say how to get the app.
                eprintln!(
                    "remote: gearshift: {}",
                    address::for_ssh_user(&node.config, &format!("{e:#}"))
                );
                if op == GitOp::ReceivePack {
                    let ssh = address::ssh(&node.config);
                    eprintln!(
                        "remote: create it with `{ssh} app create {app}` (the push detects the cartridge; or --cartridge CARTRIDGE, see `{ssh} cartridges`), then push again"
                    );
                }
                return Ok(128);
            }
            let service = match op {
                GitOp::ReceivePack => GitService::ReceivePack,
                GitOp::UploadPack => GitService::UploadPack,
            };
            git::serve(node, actor, &app, service)
        }
        // Not a login shell: /etc/profile would put the system's PATH back.
        Request::Shell { app } => crate::app::run_app_command(node, actor, &app, 0, &["/bin/bash".into()]),
        Request::Run { app, argv } => crate::app::run_app_command(node, actor, &app, 0, &argv),
        Request::Rsync { app, args, path } => {
            let mut argv = vec!["rsync".to_string(), "--server".to_string()];
            argv.extend(args);
            argv.push(".".into());
            argv.push(path);
            crate::app::run_in_gear(node, actor, &app, 0, &argv)
        }
        Request::Verb { argv } => verb(config_path, actor, &argv),
    }
}
