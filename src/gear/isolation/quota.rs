//! Disk quota backends for gear homes: btrfs qgroups on a loop image, ext4/xfs user quota, none.
//!
//! * `btrfs-loop`: a sparse image `<data_root>/gears.img` holds a btrfs filesystem mounted on
//!   `<data_root>/gears`; every gear home is a subvolume whose qgroup `0/<subvolid>` carries a
//!   referenced-bytes limit. A write past the limit fails with EDQUOT, even for root. btrfs has
//!   no inode limits.
//! * `ext4` / `xfs`: gear homes are plain directories on a filesystem mounted with user quota
//!   enforcement; the gear's uid gets block and inode limits through `quotactl(2)`. Root bypasses
//!   ext4 quota, so gear processes must never run as root.
//! * `none`: no enforcement; gears are only created if `disk.allow_unlimited` is set.
//!
//! A disk limit of 0 bytes (or 0 inodes) means "no limit", as in the kernel quota interfaces.
//!
//! Caveat (btrfs): an unprivileged process may create subvolumes and snapshots
//! (`BTRFS_IOC_SUBVOL_CREATE{,_V2}`, `BTRFS_IOC_SNAP_CREATE{,_V2}`); a subvolume made inside a
//! gear home gets a qgroup of its own, outside the home's limit (verified: 10 MiB written into
//! a nested subvolume of an 8 MiB home). The gear seccomp filter must refuse btrfs ioctls
//! (`ioctl` cmd with type 0x94) for the limit to hold. `usage` counts nested subvolumes and
//! `destroy_home` deletes them.

use crate::node::config::Limits;
use crate::node::Node;
use anyhow::{bail, Context, Result};
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The backend in use on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// btrfs on a loop-mounted image, one subvolume and qgroup per gear.
    BtrfsLoop,
    /// ext4 user quota (`usrquota`), limits per gear uid.
    Ext4,
    /// XFS user quota (`uquota`), limits per gear uid.
    Xfs,
    /// No enforcement.
    None,
}

/// Disk use of one gear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes charged to the gear.
    pub bytes: u64,
    /// The enforced byte limit, if any.
    pub limit_bytes: Option<u64>,
    /// Inodes charged to the gear, where the backend counts them.
    pub inodes: Option<u64>,
    /// The enforced inode limit, if any.
    pub limit_inodes: Option<u64>,
}

/// `mkfs.btrfs` refuses images smaller than this (btrfs-progs 6.2: 114294784 bytes = 109 MiB).
const BTRFS_MIN_IMAGE: u64 = 114_294_784;

/// The loop image that holds gear homes for the btrfs-loop backend.
fn image_path(node: &Node) -> PathBuf {
    node.root().join("gears.img")
}

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
            btrfs_available()?;
            Ok(Backend::BtrfsLoop)
        }
        "ext4" => {
            let probe = probe_fs_quota(&node.gears_dir())?;
            if probe.fstype != "ext4" || !probe.enforced {
                bail!("disk.backend = \"ext4\" but {}", probe.explain());
            }
            Ok(Backend::Ext4)
        }
        "xfs" => {
            let probe = probe_fs_quota(&node.gears_dir())?;
            if probe.fstype != "xfs" || !probe.enforced {
                bail!("disk.backend = \"xfs\" but {}", probe.explain());
            }
            Ok(Backend::Xfs)
        }
        "auto" => {
            if image_path(node).exists() {
                btrfs_available().context("the btrfs-loop image exists but cannot be used")?;
                return Ok(Backend::BtrfsLoop);
            }
            if let Ok(p) = probe_fs_quota(&node.gears_dir()) {
                if p.enforced && p.fstype == "ext4" {
                    return Ok(Backend::Ext4);
                }
                if p.enforced && p.fstype == "xfs" {
                    return Ok(Backend::Xfs);
                }
            }
            if btrfs_available().is_ok() {
                return Ok(Backend::BtrfsLoop);
            }
            Ok(Backend::None)
        }
        other => bail!("unknown disk.backend '{other}' (use auto, btrfs-loop, ext4, xfs or none)"),
    }
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
        Backend::BtrfsLoop => {
            let img = image_path(node);
            let state = if mounted_image(node).is_some() {
                format!("mounted on {}", node.gears_dir().display())
            } else if img.exists() {
                "not mounted (run `gearshift node up`)".to_string()
            } else {
                "image not created yet (`gearshift node up` creates it)".to_string()
            };
            (
                true,
                format!(
                    "btrfs-loop: qgroups on {} ({}), {state}, blocks enforced, inode limits not supported by btrfs",
                    img.display(),
                    match img.metadata() {
                        Ok(m) => format!("{} MiB", m.len() >> 20),
                        Err(_) => node.config.disk.image_size.clone(),
                    }
                ),
            )
        }
        Backend::Ext4 | Backend::Xfs => {
            let name = if b == Backend::Ext4 { "ext4" } else { "xfs" };
            let place = match find_mount(&node.gears_dir()) {
                Ok(m) => format!("{} on {}", m.source, m.mount_point.display()),
                Err(_) => node.gears_dir().display().to_string(),
            };
            (
                true,
                format!("{name}: user quota on {place}, blocks and inodes enforced per gear uid (gear processes must not run as root)"),
            )
        }
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

/// Prepares the gears directory (for btrfs-loop: creates, formats and mounts the image and
/// enables quota). Idempotent; also used after a reboot.
pub fn node_up(node: &Node) -> Result<()> {
    let gears = node.gears_dir();
    match backend(node)? {
        Backend::BtrfsLoop => btrfs_node_up(node),
        Backend::Ext4 | Backend::Xfs | Backend::None => {
            std::fs::create_dir_all(&gears).with_context(|| format!("cannot create {}", gears.display()))?;
            private_gears_dir(&gears)
        }
    }
}

