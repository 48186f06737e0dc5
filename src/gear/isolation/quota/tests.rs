//! The quota backends against the kernel: throw-away nodes under /tmp with real loop images
//! (root only; skipped with a reason elsewhere).

use super::btrfs::{image_path, qgroup_rows, subvolume_id};
use super::shared::run;
use super::*;
use crate::gear::isolation::mountinfo;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

#[test]
fn gear_ids() {
    for ok in ["g1", "shop-web-1", "a.b_c"] {
        check_gear_id(ok).unwrap();
    }
    for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0b"] {
        assert!(check_gear_id(bad).is_err(), "{bad:?}");
    }
}

// ---- against the kernel ------------------------------------------------------------

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Why the kernel tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if let Err(e) = btrfs::available() {
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
                overcommit: false,
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
    mountinfo::read().unwrap().iter().any(|m| m.mount_point == g)
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
    let rows = qgroup_rows(&node.gears_dir(), false).unwrap();
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
    match quotactl::probe_fs(&t.node.gears_dir()) {
        Ok(p) if p.enforced => eprintln!("skipping: {} enforces quota here", p.shown),
        _ => {
            let err = format!("{:#}", backend(&t.node).unwrap_err());
            assert!(err.starts_with("disk.backend = \"ext4\" but "), "{err}");
            let (ok, line) = describe(&t.node);
            assert!(!ok, "{line}");
        }
    }
}
