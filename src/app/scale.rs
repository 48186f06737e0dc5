//! Scaling: adding and removing web gears of an app, each fully isolated, and handing a new
//! gear the live deployment of gear 0 (built again inside the new gear's own limits).

use super::lifecycle::run_in_gear_tty;
use super::{allocate, boot, descriptor, load, save, App};
use crate::gear::{self, layout, Gear};
use crate::node::Node;
use crate::ssh::auth::Actor;
use anyhow::{bail, Context, Result};
use std::os::fd::AsFd;

/// The most web gears one app may run.
pub const MAX_GEARS: u32 = 16;

/// Adds or removes web gears until the app has `n`; new gears get the live deployment of
/// gear 0 (built in each gear, inside its own limits).
pub fn scale(node: &Node, name: &str, n: u32) -> Result<()> {
    if !(1..=MAX_GEARS).contains(&n) {
        bail!("an app runs 1 to {MAX_GEARS} web gears, not {n}");
    }
    let (app, added) = {
        let _lock = node.lock()?;
        let mut app = load(node, name)?;
        let limits = node.config.profile(&app.profile)?.limits()?;
        let more = u64::from(n).saturating_sub(app.gears.len() as u64);
        if more > 0 {
            let what = format!("{more} more gear(s) of '{name}'");
            super::disk_admission::check(node, &what, &app.profile, more)?;
        }
        let mut added = Vec::new();
        while app.gears.len() < n as usize {
            let (uid, ip) = allocate(node)?;
            let index = app.gears.iter().map(|g| g.index).max().map_or(0, |m| m + 1);
            let g = Gear {
                id: gear::new_id()?,
                app: name.into(),
                index,
                uid,
                ip,
                profile: app.profile.clone(),
            };
            app.gears.push(g.clone());
            save(node, &app)?;
            if let Err(e) = gear::create(node, &g, &limits, &descriptor(node, &app, &g), &boot(&app)) {
                let _ = gear::destroy(node, &g);
                app.gears.retain(|x| x.id != g.id);
                save(node, &app)?;
                return Err(e.context(format!("cannot add gear {index} to '{name}'")));
            }
            added.push(g);
        }
        while app.gears.len() > n as usize {
            let g = app.gears.pop().expect("more gears than wanted");
            gear::destroy(node, &g)?;
            save(node, &app)?;
        }
        (app, added)
    };
    for g in &added {
        replicate(node, &app, g)?;
    }
    Ok(())
}

/// Runs a command in a gear from a forked child (spawning into a gear changes the caller's
/// namespaces), with the given stdin/stdout; returns the child's pid.
pub(crate) fn fork_in_gear(
    node: &Node,
    app: &str,
    index: u32,
    argv: &[&str],
    stdin: Option<std::os::fd::OwnedFd>,
    stdout: Option<std::os::fd::OwnedFd>,
) -> Result<nix::unistd::Pid> {
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    fork_with(stdin, stdout, || {
        run_in_gear_tty(node, &Actor::root(), app, index, &argv, false)
    })
}

/// Runs `f` in a forked child whose stdin/stdout are the given files (what runs in a gear joins
/// its namespaces: the caller must stay outside); the child's exit code is `f`'s (1, with the
/// error printed, when it fails). Returns the child's pid.
pub(crate) fn fork_with(
    stdin: Option<std::os::fd::OwnedFd>,
    stdout: Option<std::os::fd::OwnedFd>,
    f: impl FnOnce() -> Result<i32>,
) -> Result<nix::unistd::Pid> {
    use std::os::fd::AsRawFd;
    // SAFETY: the CLI and the daemon's workers are single-threaded; the child only uses its own
    // copies and leaves with _exit.
    match unsafe { nix::unistd::fork() }.context("cannot fork")? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            // SAFETY: dup2 onto the standard descriptors of this child.
            unsafe {
                if let Some(fd) = &stdin {
                    libc::dup2(fd.as_raw_fd(), 0);
                }
                if let Some(fd) = &stdout {
                    libc::dup2(fd.as_raw_fd(), 1);
                }
            }
            drop((stdin, stdout));
            let code = f().unwrap_or_else(|e| {
                eprintln!("gearshift: {e:#}");
                1
            });
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
    }
}

pub(crate) fn wait_code(pid: nix::unistd::Pid) -> i32 {
    match nix::sys::wait::waitpid(pid, None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => c,
        _ => 1,
    }
}

/// Hands gear 0's live deployment to gear `to` (`git archive` in gear 0 piped into
/// `gear import` in the new gear).
pub fn replicate(node: &Node, app: &App, to: &Gear) -> Result<()> {
    let g0 = app.gears.first().context("the app has no gears")?;
    if g0.id == to.id {
        return Ok(());
    }
    let (rd, wr) = nix::unistd::pipe().context("cannot create a pipe")?;
    let gs = "/opt/gearshift/bin/gearshift";
    // Plain tools on gear 0's side, so a gear started by an older gearshift binary works too.
    let live = format!(
        "d=$(readlink -f ~/{} 2>/dev/null) && [ -f \"$d/../metadata.toml\" ] && sed -n 's/^commit = \"\\([0-9a-f]*\\)\"$/\\1/p' \"$d/../metadata.toml\" || true",
        layout::REPO
    );
    let probe = fork_in_gear(node, &app.name, g0.index, &["/bin/sh", "-c", &live], None, Some(wr))?;
    let mut commit = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(rd), &mut commit)?;
    if wait_code(probe) != 0 {
        bail!("cannot read the live deployment of gear 0 of '{}'", app.name);
    }
    let commit = commit.trim().to_string();
    if commit.is_empty() {
        return Ok(()); // nothing deployed yet: the first push reaches every gear
    }
    if commit.len() < 7 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("gear 0 of '{}' reports a strange live commit", app.name);
    }
    eprintln!("-----> gear {}: deploying {}", to.index, &commit[..8]);
    let (rd, wr) = nix::unistd::pipe().context("cannot create a pipe")?;
    let repo = layout::inner_git_repo(&app.name);
    let export = fork_in_gear(
        node,
        &app.name,
        g0.index,
        &["git", "-C", &repo, "archive", "--format=tar", &commit],
        None,
        Some(wr),
    )?;
    // Its progress goes to stderr: after a push, stdout is the finished git protocol stream.
    let progress = std::io::stderr().as_fd().try_clone_to_owned()?;
    let import = fork_in_gear(
        node,
        &app.name,
        to.index,
        &[gs, "gear", "import", &commit],
        Some(rd),
        Some(progress),
    )?;
    let (e, i) = (wait_code(export), wait_code(import));
    if e != 0 || i != 0 {
        bail!(
            "gear {} of '{}' did not take the deployment {} (export {e}, import {i})",
            to.index,
            app.name,
            &commit[..commit.len().min(8)]
        );
    }
    Ok(())
}
