//! Landlock: even inside its own mount namespace, a gear process may write only its home, /tmp,
//! its own run directory (`/run/gearshift`), /dev/shm, its devpts and the harmless devices, and
//! read/execute the rest of its view. Defence in depth under the mounts: whatever else appears
//! under /run or /dev (the gear's /run is its own tmpfs, which it could otherwise fill with
//! anything) is not written.

use super::check::Check;
use super::mounts::{DEVICES, RUN_DIR};
use crate::node::config::LandlockMode;
use anyhow::{bail, Context, Result};
use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, ABI,
};
use std::path::{Path, PathBuf};

/// What a gear process may write besides its home: every access right beneath each (a device
/// gets a file's rights: read, write, truncate, its ioctls). Paths that do not exist are left out.
fn writable(home: &Path) -> Vec<PathBuf> {
    let mut w: Vec<PathBuf> = [
        home,
        Path::new("/tmp"),
        Path::new(RUN_DIR),
        Path::new("/dev/shm"),
        Path::new("/dev/pts"),
    ]
    .into_iter()
    .map(Path::to_path_buf)
    .collect();
    w.extend(DEVICES.iter().map(|d| Path::new("/dev").join(d)));
    w
}

/// Whether the kernel enforced the ruleset fully, partly, or not at all.
pub fn apply(home: &Path) -> Result<&'static str> {
    let abi = ABI::V5;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let ro = [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/proc", "/sys", "/",
    ];
    let ro: Vec<&str> = ro.into_iter().filter(|p| Path::new(p).exists()).collect();
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .context("landlock: cannot handle access rights")?
        .create()
        .context("landlock: cannot create ruleset")?
        .add_rules(path_beneath_rules(ro, read))
        .context("landlock: cannot add read-only rules")?
        .add_rules(path_beneath_rules(writable(home), all))
        .context("landlock: cannot add read-write rules")?
        .restrict_self()
        .context("landlock: cannot restrict self")?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "full",
        RulesetStatus::PartiallyEnforced => "partial",
        RulesetStatus::NotEnforced => "none",
    })
}

/// Applies the gear's ruleset (as [`apply`]) and judges the outcome per `mode`: Ok(None) when
/// enforced (or the kernel has no Landlock: doctor says so), Ok(Some(warning)) when refused
/// under `warn`, an error saying what to do when refused under `require`.
pub fn enforce(home: &Path, mode: LandlockMode) -> Result<Option<String>> {
    judge(mode, abi().ok(), apply(home))
}

fn judge(mode: LandlockMode, abi: Option<i64>, applied: Result<&'static str>) -> Result<Option<String>> {
    let refused = match (applied, abi) {
        (Ok("full" | "partial"), _) | (Ok(_), None) => return Ok(None),
        (Ok(_), Some(v)) => format!("the kernel has Landlock (ABI version {v}) but did not enforce the gear's ruleset"),
        (Err(e), _) => format!("{e:#}"),
    };
    match mode {
        LandlockMode::Warn => Ok(Some(format!(
            "{refused}; the gear runs without Landlock (landlock = \"warn\" in the node config)"
        ))),
        LandlockMode::Require => bail!(
            "{refused} (run `gearshift doctor`; set landlock = \"warn\" in the node config to start gears without it)"
        ),
    }
}

/// The kernel's Landlock ABI version, or the error that says why it has none.
pub(super) fn abi() -> std::result::Result<i64, std::io::Error> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attr and size 0 this syscall only returns the ABI version; no
    // memory is read or written and no file descriptor is created.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi >= 1 {
        Ok(abi)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The `landlock` line: the kernel's Landlock ABI version, that the gear init applies it (so
