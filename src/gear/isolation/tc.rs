//! Traffic shaping of a gear's veth, both directions (egress of each end).
//! (Helper-owned.)

use super::network::GearNet;
use anyhow::Result;

pub fn shape(_g: &GearNet) -> Result<()> {
    todo!()
}
