//! The snapshot file: a gzip'd ustar archive of plain files with flat names, `manifest.json`
//! first (format version, app, time, gearshift version, each member's size and SHA-256).
//! Written and read here (gzip is the system's, as a filter): a member that is not a regular
//! file with a known flat name is refused, so nothing in a snapshot can point outside the
//! root-only directory it is read into.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

/// The format this gearshift writes; it reads this one and older. 2 added `certs` (the
/// domains' certificates and keys) and restores the formation and the kept deployments: a
/// gearshift that reads only 1 refuses it rather than drop them silently.
pub const FORMAT: u32 = 2;
/// The largest snapshot `snapshot restore` reads (uncompressed).
pub const MAX_BYTES: u64 = 16 << 30;

/// One member's size and checksum.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub size: u64,
    pub sha256: String,
}

/// An add-on the app was linked to: its dump is `dump`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AddonEntry {
    pub name: String,
    pub kind: String,
    /// The variable the link set (its `--as`).
    pub var: String,
    pub dump: String,
}

/// A domain's certificate and key (members `cert` and `key`), for host name `host`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertEntry {
    pub host: String,
    pub cert: String,
    pub key: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub app: String,
    pub created: u64,
    pub gearshift: String,
    pub files: BTreeMap<String, Member>,
    #[serde(default)]
    pub addons: Vec<AddonEntry>,
    /// Format 2 on.
    #[serde(default)]
    pub certs: Vec<CertEntry>,
}

pub const MANIFEST: &str = "manifest.json";

/// A member name is one flat, plain file name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 99
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        bail!("the snapshot holds a member named {name:?}, which no snapshot has: it is damaged or not a snapshot");
    }
    Ok(())
}

/// Size and SHA-256 of a file.
pub fn digest(path: &Path) -> Result<Member> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Member {
        size,
        sha256: format!("{:x}", h.finalize()),
    })
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

/// A ustar header for a regular file NAME of SIZE bytes.
pub fn header(name: &str, size: u64, mtime: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o600);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Writes one member (header, content, padding).
pub fn write_member(out: &mut impl Write, name: &str, content: &mut impl Read, size: u64, mtime: u64) -> Result<()> {
    out.write_all(&header(name, size, mtime))?;
    let copied = std::io::copy(&mut content.take(size), out)?;
    if copied != size {
        bail!("{name} changed while the snapshot was written");
    }
    let pad = (512 - size % 512) % 512;
    out.write_all(&vec![0u8; pad as usize])?;
    Ok(())
}

/// Ends the archive (two zero blocks).
pub fn finish(out: &mut impl Write) -> Result<()> {
    out.write_all(&[0u8; 1024])?;
    Ok(())
}

fn parse_octal(field: &[u8]) -> Result<u64> {
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    let s = s.trim_start();
    u64::from_str_radix(if s.is_empty() { "0" } else { s }, 8).context("a damaged header")
}

/// What a header says: None at the archive's end.
pub fn parse_header(h: &[u8; 512]) -> Result<Option<(String, u64)>> {
    if h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let want = parse_octal(&h[148..156])?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { b' ' as u64 } else { b as u64 })
        .sum();
    if sum != want || &h[257..262] != b"ustar" {
        bail!("a damaged header");
    }
    if h[156] != b'0' && h[156] != 0 {
        bail!("a member that is not a plain file");
    }
    let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
    let name = String::from_utf8(h[..end].to_vec()).context("a member name that is not UTF-8")?;
    check_name(&name)?;
    Ok(Some((name, parse_octal(&h[124..136])?)))
}

/// Reads an archive from `input` into `dir` (root-only, empty), at most `limit` bytes of
/// content; returns the member names in order. A truncated archive is an error.
pub fn unpack(input: &mut impl Read, dir: &Path, limit: u64) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut total = 0u64;
    loop {
        let mut h = [0u8; 512];
        input
            .read_exact(&mut h)
            .context("the snapshot ends early (truncated?)")?;
        let Some((name, size)) = parse_header(&h)? else {
            let mut second = [0u8; 512];
            input
                .read_exact(&mut second)
                .context("the snapshot ends early (truncated?)")?;
            return Ok(names);
        };
        if names.contains(&name) {
            bail!("the snapshot holds {name} twice: it is damaged");
        }
        total += size;
        if total > limit {
            bail!(
                "the snapshot is larger than {} GiB, the most a restore reads",
                limit >> 30
            );
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(&name))
            .with_context(|| format!("cannot write {name} in {}", dir.display()))?;
        let copied = std::io::copy(&mut input.take(size), &mut f)?;
        if copied != size {
            bail!("the snapshot ends early in {name} (truncated?)");
        }
        let pad = (512 - size % 512) % 512;
        std::io::copy(&mut input.take(pad), &mut std::io::sink())?;
        names.push(name);
    }
}

