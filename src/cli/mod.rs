//! The command-line grammar, the same locally and (later) over SSH.

use crate::node::init;
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::ssh::user;
use crate::{app, doctor};

pub mod env;
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    /// Write the node config (if missing) and bring the node up; safe to run again.
    Init(init::InitArgs),
    /// Check every isolation mechanism and tool this host offers.
    Doctor {
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
    /// Commands that run inside a gear (hooks, process control, static files).
    #[command(subcommand, hide = true)]
    Gear(crate::ingear::GearCmd),
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
    Env(crate::cli::env::EnvCmd),
    /// Show an app's web process output (rotated logs).
    Logs {
        app: String,
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
    /// Re-activate a kept deployment without rebuilding (default: the previous one).
    Rollback { app: String, id: Option<String> },
    /// Serve git for an app on stdin/stdout (a local transport for root:
    /// `git push ext::'gearshift git-serve %S APP'`; over SSH the same runs for the pusher).
    #[command(hide = true)]
    GitServe {
        service: crate::app::git::GitService,
        app: String,
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
    /// Run the node: its sshd and the socket SSH requests come through (stop with SIGTERM).
    Daemon,
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
    },
    /// One SSH request, forked by the daemon (job in the environment).
    #[command(hide = true)]
    InternalExec,
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
pub enum NodeCmd {
    /// Bring the bridge, firewall, quota filesystem and cgroups up (after a reboot).
    Up,
    /// Take them down again (apps keep their state on disk).
    Down,
    /// Destroy every app, take the node down and delete its data root.
    Destroy {
        #[arg(long)]
        confirm: String,
    },
}

pub fn main() -> Result<i32> {
    let cli = Cli::parse();
    let config_path = Node::config_path(cli.config.as_deref());
    dispatch(&config_path, cli.command, &Actor::root())
}

/// Runs a command for `actor` (root at the console, or a user over SSH).
pub fn dispatch(config_path: &std::path::Path, command: Command, actor: &Actor) -> Result<i32> {
    match command {
        Command::Gear(cmd) => crate::ingear::run(cmd),
        Command::Init(args) => init::run(config_path, args).map(|_| 0),
        Command::Doctor { json } => {
            let node = Node::load(config_path).ok();
            doctor::run(node.as_ref(), json)
        }
        Command::Node(cmd) => {
            let node = Node::load(config_path)?;
            match cmd {
                NodeCmd::Up => {
                    node.up()?;
                    // After a reboot: every gear's init (whose supervisor starts the web process
                    // if it was running).
                    let mut failed = 0;
                    // An app still being created is its creator's business.
                    for a in app::list(&node)?.into_iter().filter(|a| a.status != "creating") {
                        for g in &a.gears {
                            match crate::gear::relabel_if_needed(&node, g) {
                                Ok(true) => eprintln!(
                                    "gearshift: relabelled gear {} of '{}' for SELinux (its files lacked the gear's label)",
                                    g.index, a.name
                                ),
                                Ok(false) => {}
                                Err(e) => {
                                    eprintln!("gearshift: cannot relabel gear {} of '{}': {e:#}", g.index, a.name);
                                    failed += 1;
                                }
                            }
                            // A gear started by an older gearshift whose supervisor does not
                            // answer the control socket gets a fresh init (an upgrade).
                            let ns = crate::gear::isolation::network::netns_path(&g.netns());
                            if crate::gear::init_pid(&node, g).is_some()
                                && crate::gear::control::command(&ns, "status").is_err()
                            {
                                eprintln!(
                                    "gearshift: restarting gear {} of '{}' (its supervisor does not answer)",
                                    g.index, a.name
                                );
                                let _ = crate::gear::stop(&node, g);
                            }
                            if let Err(e) = crate::gear::ensure_running(&node, g) {
                                eprintln!("gearshift: cannot start gear {} of '{}': {e:#}", g.index, a.name);
                                failed += 1;
                            }
                        }
                    }
                    Ok(if failed == 0 { 0 } else { 1 })
                }
                NodeCmd::Down => node.down().map(|_| 0),
                NodeCmd::Destroy { confirm } => app::destroy_node(&node, &confirm).map(|_| 0),
            }
        }
        Command::User(cmd) => user::run(&Node::load(config_path)?, cmd).map(|_| 0),
        Command::App(cmd) => app::run(&Node::load(config_path)?, actor, cmd).map(|_| 0),
        Command::Domain(cmd) => crate::app::domain::run(&Node::load(config_path)?, actor, cmd).map(|_| 0),
        Command::Env(cmd) => crate::cli::env::run(&Node::load(config_path)?, actor, cmd).map(|_| 0),
        Command::Logs { app, follow, lines } => {
            let node = Node::load(config_path)?;
            let n = lines.to_string();
            let mut argv = vec!["tail", "-n", &n];
            if follow {
                argv.push("-F");
            }
            argv.push("app-root/logs/web.log");
            let argv: Vec<String> = argv.into_iter().map(String::from).collect();
            app::run_in_gear(&node, actor, &app, 0, &argv)
        }
        Command::Deploy(DeployCmd::List { app, json }) => {
            let args: &[&str] = if json {
                &["deployments", "--json"]
            } else {
                &["deployments"]
            };
            app::in_gear(&Node::load(config_path)?, actor, &app, args)
        }
        Command::Rollback { app, id } => {
            let mut args = vec!["rollback"];
            if let Some(i) = &id {
                args.push(i);
            }
            app::in_gear(&Node::load(config_path)?, actor, &app, &args)
        }
        Command::GitServe { service, app } => crate::app::git::serve(&Node::load(config_path)?, actor, &app, service),
        Command::Cartridges { json } => crate::app::cartridge::print_list(&Node::load(config_path)?, json).map(|_| 0),
        Command::Run { app, gear, command } => app::run_in_gear(&Node::load(config_path)?, actor, &app, gear, &command),
        Command::Daemon => crate::daemon::run(config_path),
        Command::AuthKeys { user } => crate::ssh::authkeys::run(config_path, &user),
        Command::SshEntry { socket, user } => crate::ssh::entry::run(&socket, &user),
        Command::InternalExec => crate::ssh::worker::run(config_path),
    }
}

/// The verbs a user may run over SSH (`ssh gearshift@HOST app list`), parsed with the same
/// grammar as the local CLI. Node administration stays on the console; user management is for
/// admins only.
pub fn dispatch_remote(config_path: &std::path::Path, actor: &Actor, argv: &[String]) -> Result<i32> {
    let cli = Cli::try_parse_from(std::iter::once("gearshift".to_string()).chain(argv.iter().cloned()))
        .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim_end()))?;
    if cli.config.is_some() {
        anyhow::bail!("--config is not accepted over SSH");
    }
    match &cli.command {
        Command::Init(_)
        | Command::Node(_)
        | Command::Gear(_)
        | Command::Daemon
        | Command::AuthKeys { .. }
        | Command::SshEntry { .. }
        | Command::InternalExec
        | Command::GitServe { .. } => {
            anyhow::bail!("node administration is only possible on the node itself")
        }
        Command::User(_) | Command::Doctor { .. } if !actor.admin => anyhow::bail!("only admins can do that"),
        _ => {}
    }
    dispatch(config_path, cli.command, actor)
}
