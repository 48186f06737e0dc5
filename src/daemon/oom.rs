//! OOM kills as events: each pass of the daemon's refresh loop reads every gear's kill counter
//! (one small cgroup file per gear) and records an `oom` event when it moved. The first look
//! at a running gear only sets its baseline, so a daemon restart does not replay old kills; a
//! gear seen without a cgroup (not started yet, stopped) counts from zero once it has one.

use crate::app::App;
use crate::gear::isolation::cgroup::GearCgroup;
use crate::node::events::{self, Event};
use crate::node::Node;
use std::collections::HashMap;

/// The kill counts last seen, by gear id (None: the gear had no cgroup).
#[derive(Debug, Default)]
pub struct OomWatch {
    seen: HashMap<String, Option<u64>>,
    /// The node's cgroup parents (read once: they do not change while the daemon runs).
    parents: Option<Vec<std::path::PathBuf>>,
}

impl OomWatch {
    /// Looks at every gear of `apps` but idle ones (no processes: nothing to kill, and no file
    /// read); records an event for each whose count rose.
    pub fn check(&mut self, node: &Node, apps: &[App]) {
        if self.parents.is_none() {
            self.parents = node.state().ok().map(|s| s.cgroup_parents);
        }
        let Some(parents) = &self.parents else { return };
        let mut now = HashMap::new();
        for a in apps {
            for g in &a.gears {
                if a.idle {
                    // Woken, its new cgroup's kills all count.
                    now.insert(g.id.clone(), None);
                    continue;
                }
                let cg = GearCgroup::new(parents, &g.cgroup_name());
                let kills = cg.oom_kills();
                now.insert(g.id.clone(), kills);
                let Some(kills) = kills else { continue };
                let before = self.seen.get(&g.id).map(|b| b.unwrap_or(0));
                if let Some(new) = newly_killed(before, kills) {
                    let e = Event::new("oom", "gearshift").app(&a.name, a.owner.as_deref());
                    let detail = serde_json::json!({
                        "gear": g.index, "killed": new, "oom_kills": kills,
                        "memory_limit_bytes": cg.stats().memory_limit,
                    });
                    events::record(node, e.detail(detail));
                }
            }
        }
        self.seen = now;
    }
}

/// How many processes were killed since `before` (None: nothing new, or a first look). A count
/// that went down belongs to a new cgroup (the gear was restarted): its kills are all new.
fn newly_killed(before: Option<u64>, now: u64) -> Option<u64> {
    match before {
        None => None,
        Some(b) if now > b => Some(now - b),
        Some(b) if now < b && now > 0 => Some(now),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_kills_count() {
        assert_eq!(newly_killed(None, 3), None);
        assert_eq!(newly_killed(Some(3), 3), None);
        assert_eq!(newly_killed(Some(3), 5), Some(2));
        assert_eq!(newly_killed(Some(3), 1), Some(1));
        assert_eq!(newly_killed(Some(3), 0), None);
    }
}
