//! The node: its config, where its state lives, and bringing its shared pieces up and down.

pub mod config;
pub mod init;

use crate::gear::isolation::{cgroup, network, quota};
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

    /// Brings up the node's shared runtime pieces; idempotent, also used after a reboot.
    pub fn up(&self) -> Result<()> {
        std::fs::create_dir_all(self.run_dir().join("gears"))
            .with_context(|| format!("cannot create {}", self.run_dir().display()))?;
        std::fs::create_dir_all(self.apps_dir())?;
        std::fs::create_dir_all(self.users_dir())?;
        std::fs::create_dir_all(self.run_dir().join("newroot"))?;
        let st = match self.state() {
            Ok(s) => s,
            Err(_) => {
                let s = NodeState {
                    cgroup_parents: cgroup::node_parents(&self.config.cgroup_parent)?,
                };
                state::write_toml(&self.state_path(), &s)?;
                s
            }
        };
        cgroup::node_up(&st.cgroup_parents)?;
        quota::node_up(self)?;
        crate::gear::isolation::selinux::label_like_parent(&self.gears_dir())?;
        network::node_up(&network::NodeNet::from_config(&self.config))?;
        crate::ssh::login_user::ensure(self)?;
        Ok(())
    }

    /// Takes the node's shared pieces down (apps must be destroyed first for a full clean-up).
    pub fn down(&self) -> Result<()> {
        let mut errors = Vec::new();
        if let Err(e) = network::node_down(&network::NodeNet::from_config(&self.config)) {
            errors.push(format!("{e:#}"));
        }
        if let Err(e) = quota::node_down(self) {
            errors.push(format!("{e:#}"));
        }
        if let Ok(st) = self.state() {
            if let Err(e) = cgroup::node_down(&st.cgroup_parents) {
                errors.push(format!("{e:#}"));
            }
        }
        // A non-default node's login account is its own (`gs-NAME`): it goes with the node.
        if self.config.name != "gearshift" {
            if let Err(e) = crate::ssh::login_user::remove(self) {
                errors.push(format!("{e:#}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("node down left pieces behind: {}", errors.join("; "))
        }
    }
}
