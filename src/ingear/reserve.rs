//! The push's disk reserve: room, held in the gear's own quota from just before a push makes
//! its new deployment live until the switch is settled, so that undoing the switch never meets
//! a full disk.
//!
//! After the switch, a push can still fail for want of space: a post_deploy hook or a release
//! command fills the disk, saving the deployment record fails, or git cannot write the branch's
//! ref (git writes it only after the hook). The client is then told the push failed, and the
//! settler must make the previous deployment live again, which writes too (the `app-root/repo`
//! link, the record). A btrfs qgroup refuses even a rename when full (its metadata reservation
//! is larger than the data: a switch needs about 200 KiB free). So the reserve is written
//! before the switch (no room for it: the push fails there, nothing switched) and given back
//! once the switch is settled, or at once, with the file system synced so the quota counts it
//! free, when a switch back met a full disk.

use crate::gear::layout;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;

/// Bytes held: ten times what a switch back was measured to need on a btrfs qgroup.
pub const RESERVE_BYTES: usize = 2 << 20;

fn path() -> PathBuf {
    layout::in_home(layout::RUNTIME).join(".gearshift-push-reserve")
}

/// Takes the reserve: [`RESERVE_BYTES`] written and synced (bytes that do not compress, so a
/// compressing file system holds them too). Fails, leaving nothing, when the disk has no room.
pub fn take() -> Result<()> {
    let p = path();
    let written = std::fs::File::create(&p).and_then(|mut f| {
        f.write_all(&incompressible(RESERVE_BYTES))?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&p);
        return Err(e).with_context(|| {
            format!(
                "no room for the switch ({} KiB kept free until the push is settled)",
                RESERVE_BYTES >> 10
            )
        });
    }
    Ok(())
}

/// Gives the reserve back (the switch is settled); whether there was one.
pub fn give_back() -> bool {
    std::fs::remove_file(path()).is_ok()
}

/// Gives the reserve back for use right away: removed, then the home's file system synced
/// (btrfs counts freed space in a qgroup at its next commit). Whether there was one.
pub fn give_back_now() -> bool {
    if !give_back() {
        return false;
    }
    if let Ok(home) = std::fs::File::open(layout::in_home(".")) {
        let _ = nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&home));
    }
    true
}

/// `n` bytes from a xorshift generator: cheap, and no file system compresses them.
fn incompressible(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_as_many_bytes_spread_evenly() {
        let b = incompressible(RESERVE_BYTES);
        assert_eq!(b.len(), RESERVE_BYTES);
        // Every byte value about equally often: nothing a compressor could shrink.
        let mut seen = [0usize; 256];
        b.iter().for_each(|&x| seen[x as usize] += 1);
        let even = RESERVE_BYTES / 256;
        assert!(
            seen.iter().all(|&n| n > even * 9 / 10 && n < even * 11 / 10),
            "{seen:?}"
        );
    }
}
