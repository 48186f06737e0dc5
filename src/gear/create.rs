//! Creating every piece of a gear (home with quota and layout, root-owned /etc files,
//! descriptor, git repository, labels, cgroup, network, init), and removing them again.

use super::init::{self, cgroup, gear_net};
use super::isolation::network::{self, NodeNet};
use super::isolation::{quota, selinux};
use super::meta::{self, GearInfo};
use super::{layout, Boot, Gear};
use crate::node::config::Limits;
use crate::node::Node;
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;

fn walk_chown(path: &std::path::Path, uid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .with_context(|| format!("cannot chown {}", path.display()))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for e in fs::read_dir(path)? {
            walk_chown(&e?.path(), uid)?;
        }
    }
    Ok(())
}

/// Writes the root-owned files the gear sees in /etc: its own passwd and group lines, and a
/// resolv.conf when the host's points at a loopback resolver the gear cannot reach.
fn write_meta(node: &Node, gear: &Gear) -> Result<()> {
    let dir = node.gear_meta_dir(&gear.id);
    super::meta::restrict_dir(&dir, gear.gid())?;
    let passwd = format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n{app}:x:{uid}:{uid}:gearshift gear {id}:/home/{app}:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        app = gear.app,
        uid = gear.uid,
        id = gear.id
    );
    let group = format!(
        "root:x:0:\ntty:x:5:\n{app}:x:{uid}:\nnogroup:x:65534:\n",
        app = gear.app,
        uid = gear.uid
    );
    crate::state::write_atomic(&dir.join("passwd"), passwd.as_bytes(), 0o644)?;
    crate::state::write_atomic(&dir.join("group"), group.as_bytes(), 0o644)?;
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let loopback = host.lines().any(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some("nameserver") && w.next().is_some_and(|a| a.starts_with("127.") || a == "::1")
    });
    if loopback {
        if let Ok(upstream) = fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            crate::state::write_atomic(&dir.join("resolv.conf"), upstream.as_bytes(), 0o644)?;
        }
    }
    Ok(())
}

/// The pre-receive hook runs the deploy pipeline inside the gear before git accepts the push.
fn install_git_hooks(git: &std::path::Path, uid: u32) -> Result<()> {
    let hook = git.join("hooks/pre-receive");
    fs::write(&hook, "#!/bin/sh\n# gearshift: build and deploy before the push is accepted\nexec /opt/gearshift/bin/gearshift gear pre-receive\n")
        .with_context(|| format!("cannot write {}", hook.display()))?;
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755))?;
    std::os::unix::fs::lchown(&hook, Some(uid), Some(uid))?;
    Ok(())
}

/// Creates every piece of a gear: home with quota, layout, descriptor (`info`), cgroup with
/// limits, network, init (started as `boot` says). On failure the caller runs `destroy`, which
/// removes whatever was made.
pub fn create(node: &Node, gear: &Gear, limits: &Limits, info: &GearInfo, boot: &Boot) -> Result<()> {
    let home = quota::create_home(node, &gear.id, gear.uid, limits)?;
    for d in layout::CREATED {
        fs::create_dir_all(home.join(d))?;
    }
    let git = home.join(layout::git_repo(&gear.app));
    let out = std::process::Command::new("git")
        .args(["init", "--bare", "--quiet", "--initial-branch=main"])
        .arg(&git)
        .output()
        .context("cannot run git (install git)")?;
    if !out.status.success() {
        anyhow::bail!(
            "git init --bare {} failed: {}",
            git.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    walk_chown(&home, gear.uid)?;
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700))?;
    write_meta(node, gear)?;
    meta::write(node, gear, info)?;
    install_git_hooks(&git, gear.uid)?;
    selinux::label_tree(&home, &gear.mcs())?;
    selinux::label_tree(&node.gear_meta_dir(&gear.id), &gear.mcs())?;
    let cg = cgroup(node, gear)?;
    cg.create(limits)?;
    cg.verify(limits)?;
    network::gear_up(&NodeNet::from_config(&node.config), &gear_net(node, gear)?)?;
    init::ensure_running(node, gear, boot)?;
    Ok(())
}

/// Gives the gear's home and meta dir their SELinux labels again when they lack them (a gear
/// created before the policy was installed or before gearshift labelled gears, or relabelled
/// by hand). Returns whether anything was relabelled; a no-op where SELinux is off.
pub fn relabel_if_needed(node: &Node, gear: &Gear) -> Result<bool> {
    let mcs = gear.mcs();
    let mut done = false;
    for dir in [gear.home(node), node.gear_meta_dir(&gear.id)] {
        if selinux::tree_mislabelled(&dir, &mcs) {
            selinux::label_tree(&dir, &mcs)?;
            done = true;
        }
    }
    Ok(done)
}

/// Removes every piece of a gear; carries on past failures and reports them all.
pub fn destroy(node: &Node, gear: &Gear) -> Result<()> {
    let mut errors: Vec<String> = Vec::new();
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            errors.push(format!("{e:#}"));
        }
    };
    note(init::stop(node, gear));
    note(cgroup(node, gear).and_then(|c| c.remove()));
    note(gear_net(node, gear).and_then(|g| network::gear_down(&NodeNet::from_config(&node.config), &g)));
    note(quota::destroy_home(node, &gear.id, gear.uid));
    let meta = node.gear_meta_dir(&gear.id);
    if meta.exists() {
        note(fs::remove_dir_all(&meta).with_context(|| format!("cannot remove {}", meta.display())));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("destroying gear {} left pieces behind: {}", gear.id, errors.join("; "))
    }
}
