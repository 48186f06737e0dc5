//! cgroups v1 and v2: the node's parent directories beneath our own cgroup, and one cgroup per
//! gear with the profile's limits. Each directory's version is read from the files it has, so
//! hybrid hosts (v1 controllers plus an empty v2 mount) work without a mode switch.

use super::check::Check;
use super::mountinfo::{self, MountEntry};
use crate::node::config::Limits;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Controllers the v1 kernel may offer (anything else in the super options is a mount option).
const KERNEL_V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];
/// v1 controllers gearshift limits or reads (cpuset and devices are left alone).
const V1_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "cpuacct", "blkio", "freezer"];
/// v2 controllers enabled for the gears.
const V2_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "io"];

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// v1 controller names (empty for v2).
    pub controllers: Vec<String>,
    pub v2: bool,
}

/// The v1 controllers a `cgroup` mount carries, in its super options' order (none for other
/// filesystems; named hierarchies like `name=systemd` and mount options are left out).
fn v1_controllers(e: &MountEntry) -> impl Iterator<Item = &str> {
    let opts = if e.fstype == "cgroup" {
        e.super_opts.as_str()
    } else {
        ""
    };
    opts.split(',').filter(|o| KERNEL_V1_CONTROLLERS.contains(o))
}

/// The hierarchies gearshift uses, from /proc/self/mountinfo (not assumed).
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    Ok(hierarchies_in(&mountinfo::read()?))
}

/// The hierarchies that matter among `mounts`: v1 ones holding a wanted controller, else the
/// v2 one.
pub fn hierarchies_in(mounts: &[MountEntry]) -> Vec<Hierarchy> {
    let mut v1 = Vec::new();
    let mut v2 = None;
    for e in mounts {
        if e.fstype == "cgroup" {
            let ctrls: Vec<String> = v1_controllers(e)
                .filter(|o| V1_CONTROLLERS.contains(o))
                .map(String::from)
                .collect();
            if !ctrls.is_empty() && !v1.iter().any(|h: &Hierarchy| h.mount == e.mount_point) {
                v1.push(Hierarchy {
                    mount: e.mount_point.clone(),
                    controllers: ctrls,
                    v2: false,
                });
            }
        } else if e.fstype == "cgroup2" && v2.is_none() {
            v2 = Some(Hierarchy {
                mount: e.mount_point.clone(),
                controllers: vec![],
                v2: true,
            });
        }
    }
    if v1.iter().any(|h| h.controllers.iter().any(|c| c == "memory")) {
        v1
    } else {
        v2.into_iter().collect()
    }
}

/// Our own cgroup path in a hierarchy, from /proc/self/cgroup.
fn own_path(h: &Hierarchy, proc_cgroup: &str) -> Option<String> {
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let matches = if h.v2 {
            id == "0" && ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| h.controllers.iter().any(|x| x == c))
        };
        if matches {
            return Some(path.to_string());
        }
    }
    None
}

/// The leaf a v2 cgroup's own processes are moved into so that the cgroup may enable
/// controllers for its children (the v2 "no internal processes" rule).
pub const SUPERVISOR_LEAF: &str = "gearshift-supervisor";

/// The node's parent directory in every hierarchy: `<our own cgroup>/<name>`, so gear cgroups
/// sit beneath the daemon's cgroup, never beside it. When we already live in the supervisor
/// leaf (a previous `init` moved us there), the node goes beside the leaf, not inside it.
pub fn node_parents(name: &str) -> Result<Vec<PathBuf>> {
    let pc = fs::read_to_string("/proc/self/cgroup").context("cannot read /proc/self/cgroup")?;
    let hs = hierarchies()?;
    if hs.is_empty() {
        bail!("no usable cgroup hierarchy is mounted (need v1 memory or v2 with controllers; run `gearshift doctor`)");
    }
    let mut out = Vec::new();
    for h in &hs {
        let own = own_path(h, &pc).unwrap_or_else(|| "/".into());
        out.push(h.mount.join(base_of(h, &own)).join(name));
    }
    Ok(out)
}

