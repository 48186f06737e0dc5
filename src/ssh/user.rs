//! Users: people known by SSH public keys; admins manage the node, others their own apps.
//!
//! One TOML file per user at `<root>/users/<name>.toml`. Every change happens under the node
//! lock and is written atomically. A key (by fingerprint) belongs to at most one user, and a
//! user always has at least one key.

use crate::names::check_user_name;
use crate::node::Node;
use crate::ssh::key::{PublicKey, MAX_LINE};
use crate::state;
use crate::table;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// `gearshift user ...`
#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Add a user with one public key (`--key FILE`, or `--key -` for stdin).
    Add {
        /// User name: a-z, 0-9 and '-', starting with a letter, at most 32 characters.
        name: String,
        /// Let this user manage the node (users, every app), not just their own apps.
        #[arg(long)]
        admin: bool,
        /// Public key file (one `TYPE BASE64 [COMMENT]` line, e.g. ~/.ssh/id_ed25519.pub), or `-` for stdin.
        #[arg(long, value_name = "FILE|-")]
        key: String,
    },
    /// Manage a user's SSH public keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// List users: name, admin flag and number of keys.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one user and their keys (by fingerprint).
    Show {
        /// The user to show.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user (refused while they own apps).
    Remove {
        /// The user to remove.
        name: String,
    },
}

