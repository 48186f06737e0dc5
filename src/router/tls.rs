//! TLS: certificates by host (SNI), configured or self-signed per app on demand, and the rustls config.

use anyhow::{anyhow, Context, Result};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Tells the certificate resolver which app serves a host and all of that app's hosts.
pub type HostLookup = Arc<dyn Fn(&str) -> Option<(String, Vec<String>)> + Send + Sync>;

/// A self-signed certificate and the hosts it covers.
type Generated = (Vec<String>, Arc<CertifiedKey>);

/// Certificates by host name: configured ones (`gearshift domain cert`), plus self-signed ones generated
/// per app the first time a client asks for one of its hosts.
#[derive(Debug, Default)]
pub struct CertStore {
    configured: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// Self-signed, by app name.
    generated: Mutex<HashMap<String, Generated>>,
    fallback: Mutex<Option<Arc<CertifiedKey>>>,
}

impl CertStore {
    /// An empty store: every app gets a self-signed certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `cert_pem` (a chain, leaf first) with `key_pem` for each of `hosts`.
    pub fn add_pem(&self, hosts: &[&str], cert_pem: &[u8], key_pem: &[u8]) -> Result<()> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .context("cannot read the certificate PEM")?;
        if chain.is_empty() {
            anyhow::bail!("the certificate PEM holds no certificate");
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).context("cannot read the private key PEM")?;
        let signer = any_supported_type(&key).map_err(|e| anyhow!("unsupported private key: {e}"))?;
        let ck = Arc::new(CertifiedKey::new(chain, signer));
        ck.keys_match()
            .map_err(|e| anyhow!("the key does not match the certificate: {e}"))?;
        let mut map = self.configured.write().unwrap_or_else(|e| e.into_inner());
        for h in hosts {
            map.insert(h.to_ascii_lowercase(), ck.clone());
        }
        Ok(())
    }

    /// Forgets the configured certificate of `host` (it falls back to self-signed).
    pub fn remove(&self, host: &str) {
        self.configured
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&host.to_ascii_lowercase());
    }

    /// The self-signed certificate of `app`, covering `hosts`, generated when missing or outdated.
    pub fn self_signed(&self, app: &str, hosts: &[String]) -> Result<Arc<CertifiedKey>> {
        let mut gen = self.generated.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((covered, ck)) = gen.get(app) {
            if hosts.iter().all(|h| covered.contains(h)) {
                return Ok(ck.clone());
            }
        }
        let ck = generate(hosts.to_vec())?;
        gen.insert(app.to_string(), (hosts.to_vec(), ck.clone()));
        Ok(ck)
    }

    fn fallback(&self) -> Option<Arc<CertifiedKey>> {
        let mut f = self.fallback.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = generate(vec!["gearshift.invalid".to_string()]).ok();
        }
        f.clone()
    }

    /// The certificate for `sni` (None: no SNI), asking `lookup` which app serves it.
    pub fn resolve_host(&self, sni: Option<&str>, lookup: &HostLookup) -> Option<Arc<CertifiedKey>> {
        let Some(host) = sni.map(str::to_ascii_lowercase) else {
            return self.fallback();
        };
        if let Some(ck) = self.configured.read().unwrap_or_else(|e| e.into_inner()).get(&host) {
            return Some(ck.clone());
        }
        // Only hosts the router serves get a generated certificate: arbitrary SNI names cannot fill memory.
        match lookup(&host) {
            Some((app, hosts)) => self.self_signed(&app, &hosts).ok(),
            None => self.fallback(),
        }
    }
}

/// A new self-signed ECDSA P-256 certificate for `names`.
fn generate(names: Vec<String>) -> Result<Arc<CertifiedKey>> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).context("cannot generate a self-signed certificate")?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let signer = any_supported_type(&key).map_err(|e| anyhow!("generated key unusable: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)))
}

/// The SNI resolver rustls calls during each handshake.
struct SniResolver {
    store: Arc<CertStore>,
    lookup: HostLookup,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.store.resolve_host(hello.server_name(), &self.lookup)
    }
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN http/1.1) resolving by SNI.
pub fn server_config(store: Arc<CertStore>, lookup: HostLookup) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { store, lookup }));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The exposed admin listener's configuration: `bundle` (a PEM chain, leaf first, and its key)
/// serves `host`, through the same store and resolver as the apps' hosts.
pub fn admin_tls(bundle: &[u8], host: &str) -> Result<Arc<ServerConfig>> {
    let store = Arc::new(CertStore::new());
    store.add_pem(&[host], bundle, bundle)?;
    server_config(store, Arc::new(|_: &str| None))
}
