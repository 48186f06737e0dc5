//! After a 101 Switching Protocols: copy bytes both ways until both sides close, with no idle cut-off.

use super::stream::ClientStream;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;

/// Tunnels `client` ⇄ `upstream`, first delivering bytes each side sent early. Returns (to upstream,
/// to client) byte counts. One thread, poll(2) on both sockets; works for plain and TLS clients alike.
pub fn run(client: &mut ClientStream, mut upstream: TcpStream, to_upstream: &[u8], to_client: &[u8]) -> (u64, u64) {
    let (mut up_bytes, mut down_bytes) = (0u64, 0u64);
    // WebSockets may sit idle for hours: no timeouts on either side from here on.
    let _ = client.tcp().set_read_timeout(None);
    let _ = client.tcp().set_write_timeout(None);
    let _ = upstream.set_read_timeout(None);
    let _ = upstream.set_write_timeout(None);
    if upstream.write_all(to_upstream).is_err() || client.write_all(to_client).is_err() {
        return (0, 0);
    }
    up_bytes += to_upstream.len() as u64;
    down_bytes += to_client.len() as u64;
    let mut buf = vec![0u8; 16 * 1024];
    let (mut client_open, mut upstream_open) = (true, true);
    while client_open || upstream_open {
        // Plaintext rustls already decrypted is not visible to poll: drain it first.
        if client_open {
            match drain_tls(client, &mut upstream, &mut buf) {
                Drain::Moved(n) => up_bytes += n,
                Drain::Eof => {
                    client_open = false;
                    let _ = upstream.shutdown(Shutdown::Write);
                }
                Drain::Error => break,
            }
        }
        let mut fds = [
            libc::pollfd {
                fd: if client_open { client.tcp().as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if upstream_open { upstream.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structs that lives across the call; both fds are
        // owned by streams alive for the whole call (or -1, which poll ignores).
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        let ready = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
        if client_open && fds[0].revents & ready != 0 {
            match read_client(client, &mut buf) {
                Ok(0) => {
                    client_open = false;
                    let _ = upstream.shutdown(Shutdown::Write);
                }
                Ok(n) => {
                    if upstream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    up_bytes += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if upstream_open && fds[1].revents & ready != 0 {
            match upstream.read(&mut buf) {
                Ok(0) | Err(_) => {
                    upstream_open = false;
                    close_client_write(client);
                }
                Ok(n) => {
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    down_bytes += n as u64;
                }
            }
        }
    }
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = client.tcp().shutdown(Shutdown::Both);
    (up_bytes, down_bytes)
}

enum Drain {
    Moved(u64),
    Eof,
    Error,
}

/// Moves plaintext rustls holds already to `upstream` (nothing for a plain client).
fn drain_tls(client: &mut ClientStream, upstream: &mut TcpStream, buf: &mut [u8]) -> Drain {
    let ClientStream::Tls(t) = client else {
        return Drain::Moved(0);
    };
    let mut moved = 0;
    loop {
        match t.conn.reader().read(buf) {
            Ok(0) => return Drain::Eof,
            Ok(n) => {
                if upstream.write_all(&buf[..n]).is_err() {
                    return Drain::Error;
                }
                moved += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Drain::Moved(moved),
            Err(_) => return Drain::Eof,
        }
    }
}

/// One read from a readable client socket without blocking: plain bytes, or TLS records decrypted into
/// rustls's buffer (returned as WouldBlock: `drain_tls` delivers them on the next round).
fn read_client(client: &mut ClientStream, buf: &mut [u8]) -> std::io::Result<usize> {
    match client {
        ClientStream::Plain(s) => s.read(buf),
        ClientStream::Tls(t) => {
            let n = t.conn.read_tls(&mut t.sock)?;
            if n == 0 {
                return Ok(0);
            }
            t.conn.process_new_packets().map_err(std::io::Error::other)?;
            // Records that carried no application data, or data: either way drain_tls picks it up.
            Err(ErrorKind::WouldBlock.into())
        }
    }
}

/// Tells the client no more bytes are coming (close_notify for TLS, then a TCP half-close).
fn close_client_write(client: &mut ClientStream) {
    if let ClientStream::Tls(t) = client {
        t.conn.send_close_notify();
        let _ = t.conn.complete_io(&mut t.sock);
    }
    let _ = client.tcp().shutdown(Shutdown::Write);
}
