//! `gearshift gear git-serve SERVICE REPO`: the first process of a push (or fetch) in the gear.
//! It dies with the process outside that relays its stdio (`gear/lifeline.rs`): the exec into
//! the gear cleared the parent-death signal, so it is set again here, after that exec; then, if
//! the relay is already gone, it ends; else it becomes git (an exec in the same domain and uid
//! keeps the signal). So git never records a push whose client was told it failed.

use crate::gear::lifeline;
use anyhow::{bail, Result};

/// The git services a client may ask for.
const SERVICES: [&str; 2] = ["git-receive-pack", "git-upload-pack"];

pub fn run(service: &str, repo: &str) -> Result<i32> {
    if !SERVICES.contains(&service) {
        bail!(
            "unknown git service '{service}' (expected one of {})",
            SERVICES.join(", ")
        );
    }
    lifeline::die_with_parent();
    if lifeline::starter_is_gone() {
        eprintln!("gearshift: the connection of this push is gone; nothing was recorded");
        return Ok(128 + libc::SIGKILL);
    }
    let mut git = std::process::Command::new(service);
    Ok(super::procenv::exec_or_code(git.arg(repo), service))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_git_services_are_run() {
        let e = super::run("sh", "-c").unwrap_err().to_string();
        assert!(e.contains("unknown git service 'sh'"), "{e}");
    }
}