/// Our own cgroup path relative to the mount, minus a trailing supervisor leaf on v2.
fn base_of(h: &Hierarchy, own: &str) -> PathBuf {
    let rel = Path::new(own.trim_start_matches('/'));
    match (h.v2, rel.file_name()) {
        (true, Some(n)) if n == SUPERVISOR_LEAF => rel.parent().unwrap_or(Path::new("")).to_path_buf(),
        _ => rel.to_path_buf(),
    }
}

fn is_v2(dir: &Path) -> bool {
    dir.parent()
        .map(|p| p.join("cgroup.controllers").exists())
        .unwrap_or(false)
        || dir.join("cgroup.controllers").exists()
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("cannot write '{value}' to {}", path.display()))
}

/// Creates the node's parent cgroups and, on v2, enables the controllers for the gears in
/// every ancestor from the mount down to the node's parent.
pub fn node_up(parents: &[PathBuf]) -> Result<()> {
    for p in parents {
        if is_v2(p) {
            let mount = v2_mount_of(p)?;
            if let Some(base) = p.parent() {
                let mut dir = mount.clone();
                enable_v2_controllers(&dir)?;
                for part in base.strip_prefix(&mount).unwrap_or(Path::new("")).components() {
                    dir.push(part);
                    evacuate(&dir)?;
                    enable_v2_controllers(&dir)?;
                }
            }
            fs::create_dir_all(p).with_context(|| format!("cannot create cgroup {}", p.display()))?;
            enable_v2_controllers(p)?;
        } else {
            fs::create_dir_all(p).with_context(|| format!("cannot create cgroup {}", p.display()))?;
        }
    }
    Ok(())
}

/// The cgroup2 mount point holding `dir`.
fn v2_mount_of(dir: &Path) -> Result<PathBuf> {
    hierarchies()?
        .into_iter()
        .filter(|h| h.v2 && dir.starts_with(&h.mount))
        .max_by_key(|h| h.mount.as_os_str().len())
        .map(|h| h.mount)
        .with_context(|| format!("{} is not on a cgroup2 mount", dir.display()))
}

/// The pids directly in a cgroup.
fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// v2 forbids enabling controllers for the children of a cgroup that holds processes: moves
/// every process of `dir` (ours among them) into `dir/gearshift-supervisor`. Under systemd,
/// run gearshift in a unit with `Delegate=yes` so `dir` is ours to rearrange.
fn evacuate(dir: &Path) -> Result<()> {
    let subtree = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let missing = V2_CONTROLLERS
        .iter()
        .any(|c| !subtree.split_whitespace().any(|s| s == *c));
    if !missing || procs(dir).is_empty() {
        return Ok(());
    }
    let leaf = dir.join(SUPERVISOR_LEAF);
    fs::create_dir_all(&leaf).with_context(|| format!("cannot create cgroup {}", leaf.display()))?;
    for _ in 0..100 {
        let left = procs(dir);
        if left.is_empty() {
            return Ok(());
        }
        for pid in left {
            // A process may exit meanwhile (ESRCH); kernel threads cannot move (EINVAL).
            let _ = fs::write(leaf.join("cgroup.procs"), pid.to_string());
        }
    }
    bail!(
        "cannot move the processes of {} into {} (they keep coming back; run gearshift in a systemd unit with Delegate=yes)",
        dir.display(),
        leaf.display()
    )
}

fn enable_v2_controllers(dir: &Path) -> Result<()> {
    let avail = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in V2_CONTROLLERS {
        if avail.split_whitespace().any(|a| a == *c) && !enabled.split_whitespace().any(|a| a == *c) {
            write(&dir.join("cgroup.subtree_control"), &format!("+{c}")).with_context(|| {
                format!("cannot enable the {c} controller below {} (a cgroup with processes cannot delegate on v2: run gearshift in its own unit with Delegate=yes)", dir.display())
            })?;
        }
    }
    Ok(())
}