/// Checks what was read against the manifest (first member): its format, and every member's
/// size and checksum, none missing and none extra.
pub fn verify(dir: &Path, names: &[String]) -> Result<Manifest> {
    if names.first().map(String::as_str) != Some(MANIFEST) {
        bail!("this is not a gearshift snapshot (it does not start with {MANIFEST})");
    }
    let m: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join(MANIFEST))?).context("the snapshot's manifest is damaged")?;
    check_format(m.format)?;
    for (name, want) in &m.files {
        check_name(name)?;
        if !names.contains(name) {
            bail!("the snapshot lacks {name} (truncated or damaged)");
        }
        if &digest(&dir.join(name))? != want {
            bail!("{name} in the snapshot does not match its checksum: the file is damaged");
        }
    }
    if let Some(extra) = names[1..].iter().find(|n| !m.files.contains_key(*n)) {
        bail!("the snapshot holds {extra}, which its manifest does not list: it is damaged");
    }
    Ok(m)
}

/// Refuses to save app APP whose members add up to more than `limit` bytes: a restore would
/// refuse to read it.
pub fn check_size(app: &str, total: u64, limit: u64) -> Result<()> {
    if total > limit {
        bail!(
            "cannot save app '{app}': its repository, data and add-on dumps hold {} MiB, more than the {} MiB a snapshot may hold (a restore would refuse it); remove data from app-root/data or back the add-ons up on their own (`addon backup`)",
            total >> 20,
            limit >> 20
        );
    }
    Ok(())
}

/// A snapshot from a newer gearshift is refused by name.
pub fn check_format(format: u32) -> Result<()> {
    if format > FORMAT {
        bail!(
            "this snapshot has format {format}, newer than this gearshift reads ({FORMAT}): restore it on a node with a newer gearshift (this one is {})",
            env!("CARGO_PKG_VERSION")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, c) in members {
            write_member(&mut out, n, &mut &c[..], c.len() as u64, 0).unwrap();
        }
        finish(&mut out).unwrap();
        out
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("gs-snap-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_and_system_tar_reads_it() {
        let a = archive(&[("manifest.json", b"{}"), ("data.tar", &[7u8; 1000])]);
        let d = tmp("rt");
        let names = unpack(&mut &a[..], &d, 1 << 20).unwrap();
        assert_eq!(names, vec!["manifest.json", "data.tar"]);
        assert_eq!(std::fs::read(d.join("data.tar")).unwrap(), vec![7u8; 1000]);
        std::fs::write(d.join("x.tar"), &a).unwrap();
        let o = std::process::Command::new("tar")
            .arg("-tf")
            .arg(d.join("x.tar"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "manifest.json\ndata.tar\n");
    }

    #[test]
    fn truncated_is_refused() {
        let a = archive(&[("manifest.json", b"{}"), ("data.tar", &[7u8; 1000])]);
        for cut in [100, 600, 1500, a.len() - 1] {
            let d = tmp(&format!("cut{cut}"));
            assert!(unpack(&mut &a[..cut], &d, 1 << 20).is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn paths_and_limits_are_refused() {
        for bad in ["../etc", "a/b", ".hidden", ""] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let a = archive(&[("big", &[0u8; 2000])]);
        assert!(unpack(&mut &a[..], &tmp("lim"), 1000).is_err());
    }

    #[test]
    fn verify_checks_every_member_against_the_manifest() {
        let d = tmp("verify");
        std::fs::write(d.join("data.tar"), b"data").unwrap();
        let m = Manifest {
            format: FORMAT,
            app: "shop".into(),
            created: 0,
            gearshift: "0".into(),
            files: [("data.tar".to_string(), digest(&d.join("data.tar")).unwrap())].into(),
            addons: vec![],
            certs: vec![],
        };
        std::fs::write(d.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(verify(&d, &names(&[MANIFEST, "data.tar"])).unwrap(), m);
        assert!(
            verify(&d, &names(&["data.tar", MANIFEST])).is_err(),
            "manifest not first"
        );
        assert!(verify(&d, &names(&[MANIFEST])).is_err(), "a member missing");
        std::fs::write(d.join("extra"), b"").unwrap();
        assert!(
            verify(&d, &names(&[MANIFEST, "data.tar", "extra"])).is_err(),
            "an unlisted member"
        );
        std::fs::write(d.join("data.tar"), b"dada").unwrap();
        let e = verify(&d, &names(&[MANIFEST, "data.tar"])).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
    }

    #[test]
    fn a_format_1_manifest_still_reads_and_a_save_over_the_cap_is_refused() {
        let old = r#"{"format": 1, "app": "shop", "created": 0, "gearshift": "0.1.0", "files": {}}"#;
        let m: Manifest = serde_json::from_str(old).unwrap();
        assert!(m.certs.is_empty() && m.addons.is_empty());
        check_format(m.format).unwrap();
        assert!(check_size("shop", 1000, 1000).is_ok());
        let e = check_size("shop", 3 << 20, 2 << 20).unwrap_err().to_string();
        assert!(
            e.contains("app 'shop'") && e.contains("3 MiB") && e.contains("2 MiB"),
            "{e}"
        );
    }

    #[test]
    fn newer_format_is_refused_by_name() {
        let e = check_format(FORMAT + 1).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
        assert!(check_format(FORMAT).is_ok());
    }
}
