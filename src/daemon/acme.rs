//! The daemon's ACME thread: obtains a certificate for every host that wants one (`domain add
//! APP HOST --acme`, or every host with `acme.enabled`), renews it `acme.renew_days` before it
//! expires, backs off after a failure (`acme::store::backoff`) unless `domain renew` asks
//! again, and records each attempt as a `domain.acme` event. The certificate and key are
//! written where `domain cert` writes them, so the route feeder serves them without a restart;
//! the old ones keep serving until a new pair is in place.

use crate::acme::{self, store, Client};
use crate::app::{self, App};
use crate::node::events::{self, Event};
use crate::node::Node;
use crate::router::Challenges;
use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often everything is looked at although nothing on disk changed (expiry, backoff).
const PASS_EVERY: Duration = Duration::from_secs(600);

/// One host that gets its certificate over ACME.
#[derive(Debug, Clone, PartialEq)]
struct Wanted {
    app: String,
    owner: Option<String>,
    host: String,
}

/// The hosts of `apps` whose certificate comes over ACME.
fn wanted(node: &Node, apps: &[App]) -> Vec<Wanted> {
    let mut out = Vec::new();
    for a in apps {
        for host in app::domain::hosts(node, a) {
            if app::domain::by_acme(node, a, &host) {
                out.push(Wanted {
                    app: a.name.clone(),
                    owner: a.owner.clone(),
                    host,
                });
            }
        }
    }
    out
}

/// Whether `w` needs an attempt now, and whether it is a renewal (a certificate is there).
fn due(node: &Node, w: &Wanted, now: u64) -> Option<bool> {
    let st = store::status(node, &w.app, &w.host).unwrap_or_default();
    let cert = std::fs::read(app::domain::cert_paths(node, &w.app, &w.host).0).ok();
    let not_after = cert.as_deref().and_then(|c| acme::expiry::not_after(c).ok());
    let asked = store::renew_requested(node, &w.app, &w.host);
    let window = node.config.acme.renew_days * 86_400;
    attempt_now(not_after, window, st.next_try, asked, now).then_some(not_after.is_some())
}

/// The renewal rule: asked for (`domain renew`) at once; else with no certificate, or one
/// that expires within `window` seconds, once the backoff (`next_try`) has passed.
fn attempt_now(not_after: Option<u64>, window: u64, next_try: u64, asked: bool, now: u64) -> bool {
    let expiring = not_after.is_none_or(|t| now + window >= t);
    asked || (expiring && next_try <= now)
}

/// Obtains and installs a certificate for `w`; what goes into its event.
fn attempt(node: &Node, client: &mut Option<Client>, w: &Wanted, challenges: &Challenges) -> Result<u64> {
    let c = &node.config.acme;
    if client.is_none() {
        store::ensure_dir(node)?;
        *client = Some(Client::connect(
            &c.directory,
            c.ca_bundle.as_deref(),
            &store::account_key(node),
        )?);
    }
    let Some(cl) = client.as_mut() else {
        anyhow::bail!("no ACME client");
    };
    let issued = cl.obtain(c.email.as_deref(), std::slice::from_ref(&w.host), challenges)?;
    // Checked as `domain cert` checks a bundle (the key belongs to the leaf) before it replaces
    // the pair that serves now.
    let bundle = [&issued.chain_pem[..], b"\n", &issued.key_pem[..]].concat();
    app::cert_bundle::split(&bundle, "acme").context("the ACME server's certificate is unusable")?;
    let not_after = acme::expiry::not_after(&issued.chain_pem)?;
    // The order took a while: an app destroyed or a host removed meanwhile gets nothing.
    let still = app::load(node, &w.app).is_ok_and(|a| app::domain::by_acme(node, &a, &w.host));
    anyhow::ensure!(
        still,
        "{} no longer serves {}: the certificate was not kept",
        w.app,
        w.host
    );
    let (cp, kp) = app::domain::cert_paths(node, &w.app, &w.host);
    crate::state::write_atomic(&kp, &issued.key_pem, 0o600)?;
    crate::state::write_atomic(&cp, &issued.chain_pem, 0o600)?;
    Ok(not_after)
}

