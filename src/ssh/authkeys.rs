//! `gearshift auth-keys`: sshd's `AuthorizedKeysCommand`. It runs as the unprivileged login
//! user, so it asks the daemon (which can read the root-only user and app files) for the lines.
//!
//! Every key gets a forced command naming its user, and port forwarding limited to the gears of
//! that user's apps (`permitopen`), or none at all.

use crate::daemon::proto::{self, FromDaemon, ToDaemon};
use crate::node::Node;
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The port gear web processes listen on, reachable through `ssh -L` for their owner.
pub const GEAR_PORT: u16 = 8080;

/// One authorized_keys line: the forced `ssh-entry` command and the restrictions.
pub fn line(bin: &Path, socket: &Path, user: &str, key_line: &str, gear_ips: &[Ipv4Addr]) -> String {
    // The key's fingerprint names who did what in the event log (`SHA256:` and base64: no
    // character that needs quoting).
    let key = crate::ssh::key::PublicKey::parse(key_line)
        .map(|k| format!(" --key {}", k.fingerprint()))
        .unwrap_or_default();
    let mut opts = vec![
        format!(
            "command=\"{} ssh-entry --socket {} --user {user}{key}\"",
            bin.display(),
            socket.display()
        ),
        "no-agent-forwarding".to_string(),
        "no-X11-forwarding".to_string(),
        "no-user-rc".to_string(),
    ];
    if gear_ips.is_empty() {
        opts.push("no-port-forwarding".into());
    } else {
        opts.extend(gear_ips.iter().map(|ip| format!("permitopen=\"{ip}:{GEAR_PORT}\"")));
    }
    format!("{} {key_line}", opts.join(","))
}

/// Every app record that can be read, tolerating damaged ones (with a warning each).
fn apps_tolerant(node: &Node, warnings: &mut Vec<String>) -> Vec<crate::app::App> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(node.apps_dir()) else {
        return out;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".toml") && !n.starts_with('.') {
            match crate::state::read_toml::<crate::app::App>(&e.path()) {
                Ok(a) => out.push(a),
                Err(err) => warnings.push(format!("skipped app file: {err:#}")),
            }
        }
    }
    out
}

/// The whole authorized_keys text for the node (computed by the daemon, as root).
pub fn authorized_keys(node: &Node, bin: &Path, socket: &Path) -> (String, Vec<String>) {
    let (users, mut warnings) = crate::ssh::user::list_tolerant(node);
    let apps = apps_tolerant(node, &mut warnings);
    let mut text = String::new();
    for u in &users {
        let mut ips: Vec<Ipv4Addr> = apps
            .iter()
            .filter(|a| a.owner.as_deref() == Some(u.name.as_str()))
            .flat_map(|a| a.gears.iter().map(|g| g.ip))
            .collect();
        ips.sort();
        ips.dedup();
        for k in &u.keys {
            // Re-parse so that only a canonical single-line key is ever printed.
            match k.public_key() {
                Ok(p) => {
                    text.push_str(&line(bin, socket, &u.name, &p.to_line(), &ips));
                    text.push('\n');
                }
                Err(e) => warnings.push(format!("skipped a key of user '{}': {e:#}", u.name)),
            }
        }
    }
    (text, warnings)
}

/// The daemon's socket for a node.
pub fn socket_path(node: &Node) -> std::path::PathBuf {
    node.run_dir().join("daemon.sock")
}

/// `gearshift auth-keys USER`: prints the authorized_keys lines when USER is the login user.
pub fn run(config_path: &Path, user: &str) -> Result<i32> {
    let node = Node::load(config_path)?;
    if user != node.config.ssh_user {
        return Ok(0);
    }
    let sock_path = socket_path(&node);
    let sock = UnixStream::connect(&sock_path).with_context(|| {
        format!(
            "cannot reach the gearshift daemon at {} (is `gearshift daemon` running?)",
            sock_path.display()
        )
    })?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))?;
    proto::send(&sock, &ToDaemon::AuthorizedKeys, &[])?;
    match proto::read_reply::<FromDaemon>(&sock)? {
        FromDaemon::Keys { text, warnings } => {
            for w in warnings {
                eprintln!("gearshift auth-keys: warning: {w}");
            }
            print!("{text}");
            Ok(0)
        }
        FromDaemon::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let bin = Path::new("/run/gearshift/n1/gearshift");
        let sock = Path::new("/var/lib/gs/run/daemon.sock");
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 bob@laptop";
        assert_eq!(
            line(bin, sock, "bob", key, &[]),
            "command=\"/run/gearshift/n1/gearshift ssh-entry --socket /var/lib/gs/run/daemon.sock --user bob\",\
             no-agent-forwarding,no-X11-forwarding,no-user-rc,no-port-forwarding ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 bob@laptop"
        );
        let l = line(
            bin,
            sock,
            "bob",
            key,
            &[Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 3)],
        );
        assert!(l.contains(",permitopen=\"10.77.0.2:8080\",permitopen=\"10.77.0.3:8080\" ssh-ed25519 "));
        assert!(!l.contains("no-port-forwarding"));
    }
}
