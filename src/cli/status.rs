//! `gearshift status`: the node at a glance. Daemon, sshd and router checked on the running
//! system (`node::probe`), apps counted by their state (`app::condition`), disk of the data
//! root and the host's memory. Exits non-zero when the node is not fully up.

use crate::app::condition::AppState;
use crate::node::probe::{self, PortOwner};
use crate::node::Node;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
struct Status {
    node: String,
    config: String,
    data_root: String,
    up: bool,
    problems: Vec<String>,
    #[serde(flatten)]
    live: probe::Live,
    /// Count of apps by state kind (`running`, `crashed`, ...).
    apps_by_state: BTreeMap<&'static str, usize>,
    apps: Vec<AppLine>,
    disk: Option<Disk>,
    memory: Option<Memory>,
}

#[derive(Debug, Serialize)]
struct AppLine {
    name: String,
    owner: Option<String>,
    state: String,
}

#[derive(Debug, Serialize)]
struct Disk {
    total_bytes: u64,
    available_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Memory {
    total_bytes: u64,
    available_bytes: u64,
}

/// The word a state is counted under.
fn kind(s: &AppState) -> &'static str {
    match s {
        AppState::Creating(_) => "creating",
        AppState::NeverDeployed => "never deployed",
        AppState::Building => "building",
        AppState::Running => "running",
        AppState::Partial { .. } => "partial",
        AppState::Crashed { .. } => "crashed",
        AppState::Idle => "idle",
        AppState::Stopped => "stopped",
        AppState::Unreachable => "not answering",
    }
}

/// Prints the status; returns the exit code (1 when the daemon, sshd or router is not up).
pub fn run(node: &Node, json: bool) -> Result<i32> {
    let live = probe::live(node);
    let mut apps = Vec::new();
    let mut by_state = BTreeMap::new();
    for s in crate::daemon::index::apps(node)? {
        let state = s.state();
        *by_state.entry(kind(&state)).or_insert(0) += 1;
        let a = s.app;
        apps.push(AppLine {
            name: a.name.clone(),
            owner: a.owner.clone(),
            state: state.to_string(),
        });
    }
    let s = Status {
        node: node.config.name.clone(),
        config: node.config_path.display().to_string(),
        data_root: node.root().display().to_string(),
        up: live.healthy(),
        problems: live.problems(node),
        live,
        apps_by_state: by_state,
        apps,
        disk: disk(node),
        memory: memory(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).context("cannot format the status as JSON")?
        );
    } else {
        print!("{}", text(node, &s));
    }
    Ok(if s.up { 0 } else { 1 })
}

fn text(node: &Node, s: &Status) -> String {
    let mut out = format!("node {} (config {}, data root {})\n", s.node, s.config, s.data_root);
    let up_or_down = |ok: bool| if ok { "up  " } else { "DOWN" };
    let listener = |name: &str| {
        let l = s.live.listener(name).expect("every listener is probed");
        match &l.owner {
            PortOwner::Ours { pid } => format!("{} (pid {pid})", l.port),
            PortOwner::Free => format!("{} (nothing listens)", l.port),
            PortOwner::Other { .. } => format!("{} (bound by another process)", l.port),
        }
    };
    let ours = |name: &str| {
        s.live
            .listener(name)
            .is_some_and(|l| matches!(l.owner, PortOwner::Ours { .. }))
    };
    out += &format!(
        "daemon  {}  {}\n",
        up_or_down(s.live.daemon_pid.is_some() && s.live.socket_answers),
        match s.live.daemon_pid {
            Some(pid) if s.live.socket_answers => format!("pid {pid}, socket answers"),
            Some(pid) => format!("pid {pid}, socket does not answer"),
            None => "not running".into(),
        }
    );
    out += &format!(
        "sshd    {}  port {}{}\n",
        up_or_down(ours("sshd") && s.live.sshd_handshake),
        listener("sshd"),
        if s.live.sshd_handshake {
            ", handshake ok"
        } else {
            ", no handshake"
        }
    );
    out += &format!(
        "router  {}  http {}, https {}, admin {}\n",
        up_or_down(ours("http") && ours("https") && ours("admin")),
        listener("http"),
        listener("https"),
        listener("admin")
    );
    let counts: Vec<String> = s.apps_by_state.iter().map(|(k, n)| format!("{n} {k}")).collect();
    out += &format!(
        "apps    {}{}\n",
        s.apps.len(),
        if counts.is_empty() {
            String::new()
        } else {
            format!(": {}", counts.join(", "))
        }
    );
    let w = s.apps.iter().map(|a| a.name.len()).max().unwrap_or(0);
    for a in &s.apps {
        out += &format!("  {:<w$}  {}\n", a.name, a.state);
    }
    if let Some(d) = &s.disk {
        let used = d.total_bytes.saturating_sub(d.available_bytes);
        out += &format!(
            "disk    {} used of {}, {} available ({})\n",
            human(used),
            human(d.total_bytes),
            human(d.available_bytes),
            s.data_root
        );
    }
    if let Some(m) = &s.memory {
        out += &format!(
            "memory  {} used of {}, {} available\n",
            human(m.total_bytes.saturating_sub(m.available_bytes)),
            human(m.total_bytes),
            human(m.available_bytes)
        );
    }
    if !s.problems.is_empty() {
        out += &format!("\nnode '{}' is not fully up:\n", s.node);
        for p in &s.problems {
            out += &format!("  {p}\n");
        }
        if s.live.daemon_pid.is_none() {
            out += &format!("  {}\n", probe::start_hint(node));
        }
    }
    out
}

fn disk(node: &Node) -> Option<Disk> {
    let st = nix::sys::statvfs::statvfs(node.root()).ok()?;
    let frag = st.fragment_size() as u64;
    Some(Disk {
        total_bytes: st.blocks() as u64 * frag,
        available_bytes: st.blocks_available() as u64 * frag,
    })
}

fn memory() -> Option<Memory> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|k| k * 1024)
    };
    Some(Memory {
        total_bytes: kib("MemTotal:")?,
        available_bytes: kib("MemAvailable:")?,
    })
}

/// Bytes in the largest binary unit that keeps the number at least 1 (`1.5G`).
fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512B");
        assert_eq!(human(1536), "1.5K");
        assert_eq!(human(3 << 30), "3.0G");
    }
}