/// Removes the node's parent cgroups (they must hold no gears). A process that is exiting keeps
/// its cgroup busy for a moment, so a busy directory is retried for up to a second.
pub fn node_down(parents: &[PathBuf]) -> Result<()> {
    for p in parents {
        if p.exists() {
            rmdir_patiently(p).with_context(|| format!("cannot remove cgroup {} (gears still in it?)", p.display()))?;
        }
    }
    Ok(())
}

fn rmdir_patiently(d: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if tries >= 100 => return Err(e),
            Err(_) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// For `node destroy`, once every app and add-on is gone: cgroups still below the node's
/// parents belong to no gear any more (a gear whose removal was cut short). Kills what runs in
/// them and removes them, deepest first; returns one line per cgroup removed, naming the
/// processes killed, so the leak is reported rather than left to block the next node.
pub fn sweep_leftovers(parents: &[PathBuf]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for p in parents {
        collect_children(p, &mut found);
    }
    // Deepest first: a child must go before its parent.
    found.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let mut lines = Vec::new();
    for d in found {
        let cg = GearCgroup { dirs: vec![d.clone()] };
        let killed: Vec<String> = cg.pids().iter().map(|pid| format!("{pid} ({})", comm(*pid))).collect();
        cg.kill_all()?;
        rmdir_patiently(&d).with_context(|| format!("cannot remove leftover cgroup {}", d.display()))?;
        lines.push(if killed.is_empty() {
            format!("leftover cgroup {}", d.display())
        } else {
            format!(
                "leftover cgroup {} and its processes {}",
                d.display(),
                killed.join(", ")
            )
        });
    }
    Ok(lines)
}

fn collect_children(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.path());
            collect_children(&e.path(), out);
        }
    }
}

fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| "gone".into())
}

/// A gear's cgroup: one directory per hierarchy.
#[derive(Debug, Clone)]
pub struct GearCgroup {
    pub dirs: Vec<PathBuf>,
}

/// Usage read back from a gear's cgroup.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub memory_bytes: u64,
    pub memory_limit: u64,
    pub oom_kills: u64,
    pub pids: u64,
    pub pids_limit: u64,
    pub cpu_usage_usec: u64,
    pub cpu_throttled: u64,
}

impl GearCgroup {
    pub fn new(parents: &[PathBuf], name: &str) -> GearCgroup {
        GearCgroup {
            dirs: parents.iter().map(|p| p.join(name)).collect(),
        }
    }

    /// Creates the directories and writes the limits.
    pub fn create(&self, l: &Limits) -> Result<()> {
        for d in &self.dirs {
            fs::create_dir_all(d).with_context(|| format!("cannot create cgroup {}", d.display()))?;
            if is_v2(d) {
                self.limit_v2(d, l)?;
            } else {
                self.limit_v1(d, l)?;
            }
        }
        Ok(())
    }

    fn limit_v1(&self, d: &Path, l: &Limits) -> Result<()> {
        let period = 100_000u64;
        let set = |f: &str, v: String| -> Result<()> {
            let p = d.join(f);
            if p.exists() {
                write(&p, &v)?;
            }
            Ok(())
        };
        set("memory.limit_in_bytes", l.memory_bytes.to_string())?;
        // No swap beyond the memory limit, where the kernel accounts swap.
        set("memory.memsw.limit_in_bytes", l.memory_bytes.to_string())?;
        set("pids.max", l.pids.to_string())?;
        set("cpu.cfs_period_us", period.to_string())?;
        set("cpu.cfs_quota_us", (l.cpu_millis * period / 1000).to_string())?;
        set("cpu.shares", (l.cpu_millis * 1024 / 1000).max(2).to_string())?;
        // blkio.weight exists only with a proportional io scheduler (bfq); best effort by design.
        let _ = set("blkio.weight", l.io_weight.to_string());
        let _ = set("blkio.bfq.weight", l.io_weight.to_string());
        Ok(())
    }

