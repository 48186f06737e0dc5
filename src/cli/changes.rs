//! The events the CLI's verbs record: one table from a verb that changes something (an app's
//! life and scale, its environment's names, add-ons, domains, users and keys) to the event its
//! success records, with who did it (`Actor`: root at the console, or the SSH user and the
//! key's fingerprint). `dispatch` records it once the verb succeeded (a rollback whatever its
//! outcome); a verb that only shows records nothing. Environment values never reach the log, only the names.
//!
//! Everything the event needs of the node (the owner, the open log) is read before the verb
//! runs: a verb that runs something in a gear leaves its process in the gear's namespaces,
//! where no path of the node may be opened.

use super::{addon::AddonCmd, app::AppCmd, env::EnvCmd};
use crate::app::domain::DomainCmd;
use crate::node::events::{self, Event};
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::ssh::user::{KeyCmd as K, UserCmd as U};
use serde_json::{json, Value};

/// What a verb changes, to be recorded once it succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: &'static str,
    /// The app it concerns.
    pub app: Option<String>,
    /// The add-on it concerns (its owner sees the event when no app is named).
    pub addon: Option<String>,
    /// Whose app or add-on it is (the creator's, for a create; else read by [`Change::read_owner`]).
    pub owner: Option<String>,
    pub detail: Value,
    /// Recorded whatever the outcome, with a `result` in the detail (a rollback's); else only
    /// once the verb succeeded.
    pub with_result: bool,
    /// The record of what it concerns was found before the verb.
    known: bool,
}

impl Change {
    fn new(kind: &'static str, app: Option<&str>, addon: Option<&str>, detail: Value) -> Change {
        Change {
            kind,
            app: app.map(String::from),
            addon: addon.map(String::from),
            owner: None,
            detail,
            with_result: false,
            known: false,
        }
    }

    /// Owned by `owner` (a create names it: there is no record yet).
    fn owned(mut self, owner: Option<String>) -> Change {
        self.owner = owner;
        self
    }

    /// Reads the owner of what it concerns from its record, unless known (before the verb:
    /// a destroyed app's record is gone after it).
    pub fn read_owner(mut self, node: &Node) -> Change {
        let found = match (&self.app, &self.addon) {
            (Some(app), _) => crate::app::load(node, app).ok().map(|a| a.owner),
            (None, Some(addon)) => crate::addon::load(node, addon).ok().map(|a| a.owner),
            (None, None) => None,
        };
        self.known = found.is_some();
        if self.owner.is_none() {
            self.owner = found.flatten();
        }
        self
    }

    /// Appends the event of a verb that ended with `outcome`, by `actor`, to the log opened
    /// before the verb.
    pub fn record(mut self, log: events::Opened, actor: &Actor, outcome: &anyhow::Result<i32>) {
        // A verb refused for someone else's (or no) app is nobody's event.
        if !self.known && !matches!(outcome, Ok(0)) || !actor.may_manage(self.owner.as_deref()) {
            return;
        }
        if self.with_result {
            self.detail["result"] = json!(match outcome {
                Ok(0) => "ok".to_string(),
                Ok(c) => format!("failed (exit code {c})"),
                Err(e) => format!("failed: {e:#}"),
            });
        } else if !matches!(outcome, Ok(0)) {
            return;
        }
        let mut e = Event::by(self.kind, actor);
        e.owner = self.owner;
        e.app = self.app;
        log.record(e.detail(self.detail));
    }
}

