//! A snapshot's domains: the host names are in the app's record (`app.json`), their
//! certificates and keys (root's own files) are members `cert-N.crt` and `cert-N.key`. A restore
//! puts back every host name no other app serves (beside the original, `--as NEW` gets none),
//! with its certificate, root-only.

use super::format::{CertEntry, Manifest};
use super::scratch::Scratch;
use crate::app::{self, domain};
use crate::node::Node;
use anyhow::{Context, Result};

/// Copies the certificate and key of each of the app's host names that has one into the
/// scratch directory.
pub fn save(node: &Node, s: &Scratch, a: &app::App) -> Result<Vec<CertEntry>> {
    let mut out = Vec::new();
    for (i, host) in a.aliases.iter().enumerate() {
        let (crt, key) = domain::cert_paths(node, &a.name, host);
        if !crt.exists() || !key.exists() {
            continue;
        }
        let entry = CertEntry {
            host: host.clone(),
            cert: format!("cert-{i}.crt"),
            key: format!("cert-{i}.key"),
        };
        for (from, to) in [(&crt, &entry.cert), (&key, &entry.key)] {
            let mut f = std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
            std::io::copy(&mut f, &mut s.create(to)?).with_context(|| format!("cannot copy {}", from.display()))?;
        }
        out.push(entry);
    }
    Ok(out)
}

/// The host names of the snapshot's app that app TARGET may take (no other app serves them),
/// with their certificates written (root-only); the others are named on stderr.
pub fn restore(node: &Node, s: &Scratch, m: &Manifest, rec: &app::App, target: &str) -> Result<Vec<String>> {
    let others: Vec<app::App> = app::list(node)?.into_iter().filter(|o| o.name != target).collect();
    let mut kept = Vec::new();
    for host in &rec.aliases {
        domain::check_host(host).context("the snapshot's app record is damaged")?;
        if let Some(o) = others.iter().find(|o| domain::hosts(node, o).contains(host)) {
            eprintln!(
                "-----> domain {host} not restored: app '{}' serves it (`domain remove {} {host}`, then `domain add {target} {host}`)",
                o.name, o.name
            );
            continue;
        }
        kept.push(host.clone());
    }
    for c in m.certs.iter().filter(|c| kept.contains(&c.host)) {
        let (crt, key) = domain::cert_paths(node, target, &c.host);
        crate::state::write_atomic(&key, &std::fs::read(s.path(&c.key))?, 0o600)?;
        crate::state::write_atomic(&crt, &std::fs::read(s.path(&c.cert))?, 0o600)?;
    }
    Ok(kept)
}
