//! The node bridge, nftables rules, and each gear's network namespace and veth pair.
//!
//! Layout: one Linux bridge per node carries the subnet's gateway address; every gear
//! gets a network namespace whose `eth0` is one end of a veth pair, the other end
//! (`veth_host`) being an *isolated* port of the bridge. One nftables table
//! (`inet <nft_table>`) per node masquerades gear traffic leaving the host and keeps
//! gears away from each other and from the host's own services.
//!
//! Everything is done with the `ip`, `bridge`, `tc` and `nft` commands.

use super::check::{is_root, sh_in_throwaway_netns, tool_version, Check};
use super::netcmd::{parse_probe_output, probe_detail, probe_fix, run, run_stdin, ProbeResults, PROBE_STEP};
use crate::node::config::{Config, Subnet};
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The node-wide network pieces.
#[derive(Debug, Clone)]
pub struct NodeNet {
    /// The node's name (for messages).
    pub node: String,
    /// The bridge's interface name (at most 15 characters).
    pub bridge: String,
    /// The gears' subnet; its first host address is the bridge's (the gateway).
    pub subnet: Subnet,
    /// nftables table name (inet family), unique per node.
    pub nft_table: String,
}

impl NodeNet {
    /// The node network described by the node configuration.
    pub fn from_config(c: &Config) -> NodeNet {
        NodeNet {
            node: c.name.clone(),
            bridge: c.bridge.clone(),
            subnet: c.subnet(),
            nft_table: format!("gearshift_{}", c.name.replace('-', "_")),
        }
    }
}

/// One gear's network.
#[derive(Debug, Clone)]
pub struct GearNet {
    /// Network namespace name (`ip netns`), handle at [`netns_path`].
    pub netns: String,
    /// Host end of the veth pair (at most 15 characters); the gear end is `eth0`.
    pub veth_host: String,
    /// The gear's address in the node subnet.
    pub ip: Ipv4Addr,
    /// Bandwidth limit in each direction, kbit/s (1000 bit/s); 0 means unlimited.
    pub bandwidth_kbit: u64,
}

/// Where `ip netns` keeps the namespace handle.
pub fn netns_path(netns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(netns)
}

/// Creates (or repairs) the node's bridge, enables IPv4 forwarding and atomically
/// (re)loads the node's nftables table. Idempotent.
pub fn node_up(n: &NodeNet) -> Result<()> {
    let up = || -> Result<()> {
        check_ifname(&n.bridge).context("invalid bridge name")?;
        check_table_name(&n.nft_table)?;
        ensure_bridge(n)?;
        enable_ip_forward()?;
        load_ruleset(n)
    };
    up().with_context(|| format!("cannot bring up the network of node {}", n.node))
}

/// Removes the node's nftables table and bridge. Idempotent; leaves `ip_forward` alone.
pub fn node_down(n: &NodeNet) -> Result<()> {
    check_table_name(&n.nft_table)?;
    let script = format!("table inet {t} {{}}\ndelete table inet {t}\n", t = n.nft_table);
    run_stdin(
        &format!("remove nftables table inet {}", n.nft_table),
        Command::new("nft").args(["-f", "-"]),
        &script,
    )?;
    delete_link(&n.bridge).with_context(|| format!("cannot remove bridge {}", n.bridge))
}

/// Creates the gear's network namespace and veth pair (recreating them if they already
/// exist), addresses and routes it through the bridge, then shapes its bandwidth.
/// On failure, whatever was created is removed again.
pub fn gear_up(n: &NodeNet, g: &GearNet) -> Result<()> {
    check_gear(n, g)?;
    gear_down(n, g).context("cannot clear the gear's previous network")?;
    let res = build_gear(n, g);
    if res.is_err() {
        let _ = gear_down(n, g);
    }
    res.with_context(|| format!("cannot set up the network of gear netns {}", g.netns))
}

/// Deletes the gear's veth pair and network namespace, and what the host remembers of the
/// gear's link-layer address. Idempotent.
pub fn gear_down(n: &NodeNet, g: &GearNet) -> Result<()> {
    check_ifname(&g.veth_host).context("invalid gear veth name")?;
    check_netns_name(&g.netns)?;
    // The veth first: deleting one end removes the pair synchronously, whereas a netns
    // (and the eth0 inside it) lingers while any process still lives in it.
    delete_link(&g.veth_host)
        .with_context(|| format!("cannot remove veth {} of gear netns {}", g.veth_host, g.netns))?;
    if netns_path(&g.netns).exists() {
        run(
            &format!("delete network namespace {}", g.netns),
            Command::new("ip").args(["netns", "delete", &g.netns]),
        )?;
    }
    forget_neighbour(n, g.ip)
}

/// Removes the host's neighbour (ARP) entry for gear address `ip` on the bridge. A gear's
/// `eth0` gets a new MAC address each time it is made; a remembered entry (even one marked
/// REACHABLE) would send the host's and the linked gears' traffic for a reused address to the
/// old gear's MAC, where it is lost, until the entry times out (15-50 s). Without an entry the
/// host asks (ARP) and the gear now holding the address answers.
fn forget_neighbour(n: &NodeNet, ip: Ipv4Addr) -> Result<()> {
    if !link_exists(&n.bridge) {
        return Ok(());
    }
    let ip = ip.to_string();
    run(
        &format!("forget the bridge {}'s neighbour entry for gear address {ip}", n.bridge),
        Command::new("ip").args(["neigh", "flush", "to", &ip, "dev", &n.bridge]),
    )?;
    Ok(())
}

