//! Deterministic fault points, for tests only. A test harness starts the daemon with
//! `GEARSHIFT_FAULT=POINT` (every app) or `GEARSHIFT_FAULT=APP=POINT,APP2=POINT2` (one point
//! per app, so that cells of a fault table run side by side on one node); the daemon hands that one variable (and never an app's variable of
//! the same name) to what it runs in gears, and the process that reaches POINT writes the
//! marker `<gear home>/app-root/runtime/fault-POINT` and waits until the test removes it. So a
//! test waits on the marker, kills whatever it wants to kill at that exact step, then lets the
//! survivors go on. The gear's init keeps the variable of whoever started it, so its supervisor
//! pauses too; root's own points (`reached_on_host`) write their marker in the node's run
//! directory. Nothing an SSH user sends reaches the daemon's environment.

use std::time::Duration;

/// The environment variable naming the one fault point to pause at.
pub const ENV: &str = "GEARSHIFT_FAULT";

/// The fault variable to pass on into a gear: the daemon's own, if any.
pub fn passed_on() -> Option<(String, String)> {
    std::env::var(ENV).ok().map(|v| (ENV.to_string(), v))
}

/// Sets the fault variable of `env` (a gear command's environment) to this process's own:
/// an app's variable of that name is dropped.
pub fn pass_on(env: &mut Vec<(String, String)>) {
    env.retain(|(k, _)| k != ENV);
    env.extend(passed_on());
}

/// Pauses at `point` when the environment names it, in a gear (the app: `OPENSHIFT_APP_NAME`,
/// or the gear's hostname, which is its app's name, in the supervisor), the first time this
/// process reaches it (a point inside a loop, `during-build` for the cartridge's build and then
/// the app's, pauses once): writes its marker under the gear's runtime directory and waits
/// until the marker is removed (or this process is killed).
pub fn reached(point: &str) {
    let app = std::env::var("OPENSHIFT_APP_NAME")
        .ok()
        .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
        .unwrap_or_default();
    let dir = crate::gear::layout::in_home(crate::gear::layout::RUNTIME);
    pause(&dir.join(format!("fault-{point}")), point, &app);
}

/// Pauses at `point` of root's own side (the CLI, an SSH worker) for `app`, as [`reached`]
/// does, with the marker `<node run dir>/fault-APP-POINT` (root's only, where no gear writes).
pub fn reached_on_host(run_dir: &std::path::Path, point: &str, app: &str) {
    pause(&run_dir.join(format!("fault-{app}-{point}")), point, app);
}

fn pause(marker: &std::path::Path, point: &str, app: &str) {
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !names(&std::env::var(ENV).unwrap_or_default(), point, app)
        || PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        return;
    }
    if std::fs::write(marker, format!("{}\n", std::process::id())).is_err() {
        return;
    }
    // Test-only: the test removes the marker when the survivors may go on.
    while marker.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `spec` (`POINT`, or `APP=POINT` entries separated by commas) names `point` for `app`.
fn names(spec: &str, point: &str, app: &str) -> bool {
    spec.split(',').any(|e| match e.split_once('=') {
        Some((a, p)) => a == app && p == point,
        None => e == point,
    })
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn a_point_is_named_for_every_app_or_for_one() {
        assert!(names("after-build", "after-build", "shop"));
        assert!(!names("after-build", "after-switch", "shop"));
        assert!(names("blog=after-switch,shop=after-build", "after-build", "shop"));
        assert!(!names("blog=after-switch,shop=after-build", "after-switch", "shop"));
        assert!(!names("", "after-build", "shop"));
    }
}
