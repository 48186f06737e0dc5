//! Apps (todo)
use crate::node::Node;
use anyhow::Result;
#[derive(Debug, clap::Subcommand)]
pub enum AppCmd { List }
pub fn run(_n: &Node, _c: AppCmd) -> Result<()> { todo!() }
pub fn run_in_gear(_n: &Node, _a: &str, _g: u32, _c: &[String]) -> Result<i32> { todo!() }
pub fn destroy_node(_n: &Node, _c: &str) -> Result<()> { todo!() }
