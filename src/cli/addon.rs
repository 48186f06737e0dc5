//! `gearshift addon ...`: the add-on verbs and what they print. The work is in `crate::addon`.

use crate::addon::{self, Addon};
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::table;
use anyhow::Result;

/// `gearshift addon ...`
#[derive(Debug, clap::Subcommand)]
pub enum AddonCmd {
    /// Create a database or cache add-on in a gear of its own (kinds: postgresql, mariadb, redis).
    Create {
        kind: String,
        name: String,
        /// Owning user (default: you; only admins name another).
        #[arg(long)]
        owner: Option<String>,
        /// Resource profile (default from the node config).
        #[arg(long)]
        profile: Option<String>,
    },
    /// List add-ons.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show an add-on, its service, its links and its credentials.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Give an app the add-on's URL (DATABASE_URL) and access to it; restarts the app.
    Link {
        app: String,
        name: String,
        /// The variable to set instead of the kind's default (DATABASE_URL).
        #[arg(long = "as", value_name = "VAR")]
        var: Option<String>,
    },
    /// Take the add-on's variables and access away from an app; restarts the app.
    Unlink { app: String, name: String },
    /// Write a consistent dump to stdout: `addon backup NAME > file` (pg_dump custom format,
    /// mariadb-dump --single-transaction, a Redis RDB file).
    Backup { name: String },
    /// Load a dump from stdin into an empty add-on: `addon restore NAME < file`.
    Restore {
        name: String,
        /// Replace the data the add-on holds.
        #[arg(long)]
        force: bool,
    },
    /// Destroy an add-on and its data.
    Destroy {
        name: String,
        /// Repeat the add-on's name to confirm.
        #[arg(long)]
        confirm: String,
        /// Unlink every linked app first.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(node: &Node, actor: &Actor, cmd: AddonCmd) -> Result<()> {
    match cmd {
        AddonCmd::Create {
            kind,
            name,
            owner,
            profile,
        } => {
            let owner = super::app::owner_for(actor, owner, "add-on")?;
            let a = addon::create(node, actor, &kind, &name, owner.as_deref(), profile.as_deref())?;
            let g = a.gear()?;
            println!(
                "created {} add-on '{}' (profile {}): gear {} uid {} ip {} {}",
                a.kind,
                a.name,
                a.profile,
                g.id,
                g.uid,
                g.ip,
                g.mcs()
            );
            println!("link it to an app: gearshift addon link APP {}", a.name);
        }
        AddonCmd::List { json } => list(node, actor, json)?,
        AddonCmd::Show { name, json } => show(node, actor, &name, json)?,
        AddonCmd::Link { app, name, var } => {
            let vars = addon::link(node, actor, &app, &name, var.as_deref())?;
            println!("linked '{app}' to add-on '{name}': {}", vars.join(", "));
        }
        AddonCmd::Unlink { app, name } => {
            addon::unlink(node, actor, &app, &name)?;
            println!("unlinked '{app}' from add-on '{name}'");
        }
        AddonCmd::Backup { name } => addon::backup(node, actor, &name)?,
        AddonCmd::Restore { name, force } => {
            addon::restore(node, actor, &name, force)?;
            eprintln!("restored add-on '{name}'");
        }
        AddonCmd::Destroy { name, confirm, force } => {
            addon::destroy(node, actor, &name, &confirm, force)?;
            println!("destroyed add-on '{name}'");
        }
    }
    Ok(())
}

fn mine(node: &Node, actor: &Actor) -> Result<Vec<Addon>> {
    Ok(addon::list(node)?
        .into_iter()
        .filter(|a| actor.may_manage(a.owner.as_deref()))
        .collect())
}

fn list(node: &Node, actor: &Actor, json: bool) -> Result<()> {
    let addons = mine(node, actor)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&addons)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = addons
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.kind.clone(),
                a.owner.clone().unwrap_or_else(|| "-".into()),
                a.gears.first().map(|g| g.ip.to_string()).unwrap_or_default(),
                addon::status_of(a)["state"].as_str().unwrap_or("down").to_string(),
                a.links.iter().map(|l| l.app.as_str()).collect::<Vec<_>>().join(","),
            ]
        })
        .collect();
    table::print(&["NAME", "KIND", "OWNER", "IP", "STATE", "LINKED"], &rows);
    Ok(())
}

/// Shows the add-on with its credentials: only its owner (or an admin) gets this far.
fn show(node: &Node, actor: &Actor, name: &str, json: bool) -> Result<()> {
    let a = addon::load_for(node, actor, name)?;
    let s = addon::secret(node, name)?;
    let g = a.gear()?;
    let kind = a.kind()?;
    let url = kind.url(&s, g.ip);
    let status = addon::status_of(&a);
    if json {
        let mut v = serde_json::to_value(&a)?;
        // as `app show` has them: the gear's SELinux pair and home on the host
        for (j, g) in v["gears"].as_array_mut().into_iter().flatten().zip(&a.gears) {
            j["mcs"] = g.mcs().into();
            j["home"] = g.home(node).display().to_string().into();
        }
        v["port"] = kind.port().into();
        v["service"] = status;
        v["username"] = s.user.clone().into();
        v["password"] = s.password.clone().into();
        v["database"] = s.database.clone().into();
        v["url"] = url.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("add-on:    {}", a.name);
    println!("kind:      {}", a.kind);
    println!("owner:     {}", a.owner.as_deref().unwrap_or("-"));
    println!("profile:   {}", a.profile);
    println!("gear:      {} uid {} {}", g.id, g.uid, g.mcs());
    println!("address:   {}:{}", g.ip, kind.port());
    println!(
        "service:   {} (restarts {})",
        status["state"].as_str().unwrap_or("down"),
        status["restarts"].as_u64().unwrap_or(0)
    );
    println!("database:  {}", s.database);
    println!("username:  {}", s.user);
    println!("password:  {}", s.password);
    println!("url:       {url}");
    let linked: Vec<String> = a
        .links
        .iter()
        .map(|l| format!("{} ({})", l.app, l.vars.join(", ")))
        .collect();
    println!(
        "linked:    {}",
        if linked.is_empty() {
            "-".into()
        } else {
            linked.join("; ")
        }
    );
    Ok(())
}
