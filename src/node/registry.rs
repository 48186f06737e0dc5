//! The nodes on this host: one entry per node in `/etc/gearshift/nodes/NAME.toml` naming its
//! config, written atomically by `init` and removed by `node destroy`, so `init` can refuse a
//! subnet, port, bridge, uid range or name another node already has. The default config
//! (`/etc/gearshift/gearshift.toml`) counts as a node even without an entry (nodes made before
//! the registry).

use crate::node::config::{Config, DEFAULT_CONFIG};
use crate::state;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the entries live.
pub const DIR: &str = "/etc/gearshift/nodes";

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    config: PathBuf,
}

fn entry_path(name: &str) -> PathBuf {
    Path::new(DIR).join(format!("{name}.toml"))
}

/// Records the node `name` whose config is at `config` (an absolute path).
pub fn add(name: &str, config: &Path) -> Result<()> {
    let config = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    std::fs::create_dir_all(DIR).with_context(|| format!("cannot create {DIR}"))?;
    let text = toml::to_string(&Entry { config }).context("cannot serialise a node entry")?;
    state::write_atomic(&entry_path(name), text.as_bytes(), 0o644)
}

/// Forgets the node `name` (nothing to do when it has no entry).
pub fn remove(name: &str) -> Result<()> {
    match std::fs::remove_file(entry_path(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", entry_path(name).display()))
        }
        _ => Ok(()),
    }
}

/// Every other node whose config can be read: (config path, config). Entries whose config is
/// gone are left out (a node removed by hand is no longer there to clash with).
pub fn others(own_config: &Path) -> Vec<(PathBuf, Config)> {
    let own = std::fs::canonicalize(own_config).unwrap_or_else(|_| own_config.to_path_buf());
    let mut paths: Vec<PathBuf> = std::fs::read_dir(DIR)
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|t| toml::from_str::<Entry>(&t).ok())
                .map(|e| e.config)
                .collect()
        })
        .unwrap_or_default();
    paths.push(PathBuf::from(DEFAULT_CONFIG));
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| std::fs::canonicalize(p).map_or(true, |c| c != own) && *p != own)
        .filter_map(|p| Config::load(&p).ok().map(|c| (p, c)))
        .collect()
}
