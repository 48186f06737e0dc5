//! The gear's filesystem view: a fresh tmpfs root holding read-only binds of the host runtimes,
//! the gear's own home, private /tmp, /dev, /proc and /sys, then pivot_root into it.
//! Runs in the gear's init (pid 1 of a new pid namespace, in a new mount namespace).

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// Host directories every gear sees read-only (the runtimes).
pub const HOST_RUNTIME_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"];

/// Everything needed to build one gear's root.
#[derive(Debug, Clone)]
pub struct RootSpec {
    /// An existing empty directory; the new root is a tmpfs mounted on it (in our private mount ns).
    pub staging: PathBuf,
    pub home_host: PathBuf,
    pub home_inner: PathBuf,
    /// Root-owned `passwd`, `group` and optional `resolv.conf` bound over the host's.
    pub meta_dir: PathBuf,
    /// Further read-only binds: (host path, path inside the gear).
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
    /// Symlinks in the (then read-only) root: (target, path inside the gear).
    pub links: Vec<(PathBuf, PathBuf)>,
    pub tmp_size: u64,
    /// The gear's uid: owns /run (the supervisor's control socket lives there).
    pub owner_uid: u32,
    /// The gear's MCS level: its private tmpfs and devpts mounts carry the gear's SELinux file
    /// label (where SELinux is on).
    pub mcs: String,
}

fn nosuid_nodev() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV
}

fn bind(src: &Path, dst: &Path, extra: MsFlags) -> Result<()> {
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("cannot bind {} on {}", src.display(), dst.display()))?;
    mount(
        None::<&str>,
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
        None::<&str>,
    )
    .with_context(|| format!("cannot remount {} with {:?}", dst.display(), extra))
}

fn tmpfs(dst: &Path, flags: MsFlags, data: &str) -> Result<()> {
    fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    mount(Some("tmpfs"), dst, Some("tmpfs"), flags, Some(data))
        .with_context(|| format!("cannot mount tmpfs on {}", dst.display()))
}

fn inner(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// Builds the gear's root at `spec.staging` and pivots into it. After this, `/` is read-only,
/// and the host's other directories (data root, other gears) do not exist for this process.
pub fn build_root(spec: &RootSpec) -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make / private in the gear's mount namespace")?;
    let r = &spec.staging;
    let label = super::selinux::mount_option(&spec.mcs);
    tmpfs(r, nosuid_nodev(), &format!("mode=0755,size=4m{label}"))?;
    let ro = MsFlags::MS_RDONLY | nosuid_nodev();

    for d in HOST_RUNTIME_DIRS.iter().filter(|d| **d != "etc") {
        let host = Path::new("/").join(d);
        let Ok(meta) = fs::symlink_metadata(&host) else {
            continue;
        };
        let dst = r.join(d);
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&host)?;
            symlink(&target, &dst).with_context(|| format!("cannot link {}", dst.display()))?;
        } else if meta.is_dir() {
            fs::create_dir(&dst)?;
            bind(&host, &dst, ro)?;
        }
    }
    for (host, at) in &spec.ro_binds {
        let dst = inner(r, at);
        if host.is_dir() {
            fs::create_dir_all(&dst)?;
        } else {
            fs::create_dir_all(dst.parent().unwrap_or(r))?;
            fs::write(&dst, b"")?;
        }
        bind(host, &dst, ro)?;
    }

    for (target, at) in &spec.links {
        let dst = inner(r, at);
        fs::create_dir_all(dst.parent().unwrap_or(r))?;
        symlink(target, &dst).with_context(|| format!("cannot link {}", at.display()))?;
    }

    let home = inner(r, &spec.home_inner);
    fs::create_dir_all(&home)?;
    bind(&spec.home_host, &home, nosuid_nodev())?;

    let tmp_opts = format!("mode=1777,size={}{label}", spec.tmp_size);
    tmpfs(&r.join("tmp"), nosuid_nodev(), &tmp_opts)?;
    let run_opts = format!("mode=0755,size=1m,uid={0},gid={0}{label}", spec.owner_uid);
    tmpfs(&r.join("run"), nosuid_nodev() | MsFlags::MS_NOEXEC, &run_opts)?;
    let run_dir = inner(r, Path::new(RUN_DIR));
    fs::create_dir(&run_dir).with_context(|| format!("cannot create the gear's {RUN_DIR}"))?;
    std::os::unix::fs::chown(&run_dir, Some(spec.owner_uid), Some(spec.owner_uid))
        .with_context(|| format!("cannot give the gear its {RUN_DIR}"))?;
    build_etc(r, &spec.meta_dir, ro)?;
    fs::create_dir_all(r.join("var"))?;
    symlink("/tmp", r.join("var/tmp"))?;
    build_dev(
        &r.join("dev"),
        &tmp_opts,
        &label,
        &super::selinux::mount_option_all(&spec.mcs),
    )?;

    let proc_ = r.join("proc");
    fs::create_dir(&proc_)?;
    mount(
        Some("proc"),
        &proc_,
        Some("proc"),
        nosuid_nodev() | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .context("cannot mount the gear's /proc")?;
    let sys = r.join("sys");
    fs::create_dir(&sys)?;
    mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        ro | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .context("cannot mount the gear's /sys")?;

    pivot(r)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro,
        None::<&str>,
    )
    .context("cannot make the gear's / read-only")
}

