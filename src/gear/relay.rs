//! Stdio relay for every command run in a gear without a terminal.
//!
//! Nothing of the caller's crosses into a gear: a descriptor handed to a gear's command can be
//! taken by any other process of that gear (`pidfd_getfd` once the command has exec'd, as the
//! gear's uid), and the caller's stdio is root's terminal, an SSH channel or a root-only file.
//! So the command always gets one end of a fresh socket pair on each of 0, 1 and 2, and
//! gearshift, which keeps the caller's descriptors on the host side, copies the data across.
//!
//! On SELinux the pairs are created at level `s0` (through `/proc/thread-self/attr/sockcreate`):
//! sockets carry the level of the process that created them, and a gear at `s0:cX,cY` may not
//! use one at root's login range (`s0-s0:c0.c1023`).

use super::isolation::selinux;
use super::tty::write_all;
use anyhow::{Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One relayed stdio descriptor.
struct Chan {
    /// 0, 1 or 2: the caller's descriptor (and the one the gear's command gets).
    fd: RawFd,
    /// gearshift's end of the socket pair.
    host: OwnedFd,
    /// The command's end (closed in gearshift once the command is started).
    gear: Option<OwnedFd>,
}

/// The relayed descriptors of one `gearshift run`.
pub struct Relay {
    chans: Vec<Chan>,
    /// Whether the caller's stdin is copied to the command (else its input ends at once).
    feed_stdin: bool,
}

/// A stream socket pair, labelled at level `s0` on SELinux (gearshift's own type, user and
/// role).
fn fresh_pair() -> Result<(OwnedFd, OwnedFd)> {
    let mut sv = [0; 2];
    let make = || {
        // SAFETY: sv has room for the two descriptors socketpair writes.
        unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        }
    };
    let rc = selinux::with_sockets_at_s0(make)?;
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create a socket pair for the command's stdio");
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
}

impl Relay {
    /// A relay for the caller's stdin (when `feed_stdin`), stdout and stderr: one fresh pair
    /// each (the command's stdin is a fresh, empty one otherwise).
    pub fn prepare(feed_stdin: bool) -> Result<Relay> {
        let mut chans = Vec::new();
        for fd in 0..3 {
            let (host, gear) = fresh_pair()?;
            chans.push(Chan {
                fd,
                host,
                gear: Some(gear),
            });
        }
        Ok(Relay { chans, feed_stdin })
    }

    /// In the forked child, before exec: puts the command's ends on 0, 1 and 2 (over the
    /// caller's, which the child must not keep).
    pub fn install_in_child(&self) {
        for c in &self.chans {
            if let Some(g) = &c.gear {
                // SAFETY: dup2 onto a stdio descriptor; the source stays open until exec
                // (CLOEXEC), the copy does not have CLOEXEC.
                unsafe { libc::dup2(g.as_raw_fd(), c.fd) };
            }
        }
    }