    fn limit_v2(&self, d: &Path, l: &Limits) -> Result<()> {
        let set = |f: &str, v: String| -> Result<()> {
            let p = d.join(f);
            if p.exists() {
                write(&p, &v)?;
            }
            Ok(())
        };
        set("memory.max", l.memory_bytes.to_string())?;
        set("memory.swap.max", "0".into())?;
        set("pids.max", l.pids.to_string())?;
        set("cpu.max", format!("{} 100000", l.cpu_millis * 100))?;
        set("cpu.weight", (l.cpu_millis / 10).clamp(1, 10000).to_string())?;
        set("io.weight", format!("default {}", l.io_weight))?;
        // A gear that starts again starts thawed (whoever froze the one before).
        set("cgroup.freeze", "0".into())?;
        Ok(())
    }

    /// Checks that every limit the profile asks for is in force; names what is not.
    pub fn verify(&self, l: &Limits) -> Result<()> {
        let s = self.stats();
        if s.memory_limit == 0 || s.memory_limit > l.memory_bytes {
            bail!(
                "memory limit is not in force in {:?} (run `gearshift doctor`)",
                self.dirs
            );
        }
        if s.pids_limit == 0 {
            bail!("pids limit is not in force in {:?} (run `gearshift doctor`)", self.dirs);
        }
        Ok(())
    }

