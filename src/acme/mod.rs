//! A small synchronous ACME client (RFC 8555): one account, HTTP-01 challenges answered by the
//! router (`router::Challenges`), a fresh P-256 key per certificate. Run by the daemon's ACME
//! thread (`daemon/acme.rs`); blocking HTTPS through ureq on rustls + ring, like the router.
//!
//! Why our own: `instant-acme` needs tokio and hyper; its synchronous fork `small-acme` builds
//! its own ureq 2 agent (no way to trust a test CA such as pebble's, and a second rustls);
//! `acme-lib`/`acme-micro` need OpenSSL, which breaks the static binary.

pub mod expiry;
mod jws;
pub mod store;

use crate::router::Challenges;
use anyhow::{bail, Context, Result};
use jws::AccountKey;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one order may take, from the new order to the certificate.
const ORDER_LIMIT: Duration = Duration::from_secs(120);

/// A certificate obtained: the chain (leaf first) and its private key, both PEM.
pub struct Issued {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// One session with an ACME server: its directory, our account, the last nonce it gave.
pub struct Client {
    agent: ureq::Agent,
    key: AccountKey,
    new_nonce: String,
    new_account: String,
    new_order: String,
    nonce: Option<String>,
    kid: Option<String>,
}

/// A response: its Location header, its body.
struct Reply {
    location: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).context("the ACME server's answer is not JSON")
    }
}