    /// In gearshift after the fork: copies data between the caller's descriptors and the
    /// command's until the command has exited and its output is drained (or 200 ms pass with
    /// nothing more from it: a background process may keep the socket open). One thread, as
    /// the caller has joined the gear's pid namespace (no threads after that): stdin is read
    /// only when the last piece has gone to the command, whose socket end is non-blocking, so
    /// a command that does not read its input cannot stall its output.
    pub fn run(mut self, child: nix::unistd::Pid) -> Result<()> {
        for c in &mut self.chans {
            c.gear = None;
        }
        let input = self.chans.iter().position(|c| c.fd == 0).map(|i| self.chans.remove(i));
        if let Some(c) = &input {
            // SAFETY: fcntl on a descriptor we own; the caller's own descriptors are untouched.
            unsafe { libc::fcntl(c.host.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        }
        if let (Some(c), false) = (&input, self.feed_stdin) {
            // SAFETY: shutdown on a socket we own: the command reads the end of its input.
            unsafe { libc::shutdown(c.host.as_raw_fd(), libc::SHUT_WR) };
        }
        let mut input_open = input.is_some() && self.feed_stdin;
        let mut pending: Vec<u8> = Vec::new();
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) } as RawFd;
        let pidfd = (pidfd >= 0).then(|| {
            // SAFETY: a fresh descriptor nobody else owns.
            unsafe { OwnedFd::from_raw_fd(pidfd) }
        });
        let mut exited = pidfd.is_none();
        let mut hung_up = false;
        let mut open: Vec<bool> = vec![true; self.chans.len()];
        let mut buf = vec![0u8; 64 * 1024];
        let out_n = self.chans.len();
        loop {
            let feeding = input_open && !exited;
            if !open.iter().any(|o| *o) && !feeding {
                break;
            }
            // [outputs..., stdin or the command's input socket, the command's pidfd, the
            // caller's stdout (watched for a hang-up only)]
            let mut fds: Vec<libc::pollfd> = self
                .chans
                .iter()
                .zip(&open)
                .map(|(c, o)| pollfd(if *o { c.host.as_raw_fd() } else { -1 }, libc::POLLIN))
                .collect();
            fds.push(match (&input, feeding, pending.is_empty()) {
                (Some(_), true, true) => pollfd(0, libc::POLLIN),
                (Some(c), true, false) => pollfd(c.host.as_raw_fd(), libc::POLLOUT),
                _ => pollfd(-1, 0),
            });
            fds.push(pollfd(
                match (&pidfd, exited) {
                    (Some(p), false) => p.as_raw_fd(),
                    _ => -1,
                },
                libc::POLLIN,
            ));
            fds.push(pollfd(if exited || hung_up { -1 } else { 1 }, 0));
            let timeout = if exited { 200 } else { -1 };
            // SAFETY: fds is a valid array of fds.len() pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(std::io::Error::last_os_error()).context("poll on the stdio relay");
            }
            if n == 0 {
                break; // exited, and nothing more within the grace period
            }
            if fds[out_n + 1].revents != 0 {
                exited = true;
            }
            if fds[out_n + 2].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                // Nobody reads the command's output any more (the SSH client vanished): it ends
                // now, before it does what its caller can no longer be told of (a push's git
                // would record the ref).
                hung_up = true;
                // SAFETY: kill(2) on our own child, not yet reaped.
                unsafe { libc::kill(child.as_raw(), libc::SIGKILL) };
            }
            copy_outputs(&self.chans, &fds, &mut open, &mut buf);
            if let (Some(c), true) = (&input, fds[out_n].revents != 0) {
                input_open = feed_input(c, &mut pending, &mut buf);
            }
        }
        Ok(())
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// Copies what the command wrote on each readable output to the caller's descriptor; a
/// channel whose end or caller is gone is closed (`open[i] = false`).
fn copy_outputs(chans: &[Chan], fds: &[libc::pollfd], open: &mut [bool], buf: &mut [u8]) {
    for (i, c) in chans.iter().enumerate() {
        if !open[i] || fds[i].revents == 0 {
            continue;
        }
        // SAFETY: buf is valid for its length.
        let r = unsafe { libc::read(c.host.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if r <= 0 || !write_all(c.fd, &buf[..r as usize]) {
            open[i] = false;
        }
    }
}

/// One step of feeding the caller's stdin to the command's input socket: read when nothing
/// is pending, else send what is. Returns whether the input stays open.
fn feed_input(c: &Chan, pending: &mut Vec<u8>, buf: &mut [u8]) -> bool {
    if pending.is_empty() {
        // SAFETY: buf is valid for its length.
        let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if r > 0 {
            pending.extend_from_slice(&buf[..r as usize]);
        } else if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // the command sees the end of its input
            // SAFETY: shutdown on a socket we own.
            unsafe { libc::shutdown(c.host.as_raw_fd(), libc::SHUT_WR) };
            return false;
        }
    } else {
        // SAFETY: pending is valid for its length; MSG_NOSIGNAL: EPIPE, not SIGPIPE.
        let w = unsafe {
            libc::send(
                c.host.as_raw_fd(),
                pending.as_ptr().cast(),
                pending.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if w > 0 {
            pending.drain(..w as usize);
        } else if !matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINTR | libc::EAGAIN)
        ) {
            pending.clear();
            return false; // the command closed its input
        }
    }
    true
}
