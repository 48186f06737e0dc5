//! `gearshift gear git-serve SERVICE REPO`: the first process of a push (or fetch) in the gear.
//! It dies with the process outside that relays its stdio: like every command root starts in a
//! gear, it set the parent-death signal again after its exec into the gear and ended if the
//! relay was already gone (`ingear::run`, `gear/lifeline.rs`); it becomes git, whose exec (same
//! domain, same uid) keeps the signal. So git never records a push whose client was told it
//! failed.

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