/// Where a gear sees the host's /etc; its own /etc points there, entry by entry.
pub const HOST_ETC: &str = "/run/host/etc";

/// The gear's own files in its /etc (from its meta directory), instead of the host's.
const OWN_ETC_FILES: [&str; 3] = ["passwd", "group", "resolv.conf"];

/// The gear's /etc: a directory of the gear's read-only root, not a bind of the host's. Its own
/// passwd, group and resolv.conf are copies; every other entry is the host's symlink as it is,
/// or a symlink into the host's /etc bound read-only at [`HOST_ETC`], so the host's changes
/// show. A file bound over an entry of a bound host /etc would not last: the host replaces
/// /etc/passwd, /etc/group and /etc/resolv.conf by a rename (useradd, a DHCP client), and the
/// kernel detaches, in every mount namespace, the mounts on a file renamed over; the gear would
/// see the host's users and resolver from then on.
fn build_etc(r: &Path, meta_dir: &Path, ro: MsFlags) -> Result<()> {
    let host_etc = inner(r, Path::new(HOST_ETC));
    fs::create_dir_all(&host_etc)?;
    bind(Path::new("/etc"), &host_etc, ro)?;
    let etc = r.join("etc");
    fs::create_dir(&etc)?;
    for f in OWN_ETC_FILES {
        if let Ok(text) = fs::read(meta_dir.join(f)) {
            fs::write(etc.join(f), text).with_context(|| format!("cannot write the gear's /etc/{f}"))?;
        }
    }
    for e in fs::read_dir("/etc").context("cannot list the host's /etc")? {
        let e = e?;
        let name = e.file_name();
        let dst = etc.join(&name);
        if dst.exists() {
            continue;
        }
        let made = if e.file_type()?.is_symlink() {
            symlink(fs::read_link(e.path())?, &dst)
        } else {
            symlink(Path::new(HOST_ETC).join(&name), &dst)
        };
        made.with_context(|| format!("cannot link {}", dst.display()))?;
    }
    Ok(())
}

/// The host's device nodes a gear sees in its /dev (bound from the host's).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The gear's own directory in its /run (the supervisor's control socket), made with the gear's
/// /run so that Landlock (landlock.rs) can name it before the supervisor runs.
pub const RUN_DIR: &str = "/run/gearshift";

/// A minimal /dev: the harmless device nodes, a private devpts and /dev/shm.
fn build_dev(dev: &Path, shm_opts: &str, label: &str, pts_label: &str) -> Result<()> {
    tmpfs(
        dev,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        &format!("mode=0755,size=64k{label}"),
    )?;
    for n in DEVICES {
        let dst = dev.join(n);
        fs::write(&dst, b"")?;
        // Device binds must keep device access; they are the only mounts without nodev.
        bind(
            &Path::new("/dev").join(n),
            &dst,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        )?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(format!("newinstance,ptmxmode=0666,mode=0620{pts_label}").as_str()),
    )
    .context("cannot mount the gear's devpts")?;
    symlink("pts/ptmx", dev.join("ptmx"))?;
    tmpfs(&dev.join("shm"), nosuid_nodev(), shm_opts)?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name))?;
    }
    fs::set_permissions(dev, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// pivot_root(".", ".") then detach the old root: nothing of the host's tree stays reachable.
fn pivot(root: &Path) -> Result<()> {
    nix::unistd::chdir(root).with_context(|| format!("cannot enter {}", root.display()))?;
    nix::unistd::pivot_root(".", ".").context("pivot_root into the gear's root failed")?;
    umount2(".", MntFlags::MNT_DETACH).context("cannot detach the host's root")?;
    nix::unistd::chdir("/").context("cannot chdir to the gear's /")?;
    Ok(())
}
