//! The environment of every app process (web, other process types, hooks, `run`, `shell`), as
//! Heroku and Dokku give it: the working directory is the deployment's repository, and `PATH`
//! starts with the deployment's own executables (the cartridge's `app_path`: a virtualenv's
//! `bin`, `node_modules/.bin`), then the cartridge's (`path`), then the system's.

use crate::gear::layout;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the gear sees its cartridge.
pub const CARTRIDGE_DIR: &str = "/opt/gearshift/cartridge";

/// The gear's cartridge directory: the one mounted for its app, else (an app created without
/// a cartridge, before the gear restarts with the one detected at its first push) the detected one.
pub fn cartridge_dir() -> PathBuf {
    let mounted = Path::new(CARTRIDGE_DIR);
    if mounted.join("manifest.toml").is_file() {
        return mounted.to_path_buf();
    }
    match crate::ingear::detect::detected() {
        Some(name) => Path::new(crate::ingear::detect::CARTRIDGES_DIR).join(name),
        None => mounted.to_path_buf(),
    }
}

/// The part of a cartridge's `manifest.toml` that shapes `PATH`.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct PathSpec {
    /// The cartridge's name (`python`, `nodejs`).
    #[serde(default)]
    pub name: String,
    /// Directories inside the deployment, first on `PATH` (python: `.venv/bin`).
    #[serde(default)]
    pub app_path: Vec<String>,
    /// Directories inside the cartridge, after the deployment's.
    #[serde(default)]
    pub path: Vec<String>,
}

impl PathSpec {
    /// The gear's cartridge's (none when its manifest cannot be read: the system's `PATH` only).
    pub fn of_cartridge() -> PathSpec {
        std::fs::read_to_string(cartridge_dir().join("manifest.toml"))
            .ok()
            .and_then(|t| toml::from_str(&t).ok())
            .unwrap_or_default()
    }
}

/// The live deployment's repository directory, resolved.
pub fn live_repo() -> Option<PathBuf> {
    let link = layout::in_home(layout::REPO);
    // Before the first deploy, app-root/repo is the empty directory of the OpenShift layout.
    if !link.is_symlink() {
        return None;
    }
    std::fs::canonicalize(link).ok().filter(|p| p.is_dir())
}

/// `PATH` for a process of deployment `repo`: its directories, the cartridge's, then `base`.
pub fn search_path(repo: &Path, spec: &PathSpec, base: &str) -> String {
    let rel = |p: &String| !p.is_empty() && !p.starts_with('/') && !p.split('/').any(|c| c == "..");
    let app = spec.app_path.iter().filter(|p| rel(p)).map(|p| repo.join(p));
    let cart = spec.path.iter().filter(|p| rel(p)).map(|p| cartridge_dir().join(p));
    let mut dirs: Vec<String> = app.chain(cart).map(|p| p.display().to_string()).collect();
    if !base.is_empty() {
        dirs.push(base.to_string());
    }
    dirs.join(":")
}

/// `env` made right for a process of deployment `repo`: `PATH` as [`search_path`] (after the
/// system's in `env`), `OPENSHIFT_REPO_DIR` the deployment.
pub fn for_deployment(mut env: Vec<(String, String)>, repo: &Path, spec: &PathSpec) -> Vec<(String, String)> {
    let base = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    env.retain(|(k, _)| k != "PATH" && k != "OPENSHIFT_REPO_DIR");
    env.push(("PATH".into(), search_path(repo, spec, &base)));
    env.push(("OPENSHIFT_REPO_DIR".into(), format!("{}/", repo.display())));
    let cart = cartridge_dir();
    if cart != Path::new(CARTRIDGE_DIR) {
        // Detected at this gear's first push: not where the descriptor says.
        let dir = format!("{}/", cart.display());
        for (k, v) in env.iter_mut() {
            if k.starts_with("OPENSHIFT_") && k.ends_with("_DIR") && v.as_str() == "/opt/gearshift/cartridge/" {
                *v = dir.clone();
            }
        }
        // And its OPENSHIFT_<CART>_* names, which the descriptor gets once the push succeeded.
        let ip = crate::gear::meta::GearInfo::load_in_gear().map(|i| i.ip.to_string());
        if let (Some(name), Ok(ip)) = (cart.file_name(), ip) {
            add_cartridge_names(&mut env, &name.to_string_lossy(), &dir, &ip);
        }
    }
    env
}

