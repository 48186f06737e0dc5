//! Traffic shaping of a gear's veth, both directions (egress of each end).
//!
//! A token bucket (`tbf`) is the root qdisc of the host end's egress (traffic going into
//! the gear) and of the gear's `eth0` egress inside its netns (traffic the gear sends).
//! No `police` action is needed, which some kernels lack.

use super::network::{run, GearNet};
use anyhow::{Context, Result};
use std::process::Command;

/// Limits the gear's bandwidth to `bandwidth_kbit` (1 kbit = 1000 bit/s) in each
/// direction. Idempotent (`tc qdisc replace`). A `bandwidth_kbit` of 0 means unlimited:
/// any shaping previously installed is removed.
pub fn shape(g: &GearNet) -> Result<()> {
    if g.bandwidth_kbit == 0 {
        unshape(g);
        return Ok(());
    }
    let p = TbfParams::for_rate(g.bandwidth_kbit);
    let args = p.args();
    run(
        &format!("shape traffic into the gear on {} to {} kbit/s", g.veth_host, g.bandwidth_kbit),
        Command::new("tc").args(["qdisc", "replace", "dev", &g.veth_host, "root", "tbf"]).args(&args),
    )?;
    run(
        &format!("shape traffic out of the gear (eth0 in netns {}) to {} kbit/s", g.netns, g.bandwidth_kbit),
        Command::new("tc").args(["-n", &g.netns, "qdisc", "replace", "dev", "eth0", "root", "tbf"]).args(&args),
    )
    .context("does the gear's network namespace exist (gear_up creates it)?")?;
    Ok(())
}

/// Best-effort removal of both root qdiscs (absent ones are not an error).
fn unshape(g: &GearNet) {
    let _ = run("remove shaping", Command::new("tc").args(["qdisc", "del", "dev", &g.veth_host, "root"]));
    let _ = run(
        "remove shaping",
        Command::new("tc").args(["-n", &g.netns, "qdisc", "del", "dev", "eth0", "root"]),
    );
}

/// Token bucket parameters for one rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TbfParams {
    rate_kbit: u64,
    /// Bucket size in bytes: what may pass at line speed after an idle period.
    burst: u64,
    /// Queue size in bytes; beyond it packets are dropped (TCP then backs off).
    limit: u64,
}

impl TbfParams {
    /// Burst: 10 ms worth of the rate, at least 10 full-size frames (so a timer tick
    /// never starves the link, which would make the measured rate fall short).
    /// Limit: 100 ms worth of the rate, at least 64 KiB plus the burst (a whole GSO
    /// super-packet then always fits, so queueing never drops it outright).
    fn for_rate(rate_kbit: u64) -> TbfParams {
        let bytes_per_sec = rate_kbit.saturating_mul(1000) / 8;
        let burst = (bytes_per_sec / 100).max(15_140);
        let limit = (bytes_per_sec / 10).max(65_536 + burst);
        TbfParams { rate_kbit, burst, limit }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "rate".into(),
            format!("{}kbit", self.rate_kbit),
            "burst".into(),
            self.burst.to_string(),
            "limit".into(),
            self.limit.to_string(),
        ]
    }
}
