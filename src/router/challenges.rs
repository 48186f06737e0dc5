//! ACME HTTP-01 answers (`/.well-known/acme-challenge/TOKEN`) the router gives for a host on
//! plain HTTP, whatever app serves it (running, idle or none): the daemon's ACME client puts
//! them here while an order waits for validation and takes them out after.

use std::collections::HashMap;
use std::sync::RwLock;

/// Where HTTP-01 challenges are fetched.
pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// The key authorizations by (host, token).
#[derive(Debug, Default)]
pub struct Challenges(RwLock<HashMap<(String, String), String>>);

impl Challenges {
    /// Answers `token` for `host` with `key_authorization` from now on.
    pub fn put(&self, host: &str, token: &str, key_authorization: &str) {
        let mut m = self.0.write().unwrap_or_else(|e| e.into_inner());
        m.insert(
            (host.to_ascii_lowercase(), token.to_string()),
            key_authorization.to_string(),
        );
    }

    /// Stops answering `token` for `host`.
    pub fn remove(&self, host: &str, token: &str) {
        let mut m = self.0.write().unwrap_or_else(|e| e.into_inner());
        m.remove(&(host.to_ascii_lowercase(), token.to_string()));
    }

    /// The answer to a request for `path` at `host`, when it asks for a challenge put here.
    pub fn answer(&self, host: &str, path: &str) -> Option<String> {
        let token = path.strip_prefix(PREFIX)?;
        let m = self.0.read().unwrap_or_else(|e| e.into_inner());
        if m.is_empty() {
            return None;
        }
        m.get(&(host.to_ascii_lowercase(), token.to_string())).cloned()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_host_and_token_put_are_answered() {
        let c = super::Challenges::default();
        c.put("Shop.Example", "tok", "tok.thumb");
        assert_eq!(
            c.answer("shop.example", "/.well-known/acme-challenge/tok").as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(c.answer("other.example", "/.well-known/acme-challenge/tok"), None);
        assert_eq!(c.answer("shop.example", "/.well-known/acme-challenge/tok2"), None);
        assert_eq!(c.answer("shop.example", "/tok"), None);
        c.remove("shop.example", "tok");
        assert_eq!(c.answer("shop.example", "/.well-known/acme-challenge/tok"), None);
    }
}
