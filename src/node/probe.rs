//! Whether the node is really up, asked of the running system rather than of its files: the
//! daemon is the process holding `<run>/daemon.lock` (from `/proc/locks`) and answers on its
//! socket, each listener's port is bound by that daemon or its sshd (the socket inodes of
//! `/proc/net/tcp*` found among their descriptors), and sshd completes a key exchange.
//! Read by `gearshift status`, `doctor` and `node destroy`.

use crate::node::Node;
use serde::Serialize;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

/// Who holds a TCP port in the listening state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "bound")]
pub enum PortOwner {
    /// This node's daemon or one of its children (its sshd).
    Ours { pid: i32 },
    /// Another process (`pid` when it could be found).
    Other { pid: Option<i32>, command: Option<String> },
    /// Nobody listens.
    Free,
}

/// One listener of the node.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    pub name: &'static str,
    /// Its key in the node config.
    pub key: &'static str,
    pub port: u16,
    #[serde(flatten)]
    pub owner: PortOwner,
}

/// The node as it runs right now.
#[derive(Debug, Clone, Serialize)]
pub struct Live {
    /// The daemon's pid, when a process holds the daemon lock.
    pub daemon_pid: Option<i32>,
    /// Whether the daemon's socket accepts a connection.
    pub socket_answers: bool,
    /// Whether the node's sshd completes an SSH key exchange on its port.
    pub sshd_handshake: bool,
    pub listeners: Vec<Listener>,
}

impl Live {
    /// Daemon, sshd and router all up and bound to their own ports.
    pub fn healthy(&self) -> bool {
        self.daemon_pid.is_some()
            && self.socket_answers
            && self.sshd_handshake
            && self.listeners.iter().all(|l| matches!(l.owner, PortOwner::Ours { .. }))
    }

    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// What is wrong, one phrase each (empty when healthy).
    pub fn problems(&self, node: &Node) -> Vec<String> {
        let mut out = Vec::new();
        match self.daemon_pid {
            None => out.push(format!("the daemon of node '{}' is not running", node.config.name)),
            Some(pid) if !self.socket_answers => out.push(format!(
                "the daemon (pid {pid}) does not answer on {}",
                crate::ssh::authkeys::socket_path(node).display()
            )),
            Some(_) => {}
        }
        for l in &self.listeners {
            match &l.owner {
                PortOwner::Ours { .. } => {}
                PortOwner::Free => out.push(format!("nothing listens on {} port {}", l.name, l.port)),
                PortOwner::Other { pid, command } => out.push(format!(
                    "{} port {} is bound by another process{}",
                    l.name,
                    l.port,
                    match (pid, command) {
                        (Some(p), Some(c)) => format!(" ({c}, pid {p})"),
                        (Some(p), None) => format!(" (pid {p})"),
                        _ => String::new(),
                    }
                )),
            }
        }
        if self.daemon_pid.is_some() && !self.sshd_handshake {
            out.push(format!(
                "sshd on port {} does not complete an SSH handshake",
                node.config.ssh_port
            ));
        }
        out
    }
}

/// How to start the daemon of the node whose config is `config_path`.
pub fn start_hint(node: &Node) -> String {
    format!(
        "start it: `gearshift --config {} daemon` (or `systemctl start gearshift`)",
        node.config_path.display()
    )
}

/// Looks at the running node.
pub fn live(node: &Node) -> Live {
    let daemon_pid = daemon_pid(node);
    let ours: HashSet<i32> = daemon_pid.map(family).unwrap_or_default();
    let c = &node.config;
    let listeners = [
        ("sshd", "ssh_port", c.ssh_port),
        ("http", "http_port", c.http_port),
        ("https", "https_port", c.https_port),
        ("admin", "admin_port", c.admin_port),
    ]
    .into_iter()
    .map(|(name, key, port)| Listener {
        name,
        key,
        port,
        owner: port_owner(port, &ours),
    })
    .collect();
    let socket_answers = daemon_pid.is_some()
        && std::os::unix::net::UnixStream::connect(crate::ssh::authkeys::socket_path(node)).is_ok();
    Live {
        daemon_pid,
        socket_answers,
        sshd_handshake: daemon_pid.is_some() && ssh_handshake(c.ssh_port),
        listeners,
    }
}

