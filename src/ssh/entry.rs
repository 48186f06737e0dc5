//! `gearshift ssh-entry`: the forced command of every key. It runs as the login user, parses
//! `SSH_ORIGINAL_COMMAND` strictly (refusing anything else before it reaches the daemon),
//! then hands the request and its own stdio descriptors to the daemon and exits with the
//! request's exit code.

use crate::daemon::proto::{self, FromDaemon, ToDaemon};
use crate::ssh::command;
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Runs one SSH request for `user` through the daemon at `socket`.
pub fn run(socket: &Path, user: &str, key: Option<String>) -> Result<i32> {
    let command = match std::env::var("SSH_ORIGINAL_COMMAND") {
        Ok(c) => c,
        Err(std::env::VarError::NotPresent) => String::new(),
        Err(std::env::VarError::NotUnicode(_)) => bail!("command refused: not valid UTF-8"),
    };
    command::parse(&command)?;
    let tty = std::io::stdin().is_terminal();
    let winsize = if tty { window_size() } else { None };
    let sock = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the gearshift daemon at {}: try again later",
            socket.display()
        )
    })?;
    proto::send(
        &sock,
        &ToDaemon::Exec {
            user: user.to_string(),
            key,
            command,
            tty,
            term: std::env::var("TERM").ok().filter(|t| t.len() < 64),
            winsize,
        },
        &[0, 1, 2],
    )?;
    match proto::read_reply::<FromDaemon>(&sock)? {
        FromDaemon::Exit { code } => Ok(code),
        FromDaemon::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

fn window_size() -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data; TIOCGWINSZ writes exactly one.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: see above; fd 0 is ours.
    (unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0).then_some((ws.ws_row, ws.ws_col))
}
