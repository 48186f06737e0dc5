//! The gear home's layout (OpenShift v2's), named once. Paths are relative to the home:
//! `/home/APP` inside the gear, `<data_root>/gears/ID` on the host. And where the gear sees
//! gearshift's own binary.

use std::path::PathBuf;

/// Where a gear sees the gearshift binary (bound read-only by `init.rs`).
pub const BINARY: &str = "/opt/gearshift/bin/gearshift";

/// Persistent data of the app (`OPENSHIFT_DATA_DIR`).
pub const DATA: &str = "app-root/data";
/// Logs (`OPENSHIFT_LOG_DIR`); the web process writes `WEB_LOG`.
pub const LOGS: &str = "app-root/logs";
/// The web process's output, rotated by size.
pub const WEB_LOG: &str = "app-root/logs/web.log";
/// Every process's output, each line prefixed with its process (`web.1 | `, `worker.1 | `).
pub const ALL_LOG: &str = "app-root/logs/all.log";
/// Runtime files of gearshift inside the gear.
pub const RUNTIME: &str = "app-root/runtime";
/// Whether the web process should run (kept across gear restarts).
pub const WANTED: &str = "app-root/runtime/.gearshift-wanted";
/// Serialises pushes inside the gear.
pub const PUSH_LOCK: &str = "app-root/runtime/.gearshift-push.lock";
/// The live deployment: a symlink into `DEPLOYMENTS` (`OPENSHIFT_REPO_DIR`); an empty
/// directory before the first deploy.
pub const REPO: &str = "app-root/repo";
/// Where the next `REPO` link is made before it is renamed over the old one.
pub const REPO_NEXT: &str = "app-root/.repo.tmp";
/// One directory per deployment (`OPENSHIFT_DEPLOYMENTS_DIR`).
pub const DEPLOYMENTS: &str = "app-deployments";
/// Environment files.
pub const ENV: &str = ".env";
/// The directory of the app's bare git repository.
pub const GIT: &str = "git";

/// The directories every gear home starts with.
pub const CREATED: &[&str] = &[DATA, LOGS, RUNTIME, REPO, GIT, ENV];

/// The app's bare git repository, relative to the home.
pub fn git_repo(app: &str) -> String {
    format!("{GIT}/{app}.git")
}

/// The app's bare git repository as the gear sees it.
pub fn inner_git_repo(app: &str) -> String {
    format!("/home/{app}/{}", git_repo(app))
}

/// The home directory as the gear sees it.
pub fn inner_home(app: &str) -> PathBuf {
    PathBuf::from(format!("/home/{app}"))
}

/// A deployment id as `ingear/deploy.rs` makes them (a timestamp and a commit prefix): one
/// plain path component, so an id a gear or a caller names cannot leave `DEPLOYMENTS`.
pub fn is_deployment_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// What `REPO` links to for deployment `id` (relative, so it resolves inside the gear too).
pub fn repo_link(id: &str) -> String {
    format!("../{DEPLOYMENTS}/{id}/repo")
}

/// Inside the gear: `rel` under the home (`$HOME`, which the gear's init sets).
pub fn in_home(rel: &str) -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/".into())).join(rel)
}

#[cfg(test)]
mod tests {
    use super::is_deployment_id;

    #[test]
    fn only_plain_deployment_ids_are_read() {
        assert!(is_deployment_id("20261202T230102-abcdef12"));
        for bad in ["", "..", ".", "a/b", "../x", "a b", "a.b", &"x".repeat(65)] {
            assert!(!is_deployment_id(bad), "{bad:?}");
        }
    }
}
