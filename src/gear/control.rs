//! Talking to a gear's supervisor from the host, without touching the gear's files: the calling
//! thread enters the gear's network namespace just long enough to connect to the abstract
//! socket `@gearshift-control` there (abstract sockets belong to a network namespace), then
//! returns. The socket stays connected across the switch back.

use crate::ingear::supervisor::{exchange, CONTROL_ABSTRACT};
use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Connects to the supervisor of the gear whose network namespace is at `netns`.
pub fn connect(netns: &Path) -> Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let host = File::open("/proc/thread-self/ns/net").context("cannot open this thread's network namespace")?;
    let gear = File::open(netns).with_context(|| format!("gear network namespace {} is missing", netns.display()))?;
    setns(&gear, CloneFlags::CLONE_NEWNET).context("cannot enter the gear's network namespace")?;
    // At level s0: the supervisor's end of the connection takes this socket's level, and a
    // gear may not use one at root's login range.
    let r = crate::gear::isolation::selinux::with_sockets_at_s0(|| {
        std::os::unix::net::SocketAddr::from_abstract_name(CONTROL_ABSTRACT.as_bytes())
            .and_then(|a| UnixStream::connect_addr(&a))
    });
    if let Err(e) = setns(&host, CloneFlags::CLONE_NEWNET) {
        // Never carry on in a gear's network namespace.
        eprintln!("gearshift: cannot return to the host network namespace: {e}");
        std::process::abort();
    }
    r?.context("the gear's supervisor does not answer (is the gear running?)")
}

/// Sends one command to a gear's supervisor and returns its JSON reply.
pub fn command(netns: &Path, cmd: &str) -> Result<serde_json::Value> {
    exchange(connect(netns)?, cmd)
}