/// Unmounts the gears image if this node mounted it; the image (and so the data) stays.
/// Idempotent.
pub fn node_down(node: &Node) -> Result<()> {
    let img = image_path(node);
    if mounted_image(node).is_some() {
        let gears = node.gears_dir();
        nix::mount::umount(&gears).with_context(|| {
            format!(
                "cannot unmount {} (a gear may still be running; stop all gears first)",
                gears.display()
            )
        })?;
    }
    // `mount -o loop` sets autoclear, so the loop device goes away with the mount; detach any
    // loop device that still points at the image and is not mounted anywhere.
    // Autoclear releases the device asynchronously after the unmount: wait for it, and detach
    // explicitly what is still attached after a moment.
    if img.exists() {
        for attempt in 0..300 {
            let left: Vec<PathBuf> = loop_devices_for(&img)?
                .into_iter()
                .filter(|d| !device_is_mounted(d).unwrap_or(true))
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if attempt == 50 {
                for dev in &left {
                    let _ = run("losetup", [OsStr::new("-d"), dev.as_os_str()]);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        bail!(
            "loop devices {:?} still hold {} after the unmount (detach them with `losetup -d`)",
            loop_devices_for(&img)?,
            img.display()
        );
    }
    Ok(())
}

/// Creates the gear's home with its limits applied and returns its host path.
pub fn create_home(node: &Node, gear_id: &str, uid: u32, limits: &Limits) -> Result<PathBuf> {
    check_gear_id(gear_id)?;
    let home = node.gears_dir().join(gear_id);
    match backend(node)? {
        Backend::BtrfsLoop => {
            if mounted_image(node).is_none() {
                bail!(
                    "cannot create gear home {}: the gears image is not mounted (run `gearshift node up`)",
                    home.display()
                );
            }
            let created = if is_subvolume(&home)? {
                false
            } else if home.symlink_metadata().is_ok() {
                bail!(
                    "cannot create gear home {}: it exists and is not a btrfs subvolume",
                    home.display()
                );
            } else {
                run(
                    "btrfs",
                    [OsStr::new("subvolume"), OsStr::new("create"), home.as_os_str()],
                )?;
                true
            };
            let applied = (|| -> Result<()> {
                let limit = btrfs_limit_arg(limits.disk_bytes);
                run(
                    "btrfs",
                    [
                        OsStr::new("qgroup"),
                        OsStr::new("limit"),
                        OsStr::new(&limit),
                        home.as_os_str(),
                    ],
                )?;
                own_private(&home, uid)
            })();
            if let Err(e) = applied {
                if created {
                    let _ = btrfs_destroy(node, &home);
                }
                return Err(e);
            }
        }
        b @ (Backend::Ext4 | Backend::Xfs) => {
            let dev = QuotaDevice::for_path(&node.gears_dir())?;
            mkdir_one(&home)?;
            let applied = (|| -> Result<()> {
                if b == Backend::Ext4 {
                    dev.set_vfs_limits(uid, limits.disk_bytes, limits.inodes)?;
                } else {
                    dev.set_xfs_limits(uid, limits.disk_bytes, limits.inodes)?;
                }
                own_private(&home, uid)
            })();
            if let Err(e) = applied {
                let _ = std::fs::remove_dir(&home);
                return Err(e);
            }
        }
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
        Backend::BtrfsLoop => {
            if home.symlink_metadata().is_err() {
                return Ok(());
            }
            if mounted_image(node).is_none() {
                bail!(
                    "cannot destroy gear home {}: the gears image is not mounted (run `gearshift node up`)",
                    home.display()
                );
            }
            if is_subvolume(&home)? {
                btrfs_destroy(node, &home)?;
            } else {
                remove_tree(&home)?;
            }
        }
        b @ (Backend::Ext4 | Backend::Xfs) => {
            remove_tree(&home)?;
            let dev = QuotaDevice::for_path(&node.gears_dir())?;
            if b == Backend::Ext4 {
                dev.set_vfs_limits(uid, 0, 0)?;
            } else {
                dev.set_xfs_limits(uid, 0, 0)?;
            }
        }
        Backend::None => remove_tree(&home)?,
    }
    Ok(())
}

/// Disk use of the gear's home and its limits.
pub fn usage(node: &Node, gear_id: &str, uid: u32) -> Result<Usage> {
    check_gear_id(gear_id)?;
    let home = node.gears_dir().join(gear_id);
    match backend(node)? {
        Backend::BtrfsLoop => {
            if !is_subvolume(&home)? {
                bail!("gear home {} is not a btrfs subvolume", home.display());
            }
            let id = subvolume_id(&home)?;
            // --sync: qgroup numbers are only updated at transaction commit.
            let out = run(
                "btrfs",
                [
                    OsStr::new("qgroup"),
                    OsStr::new("show"),
                    OsStr::new("--sync"),
                    OsStr::new("--raw"),
                    OsStr::new("-re"),
                    node.gears_dir().as_os_str(),
                ],
            )?;
            let rows = parse_qgroup_show(&out);
            let row = rows
                .iter()
                .find(|r| r.level == 0 && r.id == id)
                .with_context(|| format!("no qgroup 0/{id} for gear home {}", home.display()))?;
            // Subvolumes the gear created inside its home have qgroups of their own, outside
            // the home's limit: count them here so the usage is honest.
            let prefix = format!("{gear_id}/");
            let nested: u64 = rows
                .iter()
                .filter(|r| r.level == 0 && r.id != id && r.path.starts_with(&prefix))
                .map(|r| r.referenced)
                .sum();
            Ok(Usage {
                bytes: row.referenced + nested,
                limit_bytes: row.max_referenced,
                inodes: None,
                limit_inodes: None,
            })
        }
        Backend::Ext4 => {
            let q = QuotaDevice::for_path(&node.gears_dir())?.get_vfs(uid)?;
            Ok(Usage {
                bytes: q.dqb_curspace,
                limit_bytes: nonzero(q.dqb_bhardlimit.saturating_mul(QIF_DQBLKSIZE)),
                inodes: Some(q.dqb_curinodes),
                limit_inodes: nonzero(q.dqb_ihardlimit),
            })
        }
        Backend::Xfs => {
            let q = QuotaDevice::for_path(&node.gears_dir())?
                .get_xfs(uid)?
                .unwrap_or_default();
            Ok(Usage {
                bytes: q.d_bcount.saturating_mul(XFS_BB),
                limit_bytes: nonzero(q.d_blk_hardlimit.saturating_mul(XFS_BB)),
                inodes: Some(q.d_icount),
                limit_inodes: nonzero(q.d_ino_hardlimit),
            })
        }
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

// ---------------------------------------------------------------------------------------------
// Small helpers

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
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

/// Finds a tool on PATH or in the sbin directories (root's PATH may lack them).
fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Runs an external command; a failure to start or a non-zero exit becomes an error quoting
/// the command line and its stderr. Returns stdout.
fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let shown = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let exe = tool(program).with_context(|| format!("cannot run `{shown}`: {program} is not installed"))?;
    let out = Command::new(&exe)
        .args(&args)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        let stderr = if stderr.is_empty() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            stderr.to_string()
        };
        bail!("`{shown}` failed ({}): {stderr}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates one directory (its parent must exist); an existing directory is fine.
fn mkdir_one(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// chown uid:uid and chmod 0700.
fn own_private(path: &Path, uid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .with_context(|| format!("cannot chown {} to {uid}:{uid}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod 0700 {}", path.display()))
}

/// rm -rf that does not follow symlinks and accepts a missing path.
fn remove_tree(path: &Path) -> Result<()> {
    match path.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot stat {}", path.display())),
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
        }
        Ok(_) => std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display())),
    }
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

// ---------------------------------------------------------------------------------------------
// /proc/self/mountinfo

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    mount_point: PathBuf,
    mount_opts: String,
    fstype: String,
    source: String,
    super_opts: String,
}

/// Undoes the octal escapes (`\040` for space, ...) of mountinfo fields.
fn unescape_mount(field: &str) -> OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsStr::from_bytes(&out).to_os_string()
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            if sep < 6 || f.len() < sep + 4 {
                return None;
            }
            Some(MountEntry {
                mount_point: PathBuf::from(unescape_mount(f[4])),
                mount_opts: f[5].to_string(),
                fstype: f[sep + 1].to_string(),
                source: unescape_mount(f[sep + 2]).to_string_lossy().into_owned(),
                super_opts: f[sep + 3].to_string(),
            })
        })
        .collect()
}