/// The trust roots for the ACME server's HTTPS: the bundled Mozilla roots, or only the PEM
/// certificates of `ca_bundle` (a test CA such as pebble's).
fn agent(ca_bundle: Option<&Path>) -> Result<ureq::Agent> {
    use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};
    let roots = match ca_bundle {
        None => RootCerts::WebPki,
        Some(p) => {
            let pem = std::fs::read(p).with_context(|| format!("cannot read acme.ca_bundle {}", p.display()))?;
            let certs: Vec<_> = parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                bail!("acme.ca_bundle {} holds no PEM certificate", p.display());
            }
            RootCerts::new_with_certs(&certs)
        }
    };
    let config = ureq::Agent::config_builder()
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .http_status_as_error(false)
        .https_only(true)
        .timeout_global(Some(Duration::from_secs(30)))
        .user_agent(concat!("gearshift/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(config.into())
}

/// The `type` and `detail` of an ACME problem document, for an error message.
fn problem(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let t = v["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("urn:ietf:params:acme:error:");
    let d = v["detail"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    (t.to_string(), d)
}

impl Client {
    /// Reads the directory at `directory` and loads (or makes) the account key at `key_path`.
    pub fn connect(directory: &str, ca_bundle: Option<&Path>, key_path: &Path) -> Result<Client> {
        let agent = agent(ca_bundle)?;
        let dir = agent
            .get(directory)
            .call()
            .and_then(|r| r.into_body().read_to_vec())
            .with_context(|| format!("cannot read the ACME directory {directory}"))?;
        let dir: Value =
            serde_json::from_slice(&dir).with_context(|| format!("{directory} is not an ACME directory"))?;
        let url = |k: &str| -> Result<String> {
            dir[k]
                .as_str()
                .map(String::from)
                .with_context(|| format!("the ACME directory {directory} has no {k}"))
        };
        Ok(Client {
            new_nonce: url("newNonce")?,
            new_account: url("newAccount")?,
            new_order: url("newOrder")?,
            agent,
            key: AccountKey::load_or_create(key_path)?,
            nonce: None,
            kid: None,
        })
    }

    fn fresh_nonce(&mut self) -> Result<String> {
        if let Some(n) = self.nonce.take() {
            return Ok(n);
        }
        let r = self
            .agent
            .head(&self.new_nonce)
            .call()
            .context("cannot reach the ACME server for a nonce")?;
        r.headers()
            .get("replay-nonce")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .context("the ACME server gave no Replay-Nonce")
    }

    /// POSTs a signed `payload` (None: POST-as-GET) to `url`, again with a new nonce when the
    /// server says the one used was bad (servers may refuse any nonce now and then).
    fn post(&mut self, url: &str, payload: Option<&Value>) -> Result<Reply> {
        for _ in 0..5 {
            let nonce = self.fresh_nonce()?;
            let body = self.key.sign(url, &nonce, self.kid.as_deref(), payload)?;
            let r = self
                .agent
                .post(url)
                .header("Content-Type", "application/jose+json")
                .send(body.as_bytes())
                .with_context(|| format!("cannot reach the ACME server at {url}"))?;
            let header = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
            self.nonce = header("replay-nonce");
            let (status, location) = (r.status().as_u16(), header("location"));
            let body = r
                .into_body()
                .with_config()
                .limit(1 << 20)
                .read_to_vec()
                .context("cannot read the ACME server's answer")?;
            if status >= 400 {
                let (kind, detail) = problem(&body);
                if kind == "badNonce" {
                    continue;
                }
                bail!("the ACME server refused it ({status} {kind}): {detail}");
            }
            return Ok(Reply { location, body });
        }
        bail!("the ACME server refused 5 nonces in a row")
    }

    /// Registers the account (or finds it again: same key, same account), agreeing to the
    /// server's terms of service.
    fn account(&mut self, email: Option<&str>) -> Result<()> {
        let mut payload = json!({"termsOfServiceAgreed": true});
        if let Some(e) = email {
            payload["contact"] = json!([format!("mailto:{e}")]);
        }
        let url = self.new_account.clone();
        let r = self
            .post(&url, Some(&payload))
            .context("cannot register the ACME account")?;
        self.kid = Some(r.location.context("the ACME server named no account URL")?);
        Ok(())
    }

    /// POST-as-GET `url` until its `status` leaves `pending`/`processing` (or the deadline).
    fn poll(&mut self, url: &str, deadline: Instant) -> Result<Value> {
        let mut wait = Duration::from_millis(250);
        loop {
            let v = self.post(url, None)?.json()?;
            let s = v["status"].as_str().unwrap_or("");
            if !matches!(s, "pending" | "processing" | "ready") || Instant::now() > deadline {
                return Ok(v);
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Obtains a certificate for `hosts` (HTTP-01: the answers are put into `challenges`, which
    /// the router serves, and taken out again whatever happens).
    pub fn obtain(&mut self, email: Option<&str>, hosts: &[String], challenges: &Challenges) -> Result<Issued> {
        if self.kid.is_none() {
            self.account(email)?;
        }
        let deadline = Instant::now() + ORDER_LIMIT;
        let ids: Vec<Value> = hosts.iter().map(|h| json!({"type": "dns", "value": h})).collect();
        let url = self.new_order.clone();
        let r = self.post(&url, Some(&json!({"identifiers": ids})))?;
        let order_url = r.location.clone().context("the ACME server named no order URL")?;
        let order = r.json()?;
        let mut published = Vec::new();
        let answered = self.answer_all(&order, challenges, &mut published, deadline);
        for (host, token) in &published {
            challenges.remove(host, token);
        }
        answered?;
        let order = self.finalize(&order, &order_url, hosts, deadline)?;
        Ok(order)
    }

    /// Answers every pending authorization of `order` and waits until each is valid.
    fn answer_all(
        &mut self,
        order: &Value,
        challenges: &Challenges,
        published: &mut Vec<(String, String)>,
        deadline: Instant,
    ) -> Result<()> {
        let authzs: Vec<String> = (order["authorizations"].as_array().into_iter().flatten())
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        for az in &authzs {
            let a = self.post(az, None)?.json()?;
            if a["status"] == "valid" {
                continue;
            }
            let host = a["identifier"]["value"].as_str().unwrap_or("").to_string();
            let ch = (a["challenges"].as_array().into_iter().flatten())
                .find(|c| c["type"] == "http-01")
                .with_context(|| format!("the ACME server offers no http-01 challenge for {host}"))?;
            let (token, url) = (ch["token"].as_str().unwrap_or(""), ch["url"].as_str().unwrap_or(""));
            if token.is_empty() || !token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                bail!("the ACME server's http-01 token for {host} is not base64url");
            }
            challenges.put(&host, token, &self.key.key_authorization(token));
            published.push((host.clone(), token.to_string()));
            self.post(url, Some(&json!({})))?;
            let done = self.poll(az, deadline)?;
            if done["status"] != "valid" {
                let why = (done["challenges"].as_array().into_iter().flatten())
                    .find(|c| c["type"] == "http-01")
                    .and_then(|c| c["error"]["detail"].as_str().map(String::from))
                    .unwrap_or_else(|| format!("status {}", done["status"]));
                bail!("the http-01 challenge for {host} failed: {why}");
            }
        }
        Ok(())
    }

    /// Sends the CSR (a fresh P-256 key for `hosts`), waits for the certificate, downloads it.
    fn finalize(&mut self, order: &Value, order_url: &str, hosts: &[String], deadline: Instant) -> Result<Issued> {
        let key = rcgen::KeyPair::generate().context("cannot generate the certificate's key")?;
        let csr = rcgen::CertificateParams::new(hosts.to_vec())
            .and_then(|p| p.serialize_request(&key))
            .context("cannot make the certificate signing request")?;
        let finalize = order["finalize"]
            .as_str()
            .context("the ACME order has no finalize URL")?;
        self.post(finalize, Some(&json!({"csr": jws::b64(csr.der())})))?;
        let done = self.poll(order_url, deadline)?;
        let cert_url = match (done["status"].as_str(), done["certificate"].as_str()) {
            (Some("valid"), Some(u)) => u.to_string(),
            (s, _) => bail!("the ACME order did not complete (status {})", s.unwrap_or("?")),
        };
        let chain = self.post(&cert_url, None)?.body;
        expiry::not_after(&chain).context("the ACME server's certificate is not a PEM chain")?;
        Ok(Issued {
            chain_pem: chain,
            key_pem: key.serialize_pem().into_bytes(),
        })
    }
}
