//! Users: people known by SSH public keys; admins manage the node, others their own apps.
//! (Helper-owned: implement; keep the public names used by cli.rs and app.rs.)

use crate::node::Node;
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// `gearshift user ...`
#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Add a user with one public key (`--key FILE`, or `--key -` for stdin).
    Add {
        name: String,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        key: String,
    },
    /// List users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a user (refused while they own apps).
    Remove { name: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub name: String,
    pub admin: bool,
}

pub fn run(_node: &Node, _cmd: UserCmd) -> Result<()> {
    todo!()
}

/// Loads a user, with a clear error when unknown.
pub fn load(_node: &Node, _name: &str) -> Result<User> {
    todo!()
}
