//! A change of an app's environment or formation, all or nothing: recorded together with the
//! values it replaces (`App::applying`, an `Applying`), written into the gears' descriptors,
//! then asked of each running gear's supervisor over its control socket (no process joins a
//! gear). Once every gear runs it, the mark goes; when one cannot run it while the app still
//! serves with the previous values, they are put back and run again, and the command says
//! nothing was changed (when nothing runs, crashed or down, the change stays: what starts next
//! runs it). A change whose command died on the way (a kill, or the SSH worker gone with its
//! daemon) is finished by the next change of that app, or by the daemon's reconciler within
//! seconds (`finish`): what `env` and `app scale` say is what runs.

use super::{load, load_for, save, write_descriptors, App, Applying};
use crate::gear::{self, isolation::network::netns_path};
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::state;
use anyhow::{Context, Result};

/// Held while a change of the app is applied (a second change waits; the reconciler skips it).
fn lock_path(node: &Node, name: &str) -> std::path::PathBuf {
    node.run_dir().join("changes").join(format!("{name}.lock"))
}

/// The mark of a change about to be made to `app`, run by asking its gears `ask`: the values
/// it replaces.
fn before(app: &App, ask: &str) -> Applying {
    Applying {
        ask: ask.into(),
        env: app.env.clone(),
        formation: app.formation.clone(),
    }
}

/// Holds app `name`'s change lock: taken by whoever applies a change of it (`change`, an add-on's
/// link or unlink), so that the reconciler leaves that change alone.
pub fn hold(node: &Node, name: &str) -> Result<state::Lock> {
    crate::names::check_app_name(name)?;
    state::Lock::exclusive(&lock_path(node, name))
}

/// Marks `app` (under the caller's node lock, before its descriptors are rewritten) as to be
/// restarted: for an add-on's link, whose variables live outside the record. Should the restart
/// never happen (its command died), the reconciler does it; [`unmark`] once it is done.
pub fn mark_restart(node: &Node, app: &mut App) -> Result<()> {
    if app.applying.is_none() {
        app.applying = Some(before(app, "restart-if-wanted"));
        save(node, app)?;
    }
    Ok(())
}

/// The restart [`mark_restart`] asked for was done (or its failure reported): the mark goes.
pub fn unmark(node: &Node, name: &str) -> Result<()> {
    let _lock = node.lock()?;
    let mut app = load(node, name)?;
    if app.applying.take().is_some() {
        save(node, &app)?;
    }
    Ok(())
}

/// Changes app `name` by `edit` (run under the node lock; its error changes nothing) and makes
/// every running gear run the change by asking `ask`. Returns each asked gear's status line.
pub fn change(
    node: &Node,
    actor: &Actor,
    name: &str,
    ask: &str,
    edit: impl FnOnce(&mut App) -> Result<()>,
) -> Result<Vec<String>> {
    load_for(node, actor, name)?;
    let _one = hold(node, name)?;
    // An earlier change that was interrupted is finished (or undone) first.
    apply(node, name)?;
    {
        let _lock = node.lock()?;
        let mut app = load_for(node, actor, name)?;
        let was = before(&app, ask);
        edit(&mut app)?;
        app.applying = Some(was);
        save(node, &app)?;
        write_descriptors(node, &app)?;
    }
    crate::fault::reached_on_host(&node.run_dir(), "before-apply", name);
    apply(node, name)
}

/// Finishes app `name`'s interrupted change (what `app.applying` marks): false when there is
/// none, or a command is applying it now.
pub fn finish(node: &Node, name: &str) -> Result<bool> {
    let Some(_one) = state::Lock::try_exclusive(&lock_path(node, name))? else {
        return Ok(false);
    };
    if load(node, name)?.applying.is_none() {
        return Ok(false);
    }
    apply(node, name).map(|_| true)
}

/// Makes the gears run the recorded change (none: nothing to do) and clears its mark. When a
/// gear cannot while the app still serves (its previous processes run), the previous values are
/// recorded and run again, and the error says so; when nothing of it runs (crashed, stopped,
/// its gear down), the change stays recorded: what starts next runs it.
fn apply(node: &Node, name: &str) -> Result<Vec<String>> {
    let app = load(node, name)?;
    let Some(before) = app.applying.clone() else {
        return Ok(Vec::new());
    };
    let asked = ask_gears(node, &app, &before.ask);
    let serving = asked.is_err() && app.gears.iter().any(|g| serves(node, g));
    let _lock = node.lock()?;
    let mut app = load(node, name)?;
    app.applying = None;
    let Err(e) = asked else {
        save(node, &app)?;
        return asked;
    };
    if !serving {
        save(node, &app)?;
        return Err(e.context(format!(
            "recorded: '{name}' runs it once it starts (see `gearshift logs {name}`)"
        )));
    }
    app.env = before.env;
    app.formation = before.formation;
    save(node, &app)?;
    write_descriptors(node, &app)?;
    // The gears that took the change run the previous values again.
    let back = ask_gears(node, &app, &before.ask);
    let e = e.context(format!(
        "nothing was changed: '{name}' keeps its previous environment and formation"
    ));
    match back {
        Ok(_) => Err(e),
        Err(b) => Err(e.context(format!("and putting them back failed too: {b:#}"))),
    }
}

/// Whether gear `g`'s supervisor says it runs (a process that did not take the change).
fn serves(node: &Node, g: &gear::Gear) -> bool {
    gear::init_pid(node, g).is_some()
        && gear::control::status_within(&netns_path(&g.netns())).is_ok_and(|v| v["status"]["state"] == "running")
}

/// Asks every running gear of `app` to run its descriptor (`ask`); an idle app's gears and a
/// stopped gear read it when they start. Returns each asked gear's status line.
fn ask_gears(node: &Node, app: &App, ask: &str) -> Result<Vec<String>> {
    if app.idle {
        return Ok(Vec::new());
    }
    let mut lines = Vec::new();
    for g in app.gears.iter().filter(|g| gear::init_pid(node, g).is_some()) {
        let v = gear::control::command(&netns_path(&g.netns()), ask)
            .with_context(|| format!("gear {} of '{}' cannot run it", g.index, app.name))?;
        lines.push(gear::control::status_line(&v["status"]));
    }
    Ok(lines)
}
