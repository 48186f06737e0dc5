//! cgroups v1 and v2: the node's parent directories beneath our own cgroup, and one cgroup per
//! gear with the profile's limits. Each directory's version is read from the files it has, so
//! hybrid hosts (v1 controllers plus an empty v2 mount) work without a mode switch.

use crate::node::config::Limits;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

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

/// The hierarchies gearshift uses, from /proc/self/mountinfo (not assumed).
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// Parses mountinfo into the hierarchies that matter: v1 ones holding a wanted controller,
/// else the v2 one when it has controllers.
pub fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mount = pre.split_whitespace().nth(4).unwrap_or_default();
        let mut p = post.split_whitespace();
        let fstype = p.next().unwrap_or_default();
        let _src = p.next();
        let opts = p.next().unwrap_or_default();
        if fstype == "cgroup" {
            let ctrls: Vec<String> = opts
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o))
                .map(String::from)
                .collect();
            if !ctrls.is_empty() && !v1.iter().any(|h: &Hierarchy| h.mount == Path::new(mount)) {
                v1.push(Hierarchy {
                    mount: mount.into(),
                    controllers: ctrls,
                    v2: false,
                });
            }
        } else if fstype == "cgroup2" && v2.is_none() {
            v2 = Some(Hierarchy {
                mount: mount.into(),
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

/// Removes the node's parent cgroups (they must hold no gears).
pub fn node_down(parents: &[PathBuf]) -> Result<()> {
    for p in parents {
        if p.exists() {
            fs::remove_dir(p).with_context(|| format!("cannot remove cgroup {} (gears still in it?)", p.display()))?;
        }
    }
    Ok(())
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
        let mut out = Vec::new();
        for d in &self.dirs {
            if let Ok(t) = fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
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

    /// Kills what is left and removes the directories; no error when already gone.
    pub fn remove(&self) -> Result<()> {
        self.kill_all()?;
        for d in &self.dirs {
            if d.exists() {
                let mut tries = 0;
                while let Err(e) = fs::remove_dir(d) {
                    tries += 1;
                    if tries > 100 {
                        return Err(e).with_context(|| format!("cannot remove cgroup {}", d.display()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        Ok(())
    }

    /// Reads usage and limits back from whichever hierarchies hold them.
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

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n\
31 25 0:27 / /sys/fs/cgroup/pids rw,relatime shared:10 - cgroup cgroup rw,pids\n\
32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct\n\
33 25 0:29 / /sys/fs/cgroup/devices rw,relatime shared:12 - cgroup cgroup rw,devices\n\
34 25 0:30 / /sys/fs/cgroup/unified rw,relatime shared:13 - cgroup2 cgroup2 rw\n";
    const V2: &str = "34 25 0:30 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn v1_hierarchies_win_on_hybrid_hosts() {
        let h = parse_mountinfo(V1);
        assert_eq!(h.len(), 3);
        assert!(h.iter().all(|h| !h.v2));
        assert_eq!(h[2].controllers, vec!["cpu", "cpuacct"]);
    }

    #[test]
    fn v2_only() {
        let h = parse_mountinfo(V2);
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
        let h = parse_mountinfo(V1);
        assert_eq!(own_path(&h[0], pc).as_deref(), Some("/process_api/abc"));
        assert_eq!(own_path(&h[1], pc).as_deref(), Some("/"));
        let h2 = parse_mountinfo(V2);
        assert_eq!(own_path(&h2[0], pc).as_deref(), Some("/user.slice"));
    }

    #[test]
    fn node_goes_beside_the_supervisor_leaf() {
        let v2 = &parse_mountinfo(V2)[0];
        assert_eq!(
            base_of(v2, "/system.slice/x.scope"),
            PathBuf::from("system.slice/x.scope")
        );
        assert_eq!(
            base_of(v2, "/system.slice/x.scope/gearshift-supervisor"),
            PathBuf::from("system.slice/x.scope")
        );
        assert_eq!(base_of(v2, "/"), PathBuf::from(""));
        let v1 = &parse_mountinfo(V1)[0];
        assert_eq!(
            base_of(v1, "/a/gearshift-supervisor"),
            PathBuf::from("a/gearshift-supervisor")
        );
    }

    #[test]
    fn limits_hold_on_the_real_kernel() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to create cgroups");
            return;
        }
        let parents = node_parents(&format!("gearshift-unit-{}", std::process::id())).unwrap();
        node_up(&parents).unwrap();
        let cg = GearCgroup::new(&parents, "g0");
        let l = crate::node::config::Config::default()
            .profile("small")
            .unwrap()
            .limits()
            .unwrap();
        cg.create(&l).unwrap();
        cg.verify(&l).unwrap();
        let s = cg.stats();
        assert_eq!(s.memory_limit, l.memory_bytes);
        assert_eq!(s.pids_limit, l.pids);
        cg.remove().unwrap();
        node_down(&parents).unwrap();
        assert!(parents.iter().all(|p| !p.exists()));
    }
}
