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

use crate::config::Limits;
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

/// `mkfs.btrfs` refuses images smaller than this (btrfs-progs 6.2: 114294784 bytes).
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
                    node.config.disk.image_size
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
        Backend::Ext4 | Backend::Xfs | Backend::None => std::fs::create_dir_all(&gears)
            .with_context(|| format!("cannot create {}", gears.display())),
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
    if img.exists() {
        for dev in loop_devices_for(&img)? {
            if !device_is_mounted(&dev)? {
                run("losetup", [OsStr::new("-d"), dev.as_os_str()])?;
            }
        }
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
                bail!("cannot create gear home {}: it exists and is not a btrfs subvolume", home.display());
            } else {
                run("btrfs", [OsStr::new("subvolume"), OsStr::new("create"), home.as_os_str()])?;
                true
            };
            let applied = (|| -> Result<()> {
                let limit = btrfs_limit_arg(limits.disk_bytes);
                run("btrfs", [OsStr::new("qgroup"), OsStr::new("limit"), OsStr::new(&limit), home.as_os_str()])?;
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
            Ok(Usage { bytes: row.referenced, limit_bytes: row.max_referenced, inodes: None, limit_inodes: None })
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
            let q = QuotaDevice::for_path(&node.gears_dir())?.get_xfs(uid)?.unwrap_or_default();
            Ok(Usage {
                bytes: q.d_bcount.saturating_mul(XFS_BB),
                limit_bytes: nonzero(q.d_blk_hardlimit.saturating_mul(XFS_BB)),
                inodes: Some(q.d_icount),
                limit_inodes: nonzero(q.d_ino_hardlimit),
            })
        }
        Backend::None => {
            let (bytes, inodes) = tree_usage(&home)?;
            Ok(Usage { bytes, limit_bytes: None, inodes: Some(inodes), limit_inodes: None })
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
        || !gear_id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
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
        p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
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
        let stderr = if stderr.is_empty() { String::from_utf8_lossy(&out.stdout).trim().to_string() } else { stderr.to_string() };
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
    let top = path.symlink_metadata().with_context(|| format!("cannot stat {}", path.display()))?;
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
            && best.map_or(true, |b| e.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len())
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
        let size = crate::config::parse_size(&node.config.disk.image_size).context("disk.image_size")?;
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
        f.set_len(size).with_context(|| format!("cannot size {} to {size} bytes", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        drop(f);
        let label = format!("gearshift-{}", node.config.name);
        if let Err(e) = run("mkfs.btrfs", [OsStr::new("-q"), OsStr::new("-L"), OsStr::new(&label), tmp.as_os_str()]) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &img).with_context(|| format!("cannot rename {} to {}", tmp.display(), img.display()))?;
    }
    std::fs::create_dir_all(&gears).with_context(|| format!("cannot create {}", gears.display()))?;
    if mounted_image(node).is_none() {
        let canon = canonical_or_ancestor(&gears);
        if find_mount(&canon)?.mount_point == canon {
            bail!("{} is already a mount point of something else; unmount it first", gears.display());
        }
        if std::fs::read_dir(&gears)?.next().is_some() {
            bail!(
                "{} is not empty; mounting the gears image there would hide its files (move them away first)",
                gears.display()
            );
        }
        run("mount", [OsStr::new("-o"), OsStr::new("loop,nosuid,nodev"), img.as_os_str(), gears.as_os_str()])?;
        if mounted_image(node).is_none() {
            bail!("mounted {} on {} but cannot find the mount afterwards", img.display(), gears.display());
        }
    }
    // Idempotent in the kernel: no-op if quota is already enabled.
    run("btrfs", [OsStr::new("quota"), OsStr::new("enable"), gears.as_os_str()])?;
    std::fs::set_permissions(&gears, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot chmod {}", gears.display()))?;
    Ok(())
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
    let out = run("btrfs", [OsStr::new("inspect-internal"), OsStr::new("rootid"), path.as_os_str()])?;
    out.trim().parse().with_context(|| format!("unexpected `btrfs inspect-internal rootid` output: {out:?}"))
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
    let out = run("btrfs", [OsStr::new("qgroup"), OsStr::new("show"), OsStr::new("--raw"), OsStr::new("-re"), gears.as_os_str()])?;
    Ok(parse_qgroup_show(&out))
}

/// Deletes a gear subvolume, any subvolumes the gear created inside it, and their qgroups.
fn btrfs_destroy(node: &Node, home: &Path) -> Result<()> {
    let gears = node.gears_dir();
    let mut ids = Vec::new();
    // Gears can create subvolumes of their own (unprivileged users may); delete deepest first.
    for _ in 0..64 {
        let out = run("btrfs", [OsStr::new("subvolume"), OsStr::new("list"), OsStr::new("-o"), home.as_os_str()])?;
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
    run("btrfs", [OsStr::new("subvolume"), OsStr::new("delete"), OsStr::new("--commit-after"), home.as_os_str()])?;
    ids.push(id);
    // Newer kernels drop a deleted subvolume's qgroup by themselves once the subvolume is
    // cleaned; older ones leave a stale qgroup that must be destroyed.
    let mut sync_args: Vec<OsString> = vec!["subvolume".into(), "sync".into(), gears.clone().into_os_string()];
    sync_args.extend(ids.iter().map(|i| OsString::from(i.to_string())));
    run("btrfs", &sync_args)?;
    let rows = qgroup_rows(&gears)?;
    for id in ids {
        if rows.iter().any(|r| r.level == 0 && r.id == id) {
            let q = format!("0/{id}");
            if let Err(e) = run("btrfs", [OsStr::new("qgroup"), OsStr::new("destroy"), OsStr::new(&q), gears.as_os_str()]) {
                // Raced with the kernel's own removal.
                if !format!("{e:#}").contains("No such file or directory") {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
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
                        && m.super_opts.split(',').chain(m.mount_opts.split(',')).any(|o| {
                            o == "usrquota" || o == "quota" || o.starts_with("usrjquota")
                        })
                }
                Err(_) => false,
            }
        }
        _ => false,
    };
    Ok(FsProbe { fstype, shown, enforced })
}

impl QuotaDevice {
    fn from_mount(m: &MountEntry) -> QuotaDevice {
        use std::os::unix::fs::FileTypeExt;
        let is_blk = Path::new(&m.source).metadata().map(|md| md.file_type().is_block_device()).unwrap_or(false);
        QuotaDevice {
            device: if is_blk { CString::new(m.source.as_bytes()).ok() } else { None },
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
                    libc::syscall(libc::SYS_quotactl_fd, dir.as_raw_fd(), cmd as libc::c_uint, id as libc::c_int, addr)
                        as libc::c_int
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
        unsafe { self.call(qcmd(Q_GETINFO, USRQUOTA), 0, &mut info as *mut IfDqinfo as *mut libc::c_char)? };
        Ok(info)
    }

    fn xgetqstat(&self) -> std::io::Result<FsQuotaStat> {
        let mut st = FsQuotaStat { qs_version: 1, ..Default::default() };
        // SAFETY: Q_XGETQSTAT writes one `struct fs_quota_stat`, which `st` is.
        unsafe { self.call(qcmd(Q_XGETQSTAT, USRQUOTA), 0, &mut st as *mut FsQuotaStat as *mut libc::c_char)? };
        Ok(st)
    }

    fn set_vfs_limits(&self, uid: u32, disk_bytes: u64, inodes: u64) -> Result<()> {
        let mut q = vfs_limits(disk_bytes, inodes);
        // SAFETY: Q_SETQUOTA reads one `struct if_dqblk`, which `q` is.
        unsafe { self.call(qcmd(Q_SETQUOTA, USRQUOTA), uid, &mut q as *mut IfDqblk as *mut libc::c_char) }
            .with_context(|| format!("cannot set the user quota of uid {uid} on {}", self.shown))
    }

    fn get_vfs(&self, uid: u32) -> Result<IfDqblk> {
        let mut q = IfDqblk::default();
        // SAFETY: Q_GETQUOTA writes one `struct if_dqblk`, which `q` is.
        unsafe { self.call(qcmd(Q_GETQUOTA, USRQUOTA), uid, &mut q as *mut IfDqblk as *mut libc::c_char) }
            .with_context(|| format!("cannot read the user quota of uid {uid} on {}", self.shown))?;
        Ok(q)
    }

    fn set_xfs_limits(&self, uid: u32, disk_bytes: u64, inodes: u64) -> Result<()> {
        let mut q = xfs_limits(uid, disk_bytes, inodes);
        // SAFETY: Q_XSETQLIM reads one `struct fs_disk_quota`, which `q` is.
        unsafe { self.call(qcmd(Q_XSETQLIM, USRQUOTA), uid, &mut q as *mut FsDiskQuota as *mut libc::c_char) }
            .with_context(|| format!("cannot set the xfs user quota of uid {uid} on {}", self.shown))
    }

    /// The uid's XFS quota record; `None` when XFS has none for it yet (ENOENT).
    fn get_xfs(&self, uid: u32) -> Result<Option<FsDiskQuota>> {
        let mut q = FsDiskQuota::default();
        // SAFETY: Q_XGETQUOTA writes one `struct fs_disk_quota`, which `q` is.
        match unsafe { self.call(qcmd(Q_XGETQUOTA, USRQUOTA), uid, &mut q as *mut FsDiskQuota as *mut libc::c_char) } {
            Ok(()) => Ok(Some(q)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e)
                .with_context(|| format!("cannot read the xfs user quota of uid {uid} on {}", self.shown)),
        }
    }
}
