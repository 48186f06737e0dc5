//! `addon backup NAME > file` and `addon restore NAME [--force] < file`: the kind's dump or
//! load script (`Service::backup_script`, `restore_script`) runs inside the add-on's gear, as
//! its uid, with the caller's stdout or stdin relayed (over SSH too). Root never reads the dump.

use super::{boot, descriptor, load_for, secret};
use crate::gear;
use crate::node::Node;
use crate::ssh::auth::Actor;
use anyhow::{bail, Result};

/// What the scripts are told, besides the gear's own environment (with GEARSHIFT_ADDON_USER
/// and _DB) and GEARSHIFT_ADDON_IP and _PORT.
pub const ENV_PASSWORD: &str = "GEARSHIFT_ADDON_PASSWORD";
pub const ENV_FORCE: &str = "GEARSHIFT_ADDON_FORCE";

fn run(
    node: &Node,
    actor: &Actor,
    name: &str,
    script: impl FnOnce(super::Kind) -> String,
    stdin: bool,
    force: bool,
) -> Result<i32> {
    let a = load_for(node, actor, name)?;
    if a.status != "ready" {
        bail!(
            "add-on '{name}' is {}: wait until `addon show {name}` says ready",
            a.status
        );
    }
    let kind = a.kind()?;
    let s = secret(node, name)?;
    let g = a.gear()?;
    let ns = gear::enter(node, g, &boot(&a))?;
    let cg = gear::cgroup(node, g)?;
    let who = gear::identity(g);
    let mut env = descriptor(node, &a, &s)?.env_pairs();
    env.push((ENV_PASSWORD.into(), s.password.clone()));
    env.push(("GEARSHIFT_ADDON_IP".into(), g.ip.to_string()));
    env.push(("GEARSHIFT_ADDON_PORT".into(), kind.port().to_string()));
    if force {
        env.push((ENV_FORCE.into(), "1".into()));
    }
    gear::spawn::exec(gear::spawn::ExecSpec {
        gear: ns,
        cgroup: &cg,
        who: &who,
        argv: vec!["/bin/sh".into(), "-c".into(), script(kind)],
        env,
        tty: false,
        stdin,
    })
}

/// Writes a consistent dump of the add-on to stdout.
pub fn backup(node: &Node, actor: &Actor, name: &str) -> Result<()> {
    match run(node, actor, name, |k| k.backup_script(), false, false)? {
        0 => Ok(()),
        code => bail!("the backup of add-on '{name}' failed (exit code {code}); the output is not a usable backup"),
    }
}

/// Loads a dump from stdin into the add-on: refused when it holds data, unless `force`.
pub fn restore(node: &Node, actor: &Actor, name: &str, force: bool) -> Result<()> {
    match run(node, actor, name, |k| k.restore_script(), true, force)? {
        0 => Ok(()),
        code => bail!("the restore into add-on '{name}' failed (exit code {code}; see above)"),
    }
}
