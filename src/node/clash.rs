//! What a new node must not share with the host or with another gearshift node on it: a
//! subnet overlapping another node's or a host interface's address, a bridge name that exists,
//! a port already bound or taken by another node, a uid range overlapping another node's, a
//! node name in use. `init` refuses before it writes anything, naming each clash; a daemon
//! start refuses ports another node has (its config edited since, say for `admin_listen`).

use crate::node::config::{Config, Subnet};
use crate::node::probe;
use crate::node::Node;
use anyhow::{bail, Result};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The host's side of the question, gathered once.
#[derive(Debug, Default)]
pub struct Host {
    /// (interface, address, prefix) of every IPv4 address on the host.
    pub addresses: Vec<(String, Ipv4Addr, u8)>,
    /// Interface names.
    pub interfaces: Vec<String>,
    /// (port, who) for each of the new node's ports that something already listens on.
    pub bound: Vec<(u16, String)>,
}

impl Host {
    /// Looks at this host for the ports of `c`.
    pub fn look(c: &Config) -> Host {
        let out = std::process::Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let interfaces = std::fs::read_dir("/sys/class/net")
            .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        let bound = c
            .ports()
            .into_iter()
            .filter_map(|(_, p)| match probe::port_owner(p, &Default::default()) {
                probe::PortOwner::Free => None,
                probe::PortOwner::Other { pid, command } => Some((
                    p,
                    match (command, pid) {
                        (Some(c), Some(p)) => format!("{c}, pid {p}"),
                        _ => "a process".into(),
                    },
                )),
                probe::PortOwner::Ours { pid } => Some((p, format!("pid {pid}"))),
            })
            .collect();
        Host {
            addresses: parse_addresses(&out),
            interfaces,
            bound,
        }
    }
}

/// `ip -o -4 addr show` lines: `2: eth0    inet 10.0.2.15/24 brd ... scope global eth0 ...`.
fn parse_addresses(text: &str) -> Vec<(String, Ipv4Addr, u8)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let i = f.iter().position(|w| *w == "inet")?;
            let (a, p) = f.get(i + 1)?.split_once('/')?;
            Some((f.get(1)?.to_string(), a.parse().ok()?, p.parse().ok()?))
        })
        .collect()
}

fn overlaps(a: Subnet, b: Subnet) -> bool {
    let p = a.prefix.min(b.prefix);
    let mask = u32::MAX << (32 - p);
    u32::from(a.network) & mask == u32::from(b.network) & mask
}

/// Each port of `c` that is also one of `o`'s (`who`), one sentence each.
fn ports_taken(c: &Config, o: &Config, who: &str) -> Vec<String> {
    let theirs = o.ports();
    c.ports()
        .into_iter()
        .filter_map(|(key, p)| {
            let (okey, _) = theirs.iter().find(|(_, op)| *op == p)?;
            Some(format!("{key} {p} is the {okey} of {who}: choose another port"))
        })
        .collect()
}

/// Refuses a node whose ports (its config may have been edited since `init`, e.g. to set
/// `admin_listen`) are another node's on this host: checked when its daemon starts.
pub fn refuse_taken_ports(node: &Node) -> Result<()> {
    let taken: Vec<String> = super::registry::others(&node.config_path)
        .iter()
        .flat_map(|(path, o)| ports_taken(&node.config, o, &format!("node '{}' ({})", o.name, path.display())))
        .collect();
    if !taken.is_empty() {
        bail!(
            "node config {} shares ports with another node:\n  {}",
            node.config_path.display(),
            taken.join("\n  ")
        );
    }
    Ok(())
}

/// Every clash of the new node `c` with the host and the `others` nodes, one sentence each.
pub fn find(c: &Config, host: &Host, others: &[(PathBuf, Config)]) -> Vec<String> {
    let mut out = Vec::new();
    let net = c.subnet();
    for (path, o) in others {
        let who = format!("node '{}' ({})", o.name, path.display());
        if o.name == c.name {
            out.push(format!(
                "node name '{}' is taken by {who}: choose another --name",
                c.name
            ));
        }
        if overlaps(net, o.subnet()) {
            out.push(format!(
                "subnet {net} overlaps {} of {who}: choose another --subnet",
                o.subnet
            ));
        }
        if o.bridge == c.bridge {
            out.push(format!(
                "bridge {} is {who}'s bridge: choose another --bridge",
                c.bridge
            ));
        }
        out.extend(ports_taken(c, o, &who));
        if c.uid_min <= o.uid_max && o.uid_min <= c.uid_max {
            out.push(format!(
                "uid range {}-{} overlaps {}-{} of {who}: choose another --uids",
                c.uid_min, c.uid_max, o.uid_min, o.uid_max
            ));
        }
    }
    for (ifname, addr, prefix) in &host.addresses {
        let theirs = Subnet::parse(&format!("{addr}/{}", (*prefix).clamp(8, 30))).expect("a valid prefix");
        if overlaps(net, theirs) {
            out.push(format!(
                "subnet {net} overlaps host interface {ifname}'s address {addr}/{prefix}: choose another --subnet"
            ));
        }
    }
    if host.interfaces.contains(&c.bridge) {
        out.push(format!(
            "a network interface named {} already exists on this host: choose another --bridge",
            c.bridge
        ));
    }
    for (p, who) in &host.bound {
        let key = c.ports().into_iter().find(|(_, q)| q == p).map_or("port", |(k, _)| k);
        out.push(format!(
            "{key} {p} is already bound on this host ({who}): choose another port"
        ));
    }
    out.dedup();
    out
}

