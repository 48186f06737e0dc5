//! Validation of the names users type: apps, users, node names.

use anyhow::{bail, Result};

/// App names are DNS labels: `[a-z][a-z0-9-]*`, at most 32, not ending in `-`.
pub fn check_app_name(name: &str) -> Result<()> {
    check_label("app", name, 32)
}

/// User names follow the same rule as app names.
pub fn check_user_name(name: &str) -> Result<()> {
    check_label("user", name, 32)
}

/// Node names also name cgroups, nftables tables and bridges.
pub fn check_node_name(name: &str) -> Result<()> {
    check_label("node", name, 32)
}

fn check_label(what: &str, name: &str, max: usize) -> Result<()> {
    let shown: String = name.chars().take(40).flat_map(char::escape_default).collect();
    if name.is_empty() {
        bail!("{what} name must not be empty");
    }
    if name.len() > max {
        bail!("{what} name '{shown}' is too long: at most {max} characters");
    }
    let first = name.as_bytes()[0];
    if !first.is_ascii_lowercase() {
        bail!("{what} name '{shown}' must start with a lowercase letter (a-z)");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        bail!(
            "{what} name '{shown}' contains '{}': use only a-z, 0-9 and '-'",
            c.escape_default()
        );
    }
    if name.ends_with('-') {
        bail!("{what} name '{shown}' must not end with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for ok in ["a", "shop", "my-app-2", &"a".repeat(32)] {
            check_app_name(ok).unwrap();
        }
        for bad in [
            "",
            "1app",
            "-x",
            "x-",
            "Shop",
            "a_b",
            "a.b",
            "a b",
            "../x",
            "a\nb",
            &"a".repeat(33),
            "ünï",
        ] {
            assert!(check_app_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
