//! App snapshots (OpenShift v2's `rhc snapshot save/restore`): `snapshot save APP > f.tar.gz`
//! and `snapshot restore APP [--as NEW] < f.tar.gz`. The gear's files are read and written by
//! `tar` run inside the gear, as its uid (root never opens a path a gear can write); add-on
//! dumps come from `addon backup`'s scripts in the add-on's gear. Root only handles its own
//! files, in a root-only scratch directory (`scratch.rs`), and the archive (`format.rs`).

mod domains;
mod format;
mod gzip;
mod restore;
mod save;
mod scratch;

pub use restore::restore;
pub use save::save;

use crate::node::Node;
use anyhow::Result;
use std::os::fd::OwnedFd;

/// Runs `f` in a forked child with `stdin`/`stdout` as its descriptors 0 and 1 (what runs in a
/// gear joins its namespaces: the caller must stay outside) and returns its exit code.
fn in_child(stdin: Option<OwnedFd>, stdout: Option<OwnedFd>, f: impl FnOnce() -> Result<()>) -> Result<i32> {
    let pid = crate::app::scale::fork_with(stdin, stdout, || f().map(|()| 0))?;
    Ok(crate::app::scale::wait_code(pid))
}

/// Runs ARGV in gear 0 of APP (as the gear's uid) with a file as stdin or stdout; its exit code.
fn in_gear(node: &Node, app: &str, argv: &[&str], stdin: Option<OwnedFd>, stdout: Option<OwnedFd>) -> Result<i32> {
    let pid = crate::app::scale::fork_in_gear(node, app, 0, argv, stdin, stdout)?;
    Ok(crate::app::scale::wait_code(pid))
}
