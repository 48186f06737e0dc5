//! `gearshift domain ...`: the host names an app is served at (besides APP.DOMAIN), their TLS
//! certificates, and the HTTP to HTTPS redirect.

use crate::app::{self, cert_bundle};
use crate::node::Node;
use crate::ssh::auth::Actor;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// `gearshift domain ...`
#[derive(Debug, clap::Subcommand)]
pub enum DomainCmd {
    /// Serve the app at another host name too; `--acme`: with a certificate obtained (and
    /// renewed) over ACME, answered by the router on port 80.
    Add {
        app: String,
        name: String,
        #[arg(long)]
        acme: bool,
    },
    /// Stop serving the app at a host name.
    Remove { app: String, name: String },
    /// The host names of an app.
    List {
        app: String,
        #[arg(long)]
        json: bool,
    },
    /// Use the certificate chain and key (one PEM stream on stdin, at most 64 KiB) for a host
    /// name of the app (default: self-signed): `domain cert APP HOST < bundle.pem`.
    Cert { app: String, name: String },
    /// Renew the ACME certificate of a host name now (after a failure, or to test renewal).
    Renew { app: String, name: String },
    /// Redirect plain HTTP to HTTPS for the app (`on` or `off`).
    Redirect { app: String, state: String },
}

/// Checks a host name: lowercase DNS labels separated by dots, at most 253 characters.
pub fn check_host(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if !ok {
        bail!(
            "'{}' is not a host name (lowercase labels of a-z, 0-9 and '-', separated by dots)",
            name.escape_default()
        );
    }
    Ok(())
}

/// Where an app's certificate and key for a host name are kept (root only). The app's name is
/// part of the file name: a certificate belongs to the app it was installed for, and is never
/// served to another app that adds the same host name later.
pub fn cert_paths(node: &Node, app: &str, host: &str) -> (PathBuf, PathBuf) {
    let d = node.root().join("certs");
    (d.join(format!("{app}@{host}.crt")), d.join(format!("{app}@{host}.key")))
}

