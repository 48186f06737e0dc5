//! `gearshift init`: write a node config with documented defaults (or a throw-away node's), then
//! bring the node up. Running it again changes nothing that exists.

use crate::node::config::{Config, Subnet};
use crate::node::Node;
use crate::state;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Data root for all state (default /var/lib/gearshift).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Node name (names cgroups, firewall table, loop image); defaults to the bridge name.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub http_port: Option<u16>,
    #[arg(long)]
    pub https_port: Option<u16>,
    #[arg(long)]
    pub ssh_port: Option<u16>,
    #[arg(long)]
    pub subnet: Option<String>,
    #[arg(long)]
    pub bridge: Option<String>,
    /// Gear uid range, e.g. 400000-449999.
    #[arg(long)]
    pub uids: Option<String>,
    /// How many gears the node is sized for (max_gears): refused when the subnet, the uid range
    /// or one bridge cannot hold them.
    #[arg(long)]
    pub gears: Option<u32>,
    /// Cartridge directory to search (repeatable; replaces the default path).
    #[arg(long = "cartridges")]
    pub cartridges: Vec<PathBuf>,
    /// Disk quota backend: auto, btrfs-loop, ext4, xfs, none.
    #[arg(long)]
    pub disk_backend: Option<String>,
    /// Size of the btrfs loop image for gear homes.
    #[arg(long)]
    pub disk_image_size: Option<String>,
    /// Allow gears without an enforceable disk quota.
    #[arg(long)]
    pub allow_unlimited_disk: bool,
}

/// The config that `args` describe, starting from the defaults.
pub fn config_from(args: &InitArgs) -> Result<Config> {
    let mut c = Config::default();
    if let Some(b) = &args.bridge {
        c.bridge = b.clone();
        c.name = b.to_ascii_lowercase().replace('_', "-");
    }
    if let Some(n) = &args.name {
        c.name = n.clone();
    }
    if c.name != "gearshift" {
        c.cgroup_parent = format!("gearshift-{}", c.name);
        // Each node has its own login account, so parallel (test) nodes do not share one.
        let user: String = format!("gs-{}", c.name).chars().take(32).collect();
        c.ssh_user = user.trim_end_matches('-').to_string();
    }
    if let Some(r) = &args.root {
        c.data_root = if r.is_absolute() {
            r.clone()
        } else {
            std::env::current_dir()?.join(r)
        };
    }
    if let Some(p) = args.http_port {
        c.http_port = p;
        // A throw-away node keeps its other ports next to its HTTP port unless told otherwise.
        c.https_port = p.saturating_add(3);
        c.admin_port = p.saturating_add(2);
    }
    if let Some(p) = args.https_port {
        c.https_port = p;
    }
    if let Some(p) = args.ssh_port {
        c.ssh_port = p;
    }
    if let Some(s) = &args.subnet {
        c.subnet = Subnet::parse(s)?.to_string();
    }
    if let Some(u) = &args.uids {
        let (a, b) = u.split_once('-').context("--uids must look like 400000-449999")?;
        c.uid_min = a.trim().parse().context("--uids: first uid is not a number")?;
        c.uid_max = b.trim().parse().context("--uids: last uid is not a number")?;
    }
    c.max_gears = args.gears.or(c.max_gears);
    if !args.cartridges.is_empty() {
        c.cartridge_path = args
            .cartridges
            .iter()
            .map(|p| {
                if p.is_absolute() {
                    Ok(p.clone())
                } else {
                    Ok(std::env::current_dir()?.join(p))
                }
            })
            .collect::<Result<_>>()?;
    }
    if let Some(b) = &args.disk_backend {
        c.disk.backend = b.clone();
    }
    if let Some(s) = &args.disk_image_size {
        c.disk.image_size = s.clone();
    }
    c.disk.allow_unlimited |= args.allow_unlimited_disk;
    c.validate()?;
    Ok(c)
}

pub fn run(config_path: &Path, args: InitArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("gearshift init must run as root (it creates cgroups, a bridge and mounts)");
    }
    let mut wanted = config_from(&args)?;
    let node = if config_path.exists() {
        let node = Node::load(config_path)?;
        if node.config != wanted && (args.root.is_some() || args.bridge.is_some() || args.subnet.is_some()) {
            eprintln!(
                "gearshift: {} exists and differs from the flags given; keeping it (edit it or remove it to re-initialise)",
                config_path.display()
            );
        }
        node
    } else {
        let others = super::registry::others(config_path);
        if args.uids.is_none() {
            let taken: Vec<(u32, u32)> = others.iter().map(|(_, o)| (o.uid_min, o.uid_max)).collect();
            let (lo, hi) = super::clash::free_uid_range(wanted.uid_max - wanted.uid_min + 1, &taken)
                .context("no free gear uid range is left between 400000 and 523776 on this host (the other nodes take it): pass --uids FIRST-LAST with a range below 400000 that no host user has")?;
            (wanted.uid_min, wanted.uid_max) = (lo, hi);
        }
        let clashes = super::clash::find(&wanted, &super::clash::Host::look(&wanted), &others);
        if !clashes.is_empty() {
            bail!(
                "refusing to create node '{}' (nothing was written):\n  {}",
                wanted.name,
                clashes.join("\n  ")
            );
        }
        let text = format!(
            "# gearshift node config. Every value is documented in README.md (\"Node config\").\n{}",
            toml::to_string_pretty(&wanted).context("cannot serialise config")?
        );
        state::write_atomic(config_path, text.as_bytes(), 0o644)?;
        Node {
            config: wanted,
            config_path: config_path.to_path_buf(),
        }
    };
    super::registry::add(&node.config.name, config_path)?;
    match crate::gear::isolation::selinux::install_policy()? {
        crate::gear::isolation::selinux::PolicyInstall::Installed => {
            println!("installed the gearshift SELinux policy module (semodule -i)")
        }
        crate::gear::isolation::selinux::PolicyInstall::Current
        | crate::gear::isolation::selinux::PolicyInstall::Skipped => {}
    }
    super::runtime::up(&node).context("cannot bring the node up (run `gearshift doctor`)")?;
    println!(
        "node '{}' ready: config {}, data root {}",
        node.config.name,
        config_path.display(),
        node.root().display()
    );
    Ok(())
}
