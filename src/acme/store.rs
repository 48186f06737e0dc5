//! What the node keeps of ACME, all root-only under `<data_root>/acme/` (0700): the account
//! key, one status file per host (`APP@HOST.json`: expiry, failures, next try, last error;
//! never a secret), and the renew requests `domain renew` leaves (`APP@HOST.renew`). The
//! certificates themselves go where `domain cert` puts them (`app::domain::cert_paths`).

use crate::node::Node;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where everything of ACME is kept.
pub fn dir(node: &Node) -> PathBuf {
    node.root().join("acme")
}

/// Makes the directory, root-only.
pub fn ensure_dir(node: &Node) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let d = dir(node);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)
        .with_context(|| format!("cannot create {}", d.display()))?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} root-only", d.display()))?;
    Ok(d)
}

/// The account key (PKCS#8, 0600).
pub fn account_key(node: &Node) -> PathBuf {
    dir(node).join("account.key")
}

fn file(node: &Node, app: &str, host: &str, ext: &str) -> PathBuf {
    dir(node).join(format!("{app}@{host}.{ext}"))
}

/// Where a host's certificate stands, as the daemon last left it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// When the certificate served expires (Unix seconds); None: none obtained yet.
    #[serde(default)]
    pub not_after: Option<u64>,
    /// Failed attempts since the last success.
    #[serde(default)]
    pub failures: u32,
    /// No attempt before this time (Unix seconds) unless a renew is asked for.
    #[serde(default)]
    pub next_try: u64,
    /// The last attempt's time and, when it failed, why.
    #[serde(default)]
    pub last_attempt: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// The status of `host` of `app`; None: ACME has never worked on it.
pub fn status(node: &Node, app: &str, host: &str) -> Option<Status> {
    let text = std::fs::read(file(node, app, host, "json")).ok()?;
    serde_json::from_slice(&text).ok()
}

pub fn save_status(node: &Node, app: &str, host: &str, s: &Status) -> Result<()> {
    ensure_dir(node)?;
    crate::state::write_atomic(&file(node, app, host, "json"), &serde_json::to_vec_pretty(s)?, 0o600)
}

/// Asks the daemon to renew `host` of `app` now, whatever its expiry and backoff.
pub fn request_renew(node: &Node, app: &str, host: &str) -> Result<()> {
    ensure_dir(node)?;
    crate::state::write_atomic(&file(node, app, host, "renew"), b"", 0o600)
}

/// Whether a renew was asked for.
pub fn renew_requested(node: &Node, app: &str, host: &str) -> bool {
    file(node, app, host, "renew").exists()
}

/// Takes the renew request away (once an attempt was made).
pub fn clear_renew(node: &Node, app: &str, host: &str) {
    let _ = std::fs::remove_file(file(node, app, host, "renew"));
}

/// Forgets everything of `host` of `app` (None: of every host of the app).
pub fn forget(node: &Node, app: &str, host: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(dir(node)) else {
        return;
    };
    let prefix = format!("{app}@");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let h = rest.strip_suffix(".json").or_else(|| rest.strip_suffix(".renew"));
        if h.is_some_and(|h| host.is_none_or(|want| want == h)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// How long to wait after the `failures`-th failure in a row: 5 minutes, doubling, at most a day.
pub fn backoff(failures: u32) -> u64 {
    (300u64 << failures.saturating_sub(1).min(10)).min(86_400)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_up_to_a_day() {
        let b: Vec<u64> = (1..=10).map(super::backoff).collect();
        assert_eq!(&b[..5], &[300, 600, 1200, 2400, 4800]);
        assert!(b.windows(2).all(|w| w[1] >= w[0]) && b[9] == 86_400);
    }
}