    /// Moves process `pid` (0: the caller) into every hierarchy of this cgroup.
    pub fn join(&self, pid: i32) -> Result<()> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The pids in the gear's cgroup (host pid namespace).
    pub fn pids(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self.dirs.iter().flat_map(|d| procs(d)).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kills every process in the gear, freezing it first where a freezer exists so nothing forks
    /// away during the kill.
    pub fn kill_all(&self) -> Result<()> {
        for d in &self.dirs {
            if d.join("cgroup.kill").exists() {
                let _ = write(&d.join("cgroup.kill"), "1");
            }
        }
        let freezer = self.dirs.iter().find(|d| d.join("freezer.state").exists());
        for _ in 0..200 {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            if let Some(f) = freezer {
                let _ = fs::write(f.join("freezer.state"), "FROZEN");
            }
            for p in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
            }
            if let Some(f) = freezer {
                let _ = fs::write(f.join("freezer.state"), "THAWED");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        bail!("processes {:?} survived SIGKILL in the gear's cgroup", self.pids())
    }

    /// Kills every process in the gear but `keep` (its init): the whole tree a stopped app
    /// leaves, `setsid` daemons and what hooks put in the background included. The gear is
    /// frozen while it is killed (v2 `cgroup.freeze`, v1 freezer) so nothing forks away.
    pub fn kill_all_but(&self, keep: i32) -> Result<()> {
        let freeze = |on: bool| {
            for d in &self.dirs {
                if d.join("cgroup.freeze").exists() {
                    let _ = fs::write(d.join("cgroup.freeze"), if on { "1" } else { "0" });
                } else if d.join("freezer.state").exists() {
                    let _ = fs::write(d.join("freezer.state"), if on { "FROZEN" } else { "THAWED" });
                }
            }
        };
        for _ in 0..200 {
            let pids: Vec<i32> = self.pids().into_iter().filter(|p| *p != keep).collect();
            if pids.is_empty() {
                return Ok(());
            }
            freeze(true);
            for p in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
            }
            freeze(false);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let left: Vec<i32> = self.pids().into_iter().filter(|p| *p != keep).collect();
        bail!("processes {left:?} survived SIGKILL in the gear's cgroup")
    }

    /// Kills what is left and removes the directories; no error when already gone.
    pub fn remove(&self) -> Result<()> {
        self.kill_all()?;
        for d in &self.dirs {
            rmdir_patiently(d).with_context(|| format!("cannot remove cgroup {}", d.display()))?;
        }
        Ok(())
    }

    /// Reads usage and limits back from whichever hierarchies hold them.
    /// Processes the kernel killed for memory (v2 `memory.events`, v1 `memory.oom_control`):
    /// one file read, for watching.
    pub fn oom_kills(&self) -> Option<u64> {
        self.dirs.iter().find_map(|d| {
            let (file, key) = if is_v2(d) {
                ("memory.events", "oom_kill")
            } else {
                ("memory.oom_control", "oom_kill")
            };
            fs::read_to_string(d.join(file)).ok()?.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        let num = |p: PathBuf| -> Option<u64> { fs::read_to_string(p).ok()?.trim().parse().ok() };
        let field = |p: PathBuf, key: &str| -> Option<u64> {
            fs::read_to_string(p).ok()?.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        };
        for d in &self.dirs {
            if is_v2(d) {
                s.memory_bytes = num(d.join("memory.current")).unwrap_or(s.memory_bytes);
                s.memory_limit = num(d.join("memory.max")).unwrap_or(s.memory_limit);
                s.oom_kills = field(d.join("memory.events"), "oom_kill").unwrap_or(s.oom_kills);
                s.cpu_usage_usec = field(d.join("cpu.stat"), "usage_usec").unwrap_or(s.cpu_usage_usec);
                s.cpu_throttled = field(d.join("cpu.stat"), "nr_throttled").unwrap_or(s.cpu_throttled);
            } else {
                if let Some(v) = num(d.join("memory.usage_in_bytes")) {
                    s.memory_bytes = v;
                }
                if let Some(v) = num(d.join("memory.limit_in_bytes")) {
                    s.memory_limit = v;
                }
                if let Some(v) = field(d.join("memory.oom_control"), "oom_kill") {
                    s.oom_kills = v;
                }
                if let Some(v) = num(d.join("cpuacct.usage")) {
                    s.cpu_usage_usec = v / 1000;
                }
                if let Some(v) = field(d.join("cpu.stat"), "nr_throttled") {
                    s.cpu_throttled = v;
                }
            }
            if let Some(v) = num(d.join("pids.current")) {
                s.pids = v;
            }
            if let Some(v) = num(d.join("pids.max")) {
                s.pids_limit = v;
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// doctor's probe

/// Cgroup hierarchies mounted in this process's mount namespace, for doctor's report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// v1 controller name -> mount point (named hierarchies like `name=systemd` are left out).
    pub v1: BTreeMap<String, String>,
    /// The cgroup2 mount point, if any (the first one).
    pub v2: Option<String>,
}

impl CgroupMounts {
    /// Every v1 controller's mount point (the first one wins) and the first cgroup2 mount.
    pub fn from_mounts(mounts: &[MountEntry]) -> CgroupMounts {
        let mut m = CgroupMounts::default();
        for e in mounts {
            let mount_point = e.mount_point.to_string_lossy().into_owned();
            if e.fstype == "cgroup2" && m.v2.is_none() {
                m.v2 = Some(mount_point);
                continue;
            }
            for c in v1_controllers(e) {
                m.v1.entry(c.to_string()).or_insert_with(|| mount_point.clone());
            }
        }
        m
    }
}

/// Controllers `/proc/cgroups` lists as compiled in and enabled (v1 view).
pub fn parse_proc_cgroups(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == "1").then(|| f[0].to_string())
        })
        .collect()
}

/// The `cgroup` line: which versions are mounted, and where.
fn version_check(m: &CgroupMounts, v2_controllers: &[String]) -> Check {
    let has_v1 = !m.v1.is_empty();
    let v2_desc = |p: &str| {
        if v2_controllers.is_empty() {
            format!("v2 at {p} has no controllers")
        } else {
            format!("v2 at {p} with {}", v2_controllers.join(" "))
        }
    };
    let version = match (has_v1, &m.v2) {
        (true, Some(p)) => Some(format!(
            "hybrid: v1 controllers ({}), {}",
            m.v1.keys().cloned().collect::<Vec<_>>().join(" "),
            v2_desc(p)
        )),
        (true, None) => Some(format!("v1 ({})", m.v1.keys().cloned().collect::<Vec<_>>().join(" "))),
        (false, Some(p)) => Some(format!("v2 only: {}", v2_desc(p))),
        (false, None) => None,
    };
    match version {
        Some(d) => Check::ok("cgroup", d),
        None => Check::absent(
            "cgroup",
            true,
            "no cgroup filesystem is mounted",
            "mount -t cgroup2 none /sys/fs/cgroup (systemd hosts do this at boot)",
        ),
    }
}

/// The cgroup lines from what the host has mounted (pure: file contents are passed in).
pub fn checks_from(m: &CgroupMounts, v2_controllers: &[String], enabled: &[String]) -> Vec<Check> {
    let mut out = vec![version_check(m, v2_controllers)];
    let has_v1 = !m.v1.is_empty();
    let v2_has = |c: &str| v2_controllers.iter().any(|x| x == c);
    // (line name, v1 controller, v2 controller, v2 core file that stands in, required)
    let table: &[(&str, &str, &str, Option<&str>, bool)] = &[
        ("cgroup.memory", "memory", "memory", None, true),
        ("cgroup.cpu", "cpu", "cpu", None, true),
        ("cgroup.cpuacct", "cpuacct", "cpu", Some("cpu.stat"), false),
        ("cgroup.pids", "pids", "pids", None, true),
        ("cgroup.io", "blkio", "io", None, false),
        ("cgroup.freezer", "freezer", "", Some("cgroup.freeze"), false),
    ];
    for &(name, v1, v2, core, required) in table {
        let check = if let Some(p) = m.v1.get(v1) {
            Check::ok(name, format!("v1 {v1} at {p}"))
        } else if let (Some(p), true) = (&m.v2, !v2.is_empty() && v2_has(v2)) {
            Check::ok(name, format!("v2 {v2} at {p}"))
        } else if let (Some(p), Some(file), false) = (&m.v2, core, has_v1) {
            Check::ok(name, format!("v2 {file} (core) at {p}"))
        } else {
            let detail = if enabled.iter().any(|e| e == v1) {
                format!("{v1} is compiled in but not mounted")
            } else {
                format!(
                    "neither v1 {v1} nor v2 {} is available",
                    if v2.is_empty() { "freezer" } else { v2 }
                )
            };
            let fix = if enabled.iter().any(|e| e == v1) {
                format!("mount -t cgroup -o {v1} cgroup /sys/fs/cgroup/{v1}, or boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)")
            } else if m.v2.is_some() {
                format!(
                    "enable it: echo +{} > {}/cgroup.subtree_control (and in each parent)",
                    if v2.is_empty() { v1 } else { v2 },
                    m.v2.as_deref().unwrap_or("/sys/fs/cgroup")
                )
            } else {
                format!("use a kernel built with the {v1} cgroup controller")
            };
            Check::absent(name, required, detail, fix)
        };
        out.push(check);
    }
    out
}

/// The `cgroup` and `cgroup.<controller>` lines for this host.
pub fn check() -> Vec<Check> {
    let m = CgroupMounts::from_mounts(&mountinfo::read().unwrap_or_default());
    let v2_controllers: Vec<String> =
        m.v2.as_ref()
            .and_then(|p| fs::read_to_string(Path::new(p).join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
    let enabled = parse_proc_cgroups(&fs::read_to_string("/proc/cgroups").unwrap_or_default());
    checks_from(&m, &v2_controllers, &enabled)
}

#[cfg(test)]
mod tests {
    use super::super::check::{exit_code, find, Status};
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const V1: &str = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n\
31 25 0:27 / /sys/fs/cgroup/pids rw,relatime shared:10 - cgroup cgroup rw,pids\n\
32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct\n\
33 25 0:29 / /sys/fs/cgroup/devices rw,relatime shared:12 - cgroup cgroup rw,devices\n\
34 25 0:30 / /sys/fs/cgroup/unified rw,relatime shared:13 - cgroup2 cgroup2 rw\n";
    const V2: &str = "34 25 0:30 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn v1_hierarchies_win_on_hybrid_hosts() {
        let h = hierarchies_in(&mountinfo::parse(V1));
        assert_eq!(h.len(), 3);
        assert!(h.iter().all(|h| !h.v2));
        assert_eq!(h[2].controllers, vec!["cpu", "cpuacct"]);
    }

    #[test]
    fn v2_only() {
        let h = hierarchies_in(&mountinfo::parse(V2));
        assert_eq!(
            h,
            vec![Hierarchy {
                mount: "/sys/fs/cgroup".into(),
                controllers: vec![],
                v2: true
            }]
        );
    }

    #[test]
    fn own_path_per_hierarchy() {
        let pc = "4:memory:/process_api/abc\n8:pids:/\n0::/user.slice\n";
        let h = hierarchies_in(&mountinfo::parse(V1));
        assert_eq!(own_path(&h[0], pc).as_deref(), Some("/process_api/abc"));
        assert_eq!(own_path(&h[1], pc).as_deref(), Some("/"));
        let h2 = hierarchies_in(&mountinfo::parse(V2));
        assert_eq!(own_path(&h2[0], pc).as_deref(), Some("/user.slice"));
    }

    #[test]
    fn node_goes_beside_the_supervisor_leaf() {
        let v2 = &hierarchies_in(&mountinfo::parse(V2))[0];
        assert_eq!(
            base_of(v2, "/system.slice/x.scope"),
            PathBuf::from("system.slice/x.scope")
        );
        assert_eq!(
            base_of(v2, "/system.slice/x.scope/gearshift-supervisor"),
            PathBuf::from("system.slice/x.scope")
        );
        assert_eq!(base_of(v2, "/"), PathBuf::from(""));
        let v1 = &hierarchies_in(&mountinfo::parse(V1))[0];
        assert_eq!(
            base_of(v1, "/a/gearshift-supervisor"),
            PathBuf::from("a/gearshift-supervisor")
        );
    }

    /// Node parents `gearshift-TAG-PID` on the real kernel and gear cgroup `name` below them, made
    /// with the small profile's limits. Without root: None, the reason printed; under CI (`CI`
    /// or `GEARSHIFT_TEST_STRICT` set) the test fails instead of passing by skipping.
    fn real_gear(tag: &str, name: &str) -> Option<(Vec<PathBuf>, GearCgroup, crate::node::config::Limits)> {
        if !nix::unistd::geteuid().is_root() {
            let set = |v: &str| !matches!(std::env::var(v).unwrap_or_default().as_str(), "" | "0" | "false");
            assert!(
                !set("CI") && !set("GEARSHIFT_TEST_STRICT"),
                "needs root to create cgroups"
            );
            eprintln!("skipped: needs root to create cgroups");
            return None;
        }
        let parents = node_parents(&format!("gearshift-{tag}-{}", std::process::id())).unwrap();
        node_up(&parents).unwrap();
        let cg = GearCgroup::new(&parents, name);
        let l = crate::node::config::Config::default()
            .profile("small")
            .unwrap()
            .limits()
            .unwrap();
        cg.create(&l).unwrap();
        Some((parents, cg, l))
    }

    #[test]
    fn a_destroyed_nodes_leftover_cgroups_are_swept_with_their_processes() {
        let Some((parents, cg, _)) = real_gear("sweep", "orphan") else {
            return;
        };
        let nested = cg.dirs[0].join("nested");
        fs::create_dir_all(&nested).unwrap();
        let mut child = std::process::Command::new("sleep").arg("300").spawn().unwrap();
        cg.join(child.id() as i32).unwrap();
        // The parent is busy while the orphan is there.
        assert!(node_down(&parents).is_err());
        let lines = sweep_leftovers(&parents).unwrap();
        assert!(
            lines.iter().any(|l| l.contains("orphan") && l.contains("(sleep)")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.contains("nested")), "{lines:?}");
        assert!(child.wait().unwrap().signal() == Some(9));
        node_down(&parents).unwrap();
        assert!(parents.iter().all(|p| !p.exists()));
    }

    #[test]
    fn limits_hold_on_the_real_kernel() {
        let Some((parents, cg, l)) = real_gear("unit", "g0") else {
            return;
        };
        cg.verify(&l).unwrap();
        let s = cg.stats();
        assert_eq!(s.memory_limit, l.memory_bytes);
        assert_eq!(s.pids_limit, l.pids);
        cg.remove().unwrap();
        node_down(&parents).unwrap();
        assert!(parents.iter().all(|p| !p.exists()));
    }

    // ---- doctor's lines ----------------------------------------------------------------

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const DOCTOR_V2: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn cgroup_mounts(text: &str) -> CgroupMounts {
        CgroupMounts::from_mounts(&mountinfo::parse(text))
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn doctor_parses_hybrid_mountinfo() {
        let m = cgroup_mounts(HYBRID);
        assert_eq!(m.v2.as_deref(), Some("/sys/fs/cgroup/unified"));
        assert_eq!(m.v1.get("memory").map(String::as_str), Some("/sys/fs/cgroup/memory"));
        assert!(!m.v1.contains_key("name=systemd") && !m.v1.contains_key("rw"));
        let c = checks_from(&m, &[], &v(&["memory", "cpu", "pids"]));
        assert!(find(&c, "cgroup").detail.starts_with("hybrid: v1 controllers"), "{c:?}");
        assert!(find(&c, "cgroup")
            .detail
            .contains("/sys/fs/cgroup/unified has no controllers"));
        assert!(c.iter().all(|c| c.status == Status::Ok), "{c:?}");
        assert_eq!(find(&c, "cgroup.io").detail, "v1 blkio at /sys/fs/cgroup/blkio");
        assert_eq!(exit_code(&c), 0);
    }

    #[test]
    fn doctor_parses_v2_and_combined_v1() {
        let m = cgroup_mounts(DOCTOR_V2);
        assert!(m.v1.is_empty());
        assert_eq!(m.v2.as_deref(), Some("/sys/fs/cgroup"));
        let c = checks_from(&m, &v(&["cpuset", "cpu", "io", "memory", "pids"]), &[]);
        assert!(find(&c, "cgroup").detail.starts_with("v2 only"));
        assert_eq!(find(&c, "cgroup.memory").detail, "v2 memory at /sys/fs/cgroup");
        assert_eq!(find(&c, "cgroup.cpuacct").detail, "v2 cpu at /sys/fs/cgroup");
        assert_eq!(
            find(&c, "cgroup.freezer").detail,
            "v2 cgroup.freeze (core) at /sys/fs/cgroup"
        );
        // A v2 host without the memory controller enabled: required, so missing.
        let c = checks_from(&m, &v(&["cpu", "pids"]), &[]);
        assert_eq!(find(&c, "cgroup.memory").status, Status::Missing);
        assert!(find(&c, "cgroup.memory").fix.as_deref().unwrap().contains("+memory"));
        assert_eq!(find(&c, "cgroup.io").status, Status::Warn);
        assert_eq!(exit_code(&c), 1);

        let combined = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                        33 31 0:30 / /mnt/my\\040cg rw - cgroup cgroup rw,nosuid,memory\n";
        let m = cgroup_mounts(combined);
        assert_eq!(m.v1.get("cpu").unwrap(), "/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(m.v1.get("cpuacct").unwrap(), "/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(m.v1.get("memory").unwrap(), "/mnt/my cg");
        let c = checks_from(&m, &[], &v(&["pids"]));
        assert!(find(&c, "cgroup").detail.starts_with("v1 ("));
        assert_eq!(find(&c, "cgroup.pids").detail, "pids is compiled in but not mounted");
        assert_eq!(find(&c, "cgroup.pids").status, Status::Missing);
        let c = checks_from(&cgroup_mounts(""), &[], &[]);
        assert_eq!(find(&c, "cgroup").status, Status::Missing);
    }

    #[test]
    fn doctor_parses_proc_cgroups() {
        let t = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\nmemory\t0\t1\t0\npids\t8\t1\t1\n";
        assert_eq!(parse_proc_cgroups(t), v(&["cpuset", "pids"]));
    }
}
