//! The node's runtime: bringing its shared pieces (cgroup parents, quota filesystem, bridge
//! and firewall, login user) up and down, every gear's init back after a reboot, and
//! destroying the whole node.

use super::Node;
use crate::app;
use crate::gear::isolation::{cgroup, network, quota, selinux};
use crate::gear::{self, control};
use crate::ssh::{login_user, sshd};
use crate::state;
use anyhow::{bail, Context, Result};

/// Brings up the node's shared runtime pieces; idempotent, also used after a reboot.
pub fn up(node: &Node) -> Result<()> {
    std::fs::create_dir_all(node.run_dir().join("gears"))
        .with_context(|| format!("cannot create {}", node.run_dir().display()))?;
    std::fs::create_dir_all(node.apps_dir())?;
    std::fs::create_dir_all(node.users_dir())?;
    std::fs::create_dir_all(node.run_dir().join("newroot"))?;
    let st = match node.state() {
        Ok(s) => s,
        Err(_) => {
            let s = super::NodeState {
                cgroup_parents: cgroup::node_parents(&node.config.cgroup_parent)?,
            };
            state::write_toml(&node.state_path(), &s)?;
            s
        }
    };
    cgroup::node_up(&st.cgroup_parents)?;
    quota::node_up(node)?;
    selinux::label_like_parent(&node.gears_dir())?;
    network::node_up(&network::NodeNet::from_config(&node.config))?;
    login_user::ensure(&node.config.ssh_user, &node.login_home())?;
    Ok(())
}

/// Takes the node's shared pieces down (apps must be destroyed first for a full clean-up).
pub fn down(node: &Node) -> Result<()> {
    let mut errors = Vec::new();
    if let Err(e) = network::node_down(&network::NodeNet::from_config(&node.config)) {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = quota::node_down(node) {
        errors.push(format!("{e:#}"));
    }
    if let Ok(st) = node.state() {
        if let Err(e) = cgroup::node_down(&st.cgroup_parents) {
            errors.push(format!("{e:#}"));
        }
    }
    // A non-default node's login account is its own (`gs-NAME`): it goes with the node.
    if node.config.name != "gearshift" {
        if let Err(e) = login_user::remove(&node.config.ssh_user) {
            errors.push(format!("{e:#}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("node down left pieces behind: {}", errors.join("; "))
    }
}

/// `gearshift node up`: the shared pieces, then every gear's init (whose supervisor starts the
/// web process if it was running). Returns how many gears could not be brought back.
pub fn up_with_gears(node: &Node) -> Result<usize> {
    up(node)?;
    let mut failed = 0;
    // An app still being created is its creator's business.
    for a in app::list(node)?.into_iter().filter(|a| a.status != "creating") {
        let boot = app::boot(&a);
        for g in &a.gears {
            match gear::relabel_if_needed(node, g) {
                Ok(true) => eprintln!(
                    "gearshift: relabelled gear {} of '{}' for SELinux (its files lacked the gear's label)",
                    g.index, a.name
                ),
                Ok(false) => {}
                Err(e) => {
                    eprintln!("gearshift: cannot relabel gear {} of '{}': {e:#}", g.index, a.name);
                    failed += 1;
                }
            }
            // A gear started by an older gearshift whose supervisor does not
            // answer the control socket gets a fresh init (an upgrade).
            let ns = network::netns_path(&g.netns());
            if gear::init_pid(node, g).is_some() && control::command(&ns, "status").is_err() {
                eprintln!(
                    "gearshift: restarting gear {} of '{}' (its supervisor does not answer)",
                    g.index, a.name
                );
                let _ = gear::stop(node, g);
            }
            if let Err(e) = gear::ensure_running(node, g, &boot) {
                eprintln!("gearshift: cannot start gear {} of '{}': {e:#}", g.index, a.name);
                failed += 1;
            }
            // A gear that outlived the node's network (bridge deleted, network restarted).
            match gear::reattach_network(node, g) {
                Ok(Some(what)) => eprintln!("gearshift: gear {} of '{}': {what}", g.index, a.name),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("gearshift: {e:#}");
                    failed += 1;
                }
            }
        }
    }
    // Add-ons are never idle: every one runs after a node up, its links back in the firewall.
    failed += crate::addon::bring_up(node)?;
    Ok(failed)
}

/// Destroys every app, takes the node down and removes its data root and config.
pub fn destroy(node: &Node, confirm: &str) -> Result<()> {
    if confirm != node.config.name {
        bail!(
            "refusing to destroy node '{}': pass --confirm {}",
            node.config.name,
            node.config.name
        );
    }
    for a in crate::addon::list(node)? {
        crate::addon::destroy(node, &crate::ssh::auth::Actor::root(), &a.name, &a.name, true)?;
    }
    for a in app::list(node)? {
        app::destroy(node, &a.name, &a.name)?;
    }
    down(node)?;
    if let Some(dir) = sshd::Paths::of(node).bin.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::fs::remove_dir_all(node.root()).with_context(|| format!("cannot remove {}", node.root().display()))?;
    let _ = std::fs::remove_file(&node.config_path);
    Ok(())
}