fn mountinfo() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// The canonical form of `path`, or of its nearest existing ancestor joined with the rest.
fn canonical_or_ancestor(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(c) = cur.canonicalize() {
            let mut out = c;
            for m in missing.iter().rev() {
                out.push(m);
            }
            return out;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(n), Some(p)) => {
                missing.push(n);
                cur = p.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The mount that holds `path` (or would hold it: the nearest existing ancestor's mount).
fn find_mount_in(entries: &[MountEntry], path: &Path) -> Option<MountEntry> {
    // The last matching entry of the longest mount point wins (it is mounted on top).
    let mut best: Option<&MountEntry> = None;
    for e in entries {
        if path.starts_with(&e.mount_point)
            && best.is_none_or(|b| e.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len())
        {
            best = Some(e);
        }
    }
    best.cloned()
}

fn find_mount(path: &Path) -> Result<MountEntry> {
    let p = canonical_or_ancestor(path);
    find_mount_in(&mountinfo()?, &p).with_context(|| format!("no mount holds {}", p.display()))
}

// ---------------------------------------------------------------------------------------------
// btrfs-loop

fn btrfs_available() -> Result<()> {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.split_whitespace().last() == Some("btrfs")) {
        bail!("the kernel has no btrfs support (not in /proc/filesystems)");
    }
    for t in ["mkfs.btrfs", "btrfs"] {
        if tool(t).is_none() {
            bail!("{t} is not installed (apt-get install btrfs-progs)");
        }
    }
    if tool("losetup").is_none() || tool("mount").is_none() {
        bail!("mount and losetup are needed (util-linux, mount)");
    }
    Ok(())
}

/// The loop device if the node's image is mounted on its gears directory.
fn mounted_image(node: &Node) -> Option<PathBuf> {
    let gears = canonical_or_ancestor(&node.gears_dir());
    let img = canonical_or_ancestor(&image_path(node));
    let entries = mountinfo().ok()?;
    let top = find_mount_in(&entries, &gears)?;
    if top.mount_point != gears || top.fstype != "btrfs" {
        return None;
    }
    let dev = PathBuf::from(&top.source);
    (loop_backing_file(&dev).as_deref() == Some(img.as_path())).then_some(dev)
}

/// The file behind a loop device (`/dev/loopN`), from sysfs.
fn loop_backing_file(dev: &Path) -> Option<PathBuf> {
    let name = dev.file_name()?.to_str()?;
    if !name.starts_with("loop") {
        return None;
    }
    let s = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let s = s.trim_end_matches('\n');
    Some(PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(s)))
}

/// Loop devices currently attached to `image`.
fn loop_devices_for(image: &Path) -> Result<Vec<PathBuf>> {
    let img = canonical_or_ancestor(image);
    let mut out = Vec::new();
    let rd = match std::fs::read_dir("/sys/block") {
        Ok(rd) => rd,
        Err(_) => return Ok(out),
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let dev = Path::new("/dev").join(&name);
        if loop_backing_file(&dev).as_deref() == Some(img.as_path()) {
            out.push(dev);
        }
    }
    out.sort();
    Ok(out)
}

fn device_is_mounted(dev: &Path) -> Result<bool> {
    Ok(mountinfo()?.iter().any(|m| Path::new(&m.source) == dev))
}

fn btrfs_node_up(node: &Node) -> Result<()> {
    let gears = node.gears_dir();
    let img = image_path(node);
    std::fs::create_dir_all(node.root()).with_context(|| format!("cannot create {}", node.root().display()))?;
    if !img.exists() {
        let size = crate::node::config::parse_size(&node.config.disk.image_size).context("disk.image_size")?;
        if size < BTRFS_MIN_IMAGE {
            bail!(
                "disk.image_size = {} is too small: mkfs.btrfs needs at least {} bytes (use 128M or more)",
                node.config.disk.image_size,
                BTRFS_MIN_IMAGE
            );
        }
        // Format a temporary file and rename it, so a crash never leaves a half-made image.
        let tmp = node.root().join("gears.img.tmp");
        let _ = std::fs::remove_file(&tmp);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.set_len(size)
            .with_context(|| format!("cannot size {} to {size} bytes", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        drop(f);
        let label = format!("gearshift-{}", node.config.name);
        if let Err(e) = run(
            "mkfs.btrfs",
            [OsStr::new("-q"), OsStr::new("-L"), OsStr::new(&label), tmp.as_os_str()],
        ) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &img).with_context(|| format!("cannot rename {} to {}", tmp.display(), img.display()))?;
    }
    std::fs::create_dir_all(&gears).with_context(|| format!("cannot create {}", gears.display()))?;
    if mounted_image(node).is_none() {
        let canon = canonical_or_ancestor(&gears);
        if find_mount(&canon)?.mount_point == canon {
            bail!(
                "{} is already a mount point of something else; unmount it first",
                gears.display()
            );
        }
        if std::fs::read_dir(&gears)?.next().is_some() {
            bail!(
                "{} is not empty; mounting the gears image there would hide its files (move them away first)",
                gears.display()
            );
        }
        run(
            "mount",
            [
                OsStr::new("-o"),
                OsStr::new("loop,nosuid,nodev"),
                img.as_os_str(),
                gears.as_os_str(),
            ],
        )?;
        if mounted_image(node).is_none() {
            bail!(
                "mounted {} on {} but cannot find the mount afterwards",
                img.display(),
                gears.display()
            );
        }
    }
    // Idempotent in the kernel: no-op if quota is already enabled.
    run("btrfs", [OsStr::new("quota"), OsStr::new("enable"), gears.as_os_str()])?;
    private_gears_dir(&gears)
}

/// Gears may traverse the gears directory but not list the other gears' homes.
fn private_gears_dir(gears: &Path) -> Result<()> {
    std::fs::set_permissions(gears, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot chmod 0711 {}", gears.display()))
}

/// The root directory of every btrfs subvolume has inode number 256.
fn is_subvolume(path: &Path) -> Result<bool> {
    match path.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot stat {}", path.display())),
        Ok(m) => {
            if !m.is_dir() || m.ino() != 256 {
                return Ok(false);
            }
            // statfs to be sure it is btrfs (inode 256 can happen elsewhere).
            let st = nix::sys::statfs::statfs(path).with_context(|| format!("cannot statfs {}", path.display()))?;
            Ok(st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
        }
    }
}

fn subvolume_id(path: &Path) -> Result<u64> {
    let out = run(
        "btrfs",
        [OsStr::new("inspect-internal"), OsStr::new("rootid"), path.as_os_str()],
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("unexpected `btrfs inspect-internal rootid` output: {out:?}"))
}

/// The `btrfs qgroup limit` argument: raw bytes, or "none" for 0 (unlimited).
fn btrfs_limit_arg(bytes: u64) -> String {
    if bytes == 0 {
        "none".to_string()
    } else {
        bytes.to_string()
    }
}

/// One row of `btrfs qgroup show --raw -re`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QgroupRow {
    level: u64,
    id: u64,
    referenced: u64,
    exclusive: u64,
    max_referenced: Option<u64>,
    max_exclusive: Option<u64>,
    /// Relative to the filesystem's top level (the gears directory); may be `<stale>`.
    path: String,
}

fn parse_limit(s: &str) -> Option<Option<u64>> {
    if s == "none" {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

/// Parses `btrfs qgroup show --raw -re` (columns: qgroupid rfer excl max_rfer max_excl [path]).
fn parse_qgroup_show(text: &str) -> Vec<QgroupRow> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 {
                return None;
            }
            let (lv, id) = f[0].split_once('/')?;
            Some(QgroupRow {
                level: lv.parse().ok()?,
                id: id.parse().ok()?,
                referenced: f[1].parse().ok()?,
                exclusive: f[2].parse().ok()?,
                max_referenced: parse_limit(f[3])?,
                max_exclusive: parse_limit(f[4])?,
                path: f[5..].join(" "),
            })
        })
        .collect()
}

/// Parses `btrfs subvolume list -o` lines (`ID 260 gen 23 top level 259 path g4/nested`).
fn parse_subvolume_list(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("ID ")?;
            let (id, _) = rest.split_once(' ')?;
            let (_, path) = l.split_once(" path ")?;
            Some((id.parse().ok()?, path.to_string()))
        })
        .collect()
}

