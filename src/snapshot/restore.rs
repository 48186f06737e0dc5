//! `snapshot restore APP [--as NEW] < app.tar.gz`: the whole file is read into a root-only
//! scratch directory and checked against its manifest (format, sizes, SHA-256) before anything
//! changes; then the app is created, its repository and data written by tar inside its gear,
//! its record's settings (domains with their certificates, formation, ...) and env set, its
//! add-ons linked, the deployments kept for rollback and then the live commit deployed, and
//! its web gears scaled. A step that fails removes what the restore made (app, gears,
//! add-ons): nothing is left half-made.
//! An add-on the snapshot names that does not exist is created (same kind) and its dump
//! restored; one that exists (and the caller owns, of the same kind) is linked as it is, its
//! data untouched (so `--as NEW` beside the original shares its database).

use super::format::{self, Manifest};
use super::save::{data_dir, repo_dir};
use super::scratch::Scratch;
use super::{in_child, in_gear};
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::{addon, app, names};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::process::{Command, Stdio};

/// Reads stdin (gzip'd) into the scratch directory and verifies it.
fn read_verified(s: &Scratch) -> Result<Manifest> {
    let mut gz = Command::new("gzip")
        .arg("-dc")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run gzip (install it: make deps)")?;
    let mut out = std::io::BufReader::with_capacity(1 << 20, gz.stdout.take().context("gzip's stdout")?);
    let unpacked = format::unpack(&mut out, s.dir(), format::MAX_BYTES);
    if unpacked.is_ok() {
        // gzip must reach the end of its input to check the stream's CRC and length.
        let _ = std::io::copy(&mut (&mut out).take(1 << 20), &mut std::io::sink());
    }
    drop(out);
    let status = gz.wait()?;
    let names = unpacked?;
    if !status.success() {
        bail!("the snapshot is not a complete gzip file (truncated or damaged)");
    }
    format::verify(s.dir(), &names)
}

/// Restores the snapshot on stdin as app NAME (or `as_name`).
pub fn restore(node: &Node, actor: &Actor, name: &str, as_name: Option<&str>) -> Result<()> {
    let target = as_name.unwrap_or(name);
    names::check_app_name(target)?;
    let s = Scratch::new(node)?;
    let m = read_verified(&s).context("snapshot refused, nothing was changed")?;
    if m.app != name {
        bail!(
            "this is a snapshot of app '{}', not '{name}': `snapshot restore {} --as {target}`; nothing was changed",
            m.app,
            m.app
        );
    }
    let rec: app::App =
        serde_json::from_slice(&std::fs::read(s.path("app.json"))?).context("the snapshot's app record is damaged")?;
    if app::load(node, target).is_ok() {
        bail!(
            "app '{target}' exists: destroy it first or restore under another name with --as NEW; nothing was changed"
        );
    }
    let mut to_create = Vec::new();
    for a in &m.addons {
        match addon::load(node, &a.name) {
            Ok(existing) => {
                addon::load_for(node, actor, &a.name)?;
                if existing.kind != a.kind {
                    bail!(
                        "the snapshot links a {} add-on '{}', but add-on '{}' here is {}: rename or destroy it; nothing was changed",
                        a.kind,
                        a.name,
                        a.name,
                        existing.kind
                    );
                }
            }
            Err(_) => to_create.push(a.clone()),
        }
    }
    let owner = if actor.admin {
        rec.owner.clone()
    } else {
        actor.user.clone()
    };
    let mut made = Made::default();
    let built = build(
        node,
        actor,
        &s,
        &m,
        &rec,
        target,
        &to_create,
        owner.as_deref(),
        &mut made,
    );
    if let Err(e) = built {
        return Err(match made.undo(node, target) {
            Ok(()) => e.context(format!(
                "cannot restore app '{target}'; what the restore had made was removed, nothing was changed"
            )),
            Err(u) => e.context(format!(
                "cannot restore app '{target}', and removing what it had made failed too ({u:#}): `app destroy {target} --confirm {target}`"
            )),
        });
    }
    eprintln!("restored app '{target}' from the snapshot of '{name}'");
    Ok(())
}

/// What a restore has made so far, removed again when a later step fails.
#[derive(Default)]
struct Made {
    app: bool,
    addons: Vec<String>,
}

impl Made {
    fn undo(&self, node: &Node, target: &str) -> Result<()> {
        let mut failed = Vec::new();
        if self.app {
            if let Err(e) = app::destroy(node, target, target).and_then(|()| addon::forget_app(node, target)) {
                failed.push(format!("app '{target}': {e:#}"));
            }
        }
        for a in &self.addons {
            if let Err(e) = addon::destroy(node, &Actor::root(), a, a, true) {
                failed.push(format!("add-on '{a}': {e:#}"));
            }
        }
        if !failed.is_empty() {
            bail!("{}", failed.join("; "));
        }
        Ok(())
    }
}

