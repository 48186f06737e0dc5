//! A command in a gear dies with the process outside that started it (the CLI, or the daemon's
//! SSH worker), which relays its stdio (`relay.rs`) or holds its pty.
//!
//! `PR_SET_PDEATHSIG` does it, but an exec that changes the SELinux domain (a secure exec) or
//! the uid clears it, so it is set again after the exec into the gear ([`rearm`]): every
//! command root starts in a gear is gearshift's own `gearshift gear ...`, which re-arms it
//! first (`ingear::run`); another program is started through `gearshift gear lifeline -- CMD`
//! (`spawn.rs`), which re-arms it and becomes CMD (an exec in the same domain and uid keeps
//! it). Between the two there is a window in which the starter may die unseen: the orphan is
//! adopted by the starter's own pid namespace (a reaper outside the gear), so its parent shows
//! as 0 in the gear whether the starter lives or not. What does tell is the command's stdout:
//! its other end is held by the starter alone, and reads as hung up once the starter is gone.

/// The exit code of a command that ended because its starter was gone: as if killed by the
/// signal it missed.
pub const GONE: i32 = 128 + libc::SIGKILL;

/// Asks the kernel to SIGKILL this process when its parent dies.
pub fn die_with_parent() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
}

/// Called first by a command root started in the gear, after its exec: sets the parent-death
/// signal again; false when the starter is already gone (the command must end at once, having
/// done nothing, with [`GONE`]).
#[must_use]
pub fn rearm() -> bool {
    die_with_parent();
    !starter_is_gone()
}

/// Whether the process that started this command is gone: its parent is the gear's init (it
/// was adopted inside the gear), or nobody holds the other end of its stdout (the relay's
/// socket or the pty's master) any more.
pub fn starter_is_gone() -> bool {
    nix::unistd::getppid().as_raw() == 1 || hung_up(1)
}

/// Whether descriptor `fd` reads as hung up (its peer closed), without waiting or reading.
fn hung_up(fd: i32) -> bool {
    let mut p = [libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(p.as_mut_ptr(), 1, 0) };
    n > 0 && p[0].revents & (libc::POLLHUP | libc::POLLNVAL) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_socket_whose_peer_is_closed_reads_as_hung_up() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        assert!(!hung_up(ours.as_raw_fd()), "the peer is still open");
        // The starter shuts its writing half when the caller's input ends: not a hang-up.
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            !hung_up(ours.as_raw_fd()),
            "a peer that only stopped writing is still there"
        );
        drop(theirs);
        assert!(hung_up(ours.as_raw_fd()), "the peer is closed");
    }
}
