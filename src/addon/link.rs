//! Linking apps to add-ons: the app gets the add-on's URL (and OpenShift v2's variables) in a
//! root-only file its gears' environment is built from, its gears get through the firewall to
//! the add-on's port (one element of the node's `gear_links` set per app gear), and it restarts
//! (marked first, `app/apply.rs`: a restart its command did not live to make, the reconciler
//! makes).

use super::{load_for, save, secret, Link};
use crate::app;
use crate::gear;
use crate::gear::isolation::network::{self, GearLink, NodeNet};
use crate::node::Node;
use crate::ssh::auth::Actor;
use anyhow::{bail, Result};

/// Makes the firewall allow exactly what the links say: every gear of each linked app may
/// connect to its add-on's port; of the host's users, only root may connect to an add-on.
pub fn sync_links(node: &Node) -> Result<()> {
    let apps = app::list(node)?;
    let mut links = Vec::new();
    let mut services = Vec::new();
    for a in super::list(node)? {
        let (Ok(g), Ok(kind)) = (a.gear(), a.kind()) else {
            continue;
        };
        services.push((g.ip, kind.port()));
        for l in &a.links {
            for ag in apps.iter().filter(|x| x.name == l.app).flat_map(|x| &x.gears) {
                links.push(GearLink {
                    from: ag.ip,
                    to: g.ip,
                    port: kind.port(),
                });
            }
        }
    }
    links.sort();
    links.dedup();
    let net = NodeNet::from_config(&node.config);
    network::set_services(&net, &services)?;
    network::set_links(&net, &links)
}

/// `addon link APP NAME [--as VAR]`.
pub fn link(node: &Node, actor: &Actor, app_name: &str, name: &str, var: Option<&str>) -> Result<Vec<String>> {
    let _one = app::apply::hold(node, app_name)?;
    let vars = {
        let _lock = node.lock()?;
        let mut a = load_for(node, actor, name)?;
        let mut the_app = app::load_for(node, actor, app_name)?;
        let kind = a.kind()?;
        let var = var.unwrap_or(kind.default_var());
        super::kind::check_var(var)?;
        if a.links.iter().any(|l| l.app == app_name) {
            bail!("app '{app_name}' is already linked to add-on '{name}'");
        }
        let mut env = app::linked_env(node, app_name)?;
        if the_app.env.contains_key(var) {
            bail!(
                "app '{app_name}' already sets {var} itself: link under another name with --as NAME (e.g. --as {}_URL)",
                name.to_ascii_uppercase().replace('-', "_")
            );
        }
        if env.contains_key(var) {
            bail!("app '{app_name}' already gets {var} from another add-on: link under another name with --as NAME");
        }
        let s = secret(node, name)?;
        let ip = a.gear()?.ip;
        let mut vars = vec![var.to_string()];
        env.insert(var.into(), kind.url(&s, ip));
        // The other variables (OpenShift v2's) go to the first add-on of a kind only.
        for (k, v) in kind.link_env(&s, ip) {
            if !env.contains_key(&k) {
                env.insert(k.clone(), v);
                vars.push(k);
            }
        }
        app::set_linked_env(node, app_name, &env)?;
        a.links.push(Link {
            app: app_name.into(),
            vars: vars.clone(),
        });
        save(node, &a)?;
        sync_links(node)?;
        app::apply::mark_restart(node, &mut the_app)?;
        app::write_descriptors(node, &the_app)?;
        vars
    };
    restart(node, app_name)?;
    app::apply::unmark(node, app_name)?;
    Ok(vars)
}

/// `addon unlink APP NAME`: the variables go, the firewall closes, the app restarts.
pub fn unlink(node: &Node, actor: &Actor, app_name: &str, name: &str) -> Result<()> {
    let _one = app::apply::hold(node, app_name)?;
    let app_exists = {
        let _lock = node.lock()?;
        let mut a = load_for(node, actor, name)?;
        let Some(i) = a.links.iter().position(|l| l.app == app_name) else {
            bail!("app '{app_name}' is not linked to add-on '{name}' (see `gearshift addon show {name}`)");
        };
        let l = a.links.remove(i);
        save(node, &a)?;
        sync_links(node)?;
        let mut env = app::linked_env(node, app_name)?;
        for v in &l.vars {
            env.remove(v);
        }
        app::set_linked_env(node, app_name, &env)?;
        match app::load(node, app_name) {
            Ok(mut the_app) => {
                app::apply::mark_restart(node, &mut the_app)?;
                app::write_descriptors(node, &the_app)?;
                true
            }
            Err(_) => false,
        }
    };
    if app_exists {
        restart(node, app_name)?;
        app::apply::unmark(node, app_name)?;
    }
    Ok(())
}

/// After `app destroy`: the app's links go from every add-on, and from the firewall.
pub fn forget_app(node: &Node, app_name: &str) -> Result<()> {
    let _lock = node.lock()?;
    for mut a in super::list(node)? {
        let before = a.links.len();
        a.links.retain(|l| l.app != app_name);
        if a.links.len() != before {
            save(node, &a)?;
        }
    }
    sync_links(node)
}

/// Restarts the app's web processes if they run, so they see the new environment: asked of each
/// gear's supervisor over its control socket from the host (joining a gear, as `run` does,
/// would leave this process in the gear's namespaces, and `addon destroy --force` goes on). The
/// link is made whatever happens here: a restart that fails is reported with the way out.
fn restart(node: &Node, app_name: &str) -> Result<()> {
    let the_app = app::load(node, app_name)?;
    if the_app.idle {
        return Ok(());
    }
    for g in &the_app.gears {
        match gear::control::command(&network::netns_path(&g.netns()), "restart-if-wanted") {
            Ok(v) => println!("{}", gear::control::status_line(&v["status"])),
            Err(e) => eprintln!(
                "gearshift: cannot restart gear {} of '{app_name}' ({e:#}): it sees the new variables once restarted (`app restart {app_name}`)",
                g.index
            ),
        }
    }
    Ok(())
}
