//! The node: its config, where its state lives, and its lock. `runtime` brings the node's
//! shared pieces up and down; `init` writes a new node's config.

pub mod address;
pub mod admin_login;
pub mod clash;
pub mod config;
pub mod doctor;
pub mod events;
pub mod init;
pub mod probe;
pub mod registry;
pub mod runtime;
pub mod sysctl;

use crate::node::config::{Config, DEFAULT_CONFIG};
use crate::state;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A loaded node: its config plus the derived paths.
#[derive(Debug, Clone)]
pub struct Node {
    pub config: Config,
    pub config_path: PathBuf,
}

/// What `init` resolved about the host and must stay fixed afterwards.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct NodeState {
    /// Absolute cgroup directories (one per mounted hierarchy) that hold this node's gears.
    pub cgroup_parents: Vec<PathBuf>,
}

impl Node {
    /// The config path from `--config`, else `GEARSHIFT_CONFIG`, else the default.
    pub fn config_path(flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| std::env::var_os("GEARSHIFT_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }

    pub fn load(config_path: &Path) -> Result<Node> {
        let config = Config::load(config_path)?;
        Ok(Node {
            config,
            config_path: config_path.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.config.data_root
    }
    pub fn apps_dir(&self) -> PathBuf {
        self.root().join("apps")
    }
    /// Add-on records (no secrets).
    pub fn addons_dir(&self) -> PathBuf {
        self.root().join("addons")
    }
    /// Root-only (0700): add-on credentials and the environment links give apps.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root().join("secrets")
    }
    pub fn users_dir(&self) -> PathBuf {
        self.root().join("users")
    }
    /// Gear homes (the mount point of the quota filesystem for the btrfs-loop backend).
    pub fn gears_dir(&self) -> PathBuf {
        self.root().join("gears")
    }
    /// Root-owned per-gear files the gear sees read-only (passwd, group, resolv.conf).
    pub fn gear_meta_dir(&self, gear_id: &str) -> PathBuf {
        self.root().join("run/gears").join(gear_id)
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root().join("run")
    }
    pub fn state_path(&self) -> PathBuf {
        self.root().join("node.toml")
    }
    /// Held while allocating uids, IPs, and while creating or destroying apps.
    pub fn lock(&self) -> Result<state::Lock> {
        state::Lock::exclusive(&self.run_dir().join("node.lock"))
    }

    pub fn state(&self) -> Result<NodeState> {
        state::read_toml(&self.state_path()).context("node state is missing: run `gearshift init` again")
    }
    /// The SSH login user's home: root-owned and empty (nothing there is read by sshd).
    pub fn login_home(&self) -> PathBuf {
        self.root().join("ssh-home")
    }
}
