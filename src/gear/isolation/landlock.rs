//! Landlock: even inside its own mount namespace, a gear process may write only its home, /tmp,
//! /run and devices, and read/execute the host runtimes. Defence in depth under the mounts.

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
