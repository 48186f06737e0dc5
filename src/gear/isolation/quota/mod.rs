//! Disk quota backends for gear homes: btrfs qgroups on a loop image, ext4/xfs user quota, none.
//!
//! * `btrfs-loop` ([`btrfs`]): a sparse image `<data_root>/gears.img` holds a btrfs filesystem
//!   mounted on `<data_root>/gears`; every gear home is a subvolume whose qgroup carries a
//!   referenced-bytes limit. btrfs has no inode limits.
//! * `ext4` / `xfs` ([`quotactl`]): gear homes are plain directories on a filesystem mounted
//!   with user quota enforcement; the gear's uid gets block and inode limits through
//!   `quotactl(2)`. Root bypasses ext4 quota, so gear processes must never run as root.
//! * `none`: no enforcement; gears are only created if `disk.allow_unlimited` is set.
//!
//! A disk limit of 0 bytes (or 0 inodes) means "no limit", as in the kernel quota interfaces.
//! This file picks the backend and dispatches; the helpers at its end serve all backends.

pub mod btrfs;
mod quotactl;
mod shared;
#[cfg(test)]
mod tests;

use super::check::Check;
use crate::node::config::Limits;
use crate::node::Node;
use anyhow::{bail, Context, Result};
use shared::{mkdir_one, own_private, private_gears_dir, remove_tree};
pub use shared::{Backend, Usage};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The backend from the config and what the host offers.
///
/// An explicit `disk.backend` is checked against the host (an error says what is missing);
/// `auto` picks, in order: btrfs-loop if `<data_root>/gears.img` already exists (its data must
/// stay reachable), ext4/xfs if the filesystem holding the gears directory enforces user quota,
/// btrfs-loop if btrfs-progs and kernel btrfs support are present, else `None`.
pub fn backend(node: &Node) -> Result<Backend> {
    match node.config.disk.backend.as_str() {
        "none" => Ok(Backend::None),
        "btrfs-loop" => {
            btrfs::available()?;
            Ok(Backend::BtrfsLoop)
        }
        "ext4" => {
            let probe = quotactl::probe_fs(&node.gears_dir())?;
            if probe.fstype != "ext4" || !probe.enforced {
                bail!("disk.backend = \"ext4\" but {}", probe.explain());
            }
            Ok(Backend::Ext4)
        }
        "xfs" => {
            let probe = quotactl::probe_fs(&node.gears_dir())?;
            if probe.fstype != "xfs" || !probe.enforced {
                bail!("disk.backend = \"xfs\" but {}", probe.explain());
            }
            Ok(Backend::Xfs)
        }
        "auto" => {
            if btrfs::image_path(node).exists() {
                btrfs::available().context("the btrfs-loop image exists but cannot be used")?;
                return Ok(Backend::BtrfsLoop);
            }
            if let Ok(p) = quotactl::probe_fs(&node.gears_dir()) {
                if p.enforced && p.fstype == "ext4" {
                    return Ok(Backend::Ext4);
                }
                if p.enforced && p.fstype == "xfs" {
                    return Ok(Backend::Xfs);
                }
            }
            if btrfs::available().is_ok() {
                return Ok(Backend::BtrfsLoop);
            }
            Ok(Backend::None)
        }
        other => bail!("unknown disk.backend '{other}' (use auto, btrfs-loop, ext4, xfs or none)"),
    }
}

/// The bytes the gears' filesystem holds (None: no quota backend, nothing to admit against).
pub fn capacity(node: &Node) -> Result<Option<u64>> {
    Ok(match backend(node)? {
        Backend::None => None,
        Backend::BtrfsLoop => Some(match btrfs::image_path(node).metadata() {
            Ok(m) => m.len(),
            Err(_) => crate::node::config::parse_size(&node.config.disk.image_size).context("disk.image_size")?,
        }),
        Backend::Ext4 | Backend::Xfs => {
            let st = nix::sys::statvfs::statvfs(&node.gears_dir())
                .with_context(|| format!("cannot statvfs {}", node.gears_dir().display()))?;
            Some(st.blocks().saturating_mul(st.fragment_size()))
        }
    })
}

/// One line for `doctor`: which backend, and whether it enforces limits.
///
/// Not ok when the configured backend cannot work here, or when nothing enforces disk limits
/// and `disk.allow_unlimited` is off.
pub fn describe(node: &Node) -> (bool, String) {
    let b = match backend(node) {
        Ok(b) => b,
        Err(e) => return (false, format!("{}: {e:#}", node.config.disk.backend)),
    };
    match b {
        Backend::BtrfsLoop => (true, btrfs::describe(node)),
        Backend::Ext4 | Backend::Xfs => (true, quotactl::describe(b, node)),
        Backend::None => {
            let fix = "fix: apt-get install btrfs-progs, or mount the data root with usrquota";
            if node.config.disk.allow_unlimited {
                (
                    true,
                    format!("none: disk limits are NOT enforced (disk.allow_unlimited = true); {fix}"),
                )
            } else {
                (false, format!("none: no quota-capable filesystem; {fix}"))
            }
        }
    }
}

