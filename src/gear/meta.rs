//! The gear descriptor: what a gear needs to know about itself (app, address, cartridge, deploy
//! settings, environment), written by root into the gear's meta directory and read inside the
//! gear at /opt/gearshift/meta/gear.toml. Root never reads files the gear can write.

use super::{layout, Gear};
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
    /// The app's URL as people reach it through the router (with its port when not 80).
    #[serde(default)]
    pub url: String,
    /// How the app's owner reaches the node's commands (`ssh -p PORT LOGIN@HOST`): hints in a
    /// push's output name commands in this form, since a pusher is always an SSH user.
    #[serde(default)]
    pub ssh: String,
    /// Process type -> quantity set by `app scale` (wins over app.json's `formation`).
    #[serde(default)]
    pub formation: BTreeMap<String, u32>,
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

/// Writes (atomically) the descriptor of `gear` into its meta directory. It holds the app's
/// secrets: root's and the gear's group's to read (0640), in a directory only they may enter.
pub fn write(node: &Node, gear: &Gear, info: &GearInfo) -> Result<()> {
    let text = toml::to_string_pretty(info).context("cannot serialise the gear descriptor")?;
    let dir = node.gear_meta_dir(&gear.id);
    restrict_dir(&dir, gear.gid())?;
    crate::state::write_atomic_for_group(&dir.join("gear.toml"), text.as_bytes(), 0o640, gear.gid())
}

/// Makes a gear's meta directory root's, enterable by the gear's group only (0750): other
/// users and other gears see none of its files.
pub fn restrict_dir(dir: &std::path::Path, gid: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::os::unix::fs::chown(dir, Some(0), Some(gid))
        .with_context(|| format!("cannot give {} to group {gid}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
        .with_context(|| format!("cannot restrict {}", dir.display()))
}

/// Names a user's variable may not take: gearshift sets them.
pub fn reserved_env(key: &str) -> bool {
    key.starts_with("OPENSHIFT_")
        || key.starts_with("GEARSHIFT_")
        || ["HOME", "USER", "LOGNAME", "PATH", "PORT", "SHELL"].contains(&key)
}

/// The environment a gear process starts with: the basics, OpenShift v2's names, the
/// cartridge's, `PORT`, then the user's own variables.
pub fn env(
    node: &Node,
    gear: &Gear,
    cartridge: &str,
    user_env: &std::collections::BTreeMap<String, String>,
    term: Option<String>,
) -> Vec<(String, String)> {
    let home = gear.inner_home().display().to_string();
    let cart = cartridge.to_ascii_uppercase().replace('-', "_");
    let port = WEB_PORT.to_string();
    let dns = format!("{}.{}", gear.app, node.config.domain);
    let mut e: Vec<(String, String)> = vec![
        ("HOME".into(), home.clone()),
        ("USER".into(), gear.app.clone()),
        ("LOGNAME".into(), gear.app.clone()),
        ("SHELL".into(), "/bin/bash".into()),
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("PORT".into(), port.clone()),
        ("OPENSHIFT_APP_NAME".into(), gear.app.clone()),
        ("OPENSHIFT_APP_DNS".into(), dns.clone()),
        ("OPENSHIFT_APP_UUID".into(), gear.id.clone()),
        ("OPENSHIFT_GEAR_UUID".into(), gear.id.clone()),
        ("OPENSHIFT_GEAR_NAME".into(), gear.app.clone()),
        ("OPENSHIFT_GEAR_DNS".into(), dns),
        ("OPENSHIFT_HOMEDIR".into(), format!("{home}/")),
        ("OPENSHIFT_DATA_DIR".into(), format!("{home}/{}/", layout::DATA)),
        ("OPENSHIFT_REPO_DIR".into(), format!("{home}/{}/", layout::REPO)),
        ("OPENSHIFT_LOG_DIR".into(), format!("{home}/{}/", layout::LOGS)),
        (
            "OPENSHIFT_DEPLOYMENTS_DIR".into(),
            format!("{home}/{}/", layout::DEPLOYMENTS),
        ),
        ("OPENSHIFT_TMP_DIR".into(), "/tmp/".into()),
        (
            "OPENSHIFT_PRIMARY_CARTRIDGE_DIR".into(),
            "/opt/gearshift/cartridge/".into(),
        ),
        ("OPENSHIFT_CARTRIDGE_DIR".into(), "/opt/gearshift/cartridge/".into()),
        (format!("OPENSHIFT_{cart}_DIR"), "/opt/gearshift/cartridge/".into()),
        (format!("OPENSHIFT_{cart}_IP"), gear.ip.to_string()),
        (format!("OPENSHIFT_{cart}_PORT"), port),
    ];
    if cart.is_empty() {
        // No cartridge yet (detected at the first push): no OPENSHIFT_<CARTRIDGE>_* names.
        e.retain(|(k, _)| !k.starts_with("OPENSHIFT__"));
    }
    for (k, v) in user_env {
        if !reserved_env(k) {
            e.push((k.clone(), v.clone()));
        }
    }
    if let Some(t) = term {
        e.push(("TERM".into(), t));
    }
    e
}
