//! `app scale`'s quantities: `web=2 worker=1` (or a bare `2`, meaning web), kept in the app
//! record so they survive restarts and pushes. Web's quantity is the number of web gears (the
//! record keeps `web` only when it is 0: an app without web); another type's is its number of
//! processes in gear 0.

use super::scale::MAX_GEARS;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// The most processes of one non-web type.
pub const MAX_PROCESSES: u32 = 10;

/// Parses `TYPE=N ...` (or one bare N, which is web's).
pub fn parse(specs: &[String]) -> Result<Vec<(String, u32)>> {
    if let [one] = specs {
        if let Ok(n) = one.parse::<u32>() {
            return Ok(vec![("web".into(), check("web", n)?)]);
        }
    }
    let mut out: Vec<(String, u32)> = Vec::new();
    for spec in specs {
        let Some((t, n)) = spec.split_once('=') else {
            bail!("'{spec}' is not TYPE=N: write e.g. web=2 worker=1 (or one number, for web)");
        };
        let valid =
            !t.is_empty() && t.len() <= 63 && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            bail!("'{t}' is not a process type name (letters, digits, - and _, like web or worker)");
        }
        if t == "release" {
            bail!("release runs once per push, not as a process: it cannot be scaled");
        }
        let Ok(n) = n.parse::<u32>() else {
            bail!("'{n}' in '{spec}' is not a number of processes");
        };
        if out.iter().any(|(o, _)| o == t) {
            bail!("{t} is given twice");
        }
        out.push((t.to_string(), check(t, n)?));
    }
    Ok(out)
}

fn check(t: &str, n: u32) -> Result<u32> {
    let max = if t == "web" { MAX_GEARS } else { MAX_PROCESSES };
    if n > max {
        bail!("{t}={n}: at most {max}");
    }
    Ok(n)
}

/// Records the asked quantities in the app's formation.
pub fn apply(formation: &mut BTreeMap<String, u32>, asked: &[(String, u32)]) {
    for (t, n) in asked {
        if t == "web" && *n > 0 {
            formation.remove("web");
        } else {
            formation.insert(t.clone(), *n);
        }
    }
}

/// What the app runs now, as `app scale` reports it.
pub fn describe(app: &str, gears: usize, formation: &BTreeMap<String, u32>) -> String {
    let web = if formation.get("web") == Some(&0) { 0 } else { gears };
    let mut out = format!("'{app}' runs web={web}");
    for (t, n) in formation.iter().filter(|(t, _)| *t != "web") {
        out += &format!(" {t}={n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn bare_number_is_web_and_types_are_type_equals_n() {
        assert_eq!(parse(&specs("3")).unwrap(), [("web".to_string(), 3)]);
        assert_eq!(
            parse(&specs("web=2 worker=1")).unwrap(),
            [("web".to_string(), 2), ("worker".to_string(), 1)]
        );
        for (bad, says) in [
            ("worker", "not TYPE=N"),
            ("a.b=1", "not a process type name"),
            ("worker=x", "not a number"),
            ("worker=1 worker=2", "given twice"),
            ("web=17", "at most 16"),
            ("worker=11", "at most 10"),
            ("release=1", "cannot be scaled"),
            ("2 3", "not TYPE=N"),
        ] {
            let e = format!("{:#}", parse(&specs(bad)).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_record_keeps_web_only_when_zero() {
        let mut f = BTreeMap::new();
        apply(&mut f, &parse(&specs("web=0 worker=2")).unwrap());
        assert_eq!(describe("shop", 1, &f), "'shop' runs web=0 worker=2");
        apply(&mut f, &parse(&specs("web=3")).unwrap());
        assert_eq!(f, BTreeMap::from([("worker".to_string(), 2)]));
        assert_eq!(describe("shop", 3, &f), "'shop' runs web=3 worker=2");
    }
}
