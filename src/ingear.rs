//! `gearshift gear ...`: the commands that run *inside* a gear, as the gear's user, with no
//! privileges: the git pre-receive hook (the deploy pipeline), process control, deployments,
//! and the static file server. They read the gear's descriptor from /opt/gearshift/meta.

use anyhow::Result;
use std::path::PathBuf;

/// Where a gear sees gearshift's own files (read-only binds).
pub const GEAR_OPT: &str = "/opt/gearshift";

/// `gearshift gear ...` (inside a gear only).
#[derive(Debug, clap::Subcommand)]
pub enum GearCmd {
    /// Serve a directory over HTTP (the static cartridge's web process).
    StaticServe {
        dir: PathBuf,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
    },
}

pub fn run(cmd: GearCmd) -> Result<i32> {
    match cmd {
        GearCmd::StaticServe { dir, port, bind } => {
            let addr: std::net::SocketAddr = format!("{bind}:{port}").parse()?;
            crate::static_server::serve(&dir, addr).map(|_| 0)
        }
    }
}
