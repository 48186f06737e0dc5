//! Creating and destroying apps: the record first (so a crash part-way leaves something
//! `app destroy` can clean up), then every gear piece.

use super::{allocate, boot, cartridge, descriptor, load, path, push_lock, save, App};
use crate::gear::isolation::quota;
use crate::gear::{self, Gear};
use crate::names;
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::ssh::user;
use anyhow::{bail, Context, Result};

/// What a new gear of `what` (an app or an add-on) is made with: its owner exists, its profile
/// (the node's default unless named) and limits, and a disk quota that can be enforced.
pub(crate) fn gear_terms(
    node: &Node,
    what: &str,
    owner: Option<&str>,
    profile: Option<&str>,
) -> Result<(String, crate::node::config::Limits)> {
    if let Some(o) = owner {
        user::load(node, o)?;
    }
    let profile = profile.unwrap_or(&node.config.default_profile).to_string();
    let limits = node.config.profile(&profile)?.limits()?;
    if quota::backend(node)? == quota::Backend::None && !node.config.disk.allow_unlimited {
        bail!(
            "cannot create {what}: no disk quota backend can enforce its disk limit (run `gearshift doctor`; set disk.allow_unlimited = true to accept unlimited disk)"
        );
    }
    Ok((profile, limits))
}

/// Creates an app and its first gear. Bad input creates nothing; a failure part-way removes
/// whatever was made.
/// `cart` None: the first push detects it (`ingear/detect.rs`). The per-user limits of `actor`
/// and the node's disk are checked under the node lock, so two creates cannot both pass.
pub fn create(
    node: &Node,
    actor: &Actor,
    name: &str,
    cart: Option<&str>,
    owner: Option<&str>,
    profile: Option<&str>,
) -> Result<App> {
    names::check_app_name(name)?;
    let cart = cart.map(|c| cartridge::find(node, c)).transpose()?;
    let (profile, limits) = gear_terms(node, &format!("app '{name}'"), owner, profile)?;
    let _lock = node.lock()?;
    if path(node, name).exists() {
        bail!("app '{name}' already exists");
    }
    super::admission::check_new(node, actor, super::admission::Creation::App, Some(&profile))?;
    if node.addons_dir().join(format!("{name}.toml")).exists() {
        bail!("the name '{name}' is taken by an add-on: choose another name for the app");
    }
    super::disk_admission::check(node, &format!("app '{name}'"), &profile, 1)?;
    let (uid, ip) = allocate(node)?;
    let g = Gear {
        id: gear::new_id()?,
        app: name.into(),
        index: 0,
        uid,
        ip,
        profile: profile.clone(),
    };
    let mut app = App {
        name: name.into(),
        owner: owner.map(String::from),
        cartridge: cart.map(|c| c.manifest.name).unwrap_or_default(),
        profile,
        created: crate::clock::now(),
        status: "creating".into(),
        gears: vec![g.clone()],
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
    // Recorded first, so that a crash part-way leaves a record `app destroy` can clean up.
    save(node, &app)?;
    if let Err(e) = gear::create(node, &g, &limits, &descriptor(node, &app, &g), &boot(&app)) {
        let cleanup = gear::destroy(node, &g);
        let _ = std::fs::remove_file(path(node, name));
        return Err(match cleanup {
            Ok(()) => e.context(format!("cannot create app '{name}' (nothing was kept)")),
            Err(c) => e.context(format!("cannot create app '{name}'; clean-up also failed: {c:#}")),
        });
    }
    app.status = "ready".into();
    save(node, &app)?;
    Ok(app)
}

/// Destroys an app: every gear piece, then its record.
pub fn destroy(node: &Node, name: &str, confirm: &str) -> Result<()> {
    names::check_app_name(name)?;
    if confirm != name {
        bail!("refusing to destroy '{name}': pass --confirm {name}");
    }
    let _lock = node.lock()?;
    let app = load(node, name)?;
    for g in &app.gears {
        gear::destroy(node, g)?;
    }
    super::domain::forget_certs(node, name, None)?;
    std::fs::remove_file(path(node, name)).with_context(|| format!("cannot remove the record of '{name}'"))?;
    let _ = std::fs::remove_file(push_lock(node, name));
    let _ = std::fs::remove_file(super::linked_env_path(node, name));
    Ok(())
}
