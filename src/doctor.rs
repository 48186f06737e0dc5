//! `gearshift doctor`: one line per kernel mechanism and tool, ok or missing, with a fix.
//! (Helper-owned.)

use crate::node::Node;
use anyhow::Result;

/// Prints the report; returns the process exit code (non-zero if something required is missing).
pub fn run(_node: Option<&Node>, _json: bool) -> Result<i32> {
    todo!()
}