fn qgroup_rows(gears: &Path) -> Result<Vec<QgroupRow>> {
    let out = run(
        "btrfs",
        [
            OsStr::new("qgroup"),
            OsStr::new("show"),
            OsStr::new("--raw"),
            OsStr::new("-re"),
            gears.as_os_str(),
        ],
    )?;
    Ok(parse_qgroup_show(&out))
}

/// Deletes a gear subvolume, any subvolumes the gear created inside it, and their qgroups.
fn btrfs_destroy(node: &Node, home: &Path) -> Result<()> {
    let gears = node.gears_dir();
    let mut ids = Vec::new();
    // Gears can create subvolumes of their own (unprivileged users may); delete deepest first.
    for _ in 0..64 {
        let out = run(
            "btrfs",
            [
                OsStr::new("subvolume"),
                OsStr::new("list"),
                OsStr::new("-o"),
                home.as_os_str(),
            ],
        )?;
        let mut nested = parse_subvolume_list(&out);
        if nested.is_empty() {
            break;
        }
        nested.sort_by_key(|(_, p)| std::cmp::Reverse(p.matches('/').count()));
        for (id, rel) in nested {
            let p = gears.join(&rel);
            if run("btrfs", [OsStr::new("subvolume"), OsStr::new("delete"), p.as_os_str()]).is_ok() {
                ids.push(id);
            }
        }
    }
    let id = subvolume_id(home)?;
    run(
        "btrfs",
        [
            OsStr::new("subvolume"),
            OsStr::new("delete"),
            OsStr::new("--commit-after"),
            home.as_os_str(),
        ],
    )?;
    ids.push(id);
    // Newer kernels (6.10+) drop a deleted subvolume's qgroup by themselves once the cleaner
    // has dropped the subvolume; older ones leave a stale qgroup that must be destroyed. Try
    // right away; if the kernel refuses while the subvolume still holds data, wait for the
    // cleaner (`btrfs subvolume sync`, which polls once a second) and try again.
    let mut synced = false;
    let mut kicks = 0;
    loop {
        let rows = qgroup_rows(&gears)?;
        let mut busy = Vec::new();
        for &id in &ids {
            if !rows.iter().any(|r| r.level == 0 && r.id == id) {
                continue;
            }
            let q = format!("0/{id}");
            match run(
                "btrfs",
                [
                    OsStr::new("qgroup"),
                    OsStr::new("destroy"),
                    OsStr::new(&q),
                    gears.as_os_str(),
                ],
            ) {
                Ok(_) => {}
                // Raced with the kernel's own removal.
                Err(e) if format!("{e:#}").contains("No such file or directory") => {}
                Err(e) if synced => return Err(e),
                Err(_) => busy.push(id),
            }
        }
        if busy.is_empty() {
            return Ok(());
        }
        // A transaction commit wakes the cleaner at once; `subvolume sync` alone waits for the
        // next periodic commit (30 s by default). Fall back to it only after a few seconds.
        if kicks < 50 {
            kicks += 1;
            run(
                "btrfs",
                [OsStr::new("filesystem"), OsStr::new("sync"), gears.as_os_str()],
            )?;
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        let mut sync_args: Vec<OsString> = vec!["subvolume".into(), "sync".into(), gears.clone().into_os_string()];
        sync_args.extend(busy.iter().map(|i| OsString::from(i.to_string())));
        run("btrfs", &sync_args)?;
        synced = true;
    }
}

// ---------------------------------------------------------------------------------------------
// ext4 / xfs user quota via quotactl(2)

const USRQUOTA: i32 = 0;
const SUBCMDSHIFT: i32 = 8;
const SUBCMDMASK: i32 = 0xff;
const Q_GETINFO: i32 = 0x800005;
const Q_GETQUOTA: i32 = 0x800007;
const Q_SETQUOTA: i32 = 0x800008;
const fn xqm_cmd(x: i32) -> i32 {
    ((b'X' as i32) << 8) + x
}
const Q_XGETQUOTA: i32 = xqm_cmd(3);
const Q_XSETQLIM: i32 = xqm_cmd(4);
const Q_XGETQSTAT: i32 = xqm_cmd(5);

/// QCMD(cmd, type) from <sys/quota.h>.
const fn qcmd(cmd: i32, qtype: i32) -> i32 {
    (cmd << SUBCMDSHIFT) | (qtype & SUBCMDMASK)
}

/// Block unit of `struct if_dqblk` limits.
const QIF_DQBLKSIZE: u64 = 1024;
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;
const QIF_LIMITS: u32 = QIF_BLIMITS | QIF_ILIMITS;

/// XFS "basic block" unit of `fs_disk_quota` block fields.
const XFS_BB: u64 = 512;
const FS_DQUOT_VERSION: i8 = 1;
const FS_USER_QUOTA: i8 = 1;
const FS_DQ_ISOFT: u16 = 1 << 0;
const FS_DQ_IHARD: u16 = 1 << 1;
const FS_DQ_BSOFT: u16 = 1 << 2;
const FS_DQ_BHARD: u16 = 1 << 3;
const FS_QUOTA_UDQ_ACCT: u16 = 1 << 0;
const FS_QUOTA_UDQ_ENFD: u16 = 1 << 1;

/// `struct if_dqblk` (linux/quota.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct IfDqblk {
    dqb_bhardlimit: u64,
    dqb_bsoftlimit: u64,
    dqb_curspace: u64,
    dqb_ihardlimit: u64,
    dqb_isoftlimit: u64,
    dqb_curinodes: u64,
    dqb_btime: u64,
    dqb_itime: u64,
    dqb_valid: u32,
}

/// `struct if_dqinfo` (linux/quota.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct IfDqinfo {
    dqi_bgrace: u64,
    dqi_igrace: u64,
    dqi_flags: u32,
    dqi_valid: u32,
}

/// `struct fs_disk_quota` (linux/dqblk_xfs.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsDiskQuota {
    d_version: i8,
    d_flags: i8,
    d_fieldmask: u16,
    d_id: u32,
    d_blk_hardlimit: u64,
    d_blk_softlimit: u64,
    d_ino_hardlimit: u64,
    d_ino_softlimit: u64,
    d_bcount: u64,
    d_icount: u64,
    d_itimer: i32,
    d_btimer: i32,
    d_iwarns: u16,
    d_bwarns: u16,
    d_itimer_hi: i8,
    d_btimer_hi: i8,
    d_rtbtimer_hi: i8,
    d_padding2: i8,
    d_rtb_hardlimit: u64,
    d_rtb_softlimit: u64,
    d_rtbcount: u64,
    d_rtbtimer: i32,
    d_rtbwarns: u16,
    d_padding3: i16,
    d_padding4: [u8; 8],
}

