//! Cartridges: directories with `manifest.toml` and `bin/` hooks that teach gearshift a runtime.

use crate::node::Node;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::PathBuf;

/// A cartridge's `manifest.toml`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub display_name: Option<String>,
    /// `web` (serves the app) or `addon` (database, cron ...).
    pub kind: String,
}

/// A cartridge found on the node's search path.
#[derive(Debug, Clone)]
pub struct Cartridge {
    pub manifest: Manifest,
    pub dir: PathBuf,
}

/// Finds a cartridge by name on the node's cartridge path.
pub fn find(node: &Node, name: &str) -> Result<Cartridge> {
    crate::names::check_app_name(name)
        .map_err(|_| anyhow::anyhow!("'{}' is not a cartridge name", name.escape_default()))?;
    for dir in &node.config.cartridge_path {
        let d = dir.join(name);
        let m = d.join("manifest.toml");
        if m.is_file() {
            let text = std::fs::read_to_string(&m).with_context(|| format!("cannot read {}", m.display()))?;
            let manifest: Manifest = toml::from_str(&text).with_context(|| format!("{} is not valid", m.display()))?;
            if manifest.name != name {
                bail!("{} names cartridge '{}', expected '{name}'", m.display(), manifest.name);
            }
            return Ok(Cartridge { manifest, dir: d });
        }
    }
    let known = list(node).into_iter().map(|c| c.manifest.name).collect::<Vec<_>>();
    bail!(
        "unknown cartridge '{name}' (available: {})",
        if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        }
    )
}

/// What a gear of an app with cartridge `name` sees: that cartridge at /opt/gearshift/cartridge;
/// while the app has none (`name` empty: detected at its first push), every cartridge at
/// /opt/gearshift/cartridges/NAME.
pub fn binds(node: &Node, name: &str) -> Result<Vec<(PathBuf, PathBuf)>> {
    if name.is_empty() {
        return Ok(list(node)
            .into_iter()
            .map(|c| {
                let at = PathBuf::from(crate::ingear::detect::CARTRIDGES_DIR).join(&c.manifest.name);
                (c.dir, at)
            })
            .collect());
    }
    Ok(vec![(find(node, name)?.dir, "/opt/gearshift/cartridge".into())])
}

/// Every cartridge on the search path (first one wins for a name).
pub fn list(node: &Node) -> Vec<Cartridge> {
    let mut out: Vec<Cartridge> = Vec::new();
    for dir in &node.config.cartridge_path {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            if out.iter().any(|c| c.manifest.name == n) {
                continue;
            }
            if let Ok(c) = find_in(dir, &n) {
                out.push(c);
            }
        }
    }
    out
}

fn find_in(dir: &std::path::Path, name: &str) -> Result<Cartridge> {
    let d = dir.join(name);
    let text = std::fs::read_to_string(d.join("manifest.toml"))?;
    let manifest: Manifest = toml::from_str(&text)?;
    Ok(Cartridge { manifest, dir: d })
}

/// `gearshift cartridges`: what can be passed to `app create --cartridge`.
pub fn print_list(node: &Node, json: bool) -> Result<()> {
    let carts = list(node);
    if json {
        let v: Vec<_> = carts
            .iter()
            .map(|c| serde_json::json!({"manifest": c.manifest, "dir": c.dir}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = carts
        .iter()
        .map(|c| {
            let m = &c.manifest;
            vec![
                m.name.clone(),
                m.version.clone(),
                m.kind.clone(),
                m.display_name.clone().unwrap_or_default(),
                c.dir.display().to_string(),
            ]
        })
        .collect();
    crate::table::print(&["NAME", "VERSION", "KIND", "DESCRIPTION", "DIR"], &rows);
    Ok(())
}
