//! What an SSH user may create on this node (`[limits]` in the node config): how many apps,
//! how many add-ons (each counted against its own limit), and of which profiles. Root at the
//! console and admins are not limited.

use crate::node::config::UserLimits;
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::state;
use anyhow::{bail, Result};

/// What a user asks to create.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Creation {
    App,
    Addon,
}

impl Creation {
    fn noun(self) -> &'static str {
        match self {
            Creation::App => "app",
            Creation::Addon => "add-on",
        }
    }

    /// The most of these one user may own (0: no limit), and the key that sets it.
    fn limit(self, l: &UserLimits) -> (usize, &'static str) {
        match self {
            Creation::App => (l.max_apps_per_user, "max_apps_per_user"),
            Creation::Addon => (l.max_addons_per_user, "max_addons_per_user"),
        }
    }

    fn destroy_hint(self) -> &'static str {
        match self {
            Creation::App => "`app destroy APP --confirm APP`",
            Creation::Addon => "`addon destroy NAME --confirm NAME`",
        }
    }
}

/// An add-on record, as far as admission reads it (`app` does not know the add-on type).
#[derive(serde::Deserialize)]
struct OwnerOf {
    #[serde(default)]
    owner: Option<String>,
}

/// Refuses a new `what` of `profile` (None: the node's default) for `actor` when it is over the
/// node's per-user limits, saying what to do instead. Call it with the node lock held, so two
/// creates cannot both pass.
pub fn check_new(node: &Node, actor: &Actor, what: Creation, profile: Option<&str>) -> Result<()> {
    let Some(user) = actor.user.as_deref().filter(|_| !actor.admin) else {
        return Ok(());
    };
    let owners: Vec<Option<String>> = match what {
        Creation::App => super::list(node)?.into_iter().map(|a| a.owner).collect(),
        Creation::Addon => state::records(&node.addons_dir())?
            .iter()
            .map(|(_, p)| state::read_toml::<OwnerOf>(p).map(|r| r.owner))
            .collect::<Result<_>>()?,
    };
    let owned = owners.iter().filter(|o| o.as_deref() == Some(user)).count();
    let profile = profile.unwrap_or(&node.config.default_profile);
    if let Some(why) = refusal(&node.config.limits, what, user, owned, profile) {
        bail!("{why}");
    }
    Ok(())
}

/// Why `user`, who owns `owned` of `what`, may not create one more of `profile` (None: they may).
fn refusal(l: &UserLimits, what: Creation, user: &str, owned: usize, profile: &str) -> Option<String> {
    let (max, key) = what.limit(l);
    let noun = what.noun();
    if max > 0 && owned >= max {
        return Some(format!(
            "cannot create another {noun}: user '{user}' has {owned} {noun}(s), the most this node allows \
             (limits.{key} = {max}); destroy one ({}) or ask an admin",
            what.destroy_hint()
        ));
    }
    if !l.user_profiles.is_empty() && !l.user_profiles.iter().any(|p| p == profile) {
        return Some(format!(
            "profile '{profile}' is not open to users on this node (limits.user_profiles): choose one of {} \
             with --profile, or ask an admin",
            l.user_profiles.join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let none = UserLimits::default();
        assert_eq!(refusal(&none, Creation::App, "al", 1000, "large"), None);
        assert_eq!(refusal(&none, Creation::Addon, "al", 1000, "large"), None);
        let l = UserLimits {
            max_apps_per_user: 2,
            max_addons_per_user: 1,
            user_profiles: vec!["small".into()],
        };
        assert_eq!(refusal(&l, Creation::App, "al", 1, "small"), None);
        let e = refusal(&l, Creation::App, "al", 2, "small").unwrap();
        assert!(
            e.contains("user 'al' has 2 app(s)") && e.contains("max_apps_per_user = 2"),
            "{e}"
        );
        let e = refusal(&l, Creation::App, "al", 0, "large").unwrap();
        assert!(
            e.contains("profile 'large'") && e.contains("choose one of small"),
            "{e}"
        );
        // Apps and add-ons are counted apart.
        assert_eq!(refusal(&l, Creation::Addon, "al", 0, "small"), None);
        let e = refusal(&l, Creation::Addon, "al", 1, "small").unwrap();
        assert!(
            e.contains("another add-on: user 'al' has 1 add-on(s)")
                && e.contains("limits.max_addons_per_user = 1")
                && e.contains("addon destroy"),
            "{e}"
        );
        let e = refusal(&l, Creation::Addon, "al", 0, "large").unwrap();
        assert!(e.contains("profile 'large' is not open to users"), "{e}");
    }
}
