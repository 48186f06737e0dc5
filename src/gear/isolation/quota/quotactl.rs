//! The `ext4` and `xfs` quota backends: gear homes are plain directories on a filesystem
//! mounted with user quota enforcement; the gear's uid gets block and inode limits through
//! `quotactl(2)` (the generic VFS quota calls for ext4, the XFS quota manager's for xfs). Root
//! bypasses ext4 quota, so gear processes must never run as root.

use super::shared::{mkdir_one, nonzero, own_private, remove_tree, Backend, Usage};
use crate::gear::isolation::mountinfo::{find_mount, MountEntry};
use crate::node::config::Limits;
use crate::node::Node;
use anyhow::{Context, Result};
use std::ffi::CString;
use std::path::{Path, PathBuf};

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
pub(super) struct FsProbe {
    pub(super) fstype: String,
    pub(super) shown: String,
    pub(super) enforced: bool,
}

impl FsProbe {
    pub(super) fn explain(&self) -> String {
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

/// What the filesystem holding `path` offers for user quota.
pub(super) fn probe_fs(path: &Path) -> Result<FsProbe> {
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

/// doctor's detail for this backend: the filesystem that enforces the gears' limits.
pub(super) fn describe(b: Backend, node: &Node) -> String {
    let name = if b == Backend::Ext4 { "ext4" } else { "xfs" };
    let place = match find_mount(&node.gears_dir()) {
        Ok(m) => format!("{} on {}", m.source, m.mount_point.display()),
        Err(_) => node.gears_dir().display().to_string(),
    };
    format!(
        "{name}: user quota on {place}, blocks and inodes enforced per gear uid (gear processes must not run as root)"
    )
}

/// Creates the gear's home directory and sets the uid's limits on the gears' filesystem.
pub(super) fn create_home(b: Backend, gears: &Path, home: &Path, uid: u32, limits: &Limits) -> Result<()> {
    let dev = QuotaDevice::for_path(gears)?;
    mkdir_one(home)?;
    let applied = (|| -> Result<()> {
        if b == Backend::Ext4 {
            dev.set_vfs_limits(uid, limits.disk_bytes, limits.inodes)?;
        } else {
            dev.set_xfs_limits(uid, limits.disk_bytes, limits.inodes)?;
        }
        own_private(home, uid)
    })();
    if let Err(e) = applied {
        let _ = std::fs::remove_dir(home);
        return Err(e);
    }
    Ok(())
}

/// Removes the gear's home and lifts the uid's limits.
pub(super) fn destroy_home(b: Backend, gears: &Path, home: &Path, uid: u32) -> Result<()> {
    remove_tree(home)?;
    let dev = QuotaDevice::for_path(gears)?;
    if b == Backend::Ext4 {
        dev.set_vfs_limits(uid, 0, 0)
    } else {
        dev.set_xfs_limits(uid, 0, 0)
    }
}

/// The uid's charged bytes and inodes and its limits.
pub(super) fn usage(b: Backend, gears: &Path, uid: u32) -> Result<Usage> {
    let dev = QuotaDevice::for_path(gears)?;
    if b == Backend::Ext4 {
        let q = dev.get_vfs(uid)?;
        Ok(Usage {
            bytes: q.dqb_curspace,
            limit_bytes: nonzero(q.dqb_bhardlimit.saturating_mul(QIF_DQBLKSIZE)),
            inodes: Some(q.dqb_curinodes),
            limit_inodes: nonzero(q.dqb_ihardlimit),
        })
    } else {
        let q = dev.get_xfs(uid)?.unwrap_or_default();
        Ok(Usage {
            bytes: q.d_bcount.saturating_mul(XFS_BB),
            limit_bytes: nonzero(q.d_blk_hardlimit.saturating_mul(XFS_BB)),
            inodes: Some(q.d_icount),
            limit_inodes: nonzero(q.d_ino_hardlimit),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

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
    }
}