/// What of a running gear's network differs from what it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GearDrift {
    /// The host end of the veth pair is gone (the pair with it).
    VethMissing,
    /// The host end is not a port of the node's bridge.
    NotOnBridge,
    /// The host end is not up (its operstate).
    VethDown(String),
    /// The gear's `eth0` lacks its address or its default route through the gateway.
    GearEndUnconfigured,
    /// A bandwidth-limited gear's host end has no token bucket.
    Unshaped,
}

impl GearDrift {
    /// One line for people and the event log.
    pub fn describe(&self, g: &GearNet) -> String {
        let v = &g.veth_host;
        match self {
            GearDrift::VethMissing => format!("veth {v} is missing"),
            GearDrift::NotOnBridge => format!("veth {v} is not on the bridge"),
            GearDrift::VethDown(state) => format!("veth {v} is not up (operstate {state})"),
            GearDrift::GearEndUnconfigured => {
                format!("eth0 in netns {} lacks address {} or its default route", g.netns, g.ip)
            }
            GearDrift::Unshaped => format!("veth {v} has no bandwidth shaping"),
        }
    }
}

/// What of gear `g`'s network differs from what it should be, by cheap reads only: sysfs for
/// the host end, `/proc/INIT/net` for the gear's end when its init (`init`) runs, and the host's
/// token buckets when `shaped` (from [`super::tc::shaped_devices`]) is given. A gear without its
/// network namespace has nothing to compare (its init is down; starting it makes the network).
pub fn gear_drift(n: &NodeNet, g: &GearNet, init: Option<i32>, shaped: Option<&HashSet<String>>) -> Vec<GearDrift> {
    if !netns_path(&g.netns).exists() {
        return Vec::new();
    }
    let sys = Path::new("/sys/class/net").join(&g.veth_host);
    if !sys.exists() {
        return vec![GearDrift::VethMissing];
    }
    let mut drift = Vec::new();
    let master = std::fs::read_link(sys.join("master")).ok();
    if master.as_deref().and_then(|m| m.file_name()) != Some(std::ffi::OsStr::new(&n.bridge)) {
        drift.push(GearDrift::NotOnBridge);
    }
    let state = std::fs::read_to_string(sys.join("operstate")).unwrap_or_default();
    if state.trim() != "up" {
        drift.push(GearDrift::VethDown(state.trim().to_string()));
    }
    if let Some(pid) = init {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/net/{f}"));
        // Unreadable: the init ended meanwhile; its own check says so.
        if let (Ok(trie), Ok(routes)) = (read("fib_trie"), read("route")) {
            if !has_local_address(&trie, g.ip) || !has_default_route(&routes, "eth0", n.subnet.gateway()) {
                drift.push(GearDrift::GearEndUnconfigured);
            }
        }
    }
    if g.bandwidth_kbit > 0 && shaped.is_some_and(|s| !s.contains(&g.veth_host)) {
        drift.push(GearDrift::Unshaped);
    }
    drift
}

/// Puts a gear whose network namespace survived (its init runs) back on the node's network: a
/// missing veth pair is recreated into the namespace; a host end left off the bridge (the bridge
/// was deleted and recreated, or an admin detached it) or down is attached and brought up again;
/// the gear's end gets its address and route again; a missing token bucket is put back. What
/// differs is [`gear_drift`]'s; returns what was repaired.
pub fn reattach_gear(
    n: &NodeNet,
    g: &GearNet,
    init: Option<i32>,
    shaped: Option<&HashSet<String>>,
) -> Result<Option<String>> {
    check_gear(n, g)?;
    let drift = gear_drift(n, g, init, shaped);
    if drift.is_empty() {
        return Ok(None);
    }
    let veth = g.veth_host.as_str();
    if drift.contains(&GearDrift::VethMissing) {
        run(
            &format!("recreate veth pair {veth} <-> {}:eth0", g.netns),
            Command::new("ip").args([
                "link", "add", "name", veth, "type", "veth", "peer", "name", "eth0", "netns", &g.netns,
            ]),
        )?;
        attach_host_end(n, veth)?;
        forget_neighbour(n, g.ip)?;
        configure_gear_end(n, g)?;
        super::tc::shape(&g.netns, veth, g.bandwidth_kbit)?;
        return Ok(Some(format!("recreated veth {veth} of gear netns {}", g.netns)));
    }
    let mut done = Vec::new();
    let down = drift.iter().any(|d| matches!(d, GearDrift::VethDown(_)));
    if down || drift.contains(&GearDrift::NotOnBridge) {
        attach_host_end(n, veth)?;
        done.push(format!("re-attached veth {veth} to bridge {}", n.bridge));
    }
    if down || drift.contains(&GearDrift::GearEndUnconfigured) {
        configure_gear_end(n, g)?;
        done.push(format!("configured eth0 in netns {} ({})", g.netns, g.ip));
    }
    if drift.contains(&GearDrift::Unshaped) {
        super::tc::shape(&g.netns, veth, g.bandwidth_kbit)?;
        done.push(format!("shaped veth {veth} to {} kbit/s again", g.bandwidth_kbit));
    }
    Ok(Some(done.join(", ")))
}

/// Whether `/proc/PID/net/fib_trie` (`trie`) holds `ip` as a local address.
fn has_local_address(trie: &str, ip: Ipv4Addr) -> bool {
    let leaf = format!("|-- {ip}");
    let mut lines = trie.lines().map(str::trim);
    while let Some(l) = lines.next() {
        if l == leaf && lines.clone().next().is_some_and(|n| n.starts_with("/32 host LOCAL")) {
            return true;
        }
    }
    false
}

/// Whether `/proc/PID/net/route` (`routes`) holds a default route via `gw` on `dev`.
fn has_default_route(routes: &str, dev: &str, gw: Ipv4Addr) -> bool {
    let gw = format!("{:08X}", u32::from_ne_bytes(gw.octets()));
    routes.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 7 && f[0] == dev && f[1] == "00000000" && f[2] == gw && f[7] == "00000000"
    })
}