/// `gearshift user key ...`
#[derive(Debug, clap::Subcommand)]
pub enum KeyCmd {
    /// Add another public key to a user (`--key FILE`, or `--key -` for stdin).
    Add {
        /// The user who gets the key.
        name: String,
        /// Public key file (one `TYPE BASE64 [COMMENT]` line), or `-` for stdin.
        #[arg(long, value_name = "FILE|-")]
        key: String,
    },
    /// Remove one of a user's keys by its fingerprint (refused for their last key).
    Remove {
        /// The user who has the key.
        name: String,
        /// The key's fingerprint as `user key list` shows it (`SHA256:...`).
        fingerprint: String,
    },
    /// List a user's keys: fingerprint, type, date added, comment.
    List {
        /// The user whose keys to list.
        name: String,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A user as stored in `<root>/users/<name>.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub name: String,
    pub admin: bool,
    /// The user's SSH public keys; never empty for a stored user.
    #[serde(default)]
    pub keys: Vec<UserKey>,
}

/// One SSH public key of a user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserKey {
    /// The canonical `TYPE BASE64 COMMENT` line (see [`PublicKey::to_line`]).
    pub line: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// When the key was added, in seconds since the Unix epoch.
    pub added: u64,
}

impl UserKey {
    fn new(key: &PublicKey) -> UserKey {
        UserKey {
            line: key.to_line(),
            fingerprint: key.fingerprint(),
            added: crate::clock::now(),
        }
    }

    /// The parsed key (the stored line was validated when the user file was loaded).
    pub fn public_key(&self) -> Result<PublicKey> {
        PublicKey::parse(&self.line)
    }
}

impl User {
    /// Whether this user has the key with fingerprint `fp`.
    pub fn has_fingerprint(&self, fp: &str) -> bool {
        self.keys.iter().any(|k| k.fingerprint == fp)
    }
}

/// What `--json` prints for a key: no key material, just how to recognise it.
#[derive(Debug, Serialize)]
struct KeyView {
    fingerprint: String,
    #[serde(rename = "type")]
    kind: String,
    comment: String,
    added: u64,
}

/// What `--json` prints for a user.
#[derive(Debug, Serialize)]
struct UserView {
    name: String,
    admin: bool,
    keys: Vec<KeyView>,
}

fn key_view(k: &UserKey) -> KeyView {
    let (kind, comment) = match k.public_key() {
        Ok(p) => (p.kind, p.comment),
        Err(_) => (String::new(), String::new()),
    };
    KeyView {
        fingerprint: k.fingerprint.clone(),
        kind,
        comment,
        added: k.added,
    }
}

fn user_view(u: &User) -> UserView {
    UserView {
        name: u.name.clone(),
        admin: u.admin,
        keys: u.keys.iter().map(key_view).collect(),
    }
}

/// Runs one `gearshift user ...` command.
pub fn run(node: &Node, cmd: UserCmd, owned_apps: OwnedApps) -> Result<()> {
    match cmd {
        UserCmd::Add { name, admin, key } => {
            let text = read_key_source(&key)?;
            let u = add(node, &name, admin, &text)?;
            println!(
                "added user {}{} with key {}",
                u.name,
                if u.admin { " (admin)" } else { "" },
                u.keys[0].fingerprint
            );
        }
        UserCmd::Key(KeyCmd::Add { name, key }) => {
            let text = read_key_source(&key)?;
            let k = add_key(node, &name, &text)?;
            println!("added key {} to user {name}", k.fingerprint);
        }
        UserCmd::Key(KeyCmd::Remove { name, fingerprint }) => {
            let k = remove_key(node, &name, &fingerprint)?;
            println!("removed key {} from user {name}", k.fingerprint);
        }
        UserCmd::Key(KeyCmd::List { name, json }) => {
            let u = load(node, &name)?;
            if json {
                let keys: Vec<KeyView> = u.keys.iter().map(key_view).collect();
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print_keys(&u);
            }
        }
        UserCmd::List { json } => {
            let users = list(node)?;
            if json {
                let v: Vec<UserView> = users.iter().map(user_view).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| vec![u.name.clone(), yes_no(u.admin).into(), u.keys.len().to_string()])
                    .collect();
                table::print(&["NAME", "ADMIN", "KEYS"], &rows);
            }
        }
        UserCmd::Show { name, json } => {
            let u = load(node, &name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&user_view(&u))?);
            } else {
                println!("name:   {}", u.name);
                println!("admin:  {}", yes_no(u.admin));
                println!("keys:   {}", u.keys.len());
                println!();
                print_keys(&u);
            }
        }
        UserCmd::Remove { name } => {
            remove(node, &name, owned_apps)?;
            println!("removed user {name}");
        }
    }
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn print_keys(u: &User) {
    let rows: Vec<Vec<String>> = u
        .keys
        .iter()
        .map(|k| {
            let v = key_view(k);
            vec![v.fingerprint, v.kind, format_date(v.added), v.comment]
        })
        .collect();
    table::print(&["FINGERPRINT", "TYPE", "ADDED", "COMMENT"], &rows);
}

/// Reads the key text from a file, or from stdin for `-`, with a size limit.
fn read_key_source(src: &str) -> Result<String> {
    let limit = MAX_LINE as u64 + 2;
    let mut buf = Vec::new();
    if src == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut buf)
            .context("cannot read the public key from stdin")?;
    } else {
        let f = std::fs::File::open(src)
            .with_context(|| format!("cannot open key file {src}: pass a .pub file, or `-` to read stdin"))?;
        f.take(limit)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read key file {src}"))?;
    }
    let text = String::from_utf8(buf).context("the public key is not UTF-8 text: pass a .pub file")?;
    Ok(text)
}

/// Parses key text as given on the command line: exactly one key line.
fn parse_key_text(text: &str) -> Result<PublicKey> {
    if text.contains("PRIVATE KEY") {
        bail!("this is a private key: pass the public half (the .pub file) instead, and keep the private key secret");
    }
    let trimmed = text.trim_end_matches(['\n', '\r', ' ', '\t']);
    if trimmed.contains('\n') {
        bail!("the key input has more than one line: pass one public key at a time (`user key add` adds more)");
    }
    PublicKey::parse(trimmed)
}

fn user_path(node: &Node, name: &str) -> PathBuf {
    node.users_dir().join(format!("{name}.toml"))
}

fn unknown(name: &str) -> anyhow::Error {
    anyhow::anyhow!("unknown user '{name}' (see `gearshift user list`)")
}

fn read_user(path: &Path, name: &str) -> Result<User> {
    let u: User = state::read_toml(path)?;
    if u.name != name {
        bail!(
            "{} names user '{}': fix the name inside or rename the file",
            path.display(),
            u.name
        );
    }
    for k in &u.keys {
        let p = k
            .public_key()
            .with_context(|| format!("{} has an invalid key: fix or remove that key", path.display()))?;
        if p.fingerprint() != k.fingerprint {
            bail!(
                "{}: the stored fingerprint {} does not match its key line: fix or remove that key",
                path.display(),
                k.fingerprint
            );
        }
    }
    Ok(u)
}

/// Loads a user, with a clear error when unknown.
pub fn load(node: &Node, name: &str) -> Result<User> {
    check_user_name(name)?;
    let path = user_path(node, name);
    if !path.exists() {
        return Err(unknown(name));
    }
    read_user(&path, name)
}

/// Every user, sorted by name.
pub fn list(node: &Node) -> Result<Vec<User>> {
    let mut users = Vec::new();
    for (name, path) in state::records(&node.users_dir())? {
        users.push(read_user(&path, &name)?);
    }
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(users)
}

/// Every readable user, sorted by name, and one warning per user file that could not be read
/// (for sshd's key lookup, where one damaged file must not lock everyone out).
pub fn list_tolerant(node: &Node) -> (Vec<User>, Vec<String>) {
    let (mut users, mut warnings) = (Vec::new(), Vec::new());
    let records = match state::records(&node.users_dir()) {
        Ok(r) => r,
        Err(e) => return (users, vec![format!("{e:#}")]),
    };
    for (name, path) in records {
        match read_user(&path, &name) {
            Ok(u) => users.push(u),
            Err(e) => warnings.push(format!("skipped user file: {e:#}")),
        }
    }
    (users, warnings)
}

/// The user who has the key with fingerprint `fp`, if any.
pub fn find_by_fingerprint(node: &Node, fp: &str) -> Result<Option<User>> {
    Ok(list(node)?.into_iter().find(|u| u.has_fingerprint(fp)))
}

/// Refuses a key that any user already has.
fn check_key_unused(node: &Node, key: &PublicKey, for_user: &str) -> Result<()> {
    let fp = key.fingerprint();
    if let Some(owner) = find_by_fingerprint(node, &fp)? {
        if owner.name == for_user {
            bail!("key {fp} is already one of {for_user}'s keys");
        }
        bail!(
            "key {fp} already belongs to user '{}': each key identifies exactly one user",
            owner.name
        );
    }
    Ok(())
}

/// Creates a user with one key (`key_text` is one public key line).
pub fn add(node: &Node, name: &str, admin: bool, key_text: &str) -> Result<User> {
    check_user_name(name)?;
    let key = parse_key_text(key_text)?;
    let _lock = node.lock()?;
    let path = user_path(node, name);
    if path.exists() {
        bail!("user '{name}' already exists: use `gearshift user key add {name}` to give them another key");
    }
    check_key_unused(node, &key, name)?;
    let user = User {
        name: name.to_string(),
        admin,
        keys: vec![UserKey::new(&key)],
    };
    state::write_toml(&path, &user).with_context(|| format!("cannot save user '{name}'"))?;
    Ok(user)
}

/// Adds a key to an existing user; returns the stored key.
pub fn add_key(node: &Node, name: &str, key_text: &str) -> Result<UserKey> {
    check_user_name(name)?;
    let key = parse_key_text(key_text)?;
    let _lock = node.lock()?;
    let mut user = load(node, name)?;
    check_key_unused(node, &key, name)?;
    let k = UserKey::new(&key);
    user.keys.push(k.clone());
    state::write_toml(&user_path(node, name), &user).with_context(|| format!("cannot save user '{name}'"))?;
    Ok(k)
}

/// Removes a key by fingerprint (`SHA256:...`, the prefix may be left out); never the last one.
pub fn remove_key(node: &Node, name: &str, fingerprint: &str) -> Result<UserKey> {
    let _lock = node.lock()?;
    let mut user = load(node, name)?;
    let fp = if fingerprint.starts_with("SHA256:") {
        fingerprint.to_string()
    } else {
        format!("SHA256:{fingerprint}")
    };
    let Some(i) = user.keys.iter().position(|k| k.fingerprint == fp) else {
        bail!("user '{name}' has no key {fp} (see `gearshift user key list {name}`)");
    };
    if user.keys.len() == 1 {
        bail!(
            "{fp} is the last key of user '{name}': add another key first, or remove the user (`gearshift user remove {name}`)"
        );
    }
    let k = user.keys.remove(i);
    state::write_toml(&user_path(node, name), &user).with_context(|| format!("cannot save user '{name}'"))?;
    Ok(k)
}

/// Lists the apps a user owns, sorted (the app records are not this module's business).
pub type OwnedApps = fn(&Node, &str) -> Result<Vec<String>>;

/// Removes a user; refused while they own apps (`owned_apps`, asked under the node lock).
pub fn remove(node: &Node, name: &str, owned_apps: OwnedApps) -> Result<()> {
    check_user_name(name)?;
    let _lock = node.lock()?;
    load(node, name)?;
    let apps = owned_apps(node, name)?;
    if !apps.is_empty() {
        bail!(
            "user '{name}' still owns {} {}: {}; destroy {} or give {} to another user first",
            apps.len(),
            if apps.len() == 1 { "app" } else { "apps" },
            apps.join(", "),
            if apps.len() == 1 { "it" } else { "them" },
            if apps.len() == 1 { "it" } else { "them" }
        );
    }
    let path = user_path(node, name);
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(())
}

/// `YYYY-MM-DD HH:MM` in UTC.
fn format_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rem / 3600, rem % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn test_node(tag: &str) -> Node {
        let root = std::env::temp_dir().join(format!("gs-user-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let config = crate::node::config::Config {
            data_root: root.clone(),
            ..Default::default()
        };
        Node {
            config,
            config_path: root.join("gearshift.toml"),
        }
    }

    /// A syntactically valid ed25519 key line, distinct per `seed`.
    fn key(seed: u8) -> String {
        let mut v = Vec::new();
        for p in [&b"ssh-ed25519"[..], &[seed; 32][..]] {
            v.extend_from_slice(&(p.len() as u32).to_be_bytes());
            v.extend_from_slice(p);
        }
        format!(
            "ssh-ed25519 {} key{seed}@host\n",
            base64::engine::general_purpose::STANDARD.encode(v)
        )
    }

    fn fp(seed: u8) -> String {
        PublicKey::parse(&key(seed)).unwrap().fingerprint()
    }

    fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn user_add_list_show_remove() {
        let node = test_node("basic");
        let u = add(&node, "alice", true, &key(1)).unwrap();
        assert!(u.admin);
        assert_eq!(u.keys[0].fingerprint, fp(1));
        add(&node, "bob", false, &key(2)).unwrap();
        let all = list(&node).unwrap();
        assert_eq!(
            all.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        assert_eq!(load(&node, "alice").unwrap(), u);
        assert_eq!(find_by_fingerprint(&node, &fp(2)).unwrap().unwrap().name, "bob");
        assert!(find_by_fingerprint(&node, &fp(9)).unwrap().is_none());
        remove(&node, "bob", crate::app::owned_by).unwrap();
        assert!(err(load(&node, "bob")).contains("unknown user 'bob' (see `gearshift user list`)"));
        std::fs::remove_dir_all(node.root()).unwrap();
    }

    #[test]
    fn user_add_refusals() {
        let node = test_node("refuse");
        assert!(err(add(&node, "Bad_Name", false, &key(1))).contains("user name"));
        assert!(err(add(&node, "../x", false, &key(1))).contains("user name"));
        assert!(
            !node.users_dir().exists() || list(&node).unwrap().is_empty(),
            "nothing created"
        );
        assert!(err(add(&node, "carol", false, "garbage")).contains("unsupported public key type"));
        assert!(err(add(&node, "carol", false, &format!("{}{}", key(1), key(2)))).contains("more than one line"));
        assert!(err(add(&node, "carol", false, "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n")).contains("private key"));
        assert!(list(&node).unwrap().is_empty());
        add(&node, "alice", false, &key(1)).unwrap();
        assert!(err(add(&node, "alice", false, &key(2))).contains("already exists"));
        let e = err(add(&node, "dave", false, &key(1)));
        assert!(e.contains("already belongs to user 'alice'"), "{e}");
        assert_eq!(list(&node).unwrap().len(), 1);
        std::fs::remove_dir_all(node.root()).unwrap();
    }

    #[test]
    fn user_keys_add_remove() {
        let node = test_node("keys");
        add(&node, "alice", false, &key(1)).unwrap();
        add(&node, "bob", false, &key(2)).unwrap();
        assert!(err(add_key(&node, "alice", &key(2))).contains("already belongs to user 'bob'"));
        assert!(err(add_key(&node, "alice", &key(1))).contains("already one of alice's keys"));
        assert!(err(add_key(&node, "zed", &key(3))).contains("unknown user 'zed'"));
        let k = add_key(&node, "alice", &key(3)).unwrap();
        assert_eq!(k.fingerprint, fp(3));
        assert_eq!(load(&node, "alice").unwrap().keys.len(), 2);
        assert!(err(remove_key(&node, "alice", &fp(2))).contains("has no key"));
        // The SHA256: prefix is optional.
        let bare = fp(1).trim_start_matches("SHA256:").to_string();
        assert_eq!(remove_key(&node, "alice", &bare).unwrap().fingerprint, fp(1));
        let e = err(remove_key(&node, "alice", &fp(3)));
        assert!(e.contains("last key") && e.contains("user remove alice"), "{e}");
        let a = load(&node, "alice").unwrap();
        assert_eq!(a.keys.len(), 1);
        assert_eq!(a.keys[0].line, key(3).trim_end());
        std::fs::remove_dir_all(node.root()).unwrap();
    }

    #[test]
    fn user_remove_refused_while_owning_apps() {
        let node = test_node("apps");
        add(&node, "alice", false, &key(1)).unwrap();
        // Real app records (what `app create` writes), owned by alice, bob and nobody.
        let record = |name: &str, owner: Option<&str>| {
            let app = crate::app::App {
                name: name.into(),
                owner: owner.map(String::from),
                cartridge: "static".into(),
                profile: "small".into(),
                created: 0,
                status: "ready".into(),
                gears: vec![],
                env: Default::default(),
                deploy_branch: None,
                keep_deployments: None,
                aliases: vec![],
                acme: vec![],
                idle: false,
                https_redirect: false,
                health_path: None,
                health_timeout: None,
                formation: Default::default(),
                applying: None,
            };
            state::write_toml(&node.apps_dir().join(format!("{name}.toml")), &app).unwrap();
        };
        record("shop", Some("alice"));
        record("blog", Some("alice"));
        record("wiki", Some("bob"));
        record("misc", None);
        let e = err(remove(&node, "alice", crate::app::owned_by));
        assert!(e.contains("owns 2 apps: blog, shop"), "{e}");
        assert!(load(&node, "alice").is_ok());
        std::fs::remove_file(node.apps_dir().join("shop.toml")).unwrap();
        std::fs::remove_file(node.apps_dir().join("blog.toml")).unwrap();
        remove(&node, "alice", crate::app::owned_by).unwrap();
        assert!(err(remove(&node, "alice", crate::app::owned_by)).contains("unknown user"));
        std::fs::remove_dir_all(node.root()).unwrap();
    }

    #[test]
    fn user_file_round_trip_and_damage() {
        let node = test_node("file");
        add(&node, "alice", true, &key(1)).unwrap();
        let text = std::fs::read_to_string(node.users_dir().join("alice.toml")).unwrap();
        assert!(text.contains("name = \"alice\"") && text.contains("[[keys]]"), "{text}");
        std::fs::write(node.users_dir().join("alice.toml"), text.replace(&fp(1), &fp(2))).unwrap();
        assert!(err(load(&node, "alice")).contains("does not match"));
        std::fs::remove_dir_all(node.root()).unwrap();
    }

    #[test]
    fn user_dates() {
        assert_eq!(format_date(0), "1970-01-01 00:00");
        assert_eq!(format_date(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_date(1_700_000_000), "2023-11-14 22:13");
    }
}
