//! The node's runtime: bringing its shared pieces (cgroup parents, quota filesystem, bridge
//! and firewall, login user) up and down, every gear's init back after a reboot, and
//! destroying the whole node.

use super::{probe, Node};
use crate::app;
use crate::gear;
use crate::gear::isolation::{cgroup, network, quota, selinux};
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
    for line in super::sysctl::raise(node.config.gear_capacity()) {
        eprintln!("gearshift: {line}");
    }
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

/// How many processes bring gears back at once after a reboot (`node up --share I/K`):
/// spawning a gear needs a single-threaded process, so they are processes, not threads.
const UP_PROCESSES: usize = 4;

/// `gearshift node up`: the shared pieces, then every gear's init (whose supervisor starts the
/// web process if it was running), in [`UP_PROCESSES`] processes at once. An idle app's gears
/// stay down (its next request wakes it), only put back on the network. Returns how many gears
/// could not be brought back.
pub fn up_with_gears(node: &Node) -> Result<usize> {
    up(node)?;
    let apps = apps_to_bring_up(node)?;
    let gears: usize = apps.iter().filter(|a| !a.idle).map(|a| a.gears.len()).sum();
    let mut failed = if gears > UP_PROCESSES {
        up_in_processes(node, UP_PROCESSES)?
    } else {
        up_gears(node, &apps)
    };
    // Add-ons are never idle: every one runs after a node up, its links back in the firewall.
    failed += crate::addon::bring_up(node)?;
    Ok(failed)
}

/// `node up --share I/K` (run by [`up_with_gears`]): the gears of every K-th app from the I-th.
pub fn up_share(node: &Node, share: &str) -> Result<usize> {
    let (i, k) = parse_share(share)?;
    let apps: Vec<_> = apps_to_bring_up(node)?.into_iter().skip(i).step_by(k).collect();
    Ok(up_gears(node, &apps))
}

/// `I/K` with I < K.
pub fn parse_share(share: &str) -> Result<(usize, usize)> {
    let parsed = share
        .split_once('/')
        .and_then(|(i, k)| Some((i.parse::<usize>().ok()?, k.parse::<usize>().ok()?)));
    match parsed {
        Some((i, k)) if i < k => Ok((i, k)),
        _ => bail!("--share must be I/K with I < K, like 0/4 (got '{share}')"),
    }
}

/// An app still being created is its creator's business.
fn apps_to_bring_up(node: &Node) -> Result<Vec<app::App>> {
    Ok(app::list(node)?
        .into_iter()
        .filter(|a| a.status != "creating")
        .collect())
}

/// Runs `node up --share I/K` for every I at once; the gears they could not bring back.
fn up_in_processes(node: &Node, k: usize) -> Result<usize> {
    let children = (0..k)
        .map(|i| {
            std::process::Command::new("/proc/self/exe")
                .arg("--config")
                .arg(&node.config_path)
                .args(["node", "up", "--share", &format!("{i}/{k}")])
                .stdin(std::process::Stdio::null())
                .spawn()
                .context("cannot run `gearshift node up --share`")
        })
        .collect::<Result<Vec<_>>>()?;
    let mut failed = 0;
    for mut c in children {
        // Each exits with the number of gears it could not bring back (at most 100).
        failed += c.wait().map_or(1, |st| st.code().map_or(1, |n| n as usize));
    }
    Ok(failed)
}

/// Brings back the gears of `apps`; how many could not be.
fn up_gears(node: &Node, apps: &[app::App]) -> usize {
    let mut failed = 0;
    // One listing of the host's token buckets for every gear's check.
    let shaped = crate::gear::isolation::tc::shaped_devices().ok();
    for a in apps {
        let boot = app::boot(a);
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
            // A gear this pass starts is shaped as it starts, after the listing.
            let was_running = gear::init_pid(node, g).is_some();
            if !a.idle {
                // A gear started by an older gearshift whose supervisor does not answer the
                // control socket gets a fresh init (an upgrade).
                match gear::ensure_answering(node, g, &boot) {
                    Ok(true) => eprintln!(
                        "gearshift: restarted gear {} of '{}' (its supervisor did not answer)",
                        g.index, a.name
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        eprintln!("gearshift: cannot start gear {} of '{}': {e:#}", g.index, a.name);
                        failed += 1;
                    }
                }
            }
            // A gear that outlived the node's network (bridge deleted, network restarted).
            match gear::reattach_network(node, g, shaped.as_ref().filter(|_| was_running)) {
                Ok(Some(what)) => eprintln!("gearshift: gear {} of '{}': {what}", g.index, a.name),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("gearshift: {e:#}");
                    failed += 1;
                }
            }
        }
    }
    failed
}

