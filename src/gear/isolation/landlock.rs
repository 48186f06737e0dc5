//! Landlock: even inside its own mount namespace, a gear process may write only its home, /tmp,
//! /run and devices, and read/execute the host runtimes. Defence in depth under the mounts.

use super::check::Check;
use crate::node::config::LandlockMode;
use anyhow::{bail, Context, Result};
use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, ABI,
};
use std::path::Path;

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
        .add_rules(path_beneath_rules(
            [home, Path::new("/tmp"), Path::new("/run"), Path::new("/dev")],
            all,
        ))
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
fn abi() -> std::result::Result<i64, std::io::Error> {
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
                    "ABI version {abi}: the gear init applies it, so every process in a gear writes only its home, /tmp, /run and /dev ({setting})"
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
