//! Which local user is on the other end of a loopback TCP connection, from the kernel's socket
//! table (`/proc/net/tcp`, `/proc/net/tcp6`): the admin port answers `/metrics`, which names every
//! app and gear, to root only.

use std::net::{IpAddr, SocketAddr};

/// The uid owning the socket whose local address is `peer` and remote address is `ours` (the
/// other end of a connection we accepted), if the kernel lists it.
pub fn uid_of(peer: SocketAddr, ours: SocketAddr) -> Option<u32> {
    let file = if peer.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    find_uid(&std::fs::read_to_string(file).ok()?, peer, ours)
}

/// The uid column of the `table` line with local address `local` and remote address `remote`.
fn find_uid(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let (l, r) = (hex_addr(local), hex_addr(remote));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 7 && f[1].eq_ignore_ascii_case(&l) && f[2].eq_ignore_ascii_case(&r))
            .then(|| f[7].parse().ok())
            .flatten()
    })
}

/// An address as the kernel prints it: the address's 32-bit words in host byte order, then the
/// port, in hex.
fn hex_addr(a: SocketAddr) -> String {
    let ip = match a.ip() {
        IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_peer_in_the_table() {
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:D431 0100007F:1F41 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1\n";
        let admin: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(find_uid(table, client, admin), Some(1000));
            assert_eq!(find_uid(table, admin, client), None);
        }
    }

    #[test]
    fn a_connection_of_this_process_is_its_uid() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        // SAFETY: geteuid has no arguments and cannot fail.
        let me = unsafe { libc::geteuid() };
        assert_eq!(uid_of(peer, l.local_addr().unwrap()), Some(me));
    }
}
