//! Terminal plumbing for `gearshift run` with a TTY: raw mode on the caller's terminal and a
//! relay between it and the gear's pty master.

use anyhow::Result;
use nix::sys::termios::{self, SetArg, Termios};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Copies the window size of terminal `from` to `to` (best effort).
pub fn copy_window_size(from: RawFd, to: RawFd) {
    // SAFETY: winsize is plain data; the ioctls read/write exactly one winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> RawMode {
        // SAFETY: fd 0 stays open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let Ok(orig) = termios::tcgetattr(stdin) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin, SetArg::TCSANOW, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: fd 0 stays open for the life of the process.
            let stdin = unsafe { BorrowedFd::borrow_raw(0) };
            let _ = termios::tcsetattr(stdin, SetArg::TCSANOW, t);
        }
    }
}

/// Writes all of `buf` to `fd` (blocking); false when the reader is gone.
pub(super) fn write_all(fd: RawFd, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice for the length passed.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// Relays stdin → master and master → stdout until the gear side closes (EIO on the master).
pub fn relay(master: OwnedFd, _child: Pid) -> Result<()> {
    let _raw = RawMode::enter();
    let m = master.as_raw_fd();
    let mut buf = [0u8; 16 * 1024];
    let mut stdin_open = true;
    let mut last_ws = (0u16, 0u16);
    loop {
        let mut fds = [
            libc::pollfd {
                fd: m,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 250) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        // Follow the caller's window size (SIGWINCH-free: polled).
        // SAFETY: winsize is plain data.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize.
        if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 && (ws.ws_row, ws.ws_col) != last_ws {
            last_ws = (ws.ws_row, ws.ws_col);
            copy_window_size(0, m);
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            // SAFETY: buf is valid for its length.
            let r = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                break;
            }
            if !write_all(1, &buf[..r as usize]) {
                break;
            }
        }
        if stdin_open && fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            // SAFETY: buf is valid for its length.
            let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                stdin_open = false;
                // Pass EOF on as the terminal's EOF character.
                write_all(m, &[4]);
            } else if !write_all(m, &buf[..r as usize]) {
                break;
            }
        }
    }
    Ok(())
}
