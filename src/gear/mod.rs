//! A gear: one isolated runtime instance of an app, and its life cycle. The gear knows nothing
//! of apps: what it needs of one (its descriptor, its cartridge, the supervisor its init
//! runs) comes in as arguments.
//!
//! - `create`: every piece of a gear (home, cgroup, network, init) and their removal;
//! - `init`: the gear's init process: started unless it runs, its pid, stopped;
//! - `spawn`: entering a gear and confining a process, in order (`isolation/` per mechanism);
//! - `control`: the supervisor's control protocol, both sides;
//! - `layout`, `meta`: the home's paths, and what the gear knows about itself.

pub mod control;
pub mod create;
pub mod home_file;
pub mod init;
pub mod isolation;
pub mod layout;
pub mod lifeline;
pub mod mcs;
pub mod meta;
pub mod relay;
pub mod spawn;
pub mod tty;

pub use create::{create, destroy, relabel_if_needed};
pub use init::{
    cgroup, drift, ensure_answering, ensure_running, enter, identity, init_pid, reattach_network, stop, Boot,
};
pub use meta::{env, reserved_env};

use crate::node::Node;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The durable record of a gear, stored inside its app's state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gear {
    /// 32 hex characters, as OpenShift v2's gear UUIDs.
    pub id: String,
    pub app: String,
    /// 0 for the first web gear; scaled gears count up.
    pub index: u32,
    /// uid and gid of every process in the gear.
    pub uid: u32,
    pub ip: Ipv4Addr,
    pub profile: String,
}

impl Gear {
    pub fn gid(&self) -> u32 {
        self.uid
    }
    /// The SELinux MCS level, computed from the uid as OpenShift v2 did.
    pub fn mcs(&self) -> String {
        mcs::label_for_uid(self.uid)
    }
    /// The home directory on the host.
    pub fn home(&self, node: &Node) -> PathBuf {
        node.gears_dir().join(&self.id)
    }
    /// The home directory as the gear sees it.
    pub fn inner_home(&self) -> PathBuf {
        layout::inner_home(&self.app)
    }
    /// Name of the cgroup directory beneath the node's cgroup parent.
    pub fn cgroup_name(&self) -> String {
        format!("{}-{}", self.app, self.index)
    }
    /// The network namespace name (`ip netns`).
    pub fn netns(&self) -> String {
        format!("gs-{}", &self.id[..12])
    }
    /// The host end of the gear's veth pair.
    pub fn veth_host(&self) -> String {
        format!("gh{}", &self.id[..12])
    }
}

/// A fresh random gear id.
pub fn new_id() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
