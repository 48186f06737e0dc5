//! A gear: one isolated runtime instance of an app, and its life cycle.

pub mod control;
pub mod isolation;
pub mod mcs;
pub mod meta;
pub mod relay;
pub mod spawn;
pub mod tty;

use crate::node::Node;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The durable record of a gear, stored inside its app's state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gear {
    /// 32 hex characters, as OpenShift v2's gear UUIDs.
    pub id: String,
    pub app: String,
    /// 0 for the first web gear; scaled gears count up.
    pub index: u32,
    /// uid and gid of every process in the gear.
    pub uid: u32,
    pub ip: Ipv4Addr,
    pub profile: String,
}

impl Gear {
    pub fn gid(&self) -> u32 {
        self.uid
    }
    /// The SELinux MCS level, computed from the uid as OpenShift v2 did.
    pub fn mcs(&self) -> String {
        mcs::label_for_uid(self.uid)
    }
    /// The home directory on the host.
    pub fn home(&self, node: &Node) -> PathBuf {
        node.gears_dir().join(&self.id)
    }
    /// The home directory as the gear sees it.
    pub fn inner_home(&self) -> PathBuf {
        PathBuf::from(format!("/home/{}", self.app))
    }
    /// Name of the cgroup directory beneath the node's cgroup parent.
    pub fn cgroup_name(&self) -> String {
        format!("{}-{}", self.app, self.index)
    }
    /// The network namespace name (`ip netns`).
    pub fn netns(&self) -> String {
        format!("gs-{}", &self.id[..12])
    }
    /// The host end of the gear's veth pair.
    pub fn veth_host(&self) -> String {
        format!("gh{}", &self.id[..12])
    }
}

/// A fresh random gear id.
pub fn new_id() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

use crate::node::config::Limits;
use anyhow::{Context, Result};
use isolation::cgroup::GearCgroup;
use isolation::network::{self, GearNet, NodeNet};
use isolation::{mounts, quota, selinux};
use std::fs;
use std::os::unix::fs::PermissionsExt;

/// Directories of the OpenShift v2 home layout, created for every gear.
const HOME_LAYOUT: &[&str] = &[
    "app-root/data",
    "app-root/logs",
    "app-root/runtime",
    "app-root/repo",
    "git",
    ".env",
];

/// The gear's cgroup, beneath the node's parent in every hierarchy.
pub fn cgroup(node: &Node, gear: &Gear) -> Result<GearCgroup> {
    Ok(GearCgroup::new(&node.state()?.cgroup_parents, &gear.cgroup_name()))
}

fn gear_net(node: &Node, gear: &Gear) -> Result<GearNet> {
    let limits = node.config.profile(&gear.profile)?.limits()?;
    Ok(GearNet {
        netns: gear.netns(),
        veth_host: gear.veth_host(),
        ip: gear.ip,
        bandwidth_kbit: limits.bandwidth_kbit,
    })
}

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
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
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

