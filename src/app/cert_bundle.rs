//! A TLS certificate bundle as `domain cert` takes it: one PEM stream on stdin (the chain,
//! leaf first, and its private key), never a path root would open for the caller. Capped
//! before it is parsed, and checked with rustls (the router's own parser) before it is kept.

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read;

/// The most a bundle may hold: a chain of a few certificates and a key fit in a few KiB.
pub const MAX_BYTES: usize = 64 * 1024;

/// Reads the bundle from `input`, refusing it (without reading on) once it passes MAX_BYTES.
/// `usage` is the command as the user types it.
pub fn read_capped(input: impl Read, usage: &str) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    input
        .take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut data)
        .context("cannot read the certificate bundle from stdin")?;
    if data.len() > MAX_BYTES {
        bail!(
            "the certificate bundle on stdin is larger than {} KiB: send only the PEM certificate chain and its key (`{usage}`)",
            MAX_BYTES / 1024
        );
    }
    if data.iter().all(u8::is_ascii_whitespace) {
        bail!("no certificate on stdin: send the PEM certificate chain and its key (`{usage}`)");
    }
    Ok(data)
}

/// Splits a PEM bundle into (certificate chain, private key), each as PEM text, and checks
/// that both parse and that the key belongs to the first certificate.
pub fn split(bundle: &[u8], usage: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let text = std::str::from_utf8(bundle).context("the certificate bundle is not PEM text")?;
    let (mut certs, mut keys) = (String::new(), Vec::new());
    let mut block: Option<String> = None;
    for line in text.lines().map(str::trim_end) {
        if line.starts_with("-----BEGIN ") {
            block = Some(String::new());
        }
        if let Some(b) = &mut block {
            b.push_str(line);
            b.push('\n');
        }
        if line.starts_with("-----END ") {
            let b = block.take().unwrap_or_default();
            if line == "-----END CERTIFICATE-----" {
                certs.push_str(&b);
            } else if line.ends_with("PRIVATE KEY-----") {
                keys.push(b);
            }
        }
    }
    let chain: Vec<CertificateDer> = CertificateDer::pem_slice_iter(certs.as_bytes())
        .collect::<Result<_, _>>()
        .context("a certificate in the bundle is not valid PEM")?;
    if chain.is_empty() {
        bail!("no certificate (BEGIN CERTIFICATE) in the bundle on stdin (`{usage}`)");
    }
    let key = match keys.as_slice() {
        [k] => k.clone(),
        [] => bail!("no private key (BEGIN ... PRIVATE KEY) in the bundle on stdin (`{usage}`)"),
        _ => bail!(
            "the bundle holds {} private keys: send the one of the certificate",
            keys.len()
        ),
    };
    let der =
        PrivateKeyDer::from_pem_slice(key.as_bytes()).context("the private key in the bundle is not valid PEM")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .context("the private key in the bundle is of a kind the router cannot use")?;
    rustls::sign::CertifiedKey::new(chain, signer)
        .keys_match()
        .context("the private key does not belong to the first certificate of the bundle")?;
    Ok((certs.into_bytes(), key.into_bytes()))
}

/// Checks that the first certificate of `chain` (PEM, as `split` returns it) is valid for
/// `host`: a browser would refuse it otherwise.
pub fn check_host(chain: &[u8], host: &str) -> Result<()> {
    let leaf = CertificateDer::pem_slice_iter(chain)
        .next()
        .context("no certificate in the bundle")?
        .context("a certificate in the bundle is not valid PEM")?;
    let parsed = rustls::server::ParsedCertificate::try_from(&leaf)
        .map_err(|e| anyhow::anyhow!("cannot read the first certificate of the bundle: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host).with_context(|| format!("{host:?} is not a host name"))?;
    rustls::client::verify_server_name(&parsed, &name).map_err(|_| {
        anyhow::anyhow!("the first certificate of the bundle is not for {host}: send one whose names include it")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> (String, String) {
        let k = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&k)
            .unwrap();
        (c.pem(), k.serialize_pem())
    }

    #[test]
    fn a_bundle_splits_into_chain_and_key() {
        let (c, k) = bundle();
        let (certs, key) = split(format!("{k}\n{c}").as_bytes(), "u").unwrap();
        assert_eq!(String::from_utf8(certs).unwrap().trim(), c.trim());
        assert_eq!(String::from_utf8(key).unwrap().trim(), k.trim());
    }

    #[test]
    fn a_certificate_is_checked_for_its_host() {
        let (c, _) = bundle();
        check_host(c.as_bytes(), "a.example").unwrap();
        let e = check_host(c.as_bytes(), "b.example").unwrap_err().to_string();
        assert!(e.contains("not for b.example"), "{e}");
    }

    #[test]
    fn bad_bundles_are_refused() {
        let (c, k) = bundle();
        let (_, other_key) = bundle();
        for (bad, why) in [
            (c.clone(), "no private key"),
            (k.clone(), "no certificate"),
            (format!("{c}{other_key}"), "does not belong"),
            (format!("{c}{k}{k}"), "2 private keys"),
        ] {
            let e = format!("{:#}", split(bad.as_bytes(), "u").unwrap_err());
            assert!(e.contains(why), "{why}: {e}");
        }
        let big = vec![b'A'; MAX_BYTES + 10];
        let e = read_capped(&big[..], "u").unwrap_err().to_string();
        assert!(e.contains("larger than 64 KiB"), "{e}");
        assert!(read_capped(&b" \n"[..], "u").is_err());
    }
}
