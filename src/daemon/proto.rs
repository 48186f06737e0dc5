//! The daemon's unix-socket protocol: one length-prefixed JSON frame each way, and the
//! client's stdio descriptors passed along with the request (SCM_RIGHTS).

use crate::ssh::command::Request;
use anyhow::{bail, Context, Result};
use nix::sys::socket::{self, sockopt, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The environment variable that carries a worker's job (JSON) to `internal-exec`.
pub const JOB_ENV: &str = "GEARSHIFT_JOB";

/// What a worker is asked to do.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Job {
    pub user: String,
    /// The fingerprint of the key the user logged in with.
    #[serde(default)]
    pub key: Option<String>,
    pub admin: bool,
    pub request: Request,
    pub winsize: Option<(u16, u16)>,
}

/// Largest frame accepted (a request is at most an 8 KiB command plus a little).
pub const MAX_FRAME: usize = 1 << 20;
/// Largest reply accepted from the daemon (every app of a full node, with its environment).
pub const MAX_REPLY: usize = 256 << 20;

/// What a client asks the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ToDaemon {
    /// From `ssh-entry`: run `command` (the raw `SSH_ORIGINAL_COMMAND`) for `user` on the
    /// passed stdio descriptors.
    Exec {
        user: String,
        /// The fingerprint of the key the user logged in with.
        #[serde(default)]
        key: Option<String>,
        command: String,
        tty: bool,
        term: Option<String>,
        /// Rows and columns of the client's terminal, when it has one.
        winsize: Option<(u16, u16)>,
    },
    /// From `auth-keys`: the authorized_keys text for the login user.
    AuthorizedKeys,
    /// From root's CLI (`app list`, `gearshift status`): every app and its state (`index.rs`).
    Apps,
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum FromDaemon {
    /// The request ran; this is its exit code.
    Exit { code: i32 },
    /// authorized_keys lines, and warnings about users that were skipped.
    Keys { text: String, warnings: Vec<String> },
    /// The request was refused or failed before it ran.
    Error { message: String },
    /// Every app, with what its state is computed from.
    Apps { apps: Vec<crate::app::condition::Seen> },
}

fn frame<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(msg).context("cannot encode a daemon message")?;
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Sends one frame, with `fds` attached to its first byte.
pub fn send<T: Serialize>(sock: &UnixStream, msg: &T, fds: &[RawFd]) -> Result<()> {
    let data = frame(msg)?;
    let mut sent = 0;
    while sent < data.len() {
        let iov = [IoSlice::new(&data[sent..])];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if sent == 0 && !fds.is_empty() { &cmsg } else { &[] };
        let n = socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
            .context("cannot send to the gearshift daemon")?;
        sent += n;
    }
    Ok(())
}

/// Receives one frame and the descriptors that came with it.
pub fn recv<T: DeserializeOwned>(sock: &UnixStream) -> Result<(T, Vec<OwnedFd>)> {
    let mut fds = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut space = nix::cmsg_space!([RawFd; 8]);
        let mut iov = [IoSliceMut::new(&mut chunk)];
        let msg = socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .context("cannot read from the gearshift socket")?;
        for c in msg.cmsgs().context("bad control message")? {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: the kernel just installed these descriptors in this process; we own them.
                fds.extend(got.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let n = msg.bytes;
        if n == 0 {
            bail!("the other side closed the connection before a full message");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() >= 4 {
            let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            if len > MAX_FRAME {
                bail!("message of {len} bytes is too large");
            }
            if buf.len() >= 4 + len {
                let v = serde_json::from_slice(&buf[4..4 + len]).context("malformed message")?;
                return Ok((v, fds));
            }
        }
    }
}

/// Sends one frame without descriptors over any stream (for replies).
pub fn reply<T: Serialize>(mut sock: &UnixStream, msg: &T) -> Result<()> {
    sock.write_all(&frame(msg)?).context("cannot send the reply")
}

/// Reads one frame without descriptors (for replies).
pub fn read_reply<T: DeserializeOwned>(mut sock: &UnixStream) -> Result<T> {
    let mut len = [0u8; 4];
    sock.read_exact(&mut len)
        .context("the gearshift daemon closed the connection without an answer")?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_REPLY {
        bail!("reply of {len} bytes is too large");
    }
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body).context("truncated reply from the daemon")?;
    serde_json::from_slice(&body).context("malformed reply from the daemon")
}

/// The uid of the process at the other end of `sock` (SO_PEERCRED).
pub fn peer_uid(sock: &UnixStream) -> Result<u32> {
    let cred = socket::getsockopt(sock, sockopt::PeerCredentials).context("cannot read the peer's credentials")?;
    Ok(cred.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_fds_round_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        let msg = ToDaemon::Exec {
            user: "bob".into(),
            key: Some("SHA256:x".into()),
            command: "app list".into(),
            tty: false,
            term: None,
            winsize: Some((24, 80)),
        };
        let f = std::fs::File::open("/dev/null").unwrap();
        send(&a, &msg, &[f.as_raw_fd(), 1]).unwrap();
        let (got, fds): (ToDaemon, _) = recv(&b).unwrap();
        assert_eq!(got, msg);
        assert_eq!(fds.len(), 2);
        reply(&b, &FromDaemon::Exit { code: 3 }).unwrap();
        assert_eq!(read_reply::<FromDaemon>(&a).unwrap(), FromDaemon::Exit { code: 3 });
        assert_eq!(peer_uid(&a).unwrap(), nix::unistd::getuid().as_raw());
    }
}