/// Deletes an app's certificates and keys, and what ACME kept of them: for one host name, or
/// (None) for all of them.
pub fn forget_certs(node: &Node, app: &str, host: Option<&str>) -> Result<()> {
    crate::acme::store::forget(node, app, host);
    let dir = node.root().join("certs");
    let prefix = format!("{app}@");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(h) = rest.strip_suffix(".crt").or_else(|| rest.strip_suffix(".key")) else {
            continue;
        };
        if host.is_none_or(|want| want == h) {
            std::fs::remove_file(e.path()).with_context(|| format!("cannot remove {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Whether `host` of `a` gets its certificate over ACME: asked for with `domain add --acme`,
/// or with `acme.enabled` every host but `localhost` names (no public CA issues for them) and
/// those with a certificate from `domain cert` (a file without an ACME status).
pub fn by_acme(node: &Node, a: &app::App, host: &str) -> bool {
    if a.acme.iter().any(|h| h == host) {
        return true;
    }
    let local = host == "localhost" || host.ends_with(".localhost");
    let manual =
        || cert_paths(node, &a.name, host).0.exists() && crate::acme::store::status(node, &a.name, host).is_none();
    node.config.acme.enabled && !local && !manual()
}

/// How a host's ACME certificate stands, for `domain list`; None: it is not obtained over ACME.
fn acme_line(node: &Node, a: &app::App, host: &str) -> Option<String> {
    if !by_acme(node, a, host) {
        return None;
    }
    let st = crate::acme::store::status(node, &a.name, host).unwrap_or_default();
    let mut line = match st.not_after {
        Some(t) => format!("acme: valid until {}", crate::clock::iso(t)),
        None => "acme: pending".to_string(),
    };
    if let Some(e) = &st.last_error {
        line.push_str(&format!(
            "; last attempt failed: {e} (next try {})",
            crate::clock::iso(st.next_try)
        ));
    }
    Some(line)
}

/// Every host name an app answers to.
pub fn hosts(node: &Node, a: &app::App) -> Vec<String> {
    let mut h = vec![format!("{}.{}", a.name, node.config.domain)];
    h.extend(a.aliases.iter().cloned());
    h
}

pub fn run(node: &Node, actor: &Actor, cmd: DomainCmd) -> Result<()> {
    match cmd {
        DomainCmd::Add {
            app: name,
            name: host,
            acme,
        } => {
            check_host(&host)?;
            let _lock = node.lock()?;
            // `--acme` for a host the app already answers to switches it to ACME.
            let mut own = false;
            for other in app::list(node)? {
                if hosts(node, &other).contains(&host) {
                    if !(acme && other.name == name) {
                        bail!("{host} is already served by an app");
                    }
                    own = true;
                }
            }
            drop(_lock);
            app::update(node, actor, &name, |a| {
                if own && a.acme.contains(&host) {
                    bail!("{host} already gets its certificate over ACME (`gearshift domain renew {name} {host}` renews it now)");
                }
                if !own {
                    a.aliases.push(host.clone());
                }
                if acme {
                    a.acme.push(host.clone());
                }
                Ok(())
            })?;
            println!(
                "{name} is served at {} too",
                crate::node::address::http_url(&node.config, &host)
            );
            if acme {
                println!(
                    "its certificate is being obtained over ACME from {} (`gearshift domain list {name}` shows it; `gearshift events --app {name}` each attempt)",
                    node.config.acme.directory
                );
            }
        }
        DomainCmd::Remove { app: name, name: host } => {
            app::update(node, actor, &name, |a| {
                let before = a.aliases.len();
                a.aliases.retain(|h| *h != host);
                a.acme.retain(|h| *h != host);
                if a.aliases.len() == before {
                    bail!("{host} is not an alias of {name}");
                }
                Ok(())
            })?;
            // Its certificate and key go with it.
            forget_certs(node, &name, Some(&host))?;
        }
        DomainCmd::List { app: name, json } => {
            let a = app::load_for(node, actor, &name)?;
            let h = hosts(node, &a);
            if json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                for x in h {
                    match acme_line(node, &a, &x) {
                        Some(tls) => println!("{x}  {tls}"),
                        None => println!("{x}"),
                    }
                }
            }
        }
        DomainCmd::Cert { app: name, name: host } => {
            let a = app::load_for(node, actor, &name)?;
            if !hosts(node, &a).contains(&host) {
                bail!("{host} is not a host name of {name} (see `gearshift domain list {name}`)");
            }
            let usage = format!("domain cert {name} {host} < bundle.pem");
            let bundle = cert_bundle::read_capped(std::io::stdin().lock(), &usage)?;
            let (c, k) = cert_bundle::split(&bundle, &usage)?;
            // A browser would refuse a certificate for other names: refused here, not served.
            if let Err(e) = cert_bundle::check_host(&c, &host) {
                bail!("{e:#}; nothing was installed ({usage})");
            }
            let (cp, kp) = cert_paths(node, &name, &host);
            // A certificate given by hand replaces ACME for this host.
            if a.acme.contains(&host) {
                app::update(node, actor, &name, |a| {
                    a.acme.retain(|h| *h != host);
                    Ok(())
                })?;
            }
            crate::state::write_atomic(&kp, &k, 0o600)?;
            crate::state::write_atomic(&cp, &c, 0o600)?;
            crate::acme::store::forget(node, &name, Some(&host));
            println!("{host} uses the certificate from stdin");
        }
        DomainCmd::Renew { app: name, name: host } => {
            let a = app::load_for(node, actor, &name)?;
            if !hosts(node, &a).contains(&host) {
                bail!("{host} is not a host name of {name} (see `gearshift domain list {name}`)");
            }
            if acme_line(node, &a, &host).is_none() {
                bail!("{host} has no ACME certificate (add it with `gearshift domain add {name} {host} --acme`, or set acme.enabled in the node config)");
            }
            crate::acme::store::request_renew(node, &name, &host)?;
            println!("{host}: a new certificate is being obtained over ACME (`gearshift events --app {name}` shows the result)");
        }
        DomainCmd::Redirect { app: name, state } => {
            let on = match state.as_str() {
                "on" => true,
                "off" => false,
                _ => bail!("redirect takes `on` or `off`"),
            };
            app::update(node, actor, &name, |a| {
                a.https_redirect = on;
                Ok(())
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_names() {
        for ok in ["shop.example.com", "a.b", "x1-2.io", "localhost"] {
            super::check_host(ok).unwrap();
        }
        for bad in [
            "",
            "Shop.com",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "a b",
            "ä.com",
            &"a".repeat(64),
        ] {
            assert!(super::check_host(bad).is_err(), "{bad}");
        }
    }
}
