//! The `btrfs-loop` quota backend: a sparse image `<data_root>/gears.img` holds a btrfs
//! filesystem mounted on `<data_root>/gears`; every gear home is a subvolume whose qgroup
//! `0/<subvolid>` carries a referenced-bytes limit. A write past the limit fails with EDQUOT,
//! even for root. btrfs has no inode limits.
//!
//! Caveat: an unprivileged process may create subvolumes and snapshots
//! (`BTRFS_IOC_SUBVOL_CREATE{,_V2}`, `BTRFS_IOC_SNAP_CREATE{,_V2}`); a subvolume made inside a
//! gear home gets a qgroup of its own, outside the home's limit (verified: 10 MiB written into
//! a nested subvolume of an 8 MiB home). The gear seccomp filter must refuse btrfs ioctls
//! (`ioctl` cmd with type 0x94) for the limit to hold. `usage` counts nested subvolumes and
//! `destroy_home` deletes them.

use super::shared::{own_private, private_gears_dir, remove_tree, run, tool, Usage};
use crate::gear::isolation::check::{tool_version, Check};
use crate::gear::isolation::mountinfo::{self, canonical_or_ancestor, find_mount, find_mount_in};
use crate::node::config::Limits;
use crate::node::Node;
use anyhow::{bail, Context, Result};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `mkfs.btrfs` refuses images smaller than this (btrfs-progs 6.2: 114294784 bytes = 109 MiB).
pub(super) const BTRFS_MIN_IMAGE: u64 = 114_294_784;

/// The loop image that holds gear homes for the btrfs-loop backend.
pub(super) fn image_path(node: &Node) -> PathBuf {
    node.root().join("gears.img")
}

/// Whether the kernel lists btrfs in /proc/filesystems.
fn kernel_has_btrfs() -> bool {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    fs.lines().any(|l| l.split_whitespace().last() == Some("btrfs"))
}