/// Whether `/proc/net/route` (`routes`) holds the connected route of `subnet` on `dev` (the
/// bridge is up and has its address in the subnet).
fn has_subnet_route(routes: &str, dev: &str, subnet: &Subnet) -> bool {
    let hex = |a: Ipv4Addr| format!("{:08X}", u32::from_ne_bytes(a.octets()));
    let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(subnet.prefix)).unwrap_or(0));
    let (net, mask) = (hex(subnet.network), hex(mask));
    routes.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 7 && f[0] == dev && f[1] == net && f[7] == mask
    })
}

/// What of the node's own network differs from what it should be: the bridge (present, up,
/// with the gateway address), the nftables table and the number of rules in each of its chains
/// (one `nft list table` each call).
pub fn node_drift(n: &NodeNet) -> Vec<String> {
    let br = &n.bridge;
    let mut drift = Vec::new();
    let sys = Path::new("/sys/class/net").join(br);
    if !sys.exists() {
        drift.push(format!("bridge {br} is missing"));
    } else {
        let flags = std::fs::read_to_string(sys.join("flags")).unwrap_or_default();
        let up = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).is_ok_and(|f| f & 1 == 1);
        let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        if !up {
            drift.push(format!("bridge {br} is down"));
        } else if !has_subnet_route(&routes, br, &n.subnet) {
            drift.push(format!("bridge {br} lacks the gateway address {}", n.subnet.gateway()));
        }
    }
    let listed = Command::new("nft")
        .args(["list", "table", "inet", &n.nft_table])
        .stderr(std::process::Stdio::null())
        .output();
    match listed {
        Ok(o) if o.status.success() => {
            let have = chain_rule_counts(&String::from_utf8_lossy(&o.stdout));
            for (chain, want) in chain_rule_counts(&ruleset(n)) {
                let got = have.get(&chain).copied();
                if got != Some(want) {
                    drift.push(format!(
                        "nftables table inet {} has {} of chain {chain}'s {want} rules",
                        n.nft_table,
                        got.unwrap_or(0)
                    ));
                }
            }
        }
        Ok(_) => drift.push(format!("nftables table inet {} is missing", n.nft_table)),
        Err(e) => drift.push(format!("cannot run `nft list table inet {}`: {e}", n.nft_table)),
    }
    drift
}

/// The number of rules of each chain of an nftables table, as `nft list table` prints it (or
/// as [`ruleset`] writes it): the lines of each `chain NAME { ... }` but its `type` line.
fn chain_rule_counts(table: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut chain: Option<String> = None;
    for l in table.lines().map(str::trim) {
        if let Some(name) = l.strip_prefix("chain ").and_then(|r| r.strip_suffix(" {")) {
            chain = Some(name.to_string());
            counts.insert(name.to_string(), 0);
        } else if l == "}" {
            chain = None;
        } else if let Some(c) = &chain {
            if !l.is_empty() && !l.starts_with("type ") {
                *counts.get_mut(c).expect("counted chain") += 1;
            }
        }
    }
    counts
}

// ---------------------------------------------------------------------------------------
// Node pieces

fn ensure_bridge(n: &NodeNet) -> Result<()> {
    let br = n.bridge.as_str();
    let what = format!("create bridge {br}");
    if !link_exists(br) {
        let mac = bridge_mac(br);
        run(
            &what,
            Command::new("ip").args(["link", "add", "name", br, "address", &mac, "type", "bridge"]),
        )?;
    } else if !Path::new("/sys/class/net").join(br).join("bridge").exists() {
        bail!(
            "cannot create bridge {br}: a network interface of that name exists and is not \
             a bridge; rename it or choose another `bridge` in the node configuration"
        );
    }
    let addr = format!("{}/{}", n.subnet.gateway(), n.subnet.prefix);
    run(
        &format!("give bridge {br} the gateway address {addr}"),
        Command::new("ip").args(["addr", "replace", &addr, "dev", br]),
    )?;
    pin_bridge_mac(br)?;
    run(
        &format!("bring bridge {br} up"),
        Command::new("ip").args(["link", "set", br, "up"]),
    )?;
    // Gears sit on isolated ports: a linked gear reaches another through the host, which
    // answers ARP for the subnet (private-VLAN proxy ARP) and routes what nftables allows,
    // without telling the gear to go direct.
    // The host answers those ARP requests at once: by default a proxied answer to a broadcast
    // request waits a random 0-0.8 s (`proxy_delay`), which every first connection from an
    // app to its add-on (and every re-asked entry) would pay.
    for (dir, key, value) in [
        ("conf", "proxy_arp_pvlan", "1"),
        ("conf", "send_redirects", "0"),
        ("neigh", "proxy_delay", "0"),
    ] {
        let p = format!("/proc/sys/net/ipv4/{dir}/{br}/{key}");
        std::fs::write(&p, value).with_context(|| format!("cannot write {value} to {p}"))?;
    }
    Ok(())
}

/// The MAC address a new bridge named `br` gets: locally administered, unicast, the same each
/// time, so gears that outlive a recreated bridge still know the gateway's MAC.
pub(crate) fn bridge_mac(br: &str) -> String {
    // FNV-1a, 64 bits: stable across releases (std's hasher is not).
    let h = br.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let b = h.to_be_bytes();
    format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4])
}

