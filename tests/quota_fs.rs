//! Disk quota with the ext4 and xfs user-quota backends: the node's data root lies on a
//! filesystem mounted with user quota, and the gear's uid gets block limits through quotactl.
//! Runs where such mounts exist (the test VM: /var/lib/gears is ext4, /srv/xfs is xfs, see
//! `make vm-test`; override with GEARSHIFT_TEST_EXT4_BASE / GEARSHIFT_TEST_XFS_BASE);
//! skipped with the reason recorded elsewhere: VM-only tests (tests/vm-only.txt), which fail
//! instead in the VM.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// The mount holding `dir`, as (fstype, options), from /proc/self/mountinfo.
fn mount_of(dir: &Path) -> Option<(String, String)> {
    let dir = dir.canonicalize().ok()?;
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String, String)> = None;
    for line in text.lines() {
        let (pre, post) = line.split_once(" - ")?;
        let mp = pre.split_whitespace().nth(4)?;
        let mut p = post.split_whitespace();
        let (fstype, _src, sopts) = (p.next()?, p.next()?, p.next()?);
        if dir.starts_with(mp) && best.as_ref().is_none_or(|b| mp.len() >= b.0) {
            best = Some((mp.len(), fstype.to_string(), sopts.to_string()));
        }
    }
    best.map(|(_, f, o)| (f, o))
}

/// The base directory for a quota filesystem of type `fstype`, or why there is none.
fn base_for(fstype: &str, env: &str, default: &str) -> Result<PathBuf, String> {
    if !nix_is_root() {
        return Err("needs root".into());
    }
    let base = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.into()));
    match mount_of(&base) {
        Some((f, o)) if f == fstype && (o.contains("usrquota") || o.contains("uquota")) => Ok(base),
        Some((f, o)) => Err(format!("{} is {f} ({o}), not {fstype} with user quota", base.display())),
        None => Err(format!("{} does not exist", base.display())),
    }
}

fn quota_holds(base: &Path, backend: &str) {
    let n = TestNode::new_in(base);
    n.add_profile("tiny", "64M", 0.5, 64, "16M", "8mbit");
    n.ok(&["app", "create", "hog", "--cartridge", "python", "--profile", "tiny"]);
    n.create_app("calm");
    let doctor = String::from_utf8_lossy(&n.gs(&["doctor"]).stdout).to_string();
    assert!(
        doctor.lines().any(|l| l.contains(&format!("{backend}: user quota on"))),
        "the node does not use the {backend} backend:\n{doctor}"
    );
    let (code, _, err) = n.sh("hog", "dd if=/dev/zero of=$HOME/big bs=1M count=64 conv=fsync");
    assert_ne!(code, 0, "64M written into a 16M quota on {backend}");
    assert!(err.contains("Disk quota exceeded"), "not EDQUOT: {err}");
    let hog = n.show("hog");
    let used = hog["gears"][0]["disk_bytes"].as_u64().unwrap();
    assert_eq!(hog["gears"][0]["disk_limit"].as_u64(), Some(16 << 20));
    assert!(
        ((8 << 20)..=(17 << 20)).contains(&used),
        "usage {used} not near the 16M quota"
    );
    let (code, _, err) = n.sh("calm", "dd if=/dev/zero of=$HOME/ok bs=1M count=4 conv=fsync");
    assert_eq!(code, 0, "the neighbour cannot write: {err}");
    // Freeing space lets the gear write again.
    let (code, _, err) = n.sh(
        "hog",
        "rm -f $HOME/big && dd if=/dev/zero of=$HOME/small bs=1M count=2 conv=fsync",
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn ext4_user_quota_stops_a_gear() {
    match base_for("ext4", "GEARSHIFT_TEST_EXT4_BASE", "/var/lib/gears") {
        Ok(base) => quota_holds(&base, "ext4"),
        Err(why) => skip!("{why}"),
    }
}

#[test]
fn xfs_user_quota_stops_a_gear() {
    match base_for("xfs", "GEARSHIFT_TEST_XFS_BASE", "/srv/xfs") {
        Ok(base) => quota_holds(&base, "xfs"),
        Err(why) => skip!("{why}"),
    }
}
