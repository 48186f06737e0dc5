//! Resource limits every gear process starts with (memory, cpu and pids live in the cgroup).

use anyhow::{Context, Result};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// No core dumps (they could hold secrets and fill the quota) and a sane open-file limit.
pub fn apply() -> Result<()> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0).context("cannot set RLIMIT_CORE")?;
    // Never above what the host allows (fs.nr_open, our own hard limit).
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("cannot read RLIMIT_NOFILE")?;
    let n = hard.min(65_536);
    setrlimit(Resource::RLIMIT_NOFILE, n, n).context("cannot set RLIMIT_NOFILE")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use nix::sys::resource::{getrlimit, Resource};

    #[test]
    fn limits_read_back_in_a_child() {
        // SAFETY: the child only calls async-signal-safe functions and _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok =
                    super::apply().is_ok() && getrlimit(Resource::RLIMIT_CORE).map(|l| l == (0, 0)).unwrap_or(false);
                // SAFETY: _exit in the forked child, no destructors run.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
