//! `snapshot restore APP [--as NEW] < app.tar.gz`: the whole file is read into a root-only
//! scratch directory and checked against its manifest (format, sizes, SHA-256) before anything
//! changes; then the app is created, its repository and data written by tar inside its gear,
//! its env set, its add-ons linked, and the restored repository's live commit deployed.
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
    let cart = (!rec.cartridge.is_empty()).then_some(rec.cartridge.as_str());
    app::create(node, actor, target, cart, owner.as_deref(), Some(&rec.profile))?;
    eprintln!("-----> created app '{target}'");
    let gear_tar = |file: &str, argv: &[&str]| -> Result<()> {
        let f = s.open(file)?;
        let code = in_gear(node, target, argv, Some(f.into()), None)?;
        if code != 0 {
            bail!("cannot restore {file} into app '{target}' (tar exit code {code}); destroy the app and try again");
        }
        Ok(())
    };
    let (repo, data) = (repo_dir(target), data_dir(target));
    gear_tar("repo.tar", &["tar", "-C", &repo, "--exclude=./hooks", "-xf", "-"])?;
    gear_tar("data.tar", &["tar", "-C", &data, "-xf", "-"])?;
    eprintln!("-----> restored the git repository and app-root/data");
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
            addon::create(node, actor, &a.kind, &a.name, owner.as_deref(), None)?;
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
    deploy_live(node, &s, target)?;
    if !rec.aliases.is_empty() {
        eprintln!(
            "-----> domains not restored (another app may hold them): {}; add them with `domain add {target} NAME`",
            rec.aliases.join(", ")
        );
    }
    eprintln!("restored app '{target}' from the snapshot of '{name}'");
    Ok(())
}

/// Deploys the commit that was live when the snapshot was taken (none: nothing was deployed).
fn deploy_live(node: &Node, s: &Scratch, target: &str) -> Result<()> {
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(s.path("deployments.json"))?).unwrap_or_default();
    let Some(commit) = list
        .iter()
        .find(|d| d["live"] == true)
        .and_then(|d| d["commit"].as_str())
    else {
        return Ok(());
    };
    if commit.len() < 7 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("the snapshot's live commit {commit:?} is not a commit id");
    }
    eprintln!("-----> deploying {}", &commit[..8.min(commit.len())]);
    let script = format!(
        "git -C {} archive --format=tar {commit} | /opt/gearshift/bin/gearshift gear import {commit} >&2",
        repo_dir(target)
    );
    let code = in_gear(node, target, &["/bin/sh", "-c", &script], None, None)?;
    if code != 0 {
        bail!("app '{target}' was restored but its live commit did not deploy (exit code {code}): push it again with git push");
    }
    Ok(())
}
