//! `gearshift events [--app APP] [-f] [--json]`: the node's event log (`node::events`), a
//! user's own apps only over SSH.

use crate::node::events::{self, Event};
use crate::node::Node;
use crate::ssh::auth::Actor;
use anyhow::Result;
use std::io::Write;
use std::time::Duration;

/// How often `-f` looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(300);

pub fn run(node: &Node, actor: &Actor, app: Option<&str>, follow: bool, json: bool, lines: usize) -> Result<()> {
    if let Some(a) = app {
        // The same error for an unknown app and someone else's; a destroyed app's events stay
        // visible to admins.
        if !actor.admin || crate::app::load(node, a).is_ok() {
            crate::app::load_for(node, actor, a)?;
        }
    }
    let user = if actor.admin { None } else { actor.user.clone() };
    let keep = |e: &Event| e.visible_to(user.as_deref()) && app.is_none_or(|a| e.app.as_deref() == Some(a));
    let (all, mut offset) = events::read_from(node, 0, &keep)?;
    let skip = all.len().saturating_sub(lines);
    if !print(&all[skip..], json) {
        return Ok(());
    }
    if !follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(FOLLOW_POLL);
        let (new, next) = events::read_from(node, offset, &keep)?;
        offset = next;
        if !print(&new, json) {
            return Ok(()); // the reader went away
        }
    }
}

/// Prints events; false once stdout is gone.
fn print(list: &[Event], json: bool) -> bool {
    let mut out = std::io::stdout().lock();
    for e in list {
        let l = if json {
            serde_json::to_string(e).unwrap_or_default()
        } else {
            e.line()
        };
        if writeln!(out, "{l}").is_err() {
            return false;
        }
    }
    out.flush().is_ok()
}
