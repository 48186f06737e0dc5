//! `app.json` (Heroku's and Dokku's app manifest): the parts gearshift acts on, parsed strictly
//! with serde_json (wrong JSON or a wrong type fails the push) after dropping the `//` comment
//! lines that Dokku tolerates. Other keys (name, env, addons ...) are allowed and ignored.

use super::healthcheck::Healthcheck;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct AppJson {
    #[serde(default)]
    pub scripts: Scripts,
    /// Process type -> how many (`{"worker": {"quantity": 1}}`).
    #[serde(default)]
    pub formation: BTreeMap<String, Formation>,
    /// Scheduled jobs (Dokku's `[{"command": "...", "schedule": "*/5 * * * *"}]`).
    #[serde(default)]
    pub cron: Vec<CronEntry>,
    /// Process type -> its checks (Dokku's format; `web`'s `startup` ones gate a switch).
    #[serde(default)]
    pub healthchecks: BTreeMap<String, Vec<Healthcheck>>,
}

impl AppJson {
    /// The checks that gate a switch of the web process (`healthchecks.web`, type `startup`).
    pub fn startup_checks(&self) -> Vec<&Healthcheck> {
        self.healthchecks
            .get("web")
            .into_iter()
            .flatten()
            .filter(|c| c.is_startup())
            .collect()
    }

    /// Refuses what gearshift cannot honour (see [`Healthcheck::validate`]).
    pub fn validate(&self) -> Result<()> {
        for c in self.healthchecks.values().flatten() {
            c.validate().context("app.json")?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct CronEntry {
    pub command: String,
    pub schedule: String,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Scripts {
    #[serde(default)]
    pub dokku: DokkuScripts,
    /// Heroku's: runs after the switch of the app's first deployment only.
    pub postdeploy: Option<HerokuScript>,
}

/// A Heroku script: a command, or `{"command": "...", "size": "..."}`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum HerokuScript {
    Command(String),
    Object { command: String },
}

impl HerokuScript {
    pub fn command(&self) -> &str {
        match self {
            HerokuScript::Command(c) | HerokuScript::Object { command: c } => c,
        }
    }
}

#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct DokkuScripts {
    /// Runs in the new deployment after the build, before the switch; failing rejects the push.
    pub predeploy: Option<String>,
    /// Runs after the switch.
    pub postdeploy: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Formation {
    pub quantity: Option<u32>,
}

/// Drops lines whose first non-blank characters are `//` (never a `//` inside a line: it may
/// be part of a string, a URL).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| if l.trim_start().starts_with("//") { "" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses app.json's text.
pub fn parse(text: &str) -> Result<AppJson> {
    match serde_json::from_str::<AppJson>(&strip_comments(text)) {
        Ok(a) => a.validate().map(|_| a),
        Err(e) => bail!("app.json is not valid: {e} (fix it, or remove it; only whole-line // comments are allowed)"),
    }
}

/// The app.json of deployment `repo` (the default, all empty, without one).
pub fn read(repo: &Path) -> Result<AppJson> {
    match std::fs::read_to_string(repo.join("app.json")) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AppJson::default()),
        Err(e) => bail!("cannot read app.json: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_formation_with_comments_and_other_keys() {
        let a = parse(
            r#"{
  // Dokku tolerates comment lines
  "name": "shop", "repository": "https://example.com/shop",
  "env": {"SECRET": {"generator": "secret"}},
  "scripts": {"dokku": {"predeploy": "python manage.py migrate", "postdeploy": "echo done"}},
    // indented too
  "formation": {"web": {"quantity": 0}, "worker": {"quantity": 2, "size": "basic"}}
}"#,
        )
        .unwrap();
        assert_eq!(a.scripts.dokku.predeploy.as_deref(), Some("python manage.py migrate"));
        assert_eq!(a.scripts.dokku.postdeploy.as_deref(), Some("echo done"));
        assert_eq!(a.formation["web"].quantity, Some(0));
        assert_eq!(a.formation["worker"].quantity, Some(2));
        assert_eq!(parse("{}").unwrap(), AppJson::default());
    }

    #[test]
    fn malformed_or_mistyped_app_json_is_refused_with_where() {
        let e = |t: &str| format!("{:#}", parse(t).unwrap_err());
        let trailing = e("{\"scripts\": {},}");
        assert!(
            trailing.contains("app.json is not valid") && trailing.contains("line 1"),
            "{trailing}"
        );
        let typed = e(r#"{"scripts": {"dokku": {"predeploy": ["migrate"]}}}"#);
        assert!(typed.contains("invalid type"), "{typed}");
        assert!(e(r#"{"a": 1} // trailing comment"#).contains("not valid"));
        assert!(e(r#"{"formation": {"web": {"quantity": -1}}}"#).contains("not valid"));
        assert!(
            e(r#"{"healthchecks": {"web": [{"path": "/", "scheme": "https"}]}}"#).starts_with("app.json: healthcheck")
        );
        assert!(e(r#"{"scripts": {"postdeploy": 3}}"#).contains("not valid"));
    }

    #[test]
    fn heroku_postdeploy_in_both_forms_and_web_startup_checks() {
        let a = parse(r#"{"scripts": {"postdeploy": "rake db:seed"}}"#).unwrap();
        assert_eq!(a.scripts.postdeploy.unwrap().command(), "rake db:seed");
        let a = parse(r#"{"scripts": {"postdeploy": {"command": "seed", "size": "basic"}}}"#).unwrap();
        assert_eq!(a.scripts.postdeploy.unwrap().command(), "seed");
        let a = parse(
            r#"{"healthchecks": {"web": [{"type": "startup", "path": "/a"}, {"type": "liveness", "path": "/b"}, {"uptime": 2}],
                                "worker": [{"uptime": 3}]}}"#,
        )
        .unwrap();
        let paths: Vec<_> = a.startup_checks().iter().map(|c| c.label()).collect();
        assert_eq!(paths, ["GET /a", "uptime 2s"]);
        assert!(AppJson::default().startup_checks().is_empty());
    }
}