/// The `quota` line: the node's backend, or why disk limits cannot be enforced.
pub fn check(node: Option<&Node>) -> Check {
    match node {
        Some(node) => {
            let (ok, detail) = describe(node);
            if ok {
                Check::ok("quota", detail)
            } else {
                Check::absent(
                    "quota",
                    true,
                    detail,
                    "set [disk] backend = \"btrfs-loop\" (apt-get install btrfs-progs / dnf install btrfs-progs), or allow_unlimited = true",
                )
            }
        }
        None => Check::warn(
            "quota",
            "no node config: the disk quota backend is chosen by the node",
            "run `gearshift init` (or pass --config) and run doctor again",
        ),
    }
}

/// Prepares the gears directory (for btrfs-loop: creates, formats and mounts the image and
/// enables quota). Idempotent; also used after a reboot.
pub fn node_up(node: &Node) -> Result<()> {
    let gears = node.gears_dir();
    match backend(node)? {
        Backend::BtrfsLoop => btrfs::node_up(node),
        Backend::Ext4 | Backend::Xfs | Backend::None => {
            std::fs::create_dir_all(&gears).with_context(|| format!("cannot create {}", gears.display()))?;
            private_gears_dir(&gears)
        }
    }
}

/// Unmounts the gears image if this node mounted it; the image (and so the data) stays.
/// Idempotent.
pub fn node_down(node: &Node) -> Result<()> {
    btrfs::node_down(node)
}

/// Creates the gear's home with its limits applied and returns its host path.
pub fn create_home(node: &Node, gear_id: &str, uid: u32, limits: &Limits) -> Result<PathBuf> {
    check_gear_id(gear_id)?;
    let home = node.gears_dir().join(gear_id);
    match backend(node)? {
        Backend::BtrfsLoop => btrfs::create_home(node, &home, uid, limits)?,
        b @ (Backend::Ext4 | Backend::Xfs) => quotactl::create_home(b, &node.gears_dir(), &home, uid, limits)?,
        Backend::None => {
            if !node.config.disk.allow_unlimited {
                bail!(
                    "cannot create gear: no disk quota backend can enforce its disk limit on {} (run `gearshift doctor`; set disk.allow_unlimited = true to accept unlimited disk)",
                    home.display()
                );
            }
            mkdir_one(&home)?;
            own_private(&home, uid)?;
        }
    }
    Ok(home)
}

/// Removes the gear's home and everything its limits left behind (btrfs qgroups, the uid's
/// ext4/xfs limits). Idempotent: no error when already gone.
pub fn destroy_home(node: &Node, gear_id: &str, uid: u32) -> Result<()> {
    check_gear_id(gear_id)?;
    let home = node.gears_dir().join(gear_id);
    match backend(node)? {
        Backend::BtrfsLoop => btrfs::destroy_home(node, &home),
        b @ (Backend::Ext4 | Backend::Xfs) => quotactl::destroy_home(b, &node.gears_dir(), &home, uid),
        Backend::None => remove_tree(&home),
    }
}

/// Disk use of the gear's home and its limits.
pub fn usage(node: &Node, gear_id: &str, uid: u32) -> Result<Usage> {
    check_gear_id(gear_id)?;
    let home = node.gears_dir().join(gear_id);
    match backend(node)? {
        Backend::BtrfsLoop => btrfs::usage(node, gear_id, &home),
        b @ (Backend::Ext4 | Backend::Xfs) => quotactl::usage(b, &node.gears_dir(), uid),
        Backend::None => {
            let (bytes, inodes) = tree_usage(&home)?;
            Ok(Usage {
                bytes,
                limit_bytes: None,
                inodes: Some(inodes),
                limit_inodes: None,
            })
        }
    }
}

/// The usage of each of `gears` (id, uid) that has one, read at once: on btrfs one `btrfs
/// qgroup show` for all of them (`top` on a node of 500 gears), elsewhere gear by gear.
pub fn usages(node: &Node, gears: &[(&str, u32)]) -> std::collections::HashMap<String, Usage> {
    if matches!(backend(node), Ok(Backend::BtrfsLoop)) {
        let mut all = btrfs::usages(node).unwrap_or_default();
        let wanted: std::collections::HashSet<&str> = gears.iter().map(|(id, _)| *id).collect();
        all.retain(|id, _| wanted.contains(id.as_str()));
        return all;
    }
    gears
        .iter()
        .filter_map(|(id, uid)| usage(node, id, *uid).ok().map(|u| (id.to_string(), u)))
        .collect()
}

/// Gear ids become one path component under the gears directory.
fn check_gear_id(gear_id: &str) -> Result<()> {
    if gear_id.is_empty()
        || gear_id == "."
        || gear_id == ".."
        || gear_id.len() > 200
        || !gear_id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
    {
        bail!("invalid gear id '{}'", gear_id.escape_default());
    }
    Ok(())
}

/// Allocated bytes and inode count of a tree, without following symlinks or crossing mounts.
fn tree_usage(path: &Path) -> Result<(u64, u64)> {
    let top = path
        .symlink_metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    let dev = top.dev();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = match p.symlink_metadata() {
            Ok(m) => m,
            Err(_) => continue, // raced with a delete
        };
        bytes += m.blocks() * 512;
        inodes += 1;
        if m.is_dir() && m.dev() == dev {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    Ok((bytes, inodes))
}
