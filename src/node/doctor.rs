//! `gearshift doctor`: one line per kernel mechanism and tool, ok or missing, with a fix.
//!
//! Statuses: `ok` (works), `missing` (something the node requires does not work: the exit
//! code is non-zero), `warn` (absent or degraded but optional; gearshift runs without it).
//! Every kernel mechanism is actually tried, not just looked up, by the `check()` next to the
//! code that uses it in `gear::isolation` (cgroup, namespaces, seccomp, caps, landlock,
//! selinux, quota, network, tc); doctor collects those lines in report order and prints them.

use crate::gear::isolation::check::{self, tool_version};
pub use crate::gear::isolation::check::{exit_code, Check, Status};
use crate::gear::isolation::{caps, cgroup, landlock, namespaces, network, quota, seccomp, selinux};
use crate::node::{probe, Node};
use anyhow::{Context, Result};
use std::path::Path;

/// Prints the report; returns the process exit code (non-zero if something required is missing).
pub fn run(node: Option<&Node>, json: bool) -> Result<i32> {
    let checks = collect(node);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&checks).context("cannot format the report as JSON")?
        );
    } else {
        print!("{}", format_report(&checks));
        let missing = checks.iter().filter(|c| c.status == Status::Missing).count();
        let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
        println!();
        if missing == 0 {
            println!("doctor: everything the node requires works ({warns} warning(s))");
        } else {
            println!("doctor: {missing} required mechanism(s) missing, {warns} warning(s): see the fix: hints");
        }
    }
    Ok(exit_code(&checks))
}

/// Runs every check, in report order.
pub fn collect(node: Option<&Node>) -> Vec<Check> {
    let mut out = vec![check::kernel()];
    out.extend(cgroup::check());
    out.extend(namespaces::check());
    out.push(seccomp::check());
    out.push(caps::check_no_new_privs());
    out.push(landlock::check(node.map(|n| n.config.landlock)));
    out.push(selinux::check());
    out.push(quota::check(node));
    out.extend(network::check());
    out.push(network::check_ip_forward());
    out.push(sshd_check());
    out.push(git_check());
    out.extend(interpreter_checks());
    out.push(quota::btrfs::check_progs());
    out.extend(crate::addon::kind::check());
    if let Some(n) = node {
        out.extend(super::sysctl::check(n.config.gear_capacity()));
        out.extend(running_node(n));
    }
    out
}

/// The running node: daemon up and answering on its socket, each port bound by the daemon or
/// its sshd, sshd completing a key exchange ([`probe`]).
pub fn running_node(node: &Node) -> Vec<Check> {
    let live = probe::live(node);
    let mut out = Vec::new();
    out.push(match live.daemon_pid {
        None => Check::absent(
            "daemon",
            true,
            format!("the daemon of node '{}' is not running", node.config.name),
            probe::start_hint(node),
        ),
        Some(pid) if !live.socket_answers => Check::absent(
            "daemon",
            true,
            format!("pid {pid} does not answer on its socket"),
            format!("restart it ({})", probe::start_hint(node)),
        ),
        Some(pid) => Check::ok("daemon", format!("pid {pid}, socket answers")),
    });
    for l in &live.listeners {
        let name = format!("port {}", l.name);
        out.push(match &l.owner {
            probe::PortOwner::Ours { pid } => Check::ok(&name, format!("{} bound by the node (pid {pid})", l.port)),
            probe::PortOwner::Free if live.daemon_pid.is_none() => Check::absent(
                &name,
                true,
                format!("nothing listens on {}", l.port),
                probe::start_hint(node),
            ),
            probe::PortOwner::Free => Check::absent(
                &name,
                true,
                format!("nothing listens on {} although the daemon runs", l.port),
                "see the daemon's log, then restart it",
            ),
            probe::PortOwner::Other { pid, command } => Check::absent(
                &name,
                true,
                format!(
                    "{} is bound by another process ({}, pid {})",
                    l.port,
                    command.as_deref().unwrap_or("unknown"),
                    pid.map_or("unknown".into(), |p| p.to_string())
                ),
                format!(
                    "stop that process or change {} in {}",
                    l.key,
                    node.config_path.display()
                ),
            ),
        });
    }
    if live.daemon_pid.is_some() {
        out.push(if live.sshd_handshake {
            Check::ok(
                "ssh handshake",
                format!("sshd on port {} completes a key exchange", node.config.ssh_port),
            )
        } else {
            Check::absent(
                "ssh handshake",
                true,
                format!("sshd on port {} does not complete a key exchange", node.config.ssh_port),
                format!("see {}", crate::ssh::sshd::Paths::of(node).log.display()),
            )
        });
    }
    out
}

