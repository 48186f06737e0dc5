//! An app's processes: start (and wake), stop, restart, idle, status, and commands run in its
//! gears (`gearshift run`, `gearshift gear ...` verbs, git).

use super::{boot, linked_env, load, load_for, push_lock, set_idle, App};
use crate::gear::isolation::network::netns_path;
use crate::gear::{self, Gear};
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::state;
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;

/// Runs `gearshift gear ARGS...` inside the app's first gear, as the gear's user, and fails
/// when it does (its own message is already on stderr). The calling process joins the gear.
pub fn in_gear(node: &Node, actor: &Actor, name: &str, args: &[&str]) -> Result<i32> {
    let mut argv = vec!["/opt/gearshift/bin/gearshift".to_string(), "gear".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let code = spawn_in_gear(node, actor, name, 0, &argv, false, false)?;
    if code != 0 {
        bail!("`{}` failed in the gear of '{name}' (exit code {code})", args.join(" "));
    }
    Ok(code)
}

/// Starts the web process in every gear of the app (each gear's init first, if it is not running)
/// and returns once each accepts connections. Asks each supervisor over its control socket from
/// the host, so no process is spawned in the gear for it (a wake waits on this).
pub fn start_web(node: &Node, app: &App) -> Result<()> {
    let ask = |g: &Gear, cmd: &str| {
        gear::control::command(&netns_path(&g.netns()), cmd)
            .with_context(|| format!("cannot start the web process of '{}' (gear {})", app.name, g.index))
    };
    // Every gear starts before we wait for any: a scaled app wakes in one app start time.
    let boot = boot(app);
    for g in &app.gears {
        gear::ensure_running(node, g, &boot)?;
        ask(g, "start")?;
    }
    for g in &app.gears {
        println!("{}", gear::control::status_line(&ask(g, "start wait")?["status"]));
    }
    Ok(())
}

/// Stops the app: each gear's supervisor stops its web and other processes (the cartridge's
/// stop hook first), then every other process in the gear's cgroup is killed, so nothing a
/// `run`, a hook or a push started outlives the stop. The supervisor stays (it keeps the
/// app stopped across `env set` and answers `app start`). Refused while a push runs.
pub fn stop(node: &Node, actor: &Actor, name: &str) -> Result<()> {
    let app = load_for(node, actor, name)?;
    let _quiet = state::Lock::try_exclusive(&push_lock(node, name))?.with_context(|| {
        format!("'{name}' is being deployed (a git push is running): stop it once the push is done")
    })?;
    let boot = boot(&app);
    for g in &app.gears {
        gear::ensure_running(node, g, &boot)?;
        let st = gear::control::command(&netns_path(&g.netns()), "stop")
            .with_context(|| format!("cannot stop the web process of '{name}' (gear {})", g.index))?;
        gear::init::kill_all_but_init(node, g).with_context(|| {
            format!(
                "cannot stop every process of '{name}' (gear {}): run `gearshift doctor`",
                g.index
            )
        })?;
        println!("{}", gear::control::status_line(&st["status"]));
    }
    Ok(())
}

/// A gear's supervisor status, asked from the host (no process in the gear, and an idle or
/// stopped gear is not started just to be asked).
pub fn status_of(node: &Node, app: &App, g: &Gear) -> Result<serde_json::Value> {
    let idle = || serde_json::json!({"state": "idle", "pid": null, "port": 0, "restarts": 0});
    if app.idle {
        return Ok(idle());
    }
    match gear::control::status_within(&netns_path(&g.netns())) {
        Ok(v) => Ok(v["status"].clone()),
        // idled meanwhile (automatic idling), or the gear's init is down
        Err(_) if load(node, &app.name)?.idle => Ok(idle()),
        // Its init runs, but the supervisor does not answer (frozen, stopped, overloaded).
        Err(e) if gear::init_pid(node, g).is_some() => Ok(serde_json::json!({
            "state": "unreachable", "pid": null, "port": 0, "restarts": 0, "error": format!("{e:#}"),
        })),
        Err(_) => Ok(serde_json::json!({"state": "down", "pid": null, "port": 0, "restarts": 0})),
    }
}

/// Replaces the app's user environment and restarts its running web processes with it, all or
/// nothing (`apply.rs`: a restart that fails puts the previous environment back).
pub fn set_env(
    node: &Node,
    actor: &Actor,
    name: &str,
    change: impl FnOnce(&mut std::collections::BTreeMap<String, String>) -> Result<()>,
) -> Result<()> {
    let lines = super::apply::change(node, actor, name, "restart-if-wanted", |app| {
        let before = app.env.clone();
        change(&mut app.env)?;
        refuse_linked(&linked_env(node, name)?, &before, &app.env, name)
    })?;
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// A variable an add-on link sets cannot be set by hand too (the link's value would win
/// unseen): a clear error naming the way out instead.
fn refuse_linked(
    linked: &std::collections::BTreeMap<String, String>,
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
    app: &str,
) -> Result<()> {
    let taken: Vec<&str> = after
        .iter()
        .filter(|(k, v)| linked.contains_key(*k) && before.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    if !taken.is_empty() {
        bail!(
            "app '{app}' gets {} from an add-on link: unlink the add-on first (`addon unlink {app} ADDON`, see `addon list`) or link it under another name (`addon link {app} ADDON --as OTHER_URL`); nothing was changed",
            taken.join(", ")
        );
    }
    Ok(())
}

/// `gearshift run APP -- CMD...`: runs CMD in the gear and returns its exit code.
pub fn run_in_gear(node: &Node, actor: &Actor, name: &str, index: u32, command: &[String]) -> Result<i32> {
    run_in_gear_tty(node, actor, name, index, command, std::io::stdin().is_terminal())
}

/// `gearshift run APP CMD` and `shell APP`, like `heroku run`: CMD in the live deployment, with
/// its `PATH` (the gear side sets them: `gearshift gear exec`).
pub fn run_app_command(node: &Node, actor: &Actor, name: &str, index: u32, command: &[String]) -> Result<i32> {
    let mut argv: Vec<String> = ["/opt/gearshift/bin/gearshift", "gear", "exec", "--"]
        .map(String::from)
        .to_vec();
    argv.extend(command.iter().cloned());
    run_in_gear(node, actor, name, index, &argv)
}

/// Like `run_in_gear`, never with a pty (binary protocols such as git's).
pub fn run_in_gear_plain(node: &Node, actor: &Actor, name: &str, index: u32, command: &[String]) -> Result<i32> {
    run_in_gear_tty(node, actor, name, index, command, false)
}

pub(crate) fn run_in_gear_tty(
    node: &Node,
    actor: &Actor,
    name: &str,
    index: u32,
    command: &[String],
    tty: bool,
) -> Result<i32> {
    spawn_in_gear(node, actor, name, index, command, tty, true)
}

/// Runs `command` in gear `index`; `stdin`: whether it reads the caller's input (relayed),
/// else its input is empty (gearshift's own verbs: keystrokes typed meanwhile stay out).
fn spawn_in_gear(
    node: &Node,
    actor: &Actor,
    name: &str,
    index: u32,
    command: &[String],
    tty: bool,
    stdin: bool,
) -> Result<i32> {
    let app = load_for(node, actor, name)?;
    let g = app
        .gears
        .iter()
        .find(|g| g.index == index)
        .with_context(|| format!("app '{name}' has no gear {index}"))?;
    let ns = gear::enter(node, g, &boot(&app))?;
    let cg = gear::cgroup(node, g)?;
    let term = if tty { std::env::var("TERM").ok() } else { None };
    let who = gear::identity(g);
    let mut env = super::gear_env(node, &app, g, term);
    crate::fault::pass_on(&mut env);
    gear::spawn::exec(gear::spawn::ExecSpec {
        gear: ns,
        cgroup: &cg,
        who: &who,
        argv: command.to_vec(),
        env,
        tty,
        stdin,
    })
}

/// Idles the app: records it idle and stops every gear (no processes until its next request).
/// Refused while a push runs.
pub fn idle(node: &Node, actor: &Actor, name: &str) -> Result<()> {
    let app = load_for(node, actor, name)?;
    let _quiet = state::Lock::try_exclusive(&push_lock(node, name))?.with_context(|| {
        format!("'{name}' is being deployed (a git push is running): idle it once the push is done")
    })?;
    set_idle(node, actor, name, true)?;
    for g in &app.gears {
        gear::stop(node, g)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_variable_cannot_be_set_by_hand() {
        let m = |kv: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let linked = m(&[("DATABASE_URL", "postgres://x")]);
        let e = refuse_linked(&linked, &m(&[]), &m(&[("DATABASE_URL", "mine")]), "shop").unwrap_err();
        assert!(e.to_string().contains("gets DATABASE_URL from an add-on link"), "{e}");
        refuse_linked(&linked, &m(&[]), &m(&[("OTHER", "1")]), "shop").unwrap();
        // Set before the link (which then needed --as) and left alone: fine.
        let both = m(&[("DATABASE_URL", "mine")]);
        refuse_linked(&linked, &both, &both, "shop").unwrap();
    }
}