/// One look at every wanted host: attempts for those due.
fn pass(node: &Node, challenges: &Challenges) {
    let Ok(apps) = app::list(node) else {
        return;
    };
    let mut client = None;
    for w in wanted(node, &apps) {
        let now = crate::clock::now();
        let Some(renewal) = due(node, &w, now) else {
            continue;
        };
        let mut st = store::status(node, &w.app, &w.host).unwrap_or_default();
        st.last_attempt = now;
        let result = attempt(node, &mut client, &w, challenges);
        // A renew request is answered by this attempt, whatever its result.
        store::clear_renew(node, &w.app, &w.host);
        let action = if renewal { "renew" } else { "issue" };
        let detail = match &result {
            Ok(not_after) => {
                // A CA that issues certificates shorter than the renewal window is not asked
                // again at every pass: once a day at most.
                let window = node.config.acme.renew_days * 86_400;
                let next_try = if now + window >= *not_after { now + 86_400 } else { 0 };
                st = store::Status {
                    not_after: Some(*not_after),
                    last_attempt: now,
                    next_try,
                    ..store::Status::default()
                };
                serde_json::json!({"host": w.host, "action": action, "result": "ok", "not_after": crate::clock::iso(*not_after)})
            }
            Err(e) => {
                st.failures += 1;
                st.next_try = now + store::backoff(st.failures);
                st.last_error = Some(format!("{e:#}"));
                // A connection that failed is made again for the next host.
                client = None;
                serde_json::json!({
                    "host": w.host, "action": action, "result": "failed", "error": format!("{e:#}"),
                    "failures": st.failures, "next_try": crate::clock::iso(st.next_try),
                    "serving": if renewal { "the previous certificate" } else { "a self-signed certificate" },
                })
            }
        };
        if let Err(e) = store::save_status(node, &w.app, &w.host, &st) {
            eprintln!("gearshift daemon: {e:#}");
        }
        let e = Event::new("domain.acme", "gearshift").app(&w.app, w.owner.as_deref());
        events::record(node, e.detail(detail));
    }
}

/// Starts the thread. It looks again within a second when an app record or a renew request
/// changes (both are written by a rename into their directory), and every ten minutes.
pub fn start(node: Node, challenges: Arc<Challenges>, stop: Arc<AtomicBool>) -> Result<()> {
    std::thread::Builder::new().name("acme".into()).spawn(move || {
        let mtimes = || {
            let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            (m(&node.apps_dir()), m(&store::dir(&node)))
        };
        let mut last: Option<(_, Instant)> = None;
        while !stop.load(Ordering::Relaxed) {
            let seen = mtimes();
            if last
                .as_ref()
                .is_none_or(|(m, at)| *m != seen || at.elapsed() > PASS_EVERY)
            {
                pass(&node, &challenges);
                last = Some((seen, Instant::now()));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::attempt_now;

    #[test]
    fn renewal_waits_for_the_window_and_the_backoff_unless_asked() {
        let (day, now) = (86_400, 1_000_000_000);
        let window = 30 * day;
        assert!(attempt_now(None, window, 0, false, now), "no certificate yet");
        assert!(
            !attempt_now(Some(now + 60 * day), window, 0, false, now),
            "60 days left"
        );
        assert!(attempt_now(Some(now + 29 * day), window, 0, false, now), "29 days left");
        assert!(attempt_now(Some(now - 1), window, 0, false, now), "expired");
        assert!(
            !attempt_now(Some(now + day), window, now + 300, false, now),
            "backing off"
        );
        assert!(
            !attempt_now(None, window, now + 300, false, now),
            "backing off, none yet"
        );
        assert!(
            attempt_now(Some(now + 60 * day), window, now + 300, true, now),
            "asked: at once"
        );
    }
}
