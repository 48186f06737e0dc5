//! Apps: named applications owned by a user, each with one or more gears. This file is the
//! app record (`<root>/apps/<name>.toml`) and what every other part needs of it; `create`
//! makes and destroys apps, `lifecycle` starts, stops, idles and runs commands in them,
//! `scale` adds and removes gears.

pub mod admission;
pub mod apply;
pub mod cartridge;
pub mod cert_bundle;
pub mod condition;
pub mod create;
pub mod disk_admission;
pub mod domain;
pub mod formation;
pub mod git;
pub mod lifecycle;
pub mod records;
pub mod sample;
pub mod scale;

pub use create::{create, destroy};
pub use lifecycle::{in_gear, run_app_command, run_in_gear, run_in_gear_plain, set_env, start_web};
pub use scale::{replicate, scale};

use crate::gear::meta::{self, GearInfo};
use crate::gear::{self, Gear};
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::{names, state};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The durable record of an app (`<root>/apps/<name>.toml`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct App {
    pub name: String,
    pub owner: Option<String>,
    pub cartridge: String,
    pub profile: String,
    /// Unix time of creation.
    pub created: u64,
    /// `creating` until every gear piece exists, then `ready`.
    pub status: String,
    pub gears: Vec<Gear>,
    /// The user's own environment variables.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Branch whose pushes deploy (default: main or master).
    #[serde(default)]
    pub deploy_branch: Option<String>,
    /// Deployments kept for rollback (default 3).
    #[serde(default)]
    pub keep_deployments: Option<u32>,
    /// Extra host names the router serves this app at (besides APP.DOMAIN).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Aliases whose certificate comes over ACME (`domain add APP HOST --acme`): the daemon
    /// obtains and renews it (`daemon/acme.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acme: Vec<String>,
    /// Idled: no processes; the next request wakes it.
    #[serde(default)]
    pub idle: bool,
    /// Answer plain HTTP with a redirect to HTTPS.
    #[serde(default)]
    pub https_redirect: bool,
    /// GET this path must answer 2xx before a new deployment goes live.
    #[serde(default)]
    pub health_path: Option<String>,
    /// Seconds a new deployment may take to become healthy (default 30).
    #[serde(default)]
    pub health_timeout: Option<u32>,
    /// Process type -> quantity set by `app scale TYPE=N` (kept across restarts and pushes;
    /// `web` only when 0: the web gears are `gears`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub formation: std::collections::BTreeMap<String, u32>,
    /// A change of `env` or `formation` recorded but not yet known to run (`apply.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applying: Option<Applying>,
}

/// A change being applied: how a gear is made to run it, and the values before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applying {
    /// The supervisors' command that makes a gear run it: `restart-if-wanted` (a new
    /// environment) or `scale` (a new formation).
    pub ask: String,
    /// The environment before the change.
    pub env: std::collections::BTreeMap<String, String>,
    /// The formation before the change.
    pub formation: std::collections::BTreeMap<String, u32>,
}

/// The longest health timeout (the supervisor's control socket answers within 60 s).
pub const MAX_HEALTH_TIMEOUT: u32 = 50;
/// The health timeout when none is set (the same as the plain start timeout).
pub const DEFAULT_HEALTH_TIMEOUT: u32 = 30;

/// Checks a health path: absolute, printable ASCII without spaces, at most 1024 bytes.
pub fn check_health_path(p: &str) -> Result<()> {
    if !p.starts_with('/') || p.len() > 1024 || !p.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "'{}' is not a health path: give an absolute path such as /healthz (printable ASCII, no spaces)",
            p.escape_default()
        );
    }
    Ok(())
}

pub(crate) fn path(node: &Node, name: &str) -> std::path::PathBuf {
    node.apps_dir().join(format!("{name}.toml"))
}

/// Loads an app the actor may manage (the same error for missing and not yours).
pub fn load_for(node: &Node, actor: &Actor, name: &str) -> Result<App> {
    let app = load(node, name)?;
    actor.check_app(name, app.owner.as_deref())?;
    Ok(app)
}

/// Loads an app, with a clear error when unknown.
pub fn load(node: &Node, name: &str) -> Result<App> {
    names::check_app_name(name)?;
    let p = path(node, name);
    if !p.exists() {
        bail!("unknown app '{name}' (see `gearshift app list`)");
    }
    state::read_toml(&p)
}

/// Every app on the node, by name.
pub fn list(node: &Node) -> Result<Vec<App>> {
    state::records(&node.apps_dir())?
        .iter()
        .map(|(_, p)| state::read_toml::<App>(p))
        .collect()
}

pub(crate) fn save(node: &Node, app: &App) -> Result<()> {
    state::write_toml(&path(node, &app.name), app)
}

/// The gears of any record (app or add-on): what the allocator needs of each.
#[derive(Deserialize)]
struct GearsOf {
    gears: Vec<Gear>,
}

