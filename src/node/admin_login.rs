//! The login of the exposed admin port (`admin_listen`): one password, kept as a salted
//! Argon2id hash (PHC string) in `<data_root>/admin.htpasswd` (`admin:HASH`, 0600 root), checked
//! against HTTP Basic credentials. Argon2 (RustCrypto's `argon2`, pure Rust) builds into the
//! static binary and is slow to brute-force by design.

use crate::app::cert_bundle;
use crate::node::Node;
use anyhow::{bail, Context, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use std::path::PathBuf;

/// The only user name of the admin login.
pub const USER: &str = "admin";

/// `<data_root>/admin.htpasswd`.
pub fn path(node: &Node) -> PathBuf {
    node.root().join("admin.htpasswd")
}

/// `<data_root>/admin.pem`: the admin host's certificate chain and key, root-only.
pub fn cert_path(node: &Node) -> PathBuf {
    node.root().join("admin.pem")
}

/// The file's line for `password`, freshly salted.
pub fn line_for(password: &str) -> Result<String> {
    if password.len() < 12 {
        bail!("the admin password is too short: use at least 12 characters");
    }
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| anyhow::anyhow!("cannot encode the salt: {e}"))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    Ok(format!("{USER}:{hash}\n"))
}

/// Sets the admin password (root's console only: `gearshift node admin-password`, the password
/// on stdin's first line).
pub fn set(node: &Node, password: &str) -> Result<()> {
    let line = line_for(password.trim_end_matches(['\r', '\n']))?;
    crate::state::write_atomic(&path(node), line.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path(node).display()))
}

/// How `gearshift node admin-cert` is used, for its errors.
const CERT_USAGE: &str = "gearshift node admin-cert < admin.pem";

/// Installs the exposed admin port's certificate (root's console only: `gearshift node
/// admin-cert`, the chain, leaf first, and its key as PEM on `input`): capped, checked (the
/// key is the certificate's; the certificate names `admin_host`, when that is set) before it
/// replaces `admin.pem` atomically, 0600. Returns the host it is for, if known.
pub fn set_cert(node: &Node, input: impl std::io::Read) -> Result<Option<String>> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "gearshift node admin-cert must run as root: {} is root's only",
            cert_path(node).display()
        );
    }
    let bundle = cert_bundle::read_capped(input, CERT_USAGE)?;
    let (chain, key) = cert_bundle::split(&bundle, CERT_USAGE)?;
    let host = node.config.admin_host.clone();
    if let Some(h) = &host {
        if let Err(e) = cert_bundle::check_host(&chain, h) {
            bail!("{e:#} (admin_host in {})", node.config_path.display());
        }
    }
    let pem = [chain, key].concat();
    crate::state::write_atomic(&cert_path(node), &pem, 0o600)
        .with_context(|| format!("cannot write {}", cert_path(node).display()))?;
    Ok(host)
}

/// The stored hash, or why the exposed admin port cannot start.
pub fn load(node: &Node) -> Result<String> {
    let p = path(node);
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "admin_listen is set but there is no admin password ({}): set one with `gearshift node admin-password`",
            p.display()
        )
    })?;
    let hash = text.trim().strip_prefix(&format!("{USER}:")).unwrap_or("");
    PasswordHash::new(hash)
        .map_err(|e| anyhow::anyhow!("{} holds no usable hash ({e}): set the password again", p.display()))?;
    Ok(hash.to_string())
}

/// Whether an `Authorization` header's value is Basic credentials of the admin user matching
/// `hash`.
pub fn allows(hash: &str, authorization: Option<&str>) -> bool {
    let Some(b64) = authorization.and_then(|a| a.strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    let Some((user, password)) = std::str::from_utf8(&raw).ok().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    user == USER && Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s))
    }

    #[test]
    fn only_the_right_password_of_admin_passes() {
        let line = line_for("correct horse battery").unwrap();
        let hash = line.trim().strip_prefix("admin:").unwrap();
        assert!(allows(hash, Some(&basic("admin:correct horse battery"))));
        assert!(!allows(hash, Some(&basic("admin:wrong horse battery"))));
        assert!(!allows(hash, Some(&basic("root:correct horse battery"))));
        assert!(!allows(hash, None));
        assert!(!allows(hash, Some("Bearer x")));
        assert!(line_for("short").is_err());
        // Salted: the same password hashes differently.
        assert_ne!(line, line_for("correct horse battery").unwrap());
    }
}
