//! The client's side of a connection (plain TCP or TLS), and one-off non-blocking socket calls for the
//! event loop (sockets stay in blocking mode, with their timeouts, for connection threads).

use rustls::{ServerConnection, StreamOwned};
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// The client side of a connection, plain or TLS.
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (rustls, blocking).
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl ClientStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(t) => &t.sock,
        }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf),
            // A peer closing without close_notify is an ordinary end of stream for HTTP/1 framing.
            ClientStream::Tls(t) => match t.read(buf) {
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write(buf),
            ClientStream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush(),
            ClientStream::Tls(t) => t.flush(),
        }
    }
}

/// recv(2) without blocking on a socket that is otherwise blocking.
pub fn recv_nb(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv on a valid socket fd owned by `s` into `buf`, which is valid for `buf.len()` bytes;
    // MSG_DONTWAIT makes this one call non-blocking without changing the socket's mode.
    let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// send(2) without blocking (and without SIGPIPE) on a socket that is otherwise blocking.
pub fn send_nb(s: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: send on a valid socket fd owned by `s` from `buf`, valid for `buf.len()` bytes.
    let n = unsafe {
        libc::send(
            s.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
