//! Landlock: even inside its own mount namespace, a gear process may write only its home, /tmp,
//! /run and devices, and read/execute the host runtimes. Defence in depth under the mounts.

use super::check::Check;
use anyhow::{Context, Result};
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

/// The `landlock` line: the kernel's Landlock ABI version (optional: gears run without it).
pub fn check() -> Check {
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
        return Check::ok("landlock", format!("ABI version {abi}"));
    }
    let err = std::io::Error::last_os_error();
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
