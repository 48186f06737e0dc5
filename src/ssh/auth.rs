//! Who is asking: root at the console, or a user who came in over SSH. Every verb that touches
//! an app checks the actor may manage it.

use anyhow::{bail, Result};

/// The identity a command runs for.
#[derive(Debug, Clone, PartialEq)]
pub struct Actor {
    /// None for root at the node's console.
    pub user: Option<String>,
    pub admin: bool,
    /// The fingerprint of the SSH key the user logged in with, when known.
    pub key: Option<String>,
}

impl Actor {
    /// Root on the node itself: may do everything.
    pub fn root() -> Actor {
        Actor {
            user: None,
            admin: true,
            key: None,
        }
    }

    /// A gearshift user (over SSH).
    pub fn user(name: &str, admin: bool) -> Actor {
        Actor {
            user: Some(name.to_string()),
            admin,
            key: None,
        }
    }

    /// The same actor, logged in with the key of fingerprint `key`.
    pub fn with_key(mut self, key: Option<String>) -> Actor {
        self.key = key;
        self
    }

    /// Who did something, for the event log: `root` at the console, else the SSH user.
    pub fn who(&self) -> String {
        self.user.clone().unwrap_or_else(|| "root".to_string())
    }

    /// Whether this actor may manage something owned by `owner`.
    pub fn may_manage(&self, owner: Option<&str>) -> bool {
        self.admin || (self.user.is_some() && self.user.as_deref() == owner)
    }

    /// Fails with the same message whether the app is missing or someone else's, so that users
    /// cannot probe for other users' app names.
    pub fn check_app(&self, app: &str, owner: Option<&str>) -> Result<()> {
        if !self.may_manage(owner) {
            bail!("unknown app '{app}' (see `gearshift app list`)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership() {
        assert!(Actor::root().may_manage(Some("bob")));
        assert!(Actor::root().may_manage(None));
        assert!(Actor::user("bob", false).may_manage(Some("bob")));
        assert!(!Actor::user("eve", false).may_manage(Some("bob")));
        assert!(!Actor::user("eve", false).may_manage(None));
        assert!(Actor::user("ann", true).may_manage(Some("bob")));
        let e = Actor::user("eve", false)
            .check_app("shop", Some("bob"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown app 'shop' (see `gearshift app list`)");
    }
}