/// `struct fs_qfilestat` (linux/dqblk_xfs.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsQfilestat {
    qfs_ino: u64,
    qfs_nblks: u64,
    qfs_nextents: u32,
}

/// `struct fs_quota_stat` (linux/dqblk_xfs.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsQuotaStat {
    qs_version: i8,
    qs_flags: u16,
    qs_pad: i8,
    qs_uquota: FsQfilestat,
    qs_gquota: FsQfilestat,
    qs_incoredqs: u32,
    qs_btimelimit: i32,
    qs_itimelimit: i32,
    qs_rtbtimelimit: i32,
    qs_bwarnlimit: u16,
    qs_iwarnlimit: u16,
}

/// Bytes to 1 KiB quota blocks, rounded up (so the limit is never below what was asked).
fn bytes_to_kib_blocks(bytes: u64) -> u64 {
    bytes.div_ceil(QIF_DQBLKSIZE)
}

/// Bytes to XFS 512-byte basic blocks, rounded up.
fn bytes_to_xfs_bb(bytes: u64) -> u64 {
    bytes.div_ceil(XFS_BB)
}

/// The `if_dqblk` that sets block and inode hard and soft limits (0 = no limit).
fn vfs_limits(disk_bytes: u64, inodes: u64) -> IfDqblk {
    let b = bytes_to_kib_blocks(disk_bytes);
    IfDqblk {
        dqb_bhardlimit: b,
        dqb_bsoftlimit: b,
        dqb_ihardlimit: inodes,
        dqb_isoftlimit: inodes,
        dqb_valid: QIF_LIMITS,
        ..Default::default()
    }
}

/// The `fs_disk_quota` that sets block and inode hard and soft limits (0 = no limit).
fn xfs_limits(uid: u32, disk_bytes: u64, inodes: u64) -> FsDiskQuota {
    let bb = bytes_to_xfs_bb(disk_bytes);
    FsDiskQuota {
        d_version: FS_DQUOT_VERSION,
        d_flags: FS_USER_QUOTA,
        d_fieldmask: FS_DQ_BSOFT | FS_DQ_BHARD | FS_DQ_ISOFT | FS_DQ_IHARD,
        d_id: uid,
        d_blk_hardlimit: bb,
        d_blk_softlimit: bb,
        d_ino_hardlimit: inodes,
        d_ino_softlimit: inodes,
        ..Default::default()
    }
}

/// Where quotactl is pointed: the block device, or (kernel 5.14+) an fd on the filesystem
/// when the mount source is not a usable device path (e.g. `/dev/root`).
struct QuotaDevice {
    device: Option<CString>,
    mount_point: PathBuf,
    shown: String,
}

/// What the filesystem holding a path offers for user quota.
struct FsProbe {
    fstype: String,
    shown: String,
    enforced: bool,
}

impl FsProbe {
    fn explain(&self) -> String {
        if self.fstype != "ext4" && self.fstype != "xfs" {
            format!("{} is {}, not ext4 or xfs", self.shown, self.fstype)
        } else {
            format!(
                "{} ({}) does not enforce user quota (mount it with usrquota and run quotacheck/quotaon, or tune2fs -O quota)",
                self.shown, self.fstype
            )
        }
    }
}

fn probe_fs_quota(path: &Path) -> Result<FsProbe> {
    let m = find_mount(path)?;
    let shown = format!("{} on {}", m.source, m.mount_point.display());
    let fstype = m.fstype.clone();
    let enforced = match fstype.as_str() {
        "ext4" | "xfs" => {
            let dev = QuotaDevice::from_mount(&m);
            match dev.xgetqstat() {
                Ok(st) => {
                    st.qs_flags & FS_QUOTA_UDQ_ACCT != 0
                        && st.qs_flags & FS_QUOTA_UDQ_ENFD != 0
                        && (fstype == "xfs" || dev.getinfo().is_ok())
                }
                // Kernels without the generic XGETQSTAT for ext4: quota loaded + mount option.
                Err(_) if fstype == "ext4" => {
                    dev.getinfo().is_ok()
                        && m.super_opts
                            .split(',')
                            .chain(m.mount_opts.split(','))
                            .any(|o| o == "usrquota" || o == "quota" || o.starts_with("usrjquota"))
                }
                Err(_) => false,
            }
        }
        _ => false,
    };
    Ok(FsProbe {
        fstype,
        shown,
        enforced,
    })
}

impl QuotaDevice {
    fn from_mount(m: &MountEntry) -> QuotaDevice {
        use std::os::unix::fs::FileTypeExt;
        let is_blk = Path::new(&m.source)
            .metadata()
            .map(|md| md.file_type().is_block_device())
            .unwrap_or(false);
        QuotaDevice {
            device: if is_blk {
                CString::new(m.source.as_bytes()).ok()
            } else {
                None
            },
            mount_point: m.mount_point.clone(),
            shown: format!("{} on {}", m.source, m.mount_point.display()),
        }
    }

    fn for_path(path: &Path) -> Result<QuotaDevice> {
        Ok(QuotaDevice::from_mount(&find_mount(path)?))
    }