/// Ok when this host can run the backend: kernel btrfs, btrfs-progs, mount and losetup.
pub(super) fn available() -> Result<()> {
    if !kernel_has_btrfs() {
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

/// The `btrfs-progs` line: the tools and the kernel support this backend needs (optional).
pub fn check_progs() -> Check {
    let kdesc = if kernel_has_btrfs() {
        "kernel has btrfs"
    } else {
        "kernel has no btrfs"
    };
    match tool_version("btrfs", &["--version"]) {
        Some(v) => Check::ok("btrfs-progs", format!("{v}; {kdesc}")),
        None => Check::warn(
            "btrfs-progs",
            format!("not installed ({kdesc}); needed for the btrfs-loop quota backend"),
            "apt-get install btrfs-progs / dnf install btrfs-progs",
        ),
    }
}

/// doctor's detail for this backend: the image, its size and whether it is mounted.
pub(super) fn describe(node: &Node) -> String {
    let img = image_path(node);
    let state = if mounted_image(node).is_some() {
        format!("mounted on {}", node.gears_dir().display())
    } else if img.exists() {
        "not mounted (run `gearshift node up`)".to_string()
    } else {
        "image not created yet (`gearshift node up` creates it)".to_string()
    };
    format!(
        "btrfs-loop: qgroups on {} ({}), {state}, blocks enforced, inode limits not supported by btrfs",
        img.display(),
        match img.metadata() {
            Ok(m) => format!("{} MiB", m.len() >> 20),
            Err(_) => node.config.disk.image_size.clone(),
        }
    )
}

/// Creates the gear's home as a subvolume with its qgroup limit, owned by `uid`.
pub(super) fn create_home(node: &Node, home: &Path, uid: u32, limits: &Limits) -> Result<()> {
    if mounted_image(node).is_none() {
        bail!(
            "cannot create gear home {}: the gears image is not mounted (run `gearshift node up`)",
            home.display()
        );
    }
    let created = if is_subvolume(home)? {
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
        own_private(home, uid)
    })();
    if let Err(e) = applied {
        if created {
            let _ = destroy(node, home);
        }
        return Err(e);
    }
    Ok(())
}

/// Deletes the gear's home subvolume (with the subvolumes nested in it) and their qgroups.
pub(super) fn destroy_home(node: &Node, home: &Path) -> Result<()> {
    if home.symlink_metadata().is_err() {
        return Ok(());
    }
    if mounted_image(node).is_none() {
        bail!(
            "cannot destroy gear home {}: the gears image is not mounted (run `gearshift node up`)",
            home.display()
        );
    }
    if is_subvolume(home)? {
        destroy(node, home)
    } else {
        remove_tree(home)
    }
}

/// The qgroup's referenced bytes and limit, plus the subvolumes the gear nested in its home.
pub(super) fn usage(node: &Node, gear_id: &str, home: &Path) -> Result<Usage> {
    if !is_subvolume(home)? {
        bail!("gear home {} is not a btrfs subvolume", home.display());
    }
    let id = subvolume_id(home)?;
    let rows = qgroup_rows(&node.gears_dir(), true)?;
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

/// Every gear home's usage from one `btrfs qgroup show` (`top` reads all gears at once: one
/// process and one transaction commit, not two processes and a commit per gear). A home is
/// named by its qgroup's path, its gear id (a gear cannot make a subvolume outside its home);
/// subvolumes it nested in its home count towards it, as in [`usage`].
pub(super) fn usages(node: &Node) -> Result<std::collections::HashMap<String, Usage>> {
    Ok(usages_of(&qgroup_rows(&node.gears_dir(), true)?))
}

/// The homes' usage from the level-0 rows (path `ID`, nested ones `ID/...`).
fn usages_of(rows: &[QgroupRow]) -> std::collections::HashMap<String, Usage> {
    let path = |r: &QgroupRow| r.path.strip_prefix("<FS_TREE>/").unwrap_or(&r.path).to_string();
    let mut by: std::collections::HashMap<String, Usage> = rows
        .iter()
        .filter(|r| r.level == 0 && !path(r).is_empty() && !path(r).contains(['/', '<']))
        .map(|r| {
            let u = Usage {
                bytes: r.referenced,
                limit_bytes: r.max_referenced,
                inodes: None,
                limit_inodes: None,
            };
            (path(r), u)
        })
        .collect();
    for r in rows.iter().filter(|r| r.level == 0) {
        if let Some((home, _)) = path(r).split_once('/') {
            if let Some(u) = by.get_mut(home) {
                u.bytes += r.referenced;
            }
        }
    }
    by
}

/// Unmounts the gears image if this node mounted it; the image (and so the data) stays.
/// Idempotent.
pub(super) fn node_down(node: &Node) -> Result<()> {
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
    // Autoclear releases the device asynchronously after the unmount, once the last mount
    // namespace holding the filesystem is gone (a gear process still exiting on a loaded host
    // keeps one for seconds): wait for it, up to 10 s, and detach explicitly what is still
    // attached after half a second.
    if img.exists() {
        let t = std::time::Instant::now();
        let mut detached = false;
        loop {
            let left: Vec<PathBuf> = loop_devices_for(&img)?
                .into_iter()
                .filter(|d| !device_is_mounted(d).unwrap_or(true))
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if t.elapsed() > std::time::Duration::from_secs(10) {
                bail!(
                    "loop devices {left:?} still hold {} 10 s after the unmount (a process may still use the filesystem: see `fuser -m {}`; then detach them with `losetup -d`)",
                    img.display(),
                    left[0].display()
                );
            }
            if !detached && t.elapsed() > std::time::Duration::from_millis(500) {
                for dev in &left {
                    let _ = run("losetup", [OsStr::new("-d"), dev.as_os_str()]);
                }
                detached = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    Ok(())
}

/// The loop device if the node's image is mounted on its gears directory.
fn mounted_image(node: &Node) -> Option<PathBuf> {
    let gears = canonical_or_ancestor(&node.gears_dir());
    let img = canonical_or_ancestor(&image_path(node));
    let entries = mountinfo::read().ok()?;
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
    Ok(mountinfo::read()?.iter().any(|m| Path::new(&m.source) == dev))
}

/// Creates, formats and mounts the image and enables quota. Idempotent.
pub(super) fn node_up(node: &Node) -> Result<()> {
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

pub(super) fn subvolume_id(path: &Path) -> Result<u64> {
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
pub(super) struct QgroupRow {
    pub(super) level: u64,
    pub(super) id: u64,
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

/// Every qgroup of the gears' filesystem, in one `btrfs qgroup show`; `sync` commits the
/// transaction first (qgroup numbers are only updated at a commit): what usage readers need.
pub(super) fn qgroup_rows(gears: &Path, sync: bool) -> Result<Vec<QgroupRow>> {
    let mut args = vec![OsStr::new("qgroup"), OsStr::new("show")];
    if sync {
        args.push(OsStr::new("--sync"));
    }
    args.extend([OsStr::new("--raw"), OsStr::new("-re"), gears.as_os_str()]);
    Ok(parse_qgroup_show(&run("btrfs", args)?))
}

/// Deletes a gear subvolume, any subvolumes the gear created inside it, and their qgroups.
fn destroy(node: &Node, home: &Path) -> Result<()> {
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
        let rows = qgroup_rows(&gears, false)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn btrfs_size_math() {
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
        // g4's home is not a subvolume here: its nested one names no home of its own.
        let all = usages_of(&rows);
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all["g1"].bytes, 8_372_224);
        assert_eq!(all["g1"].limit_bytes, Some(8_388_608));
        let nested = "0/256 100 100 1000 none g1\n0/261 20 20 none none g1/n\n0/262 7 7 none none <FS_TREE>/g2\n";
        let all = usages_of(&parse_qgroup_show(nested));
        assert_eq!((all["g1"].bytes, all["g1"].limit_bytes), (120, Some(1000)));
        assert_eq!((all["g2"].bytes, all["g2"].limit_bytes), (7, None));
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
}