/// The lowest uid a node takes by itself (`init` without `--uids`): above the host's own,
/// dynamic and subordinate uids.
const FREE_UIDS_FROM: u32 = 400_000;
/// The highest uid with an MCS pair of its own (`gear::mcs`).
const FREE_UIDS_TO: u32 = 523_776;
/// The fewest uids a node takes by itself when no gap of the default width is left.
const FEWEST_UIDS: u32 = 1_000;

/// A uid range for a new node given no `--uids`: the first gap of `width` uids (the default
/// range's) in 400000..=523776 that no node in `taken` (inclusive ranges) uses, else the first
/// gap of at least 1000 uids, whole. Distinct uids give distinct MCS pairs, so the node's
/// gears share neither per-uid kernel limits nor a label with another node's. `None` when the
/// space is full.
pub fn free_uid_range(width: u32, taken: &[(u32, u32)]) -> Option<(u32, u32)> {
    let mut taken: Vec<(u32, u32)> = taken.to_vec();
    taken.sort();
    let mut gaps = Vec::new();
    let mut from = FREE_UIDS_FROM;
    for (lo, hi) in taken {
        if lo > from {
            gaps.push((from, (lo - 1).min(FREE_UIDS_TO)));
        }
        from = from.max(hi.saturating_add(1));
    }
    gaps.push((from, FREE_UIDS_TO));
    let gaps: Vec<(u32, u32)> = gaps.into_iter().filter(|(a, b)| a <= b).collect();
    let size = |(a, b): &(u32, u32)| b - a + 1;
    gaps.iter()
        .find(|g| size(g) >= width)
        .map(|(a, _)| (*a, a + width - 1))
        .or_else(|| gaps.into_iter().find(|g| size(g) >= FEWEST_UIDS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, subnet: &str, http: u16, uids: (u32, u32)) -> Config {
        Config {
            name: name.into(),
            bridge: name.into(),
            subnet: subnet.into(),
            http_port: http,
            https_port: http + 3,
            admin_port: http + 2,
            ssh_port: http + 1,
            uid_min: uids.0,
            uid_max: uids.1,
            ..Config::default()
        }
    }

    #[test]
    fn a_node_without_uids_takes_the_next_free_range() {
        assert_eq!(free_uid_range(50_000, &[]), Some((400_000, 449_999)));
        // The second node on a host no longer gets the first one's uids (and MCS pairs).
        assert_eq!(free_uid_range(50_000, &[(400_000, 449_999)]), Some((450_000, 499_999)));
        // Gaps too small for the default width: the first gap of at least 1000, whole.
        let t = [(400_000, 449_999), (460_000, 499_999), (500_500, 523_000)];
        assert_eq!(free_uid_range(50_000, &t), Some((450_000, 459_999)));
        // Ranges below the window or overlapping one another count once.
        let t = [(1_000, 2_000), (400_000, 420_000), (410_000, 449_999)];
        assert_eq!(free_uid_range(50_000, &t), Some((450_000, 499_999)));
        // Full: nothing, so init asks for --uids.
        assert_eq!(free_uid_range(50_000, &[(400_000, 523_300)]), None);
        assert_eq!(free_uid_range(50_000, &[(300_000, 600_000)]), None);
    }

    #[test]
    fn finds_each_clash() {
        let a = node("a", "10.50.0.0/24", 30000, (500000, 500099));
        let others = vec![(PathBuf::from("/etc/a.toml"), a.clone())];
        let none = Host::default();
        assert!(find(&node("b", "10.50.1.0/24", 30010, (500100, 500199)), &none, &others).is_empty());
        let e = find(&node("b", "10.50.0.128/25", 30010, (500100, 500199)), &none, &others);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("subnet 10.50.0.128/25 overlaps 10.50.0.0/24 of node 'a' (/etc/a.toml)"),
            "{e:?}"
        );
        let mut port = node("b", "10.50.1.0/24", 30010, (500100, 500199));
        port.http_port = 30002;
        let e = find(&port, &none, &others);
        assert_eq!(
            e,
            vec!["http_port 30002 is the admin_port of node 'a' (/etc/a.toml): choose another port"]
        );
        // The other node's exposed admin port counts, and so does the new node's.
        let mut exposed = a.clone();
        exposed.admin_listen = Some("0.0.0.0:30010".into());
        let b = node("b", "10.50.1.0/24", 30010, (500100, 500199));
        let e = find(&b, &none, &[(PathBuf::from("/etc/a.toml"), exposed)]);
        assert_eq!(
            e,
            vec!["http_port 30010 is the admin_listen of node 'a' (/etc/a.toml): choose another port"]
        );
        let mut b = b;
        b.admin_listen = Some("127.0.0.1:30003".into());
        let e = find(&b, &none, &others);
        assert_eq!(
            e,
            vec!["admin_listen 30003 is the https_port of node 'a' (/etc/a.toml): choose another port"]
        );
        let e = find(&node("b", "10.50.1.0/24", 30010, (500050, 500199)), &none, &others);
        assert!(e[0].contains("uid range 500050-500199 overlaps 500000-500099"), "{e:?}");
        let mut same = node("b", "10.50.1.0/24", 30010, (500100, 500199));
        same.bridge = "a".into();
        assert!(find(&same, &none, &others)[0].contains("bridge a is node 'a'"));
        let host = Host {
            addresses: parse_addresses("1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n"),
            interfaces: vec!["lo".into(), "b".into()],
            bound: vec![(30010, "nginx, pid 9".into())],
        };
        let e = find(&node("b", "127.1.0.0/24", 30010, (500100, 500199)), &host, &[]);
        assert_eq!(
            e,
            vec![
                "subnet 127.1.0.0/24 overlaps host interface lo's address 127.0.0.1/8: choose another --subnet",
                "a network interface named b already exists on this host: choose another --bridge",
                "http_port 30010 is already bound on this host (nginx, pid 9): choose another port",
            ]
        );
    }
}