/// Every step that changes the node, in order; `made` records what exists so far.
#[allow(clippy::too_many_arguments)]
fn build(
    node: &Node,
    actor: &Actor,
    s: &Scratch,
    m: &Manifest,
    rec: &app::App,
    target: &str,
    to_create: &[format::AddonEntry],
    owner: Option<&str>,
    made: &mut Made,
) -> Result<()> {
    let cart = (!rec.cartridge.is_empty()).then_some(rec.cartridge.as_str());
    app::create(node, actor, target, cart, owner, Some(&rec.profile))?;
    made.app = true;
    eprintln!("-----> created app '{target}'");
    let gear_tar = |file: &str, argv: &[&str]| -> Result<()> {
        let f = s.open(file)?;
        let code = in_gear(node, target, argv, Some(f.into()), None)?;
        if code != 0 {
            bail!("cannot write {file} into app '{target}' (tar exit code {code}; is the app's disk quota smaller than the original's?)");
        }
        Ok(())
    };
    let (repo, data) = (repo_dir(target), data_dir(target));
    gear_tar("repo.tar", &["tar", "-C", &repo, "--exclude=./hooks", "-xf", "-"])?;
    gear_tar("data.tar", &["tar", "-C", &data, "-xf", "-"])?;
    eprintln!("-----> restored the git repository and app-root/data");
    restore_record(node, actor, s, m, rec, target)?;
    if !rec.env.is_empty() {
        // set_env restarts the app from inside its gear, which the caller must not join.
        let code = in_child(None, None, || {
            app::set_env(node, actor, target, |e| {
                *e = rec.env.clone();
                Ok(())
            })
        })?;
        if code != 0 {
            bail!("cannot set the env of app '{target}' (see above)");
        }
    }
    for a in &m.addons {
        if to_create.contains(a) {
            addon::create(node, actor, &a.kind, &a.name, owner, None)?;
            made.addons.push(a.name.clone());
            let f = s.open(&a.dump)?;
            let code = in_child(Some(f.into()), None, || {
                addon::restore(node, &Actor::root(), &a.name, false)
            })?;
            if code != 0 {
                bail!("cannot restore the data of add-on '{}' (see above)", a.name);
            }
            eprintln!("-----> created add-on '{}' ({}) and restored its data", a.name, a.kind);
        } else {
            eprintln!("-----> linking the existing add-on '{}' (its data is kept)", a.name);
        }
        addon::link(
            node,
            actor,
            target,
            &a.name,
            (!a.var.is_empty()).then_some(a.var.as_str()),
        )?;
    }
    deploy_kept(node, s, target)?;
    if rec.gears.len() > 1 {
        let n = rec.gears.len() as u32;
        let code = in_child(None, None, || {
            app::scale(node, target, n)?;
            addon::sync_links(node)
        })?;
        if code != 0 {
            bail!("cannot scale app '{target}' to {n} web gears (see above)");
        }
        eprintln!("-----> scaled to {n} web gears");
    }
    Ok(())
}

/// The record's settings besides env: domains (with their certificates), formation, kept
/// deployments, deploy branch, HTTPS redirect and health check; set before the first deploy,
/// so that it starts the formation's processes.
fn restore_record(node: &Node, actor: &Actor, s: &Scratch, m: &Manifest, rec: &app::App, target: &str) -> Result<()> {
    let hosts = super::domains::restore(node, s, m, rec, target)?;
    let record = app::update(node, actor, target, |a| {
        a.aliases = hosts.clone();
        a.formation = rec.formation.clone();
        a.keep_deployments = rec.keep_deployments;
        a.deploy_branch = rec.deploy_branch.clone();
        a.https_redirect = rec.https_redirect;
        a.health_path = rec.health_path.clone();
        a.health_timeout = rec.health_timeout;
        Ok(())
    })?;
    app::write_descriptors(node, &record)?;
    if !hosts.is_empty() {
        eprintln!("-----> domains: {}", hosts.join(", "));
    }
    Ok(())
}

/// Deploys the deployments the snapshot kept for rollback, oldest first, then the one that was
/// live (none: nothing was deployed), so `rollback` goes where it went before. A kept commit
/// the repository no longer has (garbage-collected) is skipped.
fn deploy_kept(node: &Node, s: &Scratch, target: &str) -> Result<()> {
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(s.path("deployments.json"))?).unwrap_or_default();
    let Some(live) = list
        .iter()
        .find(|d| d["live"] == true)
        .and_then(|d| d["commit"].as_str())
    else {
        return Ok(());
    };
    let older = list
        .iter()
        .filter(|d| d["live"] != true && d["result"] == "deployed")
        .filter_map(|d| d["commit"].as_str());
    for commit in older {
        match import(node, target, commit)? {
            0 => {}
            MISSING => eprintln!(
                "-----> kept deployment of {} not restored: the repository no longer has that commit",
                short(commit)
            ),
            code => bail!(
                "the kept deployment of {} did not deploy (exit code {code}, see above)",
                short(commit)
            ),
        }
    }
    match import(node, target, live)? {
        0 => Ok(()),
        code => bail!(
            "the live commit {} did not deploy (exit code {code}, see above)",
            short(live)
        ),
    }
}

/// What `import` exits with when the repository lacks the commit.
const MISSING: i32 = 3;

fn short(commit: &str) -> &str {
    &commit[..8.min(commit.len())]
}

/// Builds and activates COMMIT of the restored repository (`gear import`, as scaling does).
fn import(node: &Node, target: &str, commit: &str) -> Result<i32> {
    if commit.len() < 7 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("the snapshot's deployments list names {commit:?}, which is not a commit id");
    }
    eprintln!("-----> deploying {}", short(commit));
    let repo = repo_dir(target);
    let script = format!(
        "git -C {repo} cat-file -e {commit}^{{commit}} 2>/dev/null || exit {MISSING}; git -C {repo} archive --format=tar {commit} | /opt/gearshift/bin/gearshift gear import {commit} >&2"
    );
    in_gear(node, target, &["/bin/sh", "-c", &script], None, None)
}
