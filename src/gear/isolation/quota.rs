//! Disk quota backends for gear homes: btrfs qgroups on a loop image, ext4/xfs user quota, none.
//! (Helper-owned: implement the bodies; keep the signatures.)

use crate::config::Limits;
use crate::node::Node;
use anyhow::Result;
use std::path::PathBuf;

/// The backend in use on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    BtrfsLoop,
    Ext4,
    Xfs,
    None,
}

/// Disk use of one gear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub limit_bytes: Option<u64>,
    pub inodes: Option<u64>,
    pub limit_inodes: Option<u64>,
}

/// The backend from the config and what the host offers.
pub fn backend(_node: &Node) -> Result<Backend> {
    todo!()
}

/// One line for `doctor`: which backend, and whether it enforces limits.
pub fn describe(_node: &Node) -> (bool, String) {
    todo!()
}

pub fn node_up(_node: &Node) -> Result<()> {
    todo!()
}

pub fn node_down(_node: &Node) -> Result<()> {
    todo!()
}

/// Creates the gear's home with its limits applied and returns its host path.
pub fn create_home(_node: &Node, _gear_id: &str, _uid: u32, _limits: &Limits) -> Result<PathBuf> {
    todo!()
}

pub fn destroy_home(_node: &Node, _gear_id: &str, _uid: u32) -> Result<()> {
    todo!()
}

pub fn usage(_node: &Node, _gear_id: &str, _uid: u32) -> Result<Usage> {
    todo!()
}
