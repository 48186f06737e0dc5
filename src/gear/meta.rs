//! The gear descriptor: what a gear needs to know about itself (app, address, cartridge, deploy
//! settings, environment), written by root into the gear's meta directory and read inside the
//! gear at /opt/gearshift/meta/gear.toml. Root never reads files the gear can write.

use super::Gear;
use crate::node::Node;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Where a gear sees its descriptor.
pub const IN_GEAR: &str = "/opt/gearshift/meta/gear.toml";
/// The port every gear's web process listens on (each gear has its own network namespace).
pub const WEB_PORT: u16 = 8080;

/// Everything gear-side code needs, in one file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GearInfo {
    pub app: String,
    pub gear_id: String,
    pub index: u32,
    pub uid: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub domain: String,
    pub cartridge: String,
    /// A push to one of these branches deploys.
    pub deploy_branches: Vec<String>,
    /// Deployments kept for rollback.
    pub keep_deployments: u32,
    /// The full environment of hooks and the web process.
    pub env: BTreeMap<String, String>,
    /// GET this path must answer 2xx before a new deployment goes live (`app health`).
    #[serde(default)]
    pub health_path: Option<String>,
    /// Seconds a new deployment may take to become ready (default: the supervisor's).
    #[serde(default)]
    pub health_timeout: Option<u32>,
}

impl GearInfo {
    /// Reads the descriptor from inside a gear.
    pub fn load_in_gear() -> Result<GearInfo> {
        let text = std::fs::read_to_string(IN_GEAR)
            .with_context(|| format!("cannot read {IN_GEAR}: this command only works inside a gear"))?;
        toml::from_str(&text).with_context(|| format!("{IN_GEAR} is not valid"))
    }

    /// The environment as (key, value) pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Writes (atomically) the descriptor of `gear` with the app's settings and environment.
pub fn write(node: &Node, gear: &Gear, app: &crate::app::App) -> Result<()> {
    let info = GearInfo {
        app: gear.app.clone(),
        gear_id: gear.id.clone(),
        index: gear.index,
        uid: gear.uid,
        ip: gear.ip,
        port: WEB_PORT,
        domain: node.config.domain.clone(),
        cartridge: app.cartridge.clone(),
        deploy_branches: match &app.deploy_branch {
            Some(b) => vec![b.clone()],
            None => vec!["main".into(), "master".into()],
        },
        keep_deployments: app.keep_deployments.unwrap_or(3),
        env: super::env(node, gear, &app.cartridge, &app.env, None)
            .into_iter()
            .collect(),
        health_path: app.health_path.clone(),
        health_timeout: app.health_timeout,
    };
    let text = toml::to_string_pretty(&info).context("cannot serialise the gear descriptor")?;
    crate::state::write_atomic(&node.gear_meta_dir(&gear.id).join("gear.toml"), text.as_bytes(), 0o644)
}
