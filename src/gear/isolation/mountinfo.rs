//! `/proc/self/mountinfo`: the one parser of the mount table (quota backends, cgroup
//! hierarchies and doctor all read it through here).

use anyhow::{Context, Result};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub mount_opts: String,
    pub fstype: String,
    pub source: String,
    pub super_opts: String,
}

/// Undoes the octal escapes (`\040` for space, ...) of mountinfo fields.
pub fn unescape(field: &str) -> OsString {
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

/// Parses the text of /proc/self/mountinfo; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            if sep < 6 || f.len() < sep + 4 {
                return None;
            }
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(f[4])),
                mount_opts: f[5].to_string(),
                fstype: f[sep + 1].to_string(),
                source: unescape(f[sep + 2]).to_string_lossy().into_owned(),
                super_opts: f[sep + 3].to_string(),
            })
        })
        .collect()
}

/// This process's mount table.
pub fn read() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    Ok(parse(&text))
}

/// The canonical form of `path`, or of its nearest existing ancestor joined with the rest.
pub fn canonical_or_ancestor(path: &Path) -> PathBuf {
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
pub fn find_mount_in(entries: &[MountEntry], path: &Path) -> Option<MountEntry> {
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

/// The mount holding `path` in this process's mount table.
pub fn find_mount(path: &Path) -> Result<MountEntry> {
    let p = canonical_or_ancestor(path);
    find_mount_in(&read()?, &p).with_context(|| format!("no mount holds {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let text = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
43 27 0:39 / /var/lib/gs\\040x/gears rw,nosuid,nodev,relatime shared:5 - btrfs /dev/loop0 rw,space_cache=v2,subvolid=5,subvol=/
44 27 0:40 / /var/lib/gs\\040x/gears rw,relatime - xfs /dev/sdb rw,usrquota
45 27 0:41 / /srv rw - ext4 /dev/sdc rw,usrquota
";
        let m = parse(text);
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
        assert_eq!(unescape("a\\011b\\134"), OsString::from("a\tb\\"));
        assert_eq!(unescape("trailing\\04"), OsString::from("trailing\\04"));
    }

    #[test]
    fn doctor_unescapes_mountinfo() {
        assert_eq!(unescape("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(unescape("/plain\\0"), "/plain\\0");
    }

    #[test]
    fn canonical_of_missing_path() {
        let p = canonical_or_ancestor(Path::new("/proc/self/../self/nonexistent/deeper"));
        assert!(p.ends_with("nonexistent/deeper"), "{}", p.display());
        assert!(!p.to_string_lossy().contains(".."));
    }
}
