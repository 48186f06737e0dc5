//! The command-line grammar: ONE grammar, used locally (as root) and over SSH (as a user, by
//! `ssh::worker`). The user-facing verbs are `Verb`; the verbs gearshift runs itself (the
//! daemon, sshd's key lookup and forced command, the daemon's worker, git's local transport,
//! the commands inside a gear) are `Internal`, which SSH never reaches.

pub mod addon;
pub mod app;
pub mod changes;
pub mod dotenv;
pub mod env;
pub mod events;
pub mod status;
pub mod top;

use crate::gear;
use crate::node::{self, Node};
use crate::ssh::auth::Actor;
use crate::ssh::user;
use anyhow::{Context, Result};
use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Debug, Parser)]
#[command(
    name = "gearshift",
    version,
    about = "git push PaaS for one Linux VM, with gears isolated by the kernel"
)]
pub struct Cli {
    /// Node config file (default: $GEARSHIFT_CONFIG or /etc/gearshift/gearshift.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Verb(Verb),
    #[command(flatten)]
    Internal(Internal),
}

/// What people type, at the console or over SSH.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Write the node config (if missing) and bring the node up; safe to run again.
    Init(node::init::InitArgs),
    /// Check every isolation mechanism and tool this host offers.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// The node at a glance: daemon, sshd and router (checked live), apps by state, disk, memory.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Node-wide runtime: bridge, firewall, quota filesystem, cgroup parent.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Manage users and their SSH keys.
    #[command(subcommand)]
    User(user::UserCmd),
    /// Manage apps.
    #[command(subcommand)]
    App(app::AppCmd),
    /// Databases in gears of their own, linked to apps by URL.
    #[command(subcommand)]
    Addon(addon::AddonCmd),
    /// Save an app with its data, env and add-ons to one file, or restore one.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// List the cartridges on the node's cartridge path.
    Cartridges {
        #[arg(long)]
        json: bool,
    },
    /// Host names of an app (aliases), TLS certificates, HTTPS redirect.
    #[command(subcommand)]
    Domain(crate::app::domain::DomainCmd),
    /// An app's own environment variables.
    #[command(subcommand)]
    Env(env::EnvCmd),
    /// Show an app's output: every process's lines, prefixed `web.1 | `, `worker.1 | `
    /// (rotated logs), or one process type's with --type.
    Logs {
        app: String,
        /// Only this process type's lines (web, worker, clock ...).
        #[arg(long = "type", value_name = "TYPE")]
        type_: Option<String>,
        /// Keep following new output.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Number of lines.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: u32,
    },
    /// Deployments of an app.
    #[command(subcommand)]
    Deploy(DeployCmd),
    /// Scheduled jobs (.openshift/cron, app.json `cron`), run in the app's gear.
    #[command(subcommand)]
    Cron(CronCmd),
    /// Re-activate a kept deployment without rebuilding (default: the previous one).
    Rollback { app: String, id: Option<String> },
    /// One line per gear: state, CPU, memory, OOM kills, pids, disk, network, requests/s and
    /// p95 latency (refreshed every second; a key sorts: a c m o d n r p; q quits). Users see
    /// their own apps.
    Top {
        /// Print one frame (sampled over a second) and exit.
        #[arg(long)]
        once: bool,
        /// The column to sort by, largest first: app, cpu, mem, oom, disk, net, req, p95.
        #[arg(long, default_value = "app")]
        sort: String,
        /// The same data as JSON, one object per frame.
        #[arg(long)]
        json: bool,
    },
    /// What happened on the node: deploys, crashes, idles and wakes, domain, user and key
    /// changes, with who did it (users see their own apps' events).
    Events {
        /// Only this app's events.
        #[arg(long)]
        app: Option<String>,
        /// Keep following new events.
        #[arg(short = 'f', long)]
        follow: bool,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
        /// Number of past events shown.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Run a command inside an app's gear with every isolation mechanism applied.
    Run {
        app: String,
        /// Which gear of a scaled app (default 0).
        #[arg(long, default_value_t = 0)]
        gear: u32,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

/// What gearshift runs itself; never accepted over SSH.
#[derive(Debug, Subcommand)]
pub enum Internal {
    /// Run the node: its sshd and the socket SSH requests come through (stop with SIGTERM).
    Daemon,
    /// Commands that run inside a gear (hooks, process control, static files).
    #[command(subcommand, hide = true)]
    Gear(crate::ingear::GearCmd),
    /// Serve git for an app on stdin/stdout (a local transport for root:
    /// `git push ext::'gearshift git-serve %S APP'`; over SSH the same runs for the pusher).
    #[command(hide = true)]
    GitServe {
        service: crate::app::git::GitService,
        app: String,
    },
    /// sshd's AuthorizedKeysCommand: print the authorized_keys lines for USER.
    #[command(hide = true)]
    AuthKeys { user: String },
    /// The forced command of every SSH key: run SSH_ORIGINAL_COMMAND through the daemon.
    #[command(hide = true)]
    SshEntry {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        user: String,
        /// The fingerprint of the key the user logged in with.
        #[arg(long)]
        key: Option<String>,
    },
    /// One SSH request, forked by the daemon (job in the environment).
    #[command(hide = true, name = "internal-exec")]
    Worker,
}

/// `gearshift snapshot ...` (OpenShift v2's `rhc snapshot`).
#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Write the app (git repository, deployments, app-root/data, env, record, a dump of each
    /// linked add-on) to stdout as a gzip'd tar: `snapshot save APP > APP.tar.gz`.
    Save { app: String },
    /// Recreate the app from a snapshot on stdin: `snapshot restore APP [--as NEW] < APP.tar.gz`.
    /// Missing add-ons are created and their data restored; existing ones are linked as they are.
    Restore {
        app: String,
        /// Restore under this name (a second copy beside the original).
        #[arg(long = "as", value_name = "NEW")]
        as_name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeployCmd {
    /// List an app's deployments (id, commit, time, result); * marks the live one.
    List {
        app: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CronCmd {
    /// List an app's scheduled jobs: schedule (UTC), where each comes from, its command.
    List { app: String },
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Bring the bridge, firewall, quota filesystem and cgroups up (after a reboot).
    Up {
        /// I/K: only the gears of every K-th app from the I-th (node up runs K of these at once).
        #[arg(long, hide = true)]
        share: Option<String>,
    },
    /// Take them down again (apps keep their state on disk).
    Down,
    /// Set the login of the exposed admin port (`admin_listen`): the password is read from
    /// stdin's first line (user name `admin`).
    AdminPassword,
    /// Install the exposed admin port's TLS certificate (`admin_listen`): its chain, leaf
    /// first, and private key as PEM on stdin (`node admin-cert < admin.pem`), for `admin_host`.
    AdminCert,
    /// Destroy every app, take the node down and delete its data root.
    Destroy {
        #[arg(long)]
        confirm: String,
    },
}

pub fn main() -> Result<i32> {
    let cli = Cli::parse();
    let config_path = Node::config_path(cli.config.as_deref());
    match cli.command {
        Command::Verb(verb) => dispatch(&config_path, verb, &Actor::root()),
        Command::Internal(internal) => run_internal(&config_path, internal),
    }
}

fn run_internal(config_path: &Path, internal: Internal) -> Result<i32> {
    match internal {
        Internal::Daemon => crate::daemon::run(config_path),
        Internal::Gear(cmd) => crate::ingear::run(cmd),
        Internal::GitServe { service, app } => {
            let node = Node::load(config_path)?;
            let push = (service == crate::app::git::GitService::ReceivePack)
                .then(|| crate::app::git::PushEvents::start(&node, &Actor::root(), &app))
                .flatten();
            let r = crate::app::git::serve(&node, &Actor::root(), &app, service);
            if let Some(p) = push {
                p.end(&node, *r.as_ref().unwrap_or(&1));
            }
            r
        }
        Internal::AuthKeys { user } => crate::ssh::authkeys::run(config_path, &user),
        Internal::SshEntry { socket, user, key } => crate::ssh::entry::run(&socket, &user, key),
        Internal::Worker => crate::ssh::worker::run(config_path, dispatch_remote),
    }
}

/// Runs a verb for `actor` (root at the console, or a user over SSH), and records the change
/// it made, once it succeeded, in the event log (`changes.rs`).
pub fn dispatch(config_path: &Path, verb: Verb, actor: &Actor) -> Result<i32> {
    // Read before the verb, which may leave this process in a gear's namespaces.
    let change = changing(&verb).and_then(|v| changes::of(v, actor)).and_then(|c| {
        let node = Node::load(config_path).ok()?;
        let log = node::events::open(&node).ok()?;
        Some((c.read_owner(&node), log))
    });
    let r = run_verb(config_path, verb, actor);
    if let Some((c, log)) = change {
        c.record(log, actor, &r);
    }
    r
}

/// The verbs that may change something (`changes.rs` says what each records).
fn changing(verb: &Verb) -> Option<changes::Changing<'_>> {
    use changes::Changing as C;
    Some(match verb {
        Verb::App(cmd) => C::App(cmd),
        Verb::Env(cmd) => C::Env(cmd),
        Verb::Addon(cmd) => C::Addon(cmd),
        Verb::Domain(cmd) => C::Domain(cmd),
        Verb::User(cmd) => C::User(cmd),
        Verb::Rollback { app, id } => C::Rollback { app, id },
        _ => return None,
    })
}

fn run_verb(config_path: &Path, verb: Verb, actor: &Actor) -> Result<i32> {
    match verb {
        Verb::Init(args) => node::init::run(config_path, args).map(|_| 0),
        Verb::Doctor { json } => {
            let node = Node::load(config_path).ok();
            node::doctor::run(node.as_ref(), json)
        }
        Verb::Status { json } => status::run(&Node::load(config_path)?, json),
        Verb::Node(cmd) => node_verb(&Node::load(config_path)?, cmd),
        Verb::User(cmd) => user::run(&Node::load(config_path)?, cmd, crate::app::owned_by).map(|_| 0),
        Verb::App(cmd) => app::run(&Node::load(config_path)?, actor, cmd).map(|_| 0),
        Verb::Addon(cmd) => addon::run(&Node::load(config_path)?, actor, cmd).map(|_| 0),
        Verb::Snapshot(SnapshotCmd::Save { app }) => {
            crate::snapshot::save(&Node::load(config_path)?, actor, &app).map(|_| 0)
        }
        Verb::Snapshot(SnapshotCmd::Restore { app, as_name }) => {
            crate::snapshot::restore(&Node::load(config_path)?, actor, &app, as_name.as_deref()).map(|_| 0)
        }
        Verb::Domain(cmd) => crate::app::domain::run(&Node::load(config_path)?, actor, cmd).map(|_| 0),
        Verb::Env(cmd) => env::run(&Node::load(config_path)?, actor, cmd).map(|_| 0),
        Verb::Logs {
            app,
            type_,
            follow,
            lines,
        } => {
            let node = Node::load(config_path)?;
            let script = logs_script(type_.as_deref(), lines, follow)?;
            let argv: Vec<String> = ["/bin/sh", "-c", &script].into_iter().map(String::from).collect();
            crate::app::run_in_gear(&node, actor, &app, 0, &argv)
        }
        Verb::Deploy(DeployCmd::List { app, json }) => {
            let args: &[&str] = if json {
                &["deployments", "--json"]
            } else {
                &["deployments"]
            };
            crate::app::in_gear(&Node::load(config_path)?, actor, &app, args)
        }
        Verb::Cron(CronCmd::List { app }) => {
            crate::app::in_gear(&Node::load(config_path)?, actor, &app, &["cron-list"])
        }
        Verb::Rollback { app, id } => {
            let mut args = vec!["rollback"];
            if let Some(i) = &id {
                args.push(i);
            }
            crate::app::in_gear(&Node::load(config_path)?, actor, &app, &args)
        }
        Verb::Cartridges { json } => crate::app::cartridge::print_list(&Node::load(config_path)?, json).map(|_| 0),
        Verb::Events {
            app,
            follow,
            json,
            lines,
        } => events::run(&Node::load(config_path)?, actor, app.as_deref(), follow, json, lines).map(|_| 0),
        Verb::Top { once, json, sort } => {
            let sort = top::SortKey::parse(&sort)?;
            top::run(&Node::load(config_path)?, actor, once, json, sort).map(|_| 0)
        }
        Verb::Run { app, gear, command } => {
            crate::app::run_app_command(&Node::load(config_path)?, actor, &app, gear, &command)
        }
    }
}

/// The shell script `logs` runs in gear 0: the last `lines` of every process's log (or of one
/// type's lines), then, with `follow`, what comes. A gear deployed before the log of every
/// process existed shows its web log.
fn logs_script(type_: Option<&str>, lines: u32, follow: bool) -> Result<String> {
    let all = gear::layout::ALL_LOG;
    let web = gear::layout::WEB_LOG;
    let pick = format!("cd \"$HOME\" && f={all} && {{ [ -e $f ] || [ ! -e {web} ] || f={web}; }} && touch $f && ");
    Ok(match type_ {
        None if follow => format!("{pick}exec tail -n {lines} -F $f"),
        None => format!("{pick}exec tail -n {lines} $f"),
        Some(t) => {
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                anyhow::bail!("'{t}' is not a process type name (like web, worker or cron)");
            }
            let show = format!("grep -a '^{t}\\.[0-9]* | ' {all} | tail -n {lines}");
            if follow {
                format!("{pick}{{ {show}; tail -n 0 -F {all} | grep -a --line-buffered '^{t}\\.[0-9]* | '; }}")
            } else {
                format!("{pick}{show}; true")
            }
        }
    })
}

fn node_verb(node: &Node, cmd: NodeCmd) -> Result<i32> {
    match cmd {
        NodeCmd::Up { share: Some(share) } => {
            let failed = node::runtime::up_share(node, &share)?;
            Ok(failed.min(100) as i32)
        }
        NodeCmd::Up { share: None } => {
            let failed = node::runtime::up_with_gears(node)?;
            Ok(if failed == 0 { 0 } else { 1 })
        }
        NodeCmd::Down => node::runtime::down(node).map(|_| 0),
        NodeCmd::AdminPassword => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            node::admin_login::set(node, &line)?;
            println!(
                "admin password set in {}: the daemon reads it when it starts",
                node::admin_login::path(node).display()
            );
            Ok(0)
        }
        NodeCmd::AdminCert => {
            let host = node::admin_login::set_cert(node, std::io::stdin().lock())?;
            let path = node::admin_login::cert_path(node);
            match host {
                Some(h) => println!(
                    "admin port certificate for {h} installed in {}: the daemon reads it when it starts",
                    path.display()
                ),
                None => println!(
                    "admin port certificate installed in {}: set admin_host to the name it is for (the daemon reads both when it starts)",
                    path.display()
                ),
            }
            Ok(0)
        }
        NodeCmd::Destroy { confirm } => {
            let removed = node::runtime::destroy(node, &confirm)?;
            println!("node '{}' destroyed; removed:", node.config.name);
            for r in removed {
                println!("  {r}");
            }
            Ok(0)
        }
    }
}

/// The verbs a user may run over SSH (`ssh gearshift@HOST app list`), parsed with the same
/// grammar as the local CLI. Node administration stays on the console; user management is for
/// admins only.
pub fn dispatch_remote(config_path: &Path, actor: &Actor, argv: &[String]) -> Result<i32> {
    // Usage lines name the command the way the user sends it: `ssh -p PORT LOGIN@HOST env ...`.
    let name = Node::load(config_path).map_or("gearshift".to_string(), |n| node::address::ssh(&n.config));
    let cli = match Cli::try_parse_from(std::iter::once(name).chain(argv.iter().cloned())) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            print!("{}", e.render());
            return Ok(0);
        }
        Err(e) => anyhow::bail!("{}", e.render().to_string().trim_end()),
    };
    if cli.config.is_some() {
        anyhow::bail!("--config is not accepted over SSH");
    }
    let verb = match cli.command {
        Command::Internal(_) | Command::Verb(Verb::Init(_) | Verb::Node(_)) => {
            anyhow::bail!("node administration is only possible on the node itself")
        }
        Command::Verb(Verb::User(_) | Verb::Doctor { .. }) if !actor.admin => {
            anyhow::bail!("only admins can do that")
        }
        // The node's ports, host resources and every owner's apps are the admins' business.
        Command::Verb(Verb::Status { .. }) if !actor.admin => {
            anyhow::bail!("only admins can see the node's status; your own apps: `gearshift app list`")
        }
        Command::Verb(verb) => verb,
    };
    dispatch(config_path, verb, actor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every verb SSH lets through (`ssh::command::VERBS`) is a verb of this grammar.
    #[test]
    fn ssh_verbs_are_cli_verbs() {
        for v in crate::ssh::command::VERBS {
            // `help` is clap's own verb; every other one shows its help.
            let args: &[&str] = if *v == "help" {
                &["gearshift", "help"]
            } else {
                &["gearshift", v, "--help"]
            };
            let r = Cli::try_parse_from(args);
            let kind = r.expect_err("--help ends parsing").kind();
            assert_eq!(
                kind,
                clap::error::ErrorKind::DisplayHelp,
                "'{v}' is not a verb of the CLI"
            );
        }
    }
}
