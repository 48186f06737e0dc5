//! `gearshift gear ...`: the commands that run *inside* a gear, as the gear's user, with no
//! privileges: the git pre-receive hook (the deploy pipeline), process control, deployments,
//! and the static file server. They read the gear's descriptor from /opt/gearshift/meta.

pub mod appjson;
pub mod cron;
pub mod deploy;
pub mod detect;
pub mod git_serve;
pub mod healthcheck;
pub mod journal;
pub mod procenv;
pub mod procfile;
pub mod proclog;
pub mod release;
pub mod reserve;
pub mod runtime_pin;
pub mod service;
pub mod static_server;
pub mod supervisor;
pub mod workers;

use crate::table;
use anyhow::Result;
use std::path::PathBuf;

/// `gearshift gear ...` (inside a gear only).
#[derive(Debug, clap::Subcommand)]
pub enum GearCmd {
    /// git's pre-receive hook: build and deploy the pushed commit.
    PreReceive,
    /// Become git-receive-pack or git-upload-pack for REPO, dying with the relay outside the
    /// gear (how a push or fetch starts in the gear).
    GitServe { service: String, repo: String },
    /// Ask the gear's supervisor: start, stop, restart, restart-if-wanted, status (restarts
    /// answer once the web process is ready).
    Ctl {
        command: String,
        #[arg(long)]
        json: bool,
    },
    /// List deployments.
    Deployments {
        #[arg(long)]
        json: bool,
    },
    /// Build and activate a deployment of COMMIT from a tar on stdin (scaling).
    Import { commit: String },
    /// Re-activate a kept deployment.
    Rollback { id: Option<String> },
    /// Run COMMAND in the live deployment, with its PATH (what `run` and `shell` start).
    Exec {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Become COMMAND as it is (how root starts a program that is not gearshift's own, so that
    /// it dies with its starter, see `gear/lifeline.rs`).
    Lifeline {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// List the live deployment's scheduled jobs.
    CronList,
    /// Serve a directory over HTTP (the static cartridge's web process).
    StaticServe {
        dir: PathBuf,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
    },
}

impl GearCmd {
    /// Whether root starts it in the gear (`gear/spawn.rs`), so that it must die with its
    /// starter: all but git's hook (started by git) and the static server (by the supervisor).
    fn started_by_root(&self) -> bool {
        !matches!(self, GearCmd::PreReceive | GearCmd::StaticServe { .. })
    }
}

pub fn run(cmd: GearCmd) -> Result<i32> {
    // The exec into the gear cleared the parent-death signal spawn.rs set (gear/lifeline.rs).
    if cmd.started_by_root() && !crate::gear::lifeline::rearm() {
        eprintln!("gearshift: the process that started this command is gone; nothing was done");
        return Ok(crate::gear::lifeline::GONE);
    }
    match cmd {
        GearCmd::PreReceive => deploy::pre_receive(),
        GearCmd::GitServe { service, repo } => git_serve::run(&service, &repo),
        GearCmd::Ctl { command, json } => {
            let v = crate::gear::control::ctl(&command)?;
            if json {
                println!("{}", v["status"]);
            } else {
                println!("{}", crate::gear::control::status_line(&v["status"]));
            }
            Ok(0)
        }
        GearCmd::Deployments { json } => {
            let live = deploy::live_id();
            let all = deploy::list();
            if json {
                let v: Vec<_> = all
                    .iter()
                    .map(|d| serde_json::json!({"id": d.id, "commit": d.commit, "branch": d.branch, "time": d.time, "result": d.result, "note": d.note, "live": Some(&d.id) == live.as_ref()}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .rev()
                    .map(|d| {
                        vec![
                            format!("{}{}", if Some(&d.id) == live.as_ref() { "* " } else { "  " }, d.id),
                            d.commit[..d.commit.len().min(12)].to_string(),
                            crate::clock::ago(d.time),
                            match &d.note {
                                Some(n) => format!("{} ({n})", d.result),
                                None => d.result.clone(),
                            },
                        ]
                    })
                    .collect();
                table::print(&["  ID", "COMMIT", "TIME", "RESULT"], &rows);
            }
            Ok(0)
        }
        GearCmd::Import { commit } => deploy::import(&commit),
        GearCmd::Rollback { id } => {
            let id = deploy::rollback(id.as_deref())?;
            println!("rolled back: {id} is live");
            Ok(0)
        }
        GearCmd::Exec { command } => procenv::exec(&command),
        GearCmd::Lifeline { command } => procenv::exec_as_given(&command),
        GearCmd::CronList => {
            let Some(repo) = procenv::live_repo() else {
                println!("nothing deployed yet: no scheduled jobs");
                return Ok(0);
            };
            let jobs = cron::jobs(&repo, &appjson::read(&repo)?)?;
            if jobs.is_empty() {
                println!("no scheduled jobs (add .openshift/cron/hourly/SCRIPT, or app.json \"cron\" entries)");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .enumerate()
                .map(|(i, j)| {
                    let command = j
                        .command
                        .strip_prefix(&format!("{}/", repo.display()))
                        .unwrap_or(&j.command);
                    vec![
                        format!("cron.{}", i + 1),
                        j.schedule.clone(),
                        j.source.clone(),
                        command.to_string(),
                    ]
                })
                .collect();
            table::print(&["JOB", "SCHEDULE (UTC)", "FROM", "COMMAND"], &rows);
            Ok(0)
        }
        GearCmd::StaticServe { dir, port, bind } => {
            let addr: std::net::SocketAddr = format!("{bind}:{port}").parse()?;
            crate::ingear::static_server::serve(&dir, addr).map(|_| 0)
        }
    }
}