/// Destroys the node: stops its daemon (and so its sshd and router), destroys every app, takes
/// the shared pieces down and removes its data root and config. Returns what it removed, a
/// line each, for the admin to read.
pub fn destroy(node: &Node, confirm: &str) -> Result<Vec<String>> {
    if confirm != node.config.name {
        bail!(
            "refusing to destroy node '{}': pass --confirm {}",
            node.config.name,
            node.config.name
        );
    }
    let mut removed = Vec::new();
    if let Some(line) = stop_daemon(node)? {
        removed.push(line);
    }
    for a in crate::addon::list(node)? {
        crate::addon::destroy(node, &crate::ssh::auth::Actor::root(), &a.name, &a.name, true)?;
        removed.push(format!("add-on '{}' ({})", a.name, a.kind));
    }
    for a in app::list(node)? {
        let gears: Vec<String> = a.gears.iter().map(|g| format!("{} (uid {})", g.id, g.uid)).collect();
        app::destroy(node, &a.name, &a.name)?;
        removed.push(format!("app '{}' and its gear(s) {}", a.name, gears.join(", ")));
    }
    // What exists now, so the listing names only what was really there.
    let net = network::NodeNet::from_config(&node.config);
    let bridge = std::path::Path::new("/sys/class/net").join(&net.bridge).exists();
    let table = nft_table_exists(&net.nft_table);
    let cgroups: Vec<_> = node
        .state()
        .map(|st| st.cgroup_parents.into_iter().filter(|p| p.exists()).collect())
        .unwrap_or_default();
    let image = node.root().join("gears.img");
    let image = image.exists().then_some(image);
    let leftovers = cgroup::sweep_leftovers(&cgroups)?;
    let login = node.config.name != "gearshift"
        && nix::unistd::User::from_name(&node.config.ssh_user)
            .ok()
            .flatten()
            .is_some();
    down(node)?;
    if bridge {
        removed.push(format!(
            "bridge {} ({}/{})",
            net.bridge,
            net.subnet.gateway(),
            net.subnet.prefix
        ));
    }
    if table {
        removed.push(format!("nftables table inet {}", net.nft_table));
    }
    removed.extend(leftovers);
    for c in cgroups {
        removed.push(format!("cgroup {}", c.display()));
    }
    if let Some(i) = image {
        removed.push(format!("quota filesystem image {}", i.display()));
    }
    if login {
        removed.push(format!("login user {}", node.config.ssh_user));
    }
    if let Some(dir) = sshd::Paths::of(node).bin.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::fs::remove_dir_all(node.root()).with_context(|| format!("cannot remove {}", node.root().display()))?;
    removed.push(format!("data root {}", node.root().display()));
    if std::fs::remove_file(&node.config_path).is_ok() {
        removed.push(format!("config {}", node.config_path.display()));
    }
    super::registry::remove(&node.config.name)?;
    Ok(removed)
}

/// Stops the node's daemon (SIGTERM; it stops its sshd and router) and any sshd a killed
/// daemon left, then checks that nothing of the node listens on its ports any more.
fn stop_daemon(node: &Node) -> Result<Option<String>> {
    let pid = probe::daemon_pid(node);
    if let Some(pid) = pid {
        // SAFETY: kill(2) on the pid that holds this node's daemon lock.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while probe::daemon_pid(node).is_some() {
            if std::time::Instant::now() > deadline {
                bail!(
                    "the daemon of node '{}' (pid {pid}) did not stop within 30 s of SIGTERM; nothing was removed (stop it, then run node destroy again)",
                    node.config.name
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    sshd::stop_stale(&sshd::Paths::of(node));
    let c = &node.config;
    let ports = [c.ssh_port, c.http_port, c.https_port, c.admin_port];
    let bound: Vec<String> = ports
        .iter()
        .filter(|&&p| !probe::listening_inodes(p).is_empty())
        .map(|p| p.to_string())
        .collect();
    if !bound.is_empty() {
        eprintln!(
            "gearshift: port(s) {} of node '{}' are still bound by another process (not this node's)",
            bound.join(", "),
            c.name
        );
    }
    let ports: Vec<String> = ports
        .iter()
        .map(|p| p.to_string())
        .filter(|p| !bound.contains(p))
        .collect();
    Ok(pid.map(|pid| {
        format!(
            "daemon (pid {pid}) stopped, with its sshd and router (ports {} closed)",
            ports.join(", ")
        )
    }))
}

fn nft_table_exists(table: &str) -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "inet", table])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::parse_share;

    #[test]
    fn shares_split_the_apps_between_the_processes() {
        assert_eq!(parse_share("0/4").unwrap(), (0, 4));
        assert_eq!(parse_share("3/4").unwrap(), (3, 4));
        for bad in ["4/4", "1", "a/4", "1/0", ""] {
            let e = parse_share(bad).unwrap_err().to_string();
            assert!(e.contains("--share must be I/K"), "{bad}: {e}");
        }
    }
}