/// `OPENSHIFT_<CART>_DIR`, `_IP` and `_PORT` (= `PORT`) for cartridge `name`, unless set.
fn add_cartridge_names(env: &mut Vec<(String, String)>, name: &str, dir: &str, ip: &str) {
    let cart = name.to_ascii_uppercase().replace('-', "_");
    let port = env
        .iter()
        .find(|(k, _)| k == "PORT")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "8080".into());
    for (suffix, value) in [("DIR", dir), ("IP", ip), ("PORT", &port)] {
        let key = format!("OPENSHIFT_{cart}_{suffix}");
        if !env.iter().any(|(k, _)| *k == key) {
            env.push((key, value.to_string()));
        }
    }
}

/// `gearshift gear exec -- CMD...` (what `run` and `shell` start): CMD in the live deployment
/// with its `PATH`, like `heroku run`. Before the first deploy: in the home, the system's `PATH`.
pub fn exec(argv: &[String]) -> anyhow::Result<i32> {
    let (mut cmd, what) = command(argv)?;
    if let Some(repo) = live_repo() {
        let env = for_deployment(std::env::vars().collect(), &repo, &PathSpec::of_cartridge());
        cmd.env_clear().envs(env).current_dir(&repo);
    }
    Ok(exec_or_code(&mut cmd, &what))
}

/// `gearshift gear lifeline -- CMD...`: CMD as root gave it (the working directory and
/// environment `gear/spawn.rs` set).
pub fn exec_as_given(argv: &[String]) -> anyhow::Result<i32> {
    let (mut cmd, what) = command(argv)?;
    Ok(exec_or_code(&mut cmd, &what))
}

/// `argv` as a command, and how its program is named in an error.
fn command(argv: &[String]) -> anyhow::Result<(std::process::Command, String)> {
    let Some((prog, args)) = argv.split_first() else {
        anyhow::bail!("no command given: `gearshift run APP -- COMMAND...`");
    };
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args);
    Ok((cmd, prog.escape_default().to_string()))
}

/// Replaces this process with `cmd`; when that fails, says so and gives the shell's exit code
/// (127: not found, 126: not runnable).
pub fn exec_or_code(cmd: &mut std::process::Command, what: &str) -> i32 {
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    eprintln!("gearshift: cannot run {what}: {e}");
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detected_cartridge_gets_its_openshift_names_with_the_process_port() {
        let mut env = vec![("PORT".to_string(), "8081".to_string())];
        add_cartridge_names(&mut env, "python", "/opt/gearshift/cartridges/python/", "10.0.0.5");
        add_cartridge_names(&mut env, "python", "/elsewhere/", "10.9.9.9");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("OPENSHIFT_PYTHON_IP"), Some("10.0.0.5"));
        assert_eq!(get("OPENSHIFT_PYTHON_PORT"), Some("8081"));
        assert_eq!(get("OPENSHIFT_PYTHON_DIR"), Some("/opt/gearshift/cartridges/python/"));
        assert_eq!(env.len(), 4);
    }

    #[test]
    fn the_deployment_comes_first_then_the_cartridge_then_the_system() {
        let spec = PathSpec {
            app_path: vec![".venv/bin".into(), "/etc".into(), "../x".into()],
            path: vec!["usr/bin".into()],
            ..Default::default()
        };
        let p = search_path(Path::new("/home/a/app-deployments/1/repo"), &spec, "/usr/bin:/bin");
        assert_eq!(
            p,
            "/home/a/app-deployments/1/repo/.venv/bin:/opt/gearshift/cartridge/usr/bin:/usr/bin:/bin"
        );
        let env = for_deployment(
            vec![
                ("PATH".into(), "/bin".into()),
                ("OPENSHIFT_REPO_DIR".into(), "x".into()),
            ],
            Path::new("/r"),
            &PathSpec::default(),
        );
        assert_eq!(
            env,
            vec![
                ("PATH".to_string(), "/bin".to_string()),
                ("OPENSHIFT_REPO_DIR".to_string(), "/r/".to_string())
            ]
        );
    }

    #[test]
    fn a_manifest_names_its_paths() {
        let s: PathSpec = toml::from_str("name = \"python\"\napp_path = [\".venv/bin\"]\n").unwrap();
        assert_eq!(s.app_path, vec![".venv/bin"]);
        assert!(s.path.is_empty());
    }
}