/// The verbs that may change something, as `dispatch` hands them over.
#[derive(Debug, Clone, Copy)]
pub enum Changing<'a> {
    App(&'a AppCmd),
    Env(&'a EnvCmd),
    Addon(&'a AddonCmd),
    Domain(&'a DomainCmd),
    User(&'a crate::ssh::user::UserCmd),
    Rollback { app: &'a str, id: &'a Option<String> },
}

/// The change `verb` makes when `actor` runs it (None: it only shows).
pub fn of(verb: Changing<'_>, actor: &Actor) -> Option<Change> {
    let creator = |owner: &Option<String>| super::app::owner_for(actor, owner.clone(), "app").ok().flatten();
    let app = |kind, name: &str, detail| Some(Change::new(kind, Some(name), None, detail));
    match verb {
        Changing::App(cmd) => match cmd {
            AppCmd::Create {
                name,
                cartridge,
                profile,
                owner,
            } => app("app.create", name, json!({"cartridge": cartridge, "profile": profile}))
                .map(|c| c.owned(creator(owner))),
            AppCmd::Destroy { name, .. } => app("app.destroy", name, Value::Null),
            AppCmd::Start { name } => app("app.start", name, Value::Null),
            AppCmd::Stop { name } => app("app.stop", name, Value::Null),
            AppCmd::Restart { name } => app("app.restart", name, Value::Null),
            AppCmd::Idle { name } => app("app.idle", name, Value::Null),
            AppCmd::Scale { name, quantities } => app("app.scale", name, json!({ "scale": quantities })),
            AppCmd::Health { name, path, off, .. } => app("app.health", name, json!({"path": path, "off": off})),
            AppCmd::List { .. } | AppCmd::Show { .. } | AppCmd::Status { .. } => None,
        },
        Changing::Env(cmd) => match cmd {
            EnvCmd::Set { app: a, pairs } => {
                let names: Vec<&str> = pairs
                    .iter()
                    .map(|p| p.split_once('=').map_or(p.as_str(), |kv| kv.0))
                    .collect();
                app("env.set", a, json!({ "names": names }))
            }
            EnvCmd::Unset { app: a, keys } => app("env.unset", a, json!({ "names": keys })),
            // The names come on stdin, read by the verb.
            EnvCmd::Import { app: a } => app("env.import", a, Value::Null),
            EnvCmd::List { .. } => None,
        },
        Changing::Addon(cmd) => {
            let addon = |kind, name: &str, detail| Some(Change::new(kind, None, Some(name), detail));
            let link =
                |kind, a: &str, name: &str| Some(Change::new(kind, Some(a), Some(name), json!({ "addon": name })));
            match cmd {
                AddonCmd::Create { kind, name, owner, .. } => {
                    addon("addon.create", name, json!({"addon": name, "kind": kind})).map(|c| c.owned(creator(owner)))
                }
                AddonCmd::Destroy { name, .. } => addon("addon.destroy", name, json!({ "addon": name })),
                AddonCmd::Link { app: a, name, .. } => link("addon.link", a, name),
                AddonCmd::Unlink { app: a, name } => link("addon.unlink", a, name),
                AddonCmd::Restore { name, .. } => addon("addon.restore", name, json!({ "addon": name })),
                AddonCmd::List { .. } | AddonCmd::Show { .. } | AddonCmd::Backup { .. } => None,
            }
        }
        Changing::Domain(cmd) => {
            use DomainCmd as D;
            match cmd {
                D::Add { app: a, name, acme } => app("domain.add", a, json!({ "host": name, "acme": acme })),
                D::Renew { app: a, name } => app("domain.renew", a, json!({ "host": name })),
                D::Remove { app: a, name, .. } => app("domain.remove", a, json!({ "host": name })),
                D::Cert { app: a, name, .. } => app("domain.cert", a, json!({ "host": name })),
                D::Redirect { app: a, state, .. } => app("domain.redirect", a, json!({ "https_redirect": state })),
                D::List { .. } => None,
            }
        }
        Changing::Rollback { app: a, id } => {
            app("deploy.rollback", a, json!({ "to": id })).map(|c| Change { with_result: true, ..c })
        }
        Changing::User(cmd) => {
            let node = |kind, detail| Some(Change::new(kind, None, None, detail));
            match cmd {
                U::Add { name, admin, .. } => node("user.add", json!({"user": name, "admin": admin})),
                U::Remove { name } => node("user.remove", json!({ "user": name })),
                U::Key(K::Add { name, .. }) => node("key.add", json!({ "user": name })),
                U::Key(K::Remove { name, fingerprint }) => {
                    node("key.remove", json!({"user": name, "fingerprint": fingerprint}))
                }
                U::List { .. } | U::Show { .. } | U::Key(K::List { .. }) => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn change(args: &[&str]) -> Option<Change> {
        let cli = super::super::Cli::try_parse_from(std::iter::once("gearshift").chain(args.iter().copied())).unwrap();
        match cli.command {
            super::super::Command::Verb(v) => {
                super::super::changing(&v).and_then(|c| of(c, &Actor::user("alice", false)))
            }
            super::super::Command::Internal(_) => None,
        }
    }

    #[test]
    fn env_set_records_names_never_values() {
        let c = change(&["env", "set", "shop", "TOKEN=s3cret", "DEBUG=1"]).unwrap();
        assert_eq!(c.kind, "env.set");
        assert_eq!(c.app.as_deref(), Some("shop"));
        assert_eq!(c.detail, json!({"names": ["TOKEN", "DEBUG"]}));
        assert!(!c.detail.to_string().contains("s3cret"));
    }

    #[test]
    fn a_create_is_its_creators() {
        let c = change(&["app", "create", "shop"]).unwrap();
        assert_eq!(c.owner.as_deref(), Some("alice"));
    }

    #[test]
    fn changes_are_recorded_and_showing_is_not() {
        assert_eq!(change(&["app", "stop", "shop"]).unwrap().kind, "app.stop");
        assert_eq!(
            change(&["app", "destroy", "shop", "--confirm", "shop"]).unwrap().kind,
            "app.destroy"
        );
        let link = change(&["addon", "link", "shop", "db"]).unwrap();
        assert_eq!(
            (link.kind, link.app.as_deref(), link.addon.as_deref()),
            ("addon.link", Some("shop"), Some("db"))
        );
        assert_eq!(
            change(&["user", "key", "remove", "alice", "SHA256:x"]).unwrap().kind,
            "key.remove"
        );
        for shows in [
            &["app", "list"][..],
            &["env", "list", "shop"],
            &["events"],
            &["addon", "show", "db"],
        ] {
            assert_eq!(change(shows), None, "{shows:?}");
        }
    }
}
