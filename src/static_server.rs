//! A small static file server for the static cartridge (helper-owned).

use anyhow::Result;
use std::net::SocketAddr;
use std::path::Path;

/// Serves the files under `dir` on `addr` until killed.
pub fn serve(_dir: &Path, _addr: SocketAddr) -> Result<()> {
    todo!()
}