/// Aligned text: `STATUS  NAME  DETAIL  [fix: ...]`.
pub fn format_report(checks: &[Check]) -> String {
    let w_status = checks.iter().map(|c| c.status.as_str().len()).max().unwrap_or(0);
    let w_name = checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
    // Fixes line up after details up to this width; longer details just get two spaces.
    const MAX_DETAIL_PAD: usize = 64;
    let w_detail = checks
        .iter()
        .filter(|c| c.fix.is_some())
        .map(|c| c.detail.chars().count())
        .filter(|&n| n <= MAX_DETAIL_PAD)
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for c in checks {
        let mut line = format!("{:<w_status$}  {:<w_name$}  {}", c.status.as_str(), c.name, c.detail);
        if let Some(fix) = &c.fix {
            let pad = w_detail.saturating_sub(c.detail.chars().count());
            line.push_str(&" ".repeat(pad));
            line.push_str("  fix: ");
            line.push_str(fix);
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// tools

fn sshd_check() -> Check {
    const FIX: &str = "apt-get install openssh-server / dnf install openssh-server";
    let Some(path) = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        return Check::absent("sshd", true, "no sshd in /usr/sbin, /usr/local/sbin or /sbin", FIX);
    };
    // `ssh -V` prints e.g. "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024" on stderr.
    let version = tool_version("ssh", &["-V"]).map(|v| v.split(',').next().unwrap_or("").trim().to_string());
    Check::ok(
        "sshd",
        format!(
            "{path} ({})",
            version.as_deref().unwrap_or("version unknown: no ssh client")
        ),
    )
}

fn git_check() -> Check {
    match tool_version("git", &["--version"]) {
        Some(v) => Check::ok("git", v),
        None => Check::absent(
            "git",
            true,
            "git is not installed",
            "apt-get install git / dnf install git",
        ),
    }
}

/// The interpreters a runtime pin can choose, per cartridge.
fn interpreter_checks() -> Vec<Check> {
    use crate::ingear::runtime_pin::{nodes, pythons, Interpreter};
    let line = |name: &str, found: Vec<Interpreter>, fix: &str| {
        if found.is_empty() {
            return Check::warn(
                name,
                "no interpreter installed: apps of this cartridge cannot build",
                fix,
            );
        }
        let list: Vec<String> = found
            .iter()
            .map(|i| format!("{} ({})", i.version, i.path.display()))
            .collect();
        Check::ok(name, format!("runtime pins can choose {}", list.join(", ")))
    };
    vec![
        line(
            "python interpreters",
            pythons(),
            "apt-get install python3.X / dnf install python3.X",
        ),
        line(
            "node interpreters",
            nodes(),
            "install a nodejs package from NodeSource (https://github.com/nodesource/distributions)",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctor_formats_aligned_lines() {
        let checks = vec![
            Check::ok("git", "git version 2.43.0"),
            Check::absent(
                "firewall",
                true,
                "neither nft nor iptables",
                "apt-get install nftables / dnf install nftables",
            ),
            Check::warn("selinux", "disabled", "optional"),
        ];
        let s = format_report(&checks);
        assert_eq!(
            s,
            "ok       git       git version 2.43.0\n\
             missing  firewall  neither nft nor iptables  fix: apt-get install nftables / dnf install nftables\n\
             warn     selinux   disabled                  fix: optional\n"
        );
        assert_eq!(exit_code(&checks), 1);
        assert_eq!(exit_code(&checks[..1]), 0);
        let j = serde_json::to_value(&checks).unwrap();
        assert_eq!(j[1]["status"], "missing");
        assert_eq!(j[0]["fix"], serde_json::Value::Null);
        assert_eq!(j[2]["name"], "selinux");
    }
}
