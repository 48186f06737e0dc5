//! What an SSH user may create on this node (`[limits]` in the node config): how many apps,
//! and of which profiles. Root at the console and admins are not limited.

use crate::node::config::UserLimits;
use crate::node::Node;
use crate::ssh::auth::Actor;
use anyhow::{bail, Result};

/// Refuses a new app of `profile` (None: the node's default) for `actor` when it is over the
/// node's per-user limits, saying what to do instead.
pub fn check_new_app(node: &Node, actor: &Actor, profile: Option<&str>) -> Result<()> {
    let Some(user) = actor.user.as_deref().filter(|_| !actor.admin) else {
        return Ok(());
    };
    let owned = super::list(node)?
        .iter()
        .filter(|a| a.owner.as_deref() == Some(user))
        .count();
    let profile = profile.unwrap_or(&node.config.default_profile);
    if let Some(why) = refusal(&node.config.limits, user, owned, profile) {
        bail!("{why}");
    }
    Ok(())
}

/// Why `user`, who owns `owned` apps, may not create one more of `profile` (None: they may).
fn refusal(l: &UserLimits, user: &str, owned: usize, profile: &str) -> Option<String> {
    if l.max_apps_per_user > 0 && owned >= l.max_apps_per_user {
        return Some(format!(
            "cannot create another app: user '{user}' has {owned} app(s), the most this node allows \
             (limits.max_apps_per_user = {}); destroy one (`app destroy APP --confirm APP`) or ask an admin",
            l.max_apps_per_user
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
        assert_eq!(refusal(&none, "al", 1000, "large"), None);
        let l = UserLimits {
            max_apps_per_user: 2,
            user_profiles: vec!["small".into()],
        };
        assert_eq!(refusal(&l, "al", 1, "small"), None);
        let e = refusal(&l, "al", 2, "small").unwrap();
        assert!(
            e.contains("user 'al' has 2 app(s)") && e.contains("max_apps_per_user = 2"),
            "{e}"
        );
        let e = refusal(&l, "al", 0, "large").unwrap();
        assert!(
            e.contains("profile 'large'") && e.contains("choose one of small"),
            "{e}"
        );
    }
}
