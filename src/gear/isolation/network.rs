//! The node bridge, nftables rules, and each gear's network namespace and veth pair.
//! (Helper-owned: implement the bodies; keep the signatures.)

use crate::config::{Config, Subnet};
use anyhow::Result;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The node-wide network pieces.
#[derive(Debug, Clone)]
pub struct NodeNet {
    pub node: String,
    pub bridge: String,
    pub subnet: Subnet,
    /// nftables table name (inet family), unique per node.
    pub nft_table: String,
}

impl NodeNet {
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
    pub netns: String,
    pub veth_host: String,
    pub ip: Ipv4Addr,
    pub bandwidth_kbit: u64,
}

/// Where `ip netns` keeps the namespace handle.
pub fn netns_path(netns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(netns)
}

pub fn node_up(_n: &NodeNet) -> Result<()> {
    todo!()
}

pub fn node_down(_n: &NodeNet) -> Result<()> {
    todo!()
}

pub fn gear_up(_n: &NodeNet, _g: &GearNet) -> Result<()> {
    todo!()
}

pub fn gear_down(_n: &NodeNet, _g: &GearNet) -> Result<()> {
    todo!()
}