/// Fixes the bridge's MAC address at its current value (a bridge made before gearshift set
/// its address at creation keeps the MAC its gears know). A bridge whose address was never set
/// takes the lowest MAC among its ports, so creating or destroying any gear could change the
/// gateway's (and the proxy-ARP) MAC under every other gear: their neighbour caches then
/// point at an address no port holds any more, and their traffic to the gateway and to linked
/// add-ons is lost until those entries fail and are asked again (timeouts, then "No route to
/// host"). A set address (`addr_assign_type` 3) no longer follows the ports; an already pinned
/// bridge is left alone.
fn pin_bridge_mac(br: &str) -> Result<()> {
    let sys = Path::new("/sys/class/net").join(br);
    let read = |f: &str| -> Result<String> {
        let p = sys.join(f);
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .trim()
            .to_string())
    };
    if read("addr_assign_type")? == NET_ADDR_SET {
        return Ok(());
    }
    let mac = read("address")?;
    run(
        &format!("fix the MAC address of bridge {br} at {mac}"),
        Command::new("ip").args(["link", "set", "dev", br, "address", &mac]),
    )?;
    Ok(())
}

/// `addr_assign_type` of an interface whose address was set by its administrator.
const NET_ADDR_SET: &str = "3";

fn enable_ip_forward() -> Result<()> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(p, "1")
        .with_context(|| format!("cannot enable IPv4 forwarding (writing 1 to {p}); gearshift must run as root"))
}

/// The node's nftables script: creates-then-deletes the table so the full definition
/// that follows replaces any previous version in one atomic transaction.
pub(crate) fn ruleset(n: &NodeNet) -> String {
    format!(
        r#"table inet {t} {{}}
delete table inet {t}
table inet {t} {{
	set {links} {{
		type ipv4_addr . ipv4_addr . inet_service
	}}
	set {services} {{
		type ipv4_addr . inet_service
	}}
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr {net} oifname != "{br}" masquerade
	}}
	chain forward {{
		type filter hook forward priority filter; policy accept;
		tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu
		iifname "{br}" oifname "{br}" ct state established,related accept
		iifname "{br}" oifname "{br}" ip saddr . ip daddr . tcp dport @{links} accept
		iifname "{br}" oifname "{br}" drop
		iifname "{br}" accept
		oifname "{br}" ct state established,related accept
		oifname "{br}" drop
	}}
	chain input {{
		type filter hook input priority filter; policy accept;
		iifname "{br}" ct state established,related accept
		iifname "{br}" drop
	}}
	chain output {{
		type filter hook output priority filter; policy accept;
		oifname "{br}" meta skuid != 0 ip daddr . tcp dport @{services} reject with tcp reset
	}}
}}
"#,
        t = n.nft_table,
        net = n.subnet,
        br = n.bridge,
        links = LINKS_SET,
        services = SERVICES_SET,
    )
}

/// The nftables set of add-on services (gear address, port): of the host's own processes,
/// only root's (the daemon, waiting for a new add-on) may connect to them.
const SERVICES_SET: &str = "gear_services";

/// The script that makes the services set hold exactly `services` (one transaction).
pub(crate) fn services_script(n: &NodeNet, services: &[(Ipv4Addr, u16)]) -> String {
    let mut s = format!("flush set inet {} {SERVICES_SET}\n", n.nft_table);
    if !services.is_empty() {
        let elems: Vec<String> = services.iter().map(|(ip, port)| format!("{ip} . {port}")).collect();
        s.push_str(&format!(
            "add element inet {} {SERVICES_SET} {{ {} }}\n",
            n.nft_table,
            elems.join(", ")
        ));
    }
    s
}

/// Makes the add-on services the host's other users cannot reach exactly `services`.
pub fn set_services(n: &NodeNet, services: &[(Ipv4Addr, u16)]) -> Result<()> {
    check_table_name(&n.nft_table)?;
    run_stdin(
        &format!("set the add-on services of nftables table inet {}", n.nft_table),
        Command::new("nft").args(["-f", "-"]),
        &services_script(n, services),
    )
    .context("bring the node's network up first (`gearshift node up`)")?;
    Ok(())
}

/// The nftables set of allowed gear-to-gear connections (app gear, add-on gear, port): the
/// only traffic between two gears the forward chain lets through.
const LINKS_SET: &str = "gear_links";

/// One allowed gear-to-gear connection: `from` may open TCP connections to `to:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GearLink {
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    pub port: u16,
}

/// The script that makes the links set hold exactly `links` (one transaction).
pub(crate) fn links_script(n: &NodeNet, links: &[GearLink]) -> String {
    let mut s = format!("flush set inet {} {LINKS_SET}\n", n.nft_table);
    if !links.is_empty() {
        let elems: Vec<String> = links
            .iter()
            .map(|l| format!("{} . {} . {}", l.from, l.to, l.port))
            .collect();
        s.push_str(&format!(
            "add element inet {} {LINKS_SET} {{ {} }}\n",
            n.nft_table,
            elems.join(", ")
        ));
    }
    s
}

/// Makes the node's allowed gear-to-gear connections exactly `links` (atomically; a
/// connection removed here can no longer be opened).
pub fn set_links(n: &NodeNet, links: &[GearLink]) -> Result<()> {
    check_table_name(&n.nft_table)?;
    run_stdin(
        &format!("set the gear links of nftables table inet {}", n.nft_table),
        Command::new("nft").args(["-f", "-"]),
        &links_script(n, links),
    )
    .context("bring the node's network up first (`gearshift node up`)")?;
    Ok(())
}