/// Lowest free uid and IP on the node, among the gears of apps and add-ons (call with the node
/// lock held).
pub(crate) fn allocate(node: &Node) -> Result<(u32, std::net::Ipv4Addr)> {
    let mut gears: Vec<Gear> = list(node)?.into_iter().flat_map(|a| a.gears).collect();
    for (_, p) in state::records(&node.addons_dir())? {
        gears.extend(state::read_toml::<GearsOf>(&p)?.gears);
    }
    let used_uids: BTreeSet<u32> = gears.iter().map(|g| g.uid).collect();
    let used_ips: BTreeSet<_> = gears.iter().map(|g| g.ip).collect();
    let c = &node.config;
    // One bridge holds at most 1023 gears; `max_gears` may say fewer.
    let capacity = c.gear_capacity();
    anyhow::ensure!(
        (gears.len() as u64) < u64::from(capacity),
        "the node is full: it is sized for {capacity} gears (max_gears; a bridge holds at most {}): destroy an app or add-on, or ask the admin to raise max_gears",
        crate::node::config::BRIDGE_MAX_GEARS
    );
    let uid = (c.uid_min..=c.uid_max)
        .find(|u| !used_uids.contains(u))
        .with_context(|| {
            format!(
                "no free gear uid left in {}..={} (widen uid_min/uid_max)",
                c.uid_min, c.uid_max
            )
        })?;
    let net = c.subnet();
    let ip = (2..=net.hosts())
        .filter_map(|n| net.host(n))
        .find(|ip| !used_ips.contains(ip))
        .with_context(|| format!("no free address left in subnet {net}"))?;
    Ok((uid, ip))
}

/// Held shared by every push to the app, exclusively while it is idled (host side, root only).
pub fn push_lock(node: &Node, name: &str) -> std::path::PathBuf {
    node.run_dir().join("pushes").join(format!("{name}.lock"))
}

/// Records whether the app is idle (the router wakes idle apps on their next request).
pub fn set_idle(node: &Node, actor: &Actor, name: &str, idle: bool) -> Result<()> {
    let _lock = node.lock()?;
    let mut app = load_for(node, actor, name)?;
    if app.idle != idle {
        app.idle = idle;
        save(node, &app)?;
    }
    Ok(())
}

/// Changes an app's record under the node lock.
pub fn update(node: &Node, actor: &Actor, name: &str, change: impl FnOnce(&mut App) -> Result<()>) -> Result<App> {
    let _lock = node.lock()?;
    let mut app = load_for(node, actor, name)?;
    change(&mut app)?;
    save(node, &app)?;
    Ok(app)
}

/// Apps whose record names `user` as owner, sorted.
pub fn owned_by(node: &Node, user: &str) -> Result<Vec<String>> {
    Ok(list(node)?
        .into_iter()
        .filter(|a| a.owner.as_deref() == Some(user))
        .map(|a| a.name)
        .collect())
}

/// What gear `g` of `app` knows about itself (its descriptor, `gear::meta`).
pub fn descriptor(node: &Node, app: &App, g: &Gear) -> GearInfo {
    GearInfo {
        app: g.app.clone(),
        gear_id: g.id.clone(),
        index: g.index,
        uid: g.uid,
        ip: g.ip,
        port: meta::WEB_PORT,
        domain: node.config.domain.clone(),
        cartridge: app.cartridge.clone(),
        deploy_branches: match &app.deploy_branch {
            Some(b) => vec![b.clone()],
            None => vec!["main".into(), "master".into()],
        },
        keep_deployments: app.keep_deployments.unwrap_or(3),
        env: gear_env(node, app, g, None).into_iter().collect(),
        health_path: app.health_path.clone(),
        health_timeout: app.health_timeout,
        url: crate::node::address::app_url(&node.config, &app.name),
        ssh: crate::node::address::ssh(&node.config),
        formation: app.formation.clone(),
    }
}

/// Where the variables of the app's add-on links are kept (root-only: they hold passwords).
pub(crate) fn linked_env_path(node: &Node, name: &str) -> std::path::PathBuf {
    node.secrets_dir().join("links").join(format!("{name}.toml"))
}

/// The variables the app's add-on links give it (`addon link`); none when unlinked.
pub fn linked_env(node: &Node, name: &str) -> Result<std::collections::BTreeMap<String, String>> {
    let p = linked_env_path(node, name);
    if !p.exists() {
        return Ok(Default::default());
    }
    state::read_toml(&p)
}

/// Replaces the variables of the app's add-on links (root-only file in a root-only directory).
pub fn set_linked_env(node: &Node, name: &str, env: &std::collections::BTreeMap<String, String>) -> Result<()> {
    let p = linked_env_path(node, name);
    if env.is_empty() {
        let _ = std::fs::remove_file(&p);
        return Ok(());
    }
    let dir = p.parent().context("no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for d in [node.secrets_dir(), dir.to_path_buf()] {
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    state::write_toml(&p, env)
}

/// The environment of a process in gear `g` of `app`: gearshift's, the user's, then what the
/// app's add-on links give it.
pub fn gear_env(node: &Node, app: &App, g: &Gear, term: Option<String>) -> Vec<(String, String)> {
    let mut env = gear::env(node, g, &app.cartridge, &app.env, term);
    match linked_env(node, &app.name) {
        Ok(linked) => env.extend(linked),
        Err(e) => eprintln!("gearshift: app '{}' runs without its add-on links: {e:#}", app.name),
    }
    env
}

/// Rewrites every gear's descriptor after a change of the app's settings (the supervisors
/// read it at the next switch: push, rollback, env change).
pub fn write_descriptors(node: &Node, app: &App) -> Result<()> {
    for g in &app.gears {
        meta::write(node, g, &descriptor(node, app, g))?;
    }
    Ok(())
}

/// How the gears of `app` start: with its cartridge, running the gear-side supervisor.
pub fn boot(app: &App) -> gear::Boot {
    gear::Boot {
        cartridge: app.cartridge.clone(),
        cartridge_binds: cartridge::binds,
        supervisor: crate::ingear::supervisor::run,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_paths() {
        for ok in ["/", "/healthz", "/status?deep=1"] {
            super::check_health_path(ok).unwrap();
        }
        for bad in ["", "healthz", "/a b", "/\n", "/ä", &format!("/{}", "a".repeat(1024))] {
            assert!(super::check_health_path(bad).is_err(), "{bad:?}");
        }
    }
}