    /// Calls quotactl(cmd, device, id, addr), or quotactl_fd on the mount point.
    ///
    /// # Safety
    /// `addr` must point to a live, properly sized structure for `cmd` (or be null when `cmd`
    /// takes none).
    unsafe fn call(&self, cmd: i32, id: u32, addr: *mut libc::c_char) -> std::io::Result<()> {
        let rc = match &self.device {
            // SAFETY: `dev` is a NUL-terminated string that outlives the call; the caller
            // guarantees `addr` matches what `cmd` reads or writes.
            Some(dev) => unsafe { libc::quotactl(cmd, dev.as_ptr(), id as libc::c_int, addr) },
            None => {
                let dir = std::fs::File::open(&self.mount_point)?;
                use std::os::fd::AsRawFd;
                // SAFETY: quotactl_fd(fd, cmd, id, addr) with an fd we own for the duration of
                // the call; the caller guarantees `addr`.
                unsafe {
                    libc::syscall(
                        libc::SYS_quotactl_fd,
                        dir.as_raw_fd(),
                        cmd as libc::c_uint,
                        id as libc::c_int,
                        addr,
                    ) as libc::c_int
                }
            }
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    fn getinfo(&self) -> std::io::Result<IfDqinfo> {
        let mut info = IfDqinfo::default();
        // SAFETY: Q_GETINFO writes one `struct if_dqinfo`, which `info` is (repr(C), size
        // checked in tests).
        unsafe {
            self.call(
                qcmd(Q_GETINFO, USRQUOTA),
                0,
                &mut info as *mut IfDqinfo as *mut libc::c_char,
            )?
        };
        Ok(info)
    }

    fn xgetqstat(&self) -> std::io::Result<FsQuotaStat> {
        let mut st = FsQuotaStat {
            qs_version: 1,
            ..Default::default()
        };
        // SAFETY: Q_XGETQSTAT writes one `struct fs_quota_stat`, which `st` is.
        unsafe {
            self.call(
                qcmd(Q_XGETQSTAT, USRQUOTA),
                0,
                &mut st as *mut FsQuotaStat as *mut libc::c_char,
            )?
        };
        Ok(st)
    }

    fn set_vfs_limits(&self, uid: u32, disk_bytes: u64, inodes: u64) -> Result<()> {
        let mut q = vfs_limits(disk_bytes, inodes);
        // SAFETY: Q_SETQUOTA reads one `struct if_dqblk`, which `q` is.
        unsafe {
            self.call(
                qcmd(Q_SETQUOTA, USRQUOTA),
                uid,
                &mut q as *mut IfDqblk as *mut libc::c_char,
            )
        }
        .with_context(|| format!("cannot set the user quota of uid {uid} on {}", self.shown))
    }

    fn get_vfs(&self, uid: u32) -> Result<IfDqblk> {
        let mut q = IfDqblk::default();
        // SAFETY: Q_GETQUOTA writes one `struct if_dqblk`, which `q` is.
        unsafe {
            self.call(
                qcmd(Q_GETQUOTA, USRQUOTA),
                uid,
                &mut q as *mut IfDqblk as *mut libc::c_char,
            )
        }
        .with_context(|| format!("cannot read the user quota of uid {uid} on {}", self.shown))?;
        Ok(q)
    }

    fn set_xfs_limits(&self, uid: u32, disk_bytes: u64, inodes: u64) -> Result<()> {
        let mut q = xfs_limits(uid, disk_bytes, inodes);
        // SAFETY: Q_XSETQLIM reads one `struct fs_disk_quota`, which `q` is.
        unsafe {
            self.call(
                qcmd(Q_XSETQLIM, USRQUOTA),
                uid,
                &mut q as *mut FsDiskQuota as *mut libc::c_char,
            )
        }
        .with_context(|| format!("cannot set the xfs user quota of uid {uid} on {}", self.shown))
    }

    /// The uid's XFS quota record; `None` when XFS has none for it yet (ENOENT).
    fn get_xfs(&self, uid: u32) -> Result<Option<FsDiskQuota>> {
        let mut q = FsDiskQuota::default();
        // SAFETY: Q_XGETQUOTA writes one `struct fs_disk_quota`, which `q` is.
        match unsafe {
            self.call(
                qcmd(Q_XGETQUOTA, USRQUOTA),
                uid,
                &mut q as *mut FsDiskQuota as *mut libc::c_char,
            )
        } {
            Ok(()) => Ok(Some(q)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read the xfs user quota of uid {uid} on {}", self.shown)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    const MIB: u64 = 1 << 20;

    // ---- pure helpers ------------------------------------------------------------------

    #[test]
    fn quotactl_abi() {
        assert_eq!(std::mem::size_of::<IfDqblk>(), 72);
        assert_eq!(std::mem::size_of::<IfDqinfo>(), 24);
        assert_eq!(std::mem::size_of::<FsDiskQuota>(), 112);
        assert_eq!(std::mem::size_of::<FsQfilestat>(), 24);
        assert_eq!(std::mem::size_of::<FsQuotaStat>(), 80);
        assert_eq!(qcmd(Q_SETQUOTA, USRQUOTA), 0x8000_0800u32 as i32);
        assert_eq!(qcmd(Q_GETINFO, 1), 0x8000_0501u32 as i32);
        assert_eq!(Q_XSETQLIM, 0x5804);
        assert_eq!(qcmd(Q_XGETQSTAT, USRQUOTA), 0x0058_0500);
    }

    #[test]
    fn size_math() {
        assert_eq!(bytes_to_kib_blocks(0), 0);
        assert_eq!(bytes_to_kib_blocks(1), 1);
        assert_eq!(bytes_to_kib_blocks(1024), 1);
        assert_eq!(bytes_to_kib_blocks(1025), 2);
        assert_eq!(bytes_to_kib_blocks(1 << 30), 1 << 20);
        assert_eq!(bytes_to_xfs_bb(1 << 30), 1 << 21);
        assert_eq!(bytes_to_xfs_bb(513), 2);
        let v = vfs_limits(8 * MIB, 1000);
        assert_eq!(
            (v.dqb_bhardlimit, v.dqb_bsoftlimit, v.dqb_ihardlimit, v.dqb_isoftlimit),
            (8192, 8192, 1000, 1000)
        );
        assert_eq!(v.dqb_valid, QIF_BLIMITS | QIF_ILIMITS);
        let reset = vfs_limits(0, 0);
        assert_eq!(
            (reset.dqb_bhardlimit, reset.dqb_ihardlimit, reset.dqb_valid),
            (0, 0, QIF_LIMITS)
        );
        let x = xfs_limits(400_001, 8 * MIB, 1000);
        assert_eq!(
            (x.d_id, x.d_blk_hardlimit, x.d_blk_softlimit, x.d_ino_hardlimit),
            (400_001, 16384, 16384, 1000)
        );
        assert_eq!(x.d_fieldmask, 0xf);
        assert_eq!((x.d_version, x.d_flags), (1, 1));
        assert_eq!(btrfs_limit_arg(0), "none");
        assert_eq!(btrfs_limit_arg(8 * MIB), "8388608");
        assert!(crate::node::config::parse_size("108M").unwrap() < BTRFS_MIN_IMAGE);
        assert_eq!(crate::node::config::parse_size("109M").unwrap(), BTRFS_MIN_IMAGE);
        assert!(crate::node::config::parse_size("128M").unwrap() >= BTRFS_MIN_IMAGE);
    }

    #[test]
    fn parses_qgroup_show() {
        let text = "\
Qgroupid    Referenced    Exclusive  Max referenced  Max exclusive   Path 
--------    ----------    ---------  --------------  -------------   ---- 
0/5              16384        16384            none           none   <toplevel>
0/256          8372224      8372224         8388608           none   g1
0/260         20987904     20987904            none           none   g4/nested
1/7                  0            0            none        1048576   
";
        let rows = parse_qgroup_show(text);
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[1],
            QgroupRow {
                level: 0,
                id: 256,
                referenced: 8_372_224,
                exclusive: 8_372_224,
                max_referenced: Some(8_388_608),
                max_exclusive: None,
                path: "g1".into()
            }
        );
        assert_eq!(rows[2].max_referenced, None);
        assert_eq!(
            (rows[1].path.as_str(), rows[2].path.as_str(), rows[3].path.as_str()),
            ("g1", "g4/nested", "")
        );
        assert_eq!(
            (rows[3].level, rows[3].id, rows[3].max_exclusive),
            (1, 7, Some(1_048_576))
        );
        assert!(parse_qgroup_show("WARNING: rescan is running, qgroup data may be incorrect\n").is_empty());
    }

    #[test]
    fn parses_subvolume_list() {
        let text = "ID 260 gen 23 top level 259 path g4/nested\nID 261 gen 24 top level 260 path g4/nested/a b\n";
        assert_eq!(
            parse_subvolume_list(text),
            vec![(260, "g4/nested".into()), (261, "g4/nested/a b".into())]
        );
        assert!(parse_subvolume_list("").is_empty());
    }

    #[test]
    fn parses_mountinfo() {
        let text = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
43 27 0:39 / /var/lib/gs\\040x/gears rw,nosuid,nodev,relatime shared:5 - btrfs /dev/loop0 rw,space_cache=v2,subvolid=5,subvol=/
44 27 0:40 / /var/lib/gs\\040x/gears rw,relatime - xfs /dev/sdb rw,usrquota
45 27 0:41 / /srv rw - ext4 /dev/sdc rw,usrquota
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].mount_point, PathBuf::from("/var/lib/gs x/gears"));
        assert_eq!((m[1].fstype.as_str(), m[1].source.as_str()), ("btrfs", "/dev/loop0"));
        assert_eq!(m[1].mount_opts, "rw,nosuid,nodev,relatime");
        // The last mount on the longest matching mount point wins.
        let f = find_mount_in(&m, Path::new("/var/lib/gs x/gears/g1/x")).unwrap();
        assert_eq!(f.fstype, "xfs");
        assert_eq!(
            find_mount_in(&m, Path::new("/var/lib/gs x")).unwrap().source,
            "/dev/vda"
        );
        // Component-wise prefix: /srvx is not under /srv.
        assert_eq!(find_mount_in(&m, Path::new("/srvx/a")).unwrap().source, "/dev/vda");
        assert_eq!(
            find_mount_in(&m, Path::new("/srv/a")).unwrap().super_opts,
            "rw,usrquota"
        );
        assert_eq!(unescape_mount("a\\011b\\134"), OsString::from("a\tb\\"));
        assert_eq!(unescape_mount("trailing\\04"), OsString::from("trailing\\04"));
    }

    #[test]
    fn gear_ids() {
        for ok in ["g1", "shop-web-1", "a.b_c"] {
            check_gear_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0b"] {
            assert!(check_gear_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn canonical_of_missing_path() {
        let p = canonical_or_ancestor(Path::new("/proc/self/../self/nonexistent/deeper"));
        assert!(p.ends_with("nonexistent/deeper"), "{}", p.display());
        assert!(!p.to_string_lossy().contains(".."));
    }

    // ---- against the kernel ------------------------------------------------------------

    static SEQ: AtomicU32 = AtomicU32::new(0);

    /// Why the kernel tests cannot run here, if they cannot.
    fn skip_reason() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root".into());
        }
        if let Err(e) = btrfs_available() {
            return Some(format!("{e:#}"));
        }
        if !Path::new("/dev/loop-control").exists() {
            return Some("no /dev/loop-control".into());
        }
        None
    }

    /// A throw-away node under /tmp, brought down and removed on drop.
    struct TestNode {
        node: Node,
    }

    impl TestNode {
        fn new(backend: &str, allow_unlimited: bool) -> TestNode {
            let n = SEQ.fetch_add(1, Ordering::SeqCst);
            let pid = std::process::id();
            let base = crate::node::config::Config::default();
            let config = crate::node::config::Config {
                name: format!("gsq{pid}x{n}"),
                data_root: PathBuf::from(format!("/tmp/gs-quota-test-{pid}-{n}")),
                disk: crate::node::config::DiskConfig {
                    backend: backend.into(),
                    image_size: "128M".into(),
                    allow_unlimited,
                },
                ..base
            };
            let _ = std::fs::remove_dir_all(&config.data_root);
            std::fs::create_dir_all(&config.data_root).unwrap();
            let config_path = config.data_root.join("gearshift.toml");
            TestNode {
                node: Node { config, config_path },
            }
        }
    }

    impl Drop for TestNode {
        fn drop(&mut self) {
            let img = image_path(&self.node);
            if let Err(e) = node_down(&self.node) {
                eprintln!("cleanup: node_down: {e:#}");
                let _ = nix::mount::umount2(&self.node.gears_dir(), nix::mount::MntFlags::MNT_DETACH);
            }
            let loops = wait_no_loop(&img);
            let _ = std::fs::remove_dir_all(self.node.root());
            if !std::thread::panicking() {
                assert!(loops.is_empty(), "loop devices left for {}: {loops:?}", img.display());
            }
        }
    }

    /// Waits up to 2 s for no loop device to back `img`; returns what is left.
    fn wait_no_loop(img: &Path) -> Vec<PathBuf> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = if img.exists() { losetup_j(img) } else { Vec::new() };
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `losetup -j IMAGE`: the loop devices attached to the image.
    fn losetup_j(img: &Path) -> Vec<PathBuf> {
        let out = run("losetup", [OsStr::new("-j"), img.as_os_str()]).unwrap();
        out.lines()
            .filter_map(|l| l.split(':').next())
            .map(PathBuf::from)
            .collect()
    }

    fn gears_mounted(node: &Node) -> bool {
        let g = node.gears_dir().canonicalize().unwrap_or(node.gears_dir());
        mountinfo().unwrap().iter().any(|m| m.mount_point == g)
    }

    fn limits(disk_bytes: u64) -> Limits {
        Limits {
            memory_bytes: 64 * MIB,
            cpu_millis: 1000,
            pids: 64,
            disk_bytes,
            inodes: 1000,
            bandwidth_kbit: 1000,
            io_weight: 100,
        }
    }

    /// Writes `mib` MiB of zeros into `dir/name` as uid:uid (not root); returns (ok, stderr).
    fn write_as(uid: u32, dir: &Path, name: &str, mib: u64) -> (bool, String) {
        let out = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", dir.join(name).display()))
            .arg("bs=1M")
            .arg(format!("count={mib}"))
            .arg("conv=fsync")
            .arg("status=none")
            .env("LC_ALL", "C")
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    macro_rules! require_kernel {
        () => {
            if let Some(why) = skip_reason() {
                eprintln!("skipping: {why}");
                return;
            }
        };
    }

    #[test]
    fn btrfs_node_up_down_idempotent() {
        require_kernel!();
        let t = TestNode::new("btrfs-loop", false);
        let node = &t.node;
        assert_eq!(backend(node).unwrap(), Backend::BtrfsLoop);
        let start = Instant::now();
        node_up(node).unwrap();
        eprintln!(
            "first node_up (truncate + mkfs.btrfs + mount + quota enable): {:?}",
            start.elapsed()
        );
        let start = Instant::now();
        node_up(node).unwrap();
        eprintln!("second node_up (no-op): {:?}", start.elapsed());
        assert!(gears_mounted(node));
        assert_eq!(losetup_j(&image_path(node)).len(), 1, "exactly one loop device");
        let img_meta = image_path(node).metadata().unwrap();
        assert_eq!(img_meta.len(), 128 * MIB);
        assert!(img_meta.blocks() * 512 < 32 * MIB, "image is sparse");
        let (ok, line) = describe(node);
        assert!(
            ok && line.starts_with("btrfs-loop: qgroups on") && line.contains("mounted on"),
            "{line}"
        );
        // auto sticks with an existing image.
        let mut auto = node.clone();
        auto.config.disk.backend = "auto".into();
        assert_eq!(backend(&auto).unwrap(), Backend::BtrfsLoop);

        node_down(node).unwrap();
        node_down(node).unwrap();
        assert!(!gears_mounted(node));
        assert!(wait_no_loop(&image_path(node)).is_empty(), "loop device released");
        assert!(image_path(node).exists(), "image kept");
        // Data survives a down/up cycle.
        node_up(node).unwrap();
        let home = create_home(node, "keep", 4_000_100, &limits(8 * MIB)).unwrap();
        std::fs::write(home.join("f"), b"hello").unwrap();
        node_down(node).unwrap();
        assert!(!home.exists());
        node_up(node).unwrap();
        assert_eq!(std::fs::read(home.join("f")).unwrap(), b"hello");
    }

    #[test]
    fn btrfs_limits_are_enforced_per_gear() {
        require_kernel!();
        let t = TestNode::new("btrfs-loop", false);
        let node = &t.node;
        node_up(node).unwrap();
        let pid = std::process::id();
        let (uid1, uid2) = (4_000_000 + (pid % 50_000) * 2, 4_000_001 + (pid % 50_000) * 2);

        let start = Instant::now();
        let h1 = create_home(node, "g1", uid1, &limits(8 * MIB)).unwrap();
        eprintln!(
            "create_home (subvolume create + qgroup limit + chown): {:?}",
            start.elapsed()
        );
        let h2 = create_home(node, "g2", uid2, &limits(8 * MIB)).unwrap();
        let m = h1.metadata().unwrap();
        assert_eq!((m.uid(), m.gid(), m.permissions().mode() & 0o7777), (uid1, uid1, 0o700));
        // create_home again is harmless.
        assert_eq!(create_home(node, "g1", uid1, &limits(8 * MIB)).unwrap(), h1);

        let (ok, err) = write_as(uid1, &h1, "big", 20);
        assert!(!ok, "20 MiB write into an 8 MiB home succeeded");
        assert!(err.contains("Disk quota exceeded"), "unexpected dd error: {err}");
        let start = Instant::now();
        let u = usage(node, "g1", uid1).unwrap();
        eprintln!("usage (qgroup show --sync): {:?}; {u:?}", start.elapsed());
        assert_eq!(u.limit_bytes, Some(8 * MIB));
        assert!(
            u.bytes > 6 * MIB && u.bytes <= 8 * MIB,
            "usage {} not near the limit",
            u.bytes
        );
        assert_eq!((u.inodes, u.limit_inodes), (None, None));

        // The other gear is unaffected.
        let (ok, err) = write_as(uid2, &h2, "data", 4);
        assert!(ok, "write into the second home failed: {err}");
        let u2 = usage(node, "g2", uid2).unwrap();
        assert!(u2.bytes >= 4 * MIB && u2.bytes < 5 * MIB, "{u2:?}");

        // Freeing space lets the first gear write again.
        std::fs::remove_file(h1.join("big")).unwrap();
        let (ok, err) = write_as(uid1, &h1, "small", 2);
        assert!(ok, "write after freeing space failed: {err}");
    }

    #[test]
    fn btrfs_destroy_leaves_nothing() {
        require_kernel!();
        let t = TestNode::new("btrfs-loop", false);
        let node = &t.node;
        node_up(node).unwrap();
        let uid = 4_100_000 + std::process::id() % 50_000;
        let home = create_home(node, "gone", uid, &limits(8 * MIB)).unwrap();
        let id = subvolume_id(&home).unwrap();
        let (ok, err) = write_as(uid, &home, "f", 3);
        assert!(ok, "{err}");
        // An unprivileged gear can create subvolumes of its own; destroy must handle them.
        let out = Command::new("btrfs")
            .args([
                OsStr::new("subvolume"),
                OsStr::new("create"),
                home.join("nested").as_os_str(),
            ])
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap();
        let nested_id = if out.status.success() {
            Some(subvolume_id(&home.join("nested")).unwrap())
        } else {
            None
        };
        eprintln!("unprivileged nested subvolume created: {}", nested_id.is_some());
        if nested_id.is_some() {
            // The nested subvolume escapes the home's qgroup limit (see the module caveats) but
            // usage() still counts it.
            let (ok, err) = write_as(uid, &home.join("nested"), "f", 10);
            eprintln!("10 MiB into a nested subvolume of an 8 MiB home: ok={ok} {err}");
            let u = usage(node, "gone", uid).unwrap();
            assert!(u.bytes >= 13 * MIB, "nested data not counted: {u:?}");
        }

        let start = Instant::now();
        destroy_home(node, "gone", uid).unwrap();
        eprintln!(
            "destroy_home (subvolume delete --commit-after + sync + qgroup check): {:?}",
            start.elapsed()
        );
        assert!(!home.exists());
        let list = run(
            "btrfs",
            [
                OsStr::new("subvolume"),
                OsStr::new("list"),
                node.gears_dir().as_os_str(),
            ],
        )
        .unwrap();
        assert!(!list.contains("path gone"), "subvolume left: {list}");
        let rows = qgroup_rows(&node.gears_dir()).unwrap();
        for i in std::iter::once(id).chain(nested_id) {
            assert!(
                !rows.iter().any(|r| r.level == 0 && r.id == i),
                "qgroup 0/{i} left: {rows:?}"
            );
        }
        destroy_home(node, "gone", uid).unwrap();
        assert!(usage(node, "gone", uid).is_err());
    }

    #[test]
    fn no_backend_refuses_unless_allowed() {
        // Needs no root: plain directories only (chown needs root, so the allowed half checks it).
        let t = TestNode::new("none", false);
        let node = &t.node;
        assert_eq!(backend(node).unwrap(), Backend::None);
        node_up(node).unwrap();
        node_up(node).unwrap();
        assert!(node.gears_dir().is_dir());
        let (ok, line) = describe(node);
        assert!(!ok);
        assert!(line.starts_with("none: no quota-capable filesystem; fix:"), "{line}");
        let err = format!(
            "{:#}",
            create_home(node, "g1", 4_200_000, &limits(8 * MIB)).unwrap_err()
        );
        assert!(
            err.starts_with("cannot create gear: no disk quota backend can enforce its disk limit on ")
                && err.contains("disk.allow_unlimited = true"),
            "{err}"
        );
        assert!(!node.gears_dir().join("g1").exists());

        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let mut allowed = node.clone();
        allowed.config.disk.allow_unlimited = true;
        assert!(describe(&allowed).0);
        let home = create_home(&allowed, "g1", 4_200_000, &limits(8 * MIB)).unwrap();
        std::fs::write(home.join("f"), vec![1u8; 100_000]).unwrap();
        let u = usage(&allowed, "g1", 4_200_000).unwrap();
        assert_eq!(u.limit_bytes, None);
        assert!(u.bytes >= 100_000 && u.inodes == Some(2), "{u:?}");
        destroy_home(&allowed, "g1", 4_200_000).unwrap();
        destroy_home(&allowed, "g1", 4_200_000).unwrap();
        assert!(!home.exists());
    }

    #[test]
    fn explicit_ext4_is_checked() {
        // This machine's root filesystem has no quota, so asking for ext4 must fail clearly.
        let t = TestNode::new("ext4", false);
        match probe_fs_quota(&t.node.gears_dir()) {
            Ok(p) if p.enforced => eprintln!("skipping: {} enforces quota here", p.shown),
            _ => {
                let err = format!("{:#}", backend(&t.node).unwrap_err());
                assert!(err.starts_with("disk.backend = \"ext4\" but "), "{err}");
                let (ok, line) = describe(&t.node);
                assert!(!ok, "{line}");
            }
        }
    }
}