fn load_ruleset(n: &NodeNet) -> Result<()> {
    run_stdin(
        &format!("load nftables table inet {}", n.nft_table),
        Command::new("nft").args(["-f", "-"]),
        &ruleset(n),
    )
    .context("is the nftables package (the `nft` command) installed and the kernel built with nf_tables?")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Gear pieces

fn check_gear(n: &NodeNet, g: &GearNet) -> Result<()> {
    check_ifname(&g.veth_host).context("invalid gear veth name")?;
    check_netns_name(&g.netns)?;
    if n.subnet.index_of(g.ip).is_none() || g.ip == n.subnet.gateway() {
        bail!(
            "gear address {} is not a usable host address of subnet {} (the gateway {} is the bridge's)",
            g.ip,
            n.subnet,
            n.subnet.gateway()
        );
    }
    if !link_exists(&n.bridge) {
        bail!(
            "bridge {} does not exist; bring the node's network up first (node_up)",
            n.bridge
        );
    }
    Ok(())
}

fn build_gear(n: &NodeNet, g: &GearNet) -> Result<()> {
    let (ns, veth) = (g.netns.as_str(), g.veth_host.as_str());
    run(
        &format!("create network namespace {ns}"),
        Command::new("ip").args(["netns", "add", ns]),
    )?;
    run(
        &format!("create veth pair {veth} <-> {ns}:eth0"),
        Command::new("ip").args([
            "link", "add", "name", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]),
    )?;
    attach_host_end(n, veth)?;
    forget_neighbour(n, g.ip)?;
    configure_gear_end(n, g)?;
    super::tc::shape(&g.netns, &g.veth_host, g.bandwidth_kbit)
}

fn attach_host_end(n: &NodeNet, veth: &str) -> Result<()> {
    let br = n.bridge.as_str();
    run(
        &format!("attach veth {veth} to bridge {br}"),
        Command::new("ip").args(["link", "set", veth, "master", br]),
    )?;
    run(
        &format!("make veth {veth} an isolated port of bridge {br}"),
        Command::new("bridge").args(["link", "set", "dev", veth, "isolated", "on"]),
    )?;
    run(
        &format!("bring veth {veth} up"),
        Command::new("ip").args(["link", "set", veth, "up"]),
    )?;
    Ok(())
}

fn configure_gear_end(n: &NodeNet, g: &GearNet) -> Result<()> {
    let ns = g.netns.as_str();
    let addr = format!("{}/{}", g.ip, n.subnet.prefix);
    let gw = n.subnet.gateway().to_string();
    run(
        &format!("give eth0 in netns {ns} the address {addr}"),
        Command::new("ip").args(["-n", ns, "addr", "replace", &addr, "dev", "eth0"]),
    )?;
    run(
        &format!("bring lo up in netns {ns}"),
        Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]),
    )?;
    run(
        &format!("bring eth0 up in netns {ns}"),
        Command::new("ip").args(["-n", ns, "link", "set", "eth0", "up"]),
    )?;
    run(
        &format!("set the default route via {gw} in netns {ns}"),
        Command::new("ip").args(["-n", ns, "route", "replace", "default", "via", &gw, "dev", "eth0"]),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Helpers

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Deletes a host network interface; no error if it is (or meanwhile went) missing.
fn delete_link(name: &str) -> Result<()> {
    if !link_exists(name) {
        return Ok(());
    }
    match run(
        &format!("delete interface {name}"),
        Command::new("ip").args(["link", "delete", "dev", name]),
    ) {
        Err(_) if !link_exists(name) => Ok(()),
        other => other.map(drop),
    }
}

fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        bail!("interface name '{name}' must be 1-15 characters of [A-Za-z0-9._-]");
    }
    Ok(())
}

fn check_netns_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        bail!("network namespace name '{name}' must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'");
    }
    Ok(())
}

fn check_table_name(name: &str) -> Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!("nftables table name '{name}' must start with a letter and contain only [A-Za-z0-9_]");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// doctor's probe: veth, bridge, tc and the firewall, tried inside a throwaway netns (the
// script's helpers and its result type are netcmd's)

/// The steps for the pieces this module builds: links first, the firewall last.
const PROBE_LINKS: &str = "p veth ip link add gsprobe0 type veth peer name gsprobe1
p bridge ip link add gsprobebr0 type bridge
";
const PROBE_FIREWALL: &str = "p nft nft add table inet gsprobe
p iptables iptables -t nat -S
";

/// Runs the probe script (tc's steps included) in a throwaway network namespace.
fn run_probe() -> std::result::Result<ProbeResults, String> {
    let script = format!("{PROBE_STEP}{PROBE_LINKS}{}{PROBE_FIREWALL}", super::tc::PROBE);
    Ok(parse_probe_output(&sh_in_throwaway_netns(&script)?))
}

/// The `firewall` line: nftables preferred, iptables accepted.
fn firewall_check(probe: &ProbeResults, nft_version: Option<&str>, iptables_version: Option<&str>) -> Check {
    let nft = probe_detail(probe.get("nft"), "nft add table inet");
    let ipt = probe_detail(probe.get("iptables"), "iptables -t nat");
    const NFT_FIX: &str = "apt-get install nftables / dnf install nftables";
    match (nft_version, &nft, iptables_version, &ipt) {
        (Some(v), Ok(d), _, _) => Check::ok("firewall", format!("{v}; {d}")),
        (_, _, Some(v), Ok(d)) => Check::ok("firewall", format!("{v}; {d} (nftables preferred: {NFT_FIX})")),
        (Some(v), Err(e), _, _) => Check::absent(
            "firewall",
            true,
            format!("{v}, but {e}"),
            "use a kernel with CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET",
        ),
        (None, _, Some(v), Err(e)) => Check::absent("firewall", true, format!("no nft; {v}, but {e}"), NFT_FIX),
        (None, _, None, _) => Check::absent("firewall", true, "neither nft nor iptables is installed", NFT_FIX),
    }
}