/// Creates every piece of a gear: home with quota, layout, cgroup with limits, network, init.
/// On failure the caller runs `destroy`, which removes whatever was made.
pub fn create(node: &Node, gear: &Gear, limits: &Limits) -> Result<()> {
    let home = quota::create_home(node, &gear.id, gear.uid, limits)?;
    for d in HOME_LAYOUT {
        fs::create_dir_all(home.join(d))?;
    }
    let git = home.join("git").join(format!("{}.git", gear.app));
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
    meta::write(node, gear, &crate::app::load(node, &gear.app)?)?;
    install_git_hooks(&git, gear.uid)?;
    selinux::label_tree(&home, &gear.mcs())?;
    selinux::label_tree(&node.gear_meta_dir(&gear.id), &gear.mcs())?;
    let cg = cgroup(node, gear)?;
    cg.create(limits)?;
    cg.verify(limits)?;
    network::gear_up(&NodeNet::from_config(&node.config), &gear_net(node, gear)?)?;
    ensure_running(node, gear)?;
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
    note(stop(node, gear));
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

/// Field 22 of /proc/PID/stat: the start time, which tells a live init from a reused pid.
/// None for a dead (or zombie) process.
fn start_time(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    if after.starts_with(['Z', 'X']) {
        return None;
    }
    after.split_whitespace().nth(19)?.parse().ok()
}

fn init_file(node: &Node, gear: &Gear) -> std::path::PathBuf {
    node.gear_meta_dir(&gear.id).join("init.pid")
}

/// The host pid of the gear's init, if it is running.
pub fn init_pid(node: &Node, gear: &Gear) -> Option<i32> {
    let text = fs::read_to_string(init_file(node, gear)).ok()?;
    let (pid, st) = text.trim().split_once(' ')?;
    let pid: i32 = pid.parse().ok()?;
    (start_time(pid)? == st.parse::<u64>().ok()?).then_some(pid)
}

/// Starts the gear's init unless it runs; recreates the runtime pieces a reboot removes.
pub fn ensure_running(node: &Node, gear: &Gear) -> Result<i32> {
    if let Some(pid) = init_pid(node, gear) {
        return Ok(pid);
    }
    let _lock = crate::state::Lock::exclusive(&node.gear_meta_dir(&gear.id).join("init.lock"))?;
    if let Some(pid) = init_pid(node, gear) {
        return Ok(pid);
    }
    let limits = node.config.profile(&gear.profile)?.limits()?;
    let cg = cgroup(node, gear)?;
    cg.create(&limits)?;
    if !network::netns_path(&gear.netns()).exists() {
        network::gear_up(&NodeNet::from_config(&node.config), &gear_net(node, gear)?)?;
    }
    let spec = spawn::InitSpec {
        root: mounts::RootSpec {
            staging: node.run_dir().join("newroot"),
            home_host: gear.home(node),
            home_inner: gear.inner_home(),
            meta_dir: node.gear_meta_dir(&gear.id),
            ro_binds: gear_opt_binds(node, gear)?,
            tmp_size: (limits.memory_bytes / 4).max(16 << 20),
            owner_uid: gear.uid,
            mcs: gear.mcs(),
        },
        cgroup: cg,
        netns: network::netns_path(&gear.netns()),
        hostname: gear.app.clone(),
        who: identity(gear),
    };
    let pid =
        spawn::start_init(&spec).with_context(|| format!("cannot start gear {} of app '{}'", gear.id, gear.app))?;
    let st = start_time(pid).context("gear init vanished right after start")?;
    crate::state::write_atomic(&init_file(node, gear), format!("{pid} {st}\n").as_bytes(), 0o644)?;
    wait_for_supervisor(gear)?;
    Ok(pid)
}

/// The init reports ready just before its supervisor binds the control sockets (it must report
/// before its SELinux label switch): a gear counts as running once its supervisor answers.
fn wait_for_supervisor(gear: &Gear) -> Result<()> {
    let netns = network::netns_path(&gear.netns());
    let t = std::time::Instant::now();
    loop {
        match control::connect(&netns) {
            Ok(_) => return Ok(()),
            Err(e) if t.elapsed() > std::time::Duration::from_secs(5) => {
                return Err(e.context(format!(
                    "gear {} of app '{}' started, but its supervisor does not listen",
                    gear.id, gear.app
                )))
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// What a gear sees of gearshift, read-only under /opt/gearshift: the binary (for hooks and
/// the supervisor), its cartridge, and its descriptor.
fn gear_opt_binds(node: &Node, gear: &Gear) -> Result<Vec<(std::path::PathBuf, std::path::PathBuf)>> {
    let app = crate::app::load(node, &gear.app)?;
    let cart = crate::app::cartridge::find(node, &app.cartridge)?;
    let exe = std::env::current_exe().context("cannot find the gearshift binary")?;
    Ok(vec![
        (exe, "/opt/gearshift/bin/gearshift".into()),
        (cart.dir, "/opt/gearshift/cartridge".into()),
        (node.gear_meta_dir(&gear.id), "/opt/gearshift/meta".into()),
    ])
}

/// Stops every process of the gear (its init, hence its pid namespace, and the cgroup).
pub fn stop(node: &Node, gear: &Gear) -> Result<()> {
    if let Some(pid) = init_pid(node, gear) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        // The kernel kills the rest of the pid namespace as its init exits; wait for that.
        for _ in 0..200 {
            let state = fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let gone = state
                .as_deref()
                .and_then(|s| s.rsplit_once(") "))
                .is_none_or(|(_, r)| r.starts_with('Z'));
            if gone {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    if let Ok(cg) = cgroup(node, gear) {
        cg.kill_all()?;
    }
    let _ = fs::remove_file(init_file(node, gear));
    Ok(())
}

/// The identity every process of this gear runs as.
pub fn identity(gear: &Gear) -> spawn::Identity {
    spawn::Identity {
        uid: gear.uid,
        gid: gear.gid(),
        mcs: gear.mcs(),
        home_inner: gear.inner_home(),
    }
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
    let port = meta::WEB_PORT.to_string();
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
        ("OPENSHIFT_DATA_DIR".into(), format!("{home}/app-root/data/")),
        ("OPENSHIFT_REPO_DIR".into(), format!("{home}/app-root/repo/")),
        ("OPENSHIFT_LOG_DIR".into(), format!("{home}/app-root/logs/")),
        ("OPENSHIFT_DEPLOYMENTS_DIR".into(), format!("{home}/app-deployments/")),
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
