//! The daemon's index of the apps: `app list` and `gearshift status` ask the daemon, in one
//! round trip over its socket, for every app's record and what its state is computed from. The
//! daemon keeps the records (read again only when `apps/` changed) and every running gear's
//! supervisor status (its watcher hears each change), so a node of 500 apps answers without
//! reading 500 records or entering a gear's namespace per app. With no daemon (or one that
//! does not know the request), the CLI reads the files and asks the supervisors itself.

use super::frontend::Routes;
use super::proto::{self, FromDaemon, ToDaemon};
use crate::app::condition::{self, Seen};
use crate::node::Node;
use anyhow::Result;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long the CLI waits for the daemon's answer before it reads the files itself.
const ASK_WAIT: Duration = Duration::from_secs(10);

/// Every app of the node and what its state is computed from: the daemon's index if it answers,
/// else read from the files.
pub fn apps(node: &Node) -> Result<Vec<Seen>> {
    if let Some(apps) = ask(node) {
        return Ok(apps);
    }
    Ok(crate::app::list(node)?
        .iter()
        .map(|a| condition::seen(node, a, &|_| None))
        .collect())
}

/// The daemon's index (None: no daemon answers, or it does not know the request).
fn ask(node: &Node) -> Option<Vec<Seen>> {
    let sock = UnixStream::connect(crate::ssh::authkeys::socket_path(node)).ok()?;
    sock.set_read_timeout(Some(ASK_WAIT)).ok()?;
    proto::send(&sock, &ToDaemon::Apps, &[]).ok()?;
    match proto::read_reply(&sock).ok()? {
        FromDaemon::Apps { apps } => Some(apps),
        _ => None,
    }
}

/// The daemon's answer: the records as the route feeder holds them (fresh), and each running
/// gear's status as the watcher last heard it (a gear it has no current status of is asked).
pub fn answer(routes: &Routes) -> Result<FromDaemon> {
    let node = routes.node();
    let apps = routes
        .fresh_apps()?
        .iter()
        .map(|a| condition::seen(node, a, &|g| routes.known_status(&g.id)))
        .collect();
    Ok(FromDaemon::Apps { apps })
}
