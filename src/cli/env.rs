//! `gearshift env ...`: the user's own environment variables of an app. A change restarts the
//! app with the new values.

use super::dotenv;
use crate::app;
use crate::gear::reserved_env;
use crate::node::Node;
use crate::ssh::auth::Actor;
use anyhow::{bail, Context, Result};

/// `gearshift env ...`
#[derive(Debug, clap::Subcommand)]
pub enum EnvCmd {
    /// Set variables: `env set APP KEY=VALUE...`.
    Set {
        app: String,
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// Set the variables of a `.env` file read from stdin (`KEY=VALUE` lines).
    Import { app: String },
    /// Remove variables: `env unset APP KEY...`.
    Unset {
        app: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List the app's own variables.
    List {
        app: String,
        #[arg(long)]
        json: bool,
    },
}

/// Checks a variable name: `[A-Za-z_][A-Za-z0-9_]*`, not one gearshift sets.
pub fn check_key(k: &str) -> Result<()> {
    let ok = !k.is_empty()
        && k.len() <= 128
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!(
            "'{}' is not a variable name (letters, digits and _; not starting with a digit)",
            k.escape_default()
        );
    }
    if reserved_env(k) {
        bail!("{k} is set by gearshift and cannot be changed");
    }
    Ok(())
}

fn parse_pair(p: &str) -> Result<(String, String)> {
    let Some((k, v)) = p.split_once('=') else {
        bail!("'{}' is not KEY=VALUE", p.escape_default())
    };
    check_pair(k, v.to_string())
}

fn check_pair(k: &str, v: String) -> Result<(String, String)> {
    check_key(k)?;
    if v.contains('\0') || v.len() > 32 * 1024 {
        bail!("the value of {k} is too long or contains NUL");
    }
    Ok((k.to_string(), v))
}

/// Largest `.env` accepted on stdin.
const MAX_IMPORT: u64 = 256 * 1024;

/// Reads and checks a `.env` from stdin; nothing is imported unless every line is right.
fn read_import() -> Result<Vec<(String, String)>> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_IMPORT + 1)
        .read_to_string(&mut text)
        .context("cannot read the .env from stdin (it must be UTF-8 text)")?;
    if text.len() as u64 > MAX_IMPORT {
        bail!("the .env on stdin is larger than {} KiB", MAX_IMPORT / 1024);
    }
    let pairs = dotenv::parse(&text).context("nothing imported")?;
    if pairs.is_empty() {
        bail!("no KEY=VALUE lines on stdin: send the file, like `env import APP < .env`");
    }
    pairs
        .into_iter()
        .map(|(k, v)| check_pair(&k, v))
        .collect::<Result<Vec<_>>>()
        .context("nothing imported")
}

pub fn run(node: &Node, actor: &Actor, cmd: EnvCmd) -> Result<()> {
    match cmd {
        EnvCmd::Set { app, pairs } => {
            let parsed = pairs.iter().map(|p| parse_pair(p)).collect::<Result<Vec<_>>>()?;
            app::set_env(node, actor, &app, |env| {
                env.extend(parsed);
                Ok(())
            })
        }
        EnvCmd::Import { app } => {
            let parsed = read_import()?;
            let n = parsed.len();
            app::set_env(node, actor, &app, |env| {
                env.extend(parsed);
                Ok(())
            })?;
            println!("imported {n} variable{}", if n == 1 { "" } else { "s" });
            Ok(())
        }
        EnvCmd::Unset { app, keys } => app::set_env(node, actor, &app, |env| {
            for k in &keys {
                if env.remove(k).is_none() {
                    bail!("{k} is not set");
                }
            }
            Ok(())
        }),
        EnvCmd::List { app, json } => {
            let a = app::load_for(node, actor, &app)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a.env)?);
            } else {
                for (k, v) in &a.env {
                    println!("{k}={v}");
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_pairs() {
        assert!(parse_pair("A=1").is_ok());
        assert_eq!(parse_pair("DB_URL=postgres://x=y").unwrap().1, "postgres://x=y");
        for bad in [
            "=1",
            "1A=2",
            "A-B=1",
            "PORT=1",
            "OPENSHIFT_APP_NAME=x",
            "HOME=/",
            "A",
            "Ä=1",
        ] {
            assert!(parse_pair(bad).is_err(), "{bad}");
        }
    }
}