/// The pid of the process holding the node's daemon lock (an flock, listed in `/proc/locks`).
pub fn daemon_pid(node: &Node) -> Option<i32> {
    let meta = std::fs::metadata(node.run_dir().join("daemon.lock")).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    lock_holder(&locks, meta.dev(), meta.ino())
}

/// The pid in the FLOCK line of `/proc/locks` text on device `dev`, inode `ino`.
fn lock_holder(locks: &str, dev: u64, ino: u64) -> Option<i32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|l| {
        // `1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF` (a blocked waiter has `->` first).
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid: i32 = f.get(4)?.parse().ok()?;
        let mut id = f.get(5)?.split(':');
        let (ma, mi, i) = (id.next()?, id.next()?, id.next()?);
        let same = u32::from_str_radix(ma, 16).ok()? == major
            && u32::from_str_radix(mi, 16).ok()? == minor
            && i.parse::<u64>().ok()? == ino;
        same.then_some(pid)
    })
}

/// `pid` and its direct children (the daemon's sshd, its workers).
fn family(pid: i32) -> HashSet<i32> {
    let mut out = HashSet::from([pid]);
    for p in pids() {
        if parent_of(p) == Some(pid) {
            out.insert(p);
        }
    }
    out
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Socket inodes listening on TCP `port` (IPv4 and IPv6).
pub fn listening_inodes(port: u16) -> HashSet<u64> {
    let mut out = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            out.extend(parse_listening(&text, port));
        }
    }
    out
}

/// Inodes of the LISTEN (state 0A) rows of a `/proc/net/tcp` table whose local port is `port`.
fn parse_listening(text: &str, port: u16) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == "0A").then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// Whether `pid` holds one of the socket `inodes`.
fn holds(pid: i32, inodes: &HashSet<u64>) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_link(e.path()).is_ok_and(|t| {
            t.to_str()
                .and_then(|s| s.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok())
                .is_some_and(|i| inodes.contains(&i))
        })
    })
}

/// Who listens on `port`: one of `ours`, another process, or nobody.
pub fn port_owner(port: u16, ours: &HashSet<i32>) -> PortOwner {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return PortOwner::Free;
    }
    if let Some(&pid) = ours.iter().find(|&&p| holds(p, &inodes)) {
        return PortOwner::Ours { pid };
    }
    let pid = pids().into_iter().find(|&p| holds(p, &inodes));
    let command = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok());
    PortOwner::Other {
        pid,
        command: command.map(|c| c.trim().to_string()),
    }
}

/// Whether an SSH server on the loopback `port` completes a key exchange (`ssh-keyscan` gets
/// its ed25519 host key: one connection, as the node always has that key); without ssh-keyscan, whether it sends an SSH banner.
pub fn ssh_handshake(port: u16) -> bool {
    let keyscan = std::process::Command::new("ssh-keyscan")
        .args(["-T", "5", "-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match keyscan {
        Ok(o) => String::from_utf8_lossy(&o.stdout).lines().any(|l| l.contains(" ssh-")),
        Err(_) => banner(port),
    }
}

fn banner(port: u16) -> bool {
    use std::io::Read;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_locks() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 00:1f:5678 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 99 00:1f:5678 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 7 08:01:5678 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 13 08:01:5678 0 EOF\n";
        assert_eq!(lock_holder(text, libc::makedev(0, 0x1f), 5678), Some(4242));
        assert_eq!(lock_holder(text, libc::makedev(8, 1), 5678), Some(13));
        assert_eq!(lock_holder(text, libc::makedev(8, 2), 5678), None);
    }

    #[test]
    fn reads_listening_sockets() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 00000000:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n\
           1: 0100007F:4E20 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0\n\
           2: 0100007F:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0\n";
        assert_eq!(parse_listening(text, 20000), vec![111]);
        assert_eq!(parse_listening(text, 20001), vec![333]);
        assert!(parse_listening(text, 20002).is_empty());
    }

    #[test]
    fn finds_our_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = std::process::id() as i32;
        assert_eq!(port_owner(port, &HashSet::from([me])), PortOwner::Ours { pid: me });
        assert!(matches!(port_owner(port, &HashSet::new()), PortOwner::Other { pid: Some(p), .. } if p == me));
        drop(l);
        assert_eq!(port_owner(port, &HashSet::new()), PortOwner::Free);
    }
}
