//! Add-ons: databases and caches, each in a gear of its own (own uid, MCS pair, cgroup, quota,
//! network namespace), owned like apps and linked to apps by URL. This file is the add-on
//! record (`<root>/addons/<name>.toml`, no secrets) and its credentials
//! (`<root>/secrets/addons/<name>.toml`, root-only); `create` makes and destroys add-ons,
//! `link` gives apps access, `kind` knows each service.

pub mod backup;
pub mod create;
pub mod kind;
pub mod kit;
pub mod link;

pub use backup::{backup, restore};
pub use create::{create, destroy};
pub use kind::{Kind, Secret};
pub use link::{forget_app, link, sync_links, unlink};

use crate::gear::meta::{self, GearInfo};
use crate::gear::{self, Gear};
use crate::ingear::service;
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::{names, state};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The durable record of an add-on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Addon {
    pub name: String,
    /// `postgresql`, `mariadb` or `redis` (`kind::ALL`).
    pub kind: String,
    pub owner: Option<String>,
    pub profile: String,
    pub created: u64,
    /// `creating` until its service accepts connections, then `ready`.
    pub status: String,
    /// Its one gear (a list, as in app records, so the node's allocator reads both alike).
    pub gears: Vec<Gear>,
    #[serde(default)]
    pub links: Vec<Link>,
}

/// One app linked to the add-on, and the variables the link gave it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Link {
    pub app: String,
    pub vars: Vec<String>,
}

impl Addon {
    pub fn kind(&self) -> Result<Kind> {
        Kind::parse(&self.kind)
    }
    pub fn gear(&self) -> Result<&Gear> {
        self.gears
            .first()
            .with_context(|| format!("add-on '{}' has no gear", self.name))
    }
}

pub(crate) fn path(node: &Node, name: &str) -> std::path::PathBuf {
    node.addons_dir().join(format!("{name}.toml"))
}

pub(crate) fn secret_path(node: &Node, name: &str) -> std::path::PathBuf {
    node.secrets_dir().join("addons").join(format!("{name}.toml"))
}

/// Loads an add-on, with a clear error when unknown.
pub fn load(node: &Node, name: &str) -> Result<Addon> {
    names::check_app_name(name)?;
    let p = path(node, name);
    if !p.exists() {
        bail!("unknown add-on '{name}' (see `gearshift addon list`)");
    }
    state::read_toml(&p)
}

/// Loads an add-on the actor may manage (the same error for missing and not yours).
pub fn load_for(node: &Node, actor: &Actor, name: &str) -> Result<Addon> {
    let a = load(node, name)?;
    if !actor.may_manage(a.owner.as_deref()) {
        bail!("unknown add-on '{name}' (see `gearshift addon list`)");
    }
    Ok(a)
}

/// Every add-on on the node, by name.
pub fn list(node: &Node) -> Result<Vec<Addon>> {
    state::records(&node.addons_dir())?
        .iter()
        .map(|(_, p)| state::read_toml::<Addon>(p))
        .collect()
}

pub(crate) fn save(node: &Node, a: &Addon) -> Result<()> {
    state::write_toml(&path(node, &a.name), a)
}

/// The add-on's credentials (root-only).
pub fn secret(node: &Node, name: &str) -> Result<Secret> {
    state::read_toml(&secret_path(node, name))
}

pub(crate) fn save_secret(node: &Node, name: &str, s: &Secret) -> Result<()> {
    let dir = node.secrets_dir();
    std::fs::create_dir_all(dir.join("addons")).with_context(|| format!("cannot create {}", dir.display()))?;
    for d in [dir.clone(), dir.join("addons")] {
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    state::write_toml(&secret_path(node, name), s)
}

/// What the add-on's gear knows about itself: its service (as the cartridge), address, port,
/// and the first user and database its init creates.
pub fn descriptor(node: &Node, a: &Addon, s: &Secret) -> Result<GearInfo> {
    let g = a.gear()?;
    let kind = a.kind()?;
    let mut env: std::collections::BTreeMap<String, String> =
        gear::env(node, g, kind.name(), &Default::default(), None)
            .into_iter()
            .collect();
    env.insert(service::steps::USER_VAR.into(), s.user.clone());
    env.insert(service::steps::DB_VAR.into(), s.database.clone());
    Ok(GearInfo {
        app: g.app.clone(),
        gear_id: g.id.clone(),
        index: g.index,
        uid: g.uid,
        ip: g.ip,
        port: kind.port(),
        domain: node.config.domain.clone(),
        cartridge: kind.name().into(),
        deploy_branches: vec![],
        keep_deployments: 0,
        env,
        health_path: None,
        health_timeout: None,
        url: String::new(),
        ssh: crate::node::address::ssh(&node.config),
        formation: Default::default(),
    })
}

/// How an add-on's gear starts: its kind's kit (`kit`) as the "cartridge", running
/// the service supervisor.
pub fn boot(a: &Addon) -> gear::Boot {
    gear::Boot {
        cartridge: a.kind.clone(),
        cartridge_binds: |node, name| {
            Ok(vec![(
                kit::ensure(node, Kind::parse(name)?)?,
                "/opt/gearshift/cartridge".into(),
            )])
        },
        supervisor: service::run,
    }
}

/// Starts every add-on's gear unless it runs (node up, daemon start) and puts the links back
/// into the firewall; returns how many failed (each reported on stderr).
pub fn bring_up(node: &Node) -> Result<usize> {
    let mut failed = 0;
    let shaped = crate::gear::isolation::tc::shaped_devices().ok();
    for a in list(node)?.into_iter().filter(|a| a.status != "creating") {
        let Ok(g) = a.gear() else { continue };
        // A gear started here is shaped as it starts, after the listing.
        let shaped = shaped.as_ref().filter(|_| gear::init_pid(node, g).is_some());
        let r = gear::relabel_if_needed(node, g)
            .and_then(|_| gear::ensure_running(node, g, &boot(&a)))
            .and_then(|_| gear::reattach_network(node, g, shaped));
        if let Err(e) = r {
            eprintln!("gearshift: cannot start add-on '{}': {e:#}", a.name);
            failed += 1;
        }
    }
    if let Err(e) = sync_links(node) {
        eprintln!("gearshift: cannot restore the add-on links: {e:#}");
        failed += 1;
    }
    Ok(failed)
}

/// The service's supervisor status, asked from the host.
pub fn status_of(a: &Addon) -> serde_json::Value {
    let Ok(g) = a.gear() else {
        return serde_json::json!({"state": "down"});
    };
    match gear::control::command(&crate::gear::isolation::network::netns_path(&g.netns()), "status") {
        Ok(v) => v["status"].clone(),
        Err(_) => serde_json::json!({"state": "down"}),
    }
}

/// Descriptor, as root writes it into the gear's meta directory.
pub(crate) fn write_descriptor(node: &Node, a: &Addon, s: &Secret) -> Result<()> {
    meta::write(node, a.gear()?, &descriptor(node, a, s)?)
}
