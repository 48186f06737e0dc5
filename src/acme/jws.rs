//! The ACME account key and the JSON Web Signatures (RFC 7515, ES256) every request carries.
//! The key is ECDSA P-256, kept as PKCS#8 in a root-only file and signed with ring (rustls'
//! own provider, already in the binary).

use anyhow::{anyhow, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use std::path::Path;

/// base64url without padding, as JOSE uses it.
pub fn b64(data: impl AsRef<[u8]>) -> String {
    B64.encode(data)
}

/// The account's signing key.
pub struct AccountKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl AccountKey {
    /// Loads the key at `path`, or makes a new one there (0600) when there is none.
    pub fn load_or_create(path: &Path) -> Result<AccountKey> {
        let rng = SystemRandom::new();
        let pkcs8 = match std::fs::read(path) {
            Ok(der) => der,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| anyhow!("cannot generate an ACME account key"))?;
                crate::state::write_atomic(path, doc.as_ref(), 0o600)?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read the ACME account key {}", path.display())),
        };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).map_err(|_| {
            anyhow!(
                "the ACME account key {} is not a P-256 PKCS#8 key (remove it: a new account is made)",
                path.display()
            )
        })?;
        Ok(AccountKey { pair, rng })
    }

    /// The public key as a JWK, members in the lexicographic order its thumbprint needs.
    pub fn jwk(&self) -> serde_json::Value {
        // An uncompressed point: 0x04, then x and y, 32 bytes each.
        let p = self.pair.public_key().as_ref();
        serde_json::json!({"crv": "P-256", "kty": "EC", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
    }

    /// The JWK thumbprint (RFC 7638), base64url: the second half of every key authorization.
    pub fn thumbprint(&self) -> String {
        let j = self.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            j["x"].as_str().unwrap_or_default(),
            j["y"].as_str().unwrap_or_default()
        );
        b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
    }

    /// The HTTP-01 answer for `token`: `token.thumbprint`.
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.thumbprint())
    }

    /// A flattened JWS of `payload` (None: an empty payload, a POST-as-GET) for `url`, naming
    /// the account by `kid` once it has one, else carrying the public key itself.
    pub fn sign(
        &self,
        url: &str,
        nonce: &str,
        kid: Option<&str>,
        payload: Option<&serde_json::Value>,
    ) -> Result<String> {
        let mut protected = serde_json::json!({"alg": "ES256", "nonce": nonce, "url": url});
        match kid {
            Some(k) => protected["kid"] = k.into(),
            None => protected["jwk"] = self.jwk(),
        }
        let protected = b64(protected.to_string());
        let payload = payload.map(|p| b64(p.to_string())).unwrap_or_default();
        let sig = self
            .pair
            .sign(&self.rng, format!("{protected}.{payload}").as_bytes())
            .map_err(|_| anyhow!("cannot sign an ACME request"))?;
        Ok(serde_json::json!({"protected": protected, "payload": payload, "signature": b64(sig)}).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    #[test]
    fn a_signature_verifies_with_the_jwk_and_the_key_is_kept() {
        let dir = std::env::temp_dir().join(format!("gs-jws-{}", std::process::id()));
        let path = dir.join("account.key");
        let k = AccountKey::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = AccountKey::load_or_create(&path).unwrap();
        assert_eq!(k.thumbprint(), again.thumbprint(), "the same key is loaded back");

        let jws: serde_json::Value = serde_json::from_str(
            &k.sign("https://x/acct", "n1", None, Some(&serde_json::json!({"a": 1})))
                .unwrap(),
        )
        .unwrap();
        let (p, pl, s) = (
            jws["protected"].as_str().unwrap(),
            jws["payload"].as_str().unwrap(),
            jws["signature"].as_str().unwrap(),
        );
        let head: serde_json::Value = serde_json::from_slice(&B64.decode(p).unwrap()).unwrap();
        assert_eq!(
            (head["alg"].as_str(), head["nonce"].as_str(), head["url"].as_str()),
            (Some("ES256"), Some("n1"), Some("https://x/acct"))
        );
        let (x, y) = (
            B64.decode(head["jwk"]["x"].as_str().unwrap()).unwrap(),
            B64.decode(head["jwk"]["y"].as_str().unwrap()).unwrap(),
        );
        let point = [&[4u8][..], &x, &y].concat();
        let sig = B64.decode(s).unwrap();
        assert_eq!(sig.len(), 64, "ES256 is r||s, 32 bytes each");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            .verify(format!("{p}.{pl}").as_bytes(), &sig)
            .expect("the signature verifies with the JWK's key");

        let by_kid: serde_json::Value =
            serde_json::from_str(&k.sign("u", "n2", Some("https://x/acct/1"), None).unwrap()).unwrap();
        assert_eq!(by_kid["payload"], "", "POST-as-GET has an empty payload");
        let head: serde_json::Value =
            serde_json::from_slice(&B64.decode(by_kid["protected"].as_str().unwrap()).unwrap()).unwrap();
        assert!(head["jwk"].is_null() && head["kid"] == "https://x/acct/1");
        assert!(k.key_authorization("tok").starts_with("tok.") && k.thumbprint().len() == 43);
        let _ = std::fs::remove_dir_all(dir);
    }
}