/// Network lines from the probe results (pure): veth, bridge, tc's lines, firewall.
pub fn checks_from(
    probe: &std::result::Result<ProbeResults, String>,
    nft_version: Option<&str>,
    iptables_version: Option<&str>,
) -> Vec<Check> {
    const IPROUTE: &str = "apt-get install iproute2 / dnf install iproute";
    let probe = match probe {
        Ok(p) => p,
        Err(e) => {
            let fix = if is_root() {
                "check that network namespaces work (see ns.net)"
            } else {
                "run `gearshift doctor` as root"
            };
            return ["veth", "bridge", "tc.htb", "tc.tbf", "firewall"]
                .iter()
                .map(|n| Check::absent(n, true, e.clone(), fix))
                .collect();
        }
    };
    let mut out = Vec::new();
    for (name, key, what, kfix) in [
        ("veth", "veth", "ip link add type veth", ("CONFIG_VETH", IPROUTE)),
        (
            "bridge",
            "bridge",
            "ip link add type bridge",
            ("CONFIG_BRIDGE", IPROUTE),
        ),
    ] {
        out.push(match probe_detail(probe.get(key), what) {
            Ok(d) => Check::ok(name, d),
            Err(e) => {
                let fix = probe_fix(&e, kfix);
                Check::absent(name, true, e, fix)
            }
        });
    }
    out.extend(super::tc::checks_from(probe));
    out.push(firewall_check(probe, nft_version, iptables_version));
    out
}

/// The veth, bridge, tc and firewall lines for this host.
pub fn check() -> Vec<Check> {
    let probe = run_probe();
    let nft = tool_version("nft", &["--version"]);
    let ipt = tool_version("iptables", &["--version"]);
    checks_from(&probe, nft.as_deref(), ipt.as_deref())
}

/// The `ip_forward` line: gears reach other networks only with IPv4 forwarding on.
pub fn check_ip_forward() -> Check {
    match std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
        Ok(s) if s.trim() == "1" => Check::ok("ip_forward", "net.ipv4.ip_forward = 1"),
        Ok(s) => Check::warn(
            "ip_forward",
            format!("net.ipv4.ip_forward = {}: gears cannot reach other networks", s.trim()),
            "sysctl -w net.ipv4.ip_forward=1 (persist it in /etc/sysctl.d/)",
        ),
        Err(e) => Check::warn(
            "ip_forward",
            format!("cannot read /proc/sys/net/ipv4/ip_forward: {e}"),
            "check /proc/sys is mounted",
        ),
    }
}