/// every process in a gear runs under it) and what the node's `landlock` setting does when the
/// kernel refuses it (`mode` None: no node config).
pub fn check(mode: Option<LandlockMode>) -> Check {
    let err = match abi() {
        Ok(abi) => {
            let setting = match mode {
                Some(LandlockMode::Require) => "landlock = \"require\": a gear whose ruleset is refused does not start",
                Some(LandlockMode::Warn) => {
                    "landlock = \"warn\": a refused ruleset is logged and the gear starts without it"
                }
                None => "no node config: the node's landlock setting (default require) decides a refusal",
            };
            return Check::ok(
                "landlock",
                format!(
                    "ABI version {abi}: the gear init applies it, so every process in a gear writes only its home, /tmp, {RUN_DIR}, /dev/shm, /dev/pts and /dev/{{{}}} ({setting})",
                    DEVICES.join(",")
                ),
            );
        }
        Err(e) => e,
    };
    let detail = match err.raw_os_error() {
        Some(libc::ENOSYS) => "not built into this kernel (ENOSYS)".to_string(),
        Some(libc::EOPNOTSUPP) => "built in but not enabled at boot (EOPNOTSUPP)".to_string(),
        _ => format!("landlock_create_ruleset failed: {err}"),
    };
    Check::warn(
        "landlock",
        format!("{detail}; gears run without Landlock"),
        "optional: boot with lsm=landlock,... (CONFIG_SECURITY_LANDLOCK=y)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "GEARSHIFT_TEST_LANDLOCK_CHILD";

    /// Against the real kernel, in a child test process (a ruleset binds its process for good):
    /// the home, /tmp and the devices are written; a file beside the home, or directly in /run,
    /// is refused even to root, to whom every other check says yes.
    #[test]
    fn only_the_gears_own_paths_are_written() {
        if let Some(dir) = std::env::var_os(CHILD) {
            let dir = Path::new(&dir);
            assert_eq!(apply(&dir.join("home")).unwrap(), "full");
            std::fs::write(dir.join("home/f"), b"x").expect("the home is written");
            std::fs::write("/dev/null", b"x").expect("/dev/null is written");
            let tmp = Path::new("/tmp").join(dir.file_name().unwrap());
            std::fs::write(&tmp, b"x").expect("/tmp is written");
            let var_tmp = dir.with_extension("beside");
            let e = std::fs::write(&var_tmp, b"x").expect_err("a file beside the home was written");
            assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
            let run = Path::new("/run").join(dir.file_name().unwrap());
            let e = std::fs::write(&run, b"x").expect_err("a file in /run was written");
            assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
            return;
        }
        if abi().is_err() || !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root and a kernel with Landlock");
            return;
        }
        // Not in /tmp, which the ruleset opens as a whole.
        let dir = Path::new("/var/tmp").join(format!("gearshift-landlock-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "gear::isolation::landlock::tests::only_the_gears_own_paths_are_written",
            ])
            .args(["--test-threads=1", "--nocapture"])
            .env(CHILD, &dir)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(Path::new("/tmp").join(dir.file_name().unwrap()));
        let _ = std::fs::remove_file(dir.with_extension("beside"));
        let _ = std::fs::remove_file(Path::new("/run").join(dir.file_name().unwrap()));
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
    }

    #[test]
    fn a_refusal_fails_under_require_and_warns_under_warn() {
        let refused = || Err(anyhow::anyhow!("landlock: cannot restrict self"));
        let e = judge(LandlockMode::Require, Some(3), refused())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot restrict self") && e.contains("landlock = \"warn\""),
            "{e}"
        );
        let w = judge(LandlockMode::Warn, Some(3), refused()).unwrap().unwrap();
        assert!(w.contains("runs without Landlock"), "{w}");
        // Enforced, or a kernel without Landlock (doctor says so): nothing to say.
        assert_eq!(judge(LandlockMode::Require, Some(3), Ok("partial")).unwrap(), None);
        assert_eq!(judge(LandlockMode::Require, None, Ok("none")).unwrap(), None);
        // A kernel with Landlock that did not enforce it is a refusal.
        assert!(judge(LandlockMode::Require, Some(3), Ok("none")).is_err());
        assert!(judge(LandlockMode::Warn, Some(3), Ok("none")).unwrap().is_some());
    }
}