/// Test fixtures shared with `tc`'s tests: a node network and gears with unique names,
/// torn down by `Drop` even when a test fails.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Stdio};

    /// Why these tests cannot run here, if they cannot.
    pub fn skip_reason() -> Option<String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root".into());
        }
        for (bin, arg) in [("nft", "--version"), ("ip", "-V"), ("tc", "-V"), ("bridge", "-V")] {
            let ok = Command::new(bin)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !matches!(ok, Ok(s) if s.success()) {
                return Some(format!("`{bin}` is not available"));
            }
        }
        if !Path::new(python()).exists() && Command::new("python3").arg("-V").output().is_err() {
            return Some("python3 is not available".into());
        }
        None
    }

    /// The Python interpreter to run inside network namespaces.
    pub fn python() -> &'static str {
        if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        }
    }

    /// A node network plus gears and helper processes, all removed on drop.
    pub struct Fixture {
        pub node: NodeNet,
        pub gears: Vec<GearNet>,
        tag: String,
        children: Vec<Child>,
    }

    impl Fixture {
        /// Brings up a node network with names and subnet unique to this process and
        /// to `t` (1..=9, one per test), so tests can run in parallel.
        pub fn new(t: u32) -> Fixture {
            let pid = std::process::id();
            let tag = format!("{}{t}", pid % 10000);
            let node = NodeNet {
                node: format!("gsnt{tag}"),
                bridge: format!("gsnt{tag}"),
                subnet: Subnet::parse(&format!("10.{}.{}.0/24", 190 + t, pid % 200)).unwrap(),
                nft_table: format!("gsnt_{tag}"),
            };
            let f = Fixture {
                node,
                gears: Vec::new(),
                tag,
                children: Vec::new(),
            };
            node_up(&f.node).expect("node_up");
            f
        }

        /// Describes gear number `i` (its address is host(i + 1)) without creating it.
        pub fn gear_net(&self, i: u32, bandwidth_kbit: u64) -> GearNet {
            GearNet {
                netns: format!("gsnt-{}-{i}", self.tag),
                veth_host: format!("gsv{}g{i}", self.tag),
                ip: self.node.subnet.host(i + 1).unwrap(),
                bandwidth_kbit,
            }
        }

        /// Creates gear number `i`.
        pub fn gear(&mut self, i: u32, bandwidth_kbit: u64) -> GearNet {
            let g = self.gear_net(i, bandwidth_kbit);
            self.gears.push(g.clone());
            gear_up(&self.node, &g).expect("gear_up");
            g
        }

        /// Starts `python3 -c script args...` inside `netns`; the script must print one
        /// line (e.g. the port it listens on) once ready, which is returned.
        pub fn spawn_in(&mut self, netns: &str, script: &str, args: &[&str]) -> String {
            let mut child = Command::new("ip")
                .args(["netns", "exec", netns, python(), "-c", script])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn python in netns");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            self.children.push(child);
            assert!(!line.is_empty(), "helper in {netns} exited before becoming ready");
            line.trim().to_string()
        }

        /// Runs `python3 -c script args...` inside `netns` to completion; its stdout.
        pub fn run_in(&self, netns: &str, script: &str, args: &[&str]) -> String {
            let out = Command::new("ip")
                .args(["netns", "exec", netns, python(), "-c", script])
                .args(args)
                .output()
                .expect("run python in netns");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            for c in &mut self.children {
                let _ = c.kill();
                let _ = c.wait();
            }
            for g in &self.gears {
                if let Err(e) = gear_down(&self.node, g) {
                    eprintln!("cleanup: {e:#}");
                }
            }
            if let Err(e) = node_down(&self.node) {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::{exit_code, find, Status};
    use super::testutil::{skip_reason, Fixture};
    use super::*;
    use std::io::Read;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::process::Stdio;
    use std::time::Duration;

    #[test]
    fn doctor_network_lines_from_probe() {
        let out = "veth\t0\t\nbridge\t0\t\nhtb\t2\tError: Specified qdisc kind is unknown.\ntbf\t0\t\nnft\t127\tsh: nft: not found\niptables\t0\t\n";
        let p = parse_probe_output(out);
        assert_eq!(p.get("htb").unwrap().0, 2);
        let c = checks_from(&Ok(p.clone()), None, Some("iptables v1.8.9 (nf_tables)"));
        assert_eq!(find(&c, "veth").status, Status::Ok);
        // tbf works, so htb missing is only a warning.
        assert_eq!(find(&c, "tc.htb").status, Status::Warn);
        assert!(find(&c, "tc.htb").detail.contains("qdisc kind is unknown"));
        assert_eq!(find(&c, "firewall").status, Status::Ok);
        assert!(find(&c, "firewall").detail.starts_with("iptables v1.8.9"));
        let c = checks_from(&Ok(p), None, None);
        assert_eq!(find(&c, "firewall").status, Status::Missing);
        assert!(find(&c, "firewall")
            .fix
            .as_deref()
            .unwrap()
            .contains("apt-get install nftables / dnf install nftables"));
        let c = checks_from(&Err("unshare failed: EPERM".into()), None, None);
        assert!(c.iter().all(|c| c.status != Status::Ok));
        assert_eq!(exit_code(&c), 1);
    }

    const LISTEN: &str = r#"
import socket
s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hi")
    c.close()
"#;

    const PROBE: &str = r#"
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print("connected")
except Exception as e:
    print("failed:", e)
"#;

    fn skip() -> bool {
        match skip_reason() {
            Some(why) => {
                eprintln!("skipping network test: {why}");
                true
            }
            None => false,
        }
    }

    fn table_exists(t: &str) -> bool {
        Command::new("nft")
            .args(["list", "table", "inet", t])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    #[test]
    fn node_up_and_down_are_idempotent() {
        if skip() {
            return;
        }
        let f = Fixture::new(1);
        let n = f.node.clone();
        node_up(&n).expect("second node_up");
        assert!(link_exists(&n.bridge));
        assert!(table_exists(&n.nft_table));
        let addrs = run(
            "list",
            Command::new("ip").args(["-4", "addr", "show", "dev", &n.bridge]),
        )
        .unwrap();
        assert!(addrs.contains(&format!("{}/24", n.subnet.gateway())), "{addrs}");
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap().trim(),
            "1"
        );
        node_down(&n).expect("node_down");
        node_down(&n).expect("second node_down");
        assert!(!link_exists(&n.bridge));
        assert!(!table_exists(&n.nft_table));
    }

    #[test]
    fn gears_reach_neither_each_other_nor_the_host_but_the_host_reaches_them() {
        if skip() {
            return;
        }
        let mut f = Fixture::new(2);
        let a = f.gear(1, 0);
        let b = f.gear(2, 0);
        gear_up(&f.node, &a).expect("gear_up again (idempotent)");
        let gw = f.node.subnet.gateway();

        // A host service on the gateway address: gears must not reach it.
        let host_listener = TcpListener::bind((gw, 0)).unwrap();
        let host_port = host_listener.local_addr().unwrap().port().to_string();
        let r = f.run_in(&a.netns, PROBE, &[&gw.to_string(), &host_port, "1.5"]);
        eprintln!("gear -> gateway: {r}");
        assert!(r.starts_with("failed"), "gear reached a host service: {r}");

        // A service in gear B: gear A must not reach it, the host must.
        let b_port = f.spawn_in(&b.netns, LISTEN, &[]);
        let r = f.run_in(&a.netns, PROBE, &[&b.ip.to_string(), &b_port, "1.5"]);
        eprintln!("gear A -> gear B: {r}");
        assert!(r.starts_with("failed"), "gear A reached gear B: {r}");

        let addr = SocketAddr::new(b.ip.into(), b_port.parse().unwrap());
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("host -> gear B");
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi");

        // The host listener was never reached.
        host_listener.set_nonblocking(true).unwrap();
        assert!(host_listener.accept().is_err());

        gear_down(&f.node, &a).expect("gear_down");
        gear_down(&f.node, &a).expect("second gear_down");
        assert!(!link_exists(&a.veth_host));
        assert!(!netns_path(&a.netns).exists());
    }

    #[test]
    fn gear_up_rejects_an_address_outside_the_subnet() {
        if skip() {
            return;
        }
        let f = Fixture::new(3);
        let mut g = f.gear_net(1, 0);
        g.ip = Ipv4Addr::new(192, 0, 2, 7);
        let e = gear_up(&f.node, &g).unwrap_err();
        assert!(format!("{e:#}").contains("not a usable host address"), "{e:#}");
        assert!(!link_exists(&g.veth_host));
    }

    /// A node network described, not made.
    fn sample_net() -> NodeNet {
        NodeNet {
            node: "n".into(),
            bridge: "gs-br".into(),
            subnet: Subnet::parse("10.77.0.0/20").unwrap(),
            nft_table: "gearshift_n".into(),
        }
    }

    #[test]
    fn ruleset_names_the_table_bridge_and_subnet() {
        let n = sample_net();
        let r = ruleset(&n);
        assert!(r.starts_with("table inet gearshift_n {}\ndelete table inet gearshift_n\n"));
        assert!(r.contains(r#"ip saddr 10.77.0.0/20 oifname != "gs-br" masquerade"#));
        assert!(r.contains(r#"iifname "gs-br" oifname "gs-br" drop"#));
    }

    #[test]
    fn links_script_replaces_the_whole_set() {
        let n = sample_net();
        assert_eq!(links_script(&n, &[]), "flush set inet gearshift_n gear_links\n");
        let l = |a: u8, b: u8| GearLink {
            from: Ipv4Addr::new(10, 77, 0, a),
            to: Ipv4Addr::new(10, 77, 0, b),
            port: 5432,
        };
        assert_eq!(
            links_script(&n, &[l(2, 3), l(4, 3)]),
            "flush set inet gearshift_n gear_links\nadd element inet gearshift_n gear_links { 10.77.0.2 . 10.77.0.3 . 5432, 10.77.0.4 . 10.77.0.3 . 5432 }\n"
        );
        assert!(ruleset(&n).contains("ip saddr . ip daddr . tcp dport @gear_links accept"));
        assert_eq!(
            services_script(&n, &[(Ipv4Addr::new(10, 77, 0, 3), 6379)]),
            "flush set inet gearshift_n gear_services\nadd element inet gearshift_n gear_services { 10.77.0.3 . 6379 }\n"
        );
        assert!(ruleset(&n).contains("meta skuid != 0 ip daddr . tcp dport @gear_services reject"));
    }

    #[test]
    fn drift_readers_parse_the_kernels_tables() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.77.0.0/24 2 0 2\n        |-- 10.77.0.0\n           /24 link UNICAST\n        |-- 10.77.0.5\n           /32 host LOCAL\nLocal:\n";
        assert!(has_local_address(trie, Ipv4Addr::new(10, 77, 0, 5)));
        assert!(!has_local_address(trie, Ipv4Addr::new(10, 77, 0, 0)));
        assert!(!has_local_address(trie, Ipv4Addr::new(10, 77, 0, 6)));
        let routes = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\t01004D0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\neth0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let gw = Ipv4Addr::new(10, 77, 0, 1);
        if cfg!(target_endian = "little") {
            assert!(has_default_route(routes, "eth0", gw));
            assert!(!has_default_route(routes, "eth1", gw));
            assert!(has_subnet_route(
                routes,
                "eth0",
                &Subnet::parse("10.77.0.0/24").unwrap()
            ));
            assert!(!has_subnet_route(
                routes,
                "eth0",
                &Subnet::parse("10.77.0.0/20").unwrap()
            ));
        }
        assert!(!has_default_route(routes, "eth0", Ipv4Addr::new(10, 77, 0, 2)));
    }

    #[test]
    fn the_rule_count_of_each_chain_matches_what_nft_lists() {
        let n = sample_net();
        let want = chain_rule_counts(&ruleset(&n));
        assert_eq!(want.get("forward"), Some(&7), "{want:?}");
        assert_eq!(want.get("postrouting"), Some(&1), "{want:?}");
        assert_eq!(want.len(), 4, "{want:?}");
        // As nft prints it back (sets first, a rule rewritten).
        let listed = "table inet gearshift_n {\n\tset gear_links {\n\t\ttype ipv4_addr . ipv4_addr . inet_service\n\t}\n\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tiifname \"gs-br\" ct state established,related accept\n\t\tiifname \"gs-br\" drop\n\t}\n\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t}\n}\n";
        let have = chain_rule_counts(listed);
        assert_eq!(have.get("input"), Some(&2));
        assert_eq!(have.get("output"), Some(&0));
        assert_eq!(have.get("gear_links"), None);
    }

    #[test]
    fn bridge_mac_is_stable_unicast_local_and_per_bridge() {
        let m = bridge_mac("gs0");
        assert_eq!(m, bridge_mac("gs0"));
        assert_ne!(m, bridge_mac("gs1"));
        let bytes: Vec<u8> = m.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
        assert_eq!(bytes.len(), 6);
        assert_eq!(bytes[0] & 0b11, 0b10, "locally administered unicast: {m}");
    }

    #[test]
    fn a_link_lets_one_gear_reach_one_port_of_another_until_removed() {
        if skip() {
            return;
        }
        let mut f = Fixture::new(9);
        let a = f.gear(1, 0);
        let b = f.gear(2, 0);
        let c = f.gear(3, 0);
        let b_port = f.spawn_in(&b.netns, LISTEN, &[]);
        let link = GearLink {
            from: a.ip,
            to: b.ip,
            port: b_port.parse().unwrap(),
        };
        set_links(&f.node, &[link]).unwrap();
        let r = f.run_in(&a.netns, PROBE, &[&b.ip.to_string(), &b_port, "3"]);
        assert!(!r.starts_with("failed"), "linked gear A did not reach gear B: {r}");
        let r = f.run_in(&c.netns, PROBE, &[&b.ip.to_string(), &b_port, "1.5"]);
        assert!(r.starts_with("failed"), "unlinked gear C reached gear B: {r}");
        set_links(&f.node, &[]).unwrap();
        let r = f.run_in(&a.netns, PROBE, &[&b.ip.to_string(), &b_port, "1.5"]);
        assert!(
            r.starts_with("failed"),
            "gear A still reached gear B after the link was removed: {r}"
        );
    }

    #[test]
    fn error_quotes_the_command_and_its_stderr() {
        let e = run(
            "list a missing link",
            Command::new("ip").args(["link", "show", "dev", "gs-no-such0"]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("cannot list a missing link: `ip link show dev gs-no-such0` failed"),
            "{e}"
        );
        assert!(e.contains("does not exist"), "{e}");
    }
}
