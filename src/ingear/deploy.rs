//! The deploy pipeline, run inside the gear by git's pre-receive hook, before git accepts the
//! push. It reads like the steps it runs: check out the pushed commit into a new deployment,
//! run the cartridge's and the app's hooks (pre_build, build, deploy), switch the live
//! deployment and restart the web process, wait until it answers, run post_deploy, prune.
//! Any failure rejects the push and leaves the previous deployment serving.

use crate::gear::control;
use crate::gear::home_file;
use crate::gear::layout;
use crate::gear::meta::GearInfo;
use crate::ingear::appjson;
use crate::ingear::journal::{self, Journal, Verdict};
use crate::ingear::procenv;
use crate::ingear::procfile;
use crate::ingear::release;
use crate::ingear::reserve;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const ZERO: &str = "0000000000000000000000000000000000000000";

/// `<deployment>/metadata.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub commit: String,
    pub branch: String,
    pub time: u64,
    /// building, deployed, failed: ...
    pub result: String,
    /// What the pusher may not know: the push connection was lost after git recorded the push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The pipeline's steps run so far, in order; root records them as events after the push
    /// (`app/git.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

/// The steps a deployment records, in the order they run.
pub const STEPS: [&str; 6] = ["pre_build", "build", "deploy", "release", "switch", "post_deploy"];

/// One step's result: whether it ended well and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub ms: u64,
}

/// Runs step `name` (`f`), adding its result to `steps`.
fn timed<T>(steps: &mut Vec<Step>, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f();
    steps.push(Step {
        name: name.into(),
        ok: r.is_ok(),
        ms: t.elapsed().as_millis() as u64,
    });
    r
}

fn deployments_dir() -> PathBuf {
    layout::in_home(layout::DEPLOYMENTS)
}

/// Set once a write to the pusher fails: the push connection is gone.
static PUSHER_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A message for the pusher, an SSH user: `` `gearshift VERB` `` hints in the form they type.
fn for_pusher(info: &GearInfo, msg: &str) -> String {
    if info.ssh.is_empty() {
        return msg.to_string();
    }
    msg.replace("`gearshift ", &format!("`{} ", info.ssh))
}

fn say(msg: &str) {
    // The pusher sees stdout and stderr of the hook as `remote:` lines.
    let mut out = std::io::stdout();
    if writeln!(out, "-----> {msg}").and_then(|_| out.flush()).is_err() {
        PUSHER_GONE.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn git(args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!("git {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Every deployment, oldest first.
pub fn list() -> Vec<Deployment> {
    let mut out: Vec<Deployment> = std::fs::read_dir(deployments_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| load(e.file_name().to_str()?))
        .collect();
    out.sort_by(|a: &Deployment, b| a.id.cmp(&b.id));
    out
}

/// One deployment's record, by its id.
fn load(id: &str) -> Option<Deployment> {
    toml::from_str(&std::fs::read_to_string(deployments_dir().join(id).join("metadata.toml")).ok()?).ok()
}

fn save(d: &Deployment) -> Result<()> {
    let p = deployments_dir().join(&d.id).join("metadata.toml");
    crate::state::write_atomic(&p, toml::to_string(d)?.as_bytes(), 0o644)
}

/// Records a deployment that is not (or no longer) live as failed. A failure that cannot be
/// recorded (the disk is full: what failed the push, often) removes the deployment, so that
/// no record is left saying "building".
fn record_failed(d: &Deployment) {
    if save(d).is_err() {
        let _ = std::fs::remove_dir_all(deployments_dir().join(&d.id));
    }
}

/// The id of the live deployment (from the `app-root/repo` link).
pub fn live_id() -> Option<String> {
    procenv::live_repo()?
        .parent()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// Makes deployment `id` live: the supervisor's `switch ID` starts its web process beside the
/// running one, and once it is ready moves the `app-root/repo` link and makes it live in one
/// step (whoever asked may die meanwhile). On failure the previous deployment stays live and
/// running.
pub fn switch_to(_info: &GearInfo, id: &str) -> Result<()> {
    let previous = live_id();
    let log = layout::in_home(layout::WEB_LOG);
    let log_start = std::fs::metadata(&log).map_or(0, |m| m.len());
    if let Err(e) = control::ctl(&format!("switch {id}")) {
        // What the new process said before it failed, for the pusher (the hook's output
        // reaches them as `remote:` lines).
        let tail = home_file::last_lines(&read_from(&log, log_start), START_OUTPUT_LINES);
        if !tail.is_empty() {
            say(&format!(
                "the web process's last output ({} line(s) of {}):",
                tail.len(),
                layout::WEB_LOG
            ));
            let mut out = std::io::stdout();
            for l in &tail {
                let _ = writeln!(out, "       {l}");
            }
            let _ = out.flush();
        }
        if let Some(p) = &previous {
            say(&format!("{p} stays live"));
        }
        return Err(e);
    }
    Ok(())
}

/// Lines of a failed start's output shown to the pusher.
const START_OUTPUT_LINES: usize = 20;

/// `path` from byte `offset` on (lossy UTF-8; at most the last 64 KiB).
fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let from = offset.max(len.saturating_sub(64 * 1024));
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs one step: the cartridge's `bin/STEP`, then the app's `.openshift/action_hooks/STEP`.
/// `env` is every app process's (`procenv`), for the deployment being built.
fn run_step(step: &str, repo: &Path, env: &[(String, String)]) -> Result<()> {
    let cart = procenv::cartridge_dir().join("bin").join(step);
    let hook = repo.join(".openshift/action_hooks").join(step);
    for (who, path) in [("cartridge", cart), ("action hook", hook)] {
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.permissions().mode() & 0o111 == 0 {
            say(&format!(
                "{who} {step}: {} is not executable, skipped (chmod +x it)",
                path.display()
            ));
            continue;
        }
        say(&format!("{who} {step}"));
        let mut child = Command::new(&path)
            .env_clear()
            .envs(env.iter().cloned())
            .current_dir(repo)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", path.display()))?;
        crate::fault::reached(&format!("during-{step}"));
        let st = child
            .wait()
            .with_context(|| format!("cannot wait for {}", path.display()))?;
        if !st.success() {
            let code = st
                .code()
                .map(|c| format!("exit code {c}"))
                .unwrap_or_else(|| format!("{st}"));
            bail!("{who} {step} failed with {code}");
        }
    }
    Ok(())
}

/// Removes deployments beyond the newest `keep` (never the live one).
fn prune(keep: u32) {
    let live = live_id();
    let all = list();
    let excess = all.len().saturating_sub(keep.max(1) as usize);
    for d in all.into_iter().take(excess) {
        if Some(&d.id) != live.as_ref() {
            let _ = std::fs::remove_dir_all(deployments_dir().join(&d.id));
        }
    }
}

fn new_id(commit: &str) -> String {
    format!("{}-{}", crate::clock::compact_now(), &commit[..commit.len().min(8)])
}

/// Builds and deploys `commit` (which is in git's quarantine until the hook succeeds).
fn deploy(info: &GearInfo, commit: &str, branch: &str) -> Result<()> {
    deploy_from(info, commit, branch, Source::Git)
}

/// Where a deployment's files come from.
enum Source {
    /// `git archive` of the commit, in this gear's repository (a push).
    Git,
    /// A tar stream on stdin (another gear of a scaled app hands over its live deployment).
    Stdin,
}

/// Whether `commit` (or, from git, a commit with the same files) is live already; says so.
fn already_live(source: &Source, commit: &str) -> bool {
    let live = live_id().and_then(|id| load(&id));
    if let (Source::Stdin, Some(l)) = (source, &live) {
        if l.commit == commit {
            say(&format!(
                "{} is live already ({})",
                &commit[..8.min(commit.len())],
                l.id
            ));
            return true;
        }
    }
    if let (Source::Git, Some(l)) = (source, &live) {
        let same = git(&["rev-parse", &format!("{commit}^{{tree}}")]).ok()
            == git(&["rev-parse", &format!("{}^{{tree}}", l.commit)]).ok();
        if same {
            say(&format!(
                "nothing deployable changed: the files of {} are live already ({})",
                &commit[..8],
                l.id
            ));
            return true;
        }
    }
    false
}

fn deploy_from(info: &GearInfo, commit: &str, branch: &str, source: Source) -> Result<()> {
    let t0 = Instant::now();
    if already_live(&source, commit) {
        return Ok(());
    }
    let id = new_id(commit);
    let dir = deployments_dir().join(&id);
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).with_context(|| format!("cannot create {}", repo.display()))?;
    let mut d = Deployment {
        id: id.clone(),
        commit: commit.into(),
        branch: branch.into(),
        time: crate::clock::now(),
        result: "building".into(),
        note: None,
        steps: Vec::new(),
    };
    save(&d)?;
    say(&format!("deploying {} ({branch}) as {id}", &commit[..8]));
    // A push's switch is journaled: git's ref update decides whether it stays (`settle`). The
    // release commands run once per push: not again where the other gears of a scaled app import it.
    let journal = matches!(source, Source::Git).then(|| Journal {
        id: id.clone(),
        commit: commit.into(),
        branch: branch.into(),
        previous: live_id(),
    });
    let mut steps = Vec::new();
    let mut result =
        check_out(source, commit, &repo).and_then(|_| build_and_switch(info, &id, &repo, journal.as_ref(), &mut steps));
    d.steps = steps;
    if result.is_ok() {
        // Not recorded (a full disk): the push fails, and its switch is undone.
        d.result = "deployed".into();
        result = save(&d);
    }
    match result {
        Ok(()) => {
            if journal.is_none() {
                prune(info.keep_deployments);
            }
            // A push's settler prunes (removing a whole deployment with its virtualenv or
            // node_modules) once git is done: it would compete with the new process's start.
            say(&format!(
                "deployed {id} in {:.2}s: {}",
                t0.elapsed().as_secs_f64(),
                if info.url.is_empty() {
                    format!(
                        "http://{}/",
                        info.env.get("OPENSHIFT_APP_DNS").cloned().unwrap_or_default()
                    )
                } else {
                    info.url.clone()
                }
            ));
            Ok(())
        }
        Err(e) => {
            d.result = format!("failed: {e:#}");
            // A switch made stays journaled, for the settler to undo once git has ended.
            let switched = live_id().as_deref() == Some(id.as_str());
            if !switched {
                journal::clear();
                reserve::give_back();
                let _ = std::fs::remove_dir_all(&repo);
            }
            // A switch made is recorded by the settler, once undone.
            if switched {
                let _ = save(&d);
            } else {
                record_failed(&d);
            }
            prune(info.keep_deployments);
            let still = match (&journal, live_id()) {
                (Some(j), _) if switched => format!(
                    "{} is made live again once git has ended",
                    j.previous.as_deref().unwrap_or("nothing")
                ),
                (_, Some(l)) => format!("{l} keeps serving"),
                (_, None) => "nothing was live".into(),
            };
            say(&for_pusher(
                info,
                &format!("FAILED: {e:#}; push rejected, {still}{}", disk_full_hint(&e, &info.app)),
            ));
            Err(e)
        }
    }
}

/// What to do when `e` came from a full disk (the gear's quota), else nothing.
fn disk_full_hint(e: &anyhow::Error, app: &str) -> String {
    let full = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            .is_some_and(|n| n == libc::EDQUOT || n == libc::ENOSPC)
    });
    if !full {
        return String::new();
    }
    format!(". The gear's disk is full: free space in it (`gearshift run {app} -- du -sh ~/app-root/data`) or ask for a profile with more disk, then push again")
}

/// Unpacks the source of `commit` (from the gear's repository, or a tar on stdin) into `repo`.
fn check_out(source: Source, commit: &str, repo: &Path) -> Result<()> {
    let input = match source {
        Source::Git => Stdio::from(
            Command::new("git")
                .args(["archive", "--format=tar", commit])
                .stdout(Stdio::piped())
                .spawn()?
                .stdout
                .context("no git archive output")?,
        ),
        Source::Stdin => Stdio::inherit(),
    };
    let st = Command::new("tar")
        .args(["-x", "--no-same-owner", "-C"])
        .arg(repo)
        .stdin(input)
        .status()?;
    if !st.success() {
        bail!("cannot check out {commit} (disk quota?)");
    }
    Ok(())
}

/// The cartridge's and the app's hooks (pre_build, build, deploy), the release commands (for a
/// push, which carries a journal), then the switch to the new deployment, then post_deploy and
/// app.json's postdeploy.
fn build_and_switch(
    info: &GearInfo,
    id: &str,
    repo: &Path,
    journal: Option<&Journal>,
    steps: &mut Vec<Step>,
) -> Result<()> {
    crate::fault::reached("after-checkout");
    let push = journal.is_some();
    // The app's own manifests first: a bad Procfile or app.json fails the push before any build.
    let procs = procfile::read(repo)?.unwrap_or_default();
    if info.cartridge.is_empty() {
        say(&crate::ingear::detect::choose(repo)?);
    } else {
        crate::ingear::detect::adopt(&info.cartridge)?;
    }
    let app_json = appjson::read(repo)?;
    let jobs = crate::ingear::cron::jobs(repo, &app_json)?;
    if !jobs.is_empty() {
        say(&format!(
            "cron: {} scheduled job(s) (see `cron list {}`)",
            jobs.len(),
            info.app
        ));
    }
    let checks = app_json.startup_checks();
    if !checks.is_empty() {
        let names: Vec<String> = checks.iter().map(|c| c.label()).collect();
        say(&format!(
            "healthchecks: the new web process must pass {} before it goes live",
            names.join(", ")
        ));
    }
    let mut env = info.env_pairs();
    env.push(("GEARSHIFT_DEPLOYMENT_ID".into(), id.to_string()));
    env.push((
        "GEARSHIFT_PREVIOUS_DEPLOYMENT".into(),
        procenv::live_repo()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    ));
    let spec = procenv::PathSpec::of_cartridge();
    let mut env = procenv::for_deployment(env, repo, &spec);
    if let Some((interp, note)) = crate::ingear::runtime_pin::resolve(&spec.name, repo)? {
        say(&note);
        // The cartridge's build makes the deployment's environment with it (python: the venv).
        env.push(("GEARSHIFT_INTERPRETER".into(), interp.path.display().to_string()));
    }
    for step in ["pre_build", "build", "deploy"] {
        timed(steps, step, || run_step(step, repo, &env))?;
        if push && relay_is_gone(true) {
            bail!("the push connection is gone; stopped after {step}");
        }
    }
    crate::fault::reached("after-build");
    let scripts = if push {
        release::before_switch(&app_json, &procs)
    } else {
        Vec::new()
    };
    if !scripts.is_empty() {
        timed(steps, "release", || {
            scripts.iter().try_for_each(|script| {
                say(&format!("{}: {}", script.label, script.command));
                release::run(script, repo, &env)
            })
        })?;
    }
    say("starting the new deployment");
    // Never switch for a push nobody waits for (the connection or the daemon died): git would
    // not record the ref. What dies after this check is undone by `settle`.
    if PUSHER_GONE.load(std::sync::atomic::Ordering::SeqCst) || relay_is_gone(push) {
        bail!("the push connection is gone; not switching");
    }
    let mut settler = false;
    if let Some(j) = journal {
        // Room to undo the switch, whatever fills the disk after it (given back once settled).
        // (Given back by `deploy_from` too when the journal cannot be written: nothing switched.)
        reserve::take()?;
        journal::begin(j)?;
        // From here on, whatever ends this hook (its own failure, a kill), the switch is
        // settled once git has ended.
        settler = settle_after_git(info.keep_deployments);
    }
    timed(steps, "switch", || switch_to(info, id))?;
    crate::fault::reached("after-switch");
    // What runs against the live deployment is reported when it fails, not fatal: it is live.
    if let Err(e) = timed(steps, "post_deploy", || run_step("post_deploy", repo, &env)) {
        say(&format!("warning: {e:#}"));
    }
    let first = journal.is_some_and(|j| j.previous.is_none());
    for script in release::after_switch(&app_json, first).into_iter().filter(|_| push) {
        say(&format!("{}: {}", script.label, script.command));
        if let Err(e) = release::run(&script, repo, &env) {
            say(&format!("warning: {e:#}; {id} is live"));
        }
    }
    // The point of no return: once the hook ends well, git records the ref and tells the
    // client. A push whose relay is gone by now cannot be told: the previous deployment again.
    if let Some(j) = journal {
        crate::fault::reached("before-no-return");
        if relay_is_gone(true) {
            let previous = j.previous.as_deref().unwrap_or("nothing");
            // The settler puts the previous deployment back once git has ended (it may be
            // doing so now: git dies with its relay). One switch back, not two at once.
            if settler {
                bail!("the push connection is gone; {previous} is made live again once git has ended");
            }
            back_to_previous(j)
                .context("the push connection is gone, and the previous deployment could not be restored")?;
            bail!("the push connection is gone; {previous} is live again");
        }
    }
    Ok(())
}

/// Whether the push's relay is gone. A push's hook runs under git-receive-pack, whose stdio a
/// process outside the gear relays (the SSH worker, or the CLI), and which dies with it
/// (`PR_SET_PDEATHSIG`, set by `gearshift gear git-serve` after its exec into the gear, see
/// `git_serve.rs`; the relay also kills it when its caller hangs up): the hook is then adopted
/// by the gear's init (its parent is 1). A git that outlived its relay would be adopted by a
/// reaper outside the gear and still show parent 0 here: seen only when it was adopted inside
/// (parent not 0). Without a push (`import`), this process's own parent is the relay.
fn relay_is_gone(push: bool) -> bool {
    let parent = nix::unistd::getppid().as_raw();
    if parent == 1 {
        return true;
    }
    push && parent_of(parent) != Some(0)
}

/// The parent of process `pid`, as this pid namespace sees it (`/proc/PID/stat`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (COMM) STATE PPID ...`; COMM may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Makes the deployment that was live before journaled switch `j` live again (stops the web
/// process when there was none). The supervisor answers once a switch it is still making (its
/// caller died) is done, so this comes after it; the previous deployment live and running
/// already is left as it is.
fn back_to_previous(j: &Journal) -> Result<()> {
    match &j.previous {
        Some(p) => GearInfo::load_in_gear().and_then(|info| switch_to(&info, p)),
        None => control::ctl("stop").and_then(|_| Ok(std::fs::remove_file(layout::in_home(layout::REPO))?)),
    }
}

/// Settles a journaled switch (the push lock held): kept when the deploy branch's ref names
/// its commit, else the previous deployment is made live again and the record says why. A kept
/// switch whose push lost its connection after git recorded it (`relay_lost`) says so in
/// `deploy list`: the pusher may have seen an error.
fn settle(relay_lost: bool) {
    let Some(j) = journal::read() else { return };
    // In the app's repository (the supervisor settles from the home), by the ref alone: the
    // push's quarantine (named by git's environment) is gone by now.
    let repo =
        GearInfo::load_in_gear().map_or_else(|_| PathBuf::from("."), |i| layout::in_home(&layout::git_repo(&i.app)));
    let branch_ref = Command::new("git")
        .current_dir(repo)
        .args(["rev-parse", "--verify", "-q", &format!("refs/heads/{}", j.branch)])
        .env_remove("GIT_QUARANTINE_PATH")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty());
    if journal::verdict(&j, branch_ref.as_deref()) == Verdict::RollBack {
        // Even when the previous deployment looks live: the supervisor may still be making the
        // new one live for a hook that died.
        // A full disk (what failed the push, often) is met with the push's reserve.
        let back = back_to_previous(&j).or_else(|e| match reserve::give_back_now() {
            true => back_to_previous(&j),
            false => Err(e),
        });
        if let Err(e) = back {
            eprintln!("gearshift: cannot roll back the unrecorded push {}: {e:#}", j.id);
            return;
        }
        // Undone: the reserve's room is for the record now (a full disk may have failed the push).
        reserve::give_back_now();
        if let Some(mut d) = load(&j.id) {
            let back = j.previous.as_deref().unwrap_or("nothing");
            // The push's own failure, when it recorded one (a full disk), else git's.
            d.result = match d.result.strip_prefix("failed: ") {
                Some(why) => format!("failed: {why}; {back} is live again"),
                None => format!("failed: the push ended before git recorded it; {back} is live again"),
            };
            record_failed(&d);
        }
    } else if relay_lost {
        if let Some(mut d) = load(&j.id) {
            d.note = Some(
                "live, though the push's connection was lost after git recorded it: the pusher may have seen an error"
                    .into(),
            );
            let _ = save(&d);
        }
    }
    journal::clear();
    reserve::give_back();
}

/// At the gear's start, before its supervisor starts anything: every process of the gear died
/// with its init (a push's settler too), so a switch left journaled is settled now, kept or
/// rolled back as git recorded it, unless a push holds the lock (it settles it first).
pub fn settle_at_boot() {
    if let Ok(Some(_lock)) = crate::state::Lock::try_exclusive(&layout::in_home(layout::PUSH_LOCK)) {
        settle(true);
    }
}

/// Once git-receive-pack (this hook's parent) has ended, settles the journaled switch (if the
/// hook has not settled it itself) and prunes the deployments beyond the newest `keep`: a child
/// holds the push lock (inherited) until then, so the next push starts from a settled state.
/// False when no child could be started (the next push or rollback settles it first).
fn settle_after_git(keep: u32) -> bool {
    let git = nix::unistd::getppid();
    // SAFETY: the hook is single-threaded; the child only waits, runs git and writes files.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // git reads the hook's output until EOF: let go of it.
            if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
                for fd in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors of this process.
                    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
                }
            }
            let relay_lost = git.as_raw() == 1 || wait_for_git(git);
            settle(relay_lost);
            prune(keep);
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => true,
        // Not settled now: the next push (or rollback) settles it first.
        Err(e) => {
            say(&format!("warning: cannot watch git's end ({e})"));
            prune(keep);
            false
        }
    }
}

/// Waits until git-receive-pack `pid` (not our child) has exited, and tells whether it lost
/// its relay meanwhile (it was adopted by the gear's init: its report may never have reached
/// the client). git lives a few milliseconds after its hook: looked at every 5 ms.
fn wait_for_git(pid: nix::unistd::Pid) -> bool {
    let lost = || parent_of(pid.as_raw()).is_some_and(|p| p != 0);
    // SAFETY: pidfd_open with integer arguments; the descriptor it returns is ours to close.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) } as i32;
    let mut relay_lost = false;
    loop {
        relay_lost |= lost();
        if fd >= 0 {
            let mut pfd = [libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd; a pidfd becomes readable when the process exits.
            if unsafe { libc::poll(pfd.as_mut_ptr(), 1, 5) } != 0 {
                break;
            }
        } else if nix::sys::signal::kill(pid, None).is_err() {
            // Without pidfd_open (an old kernel, or refused): the pid is gone.
            break;
        } else {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    relay_lost |= lost();
    if fd >= 0 {
        // SAFETY: closing the descriptor pidfd_open gave us.
        unsafe { libc::close(fd) };
    }
    relay_lost
}

/// Holds the per-app push lock (a second push waits for the first).
fn push_lock() -> Result<std::fs::File> {
    let p = layout::in_home(layout::PUSH_LOCK);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        say("another push to this app is in progress; waiting for it to finish");
        // SAFETY: as above, blocking this time.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } != 0 {
            bail!("cannot take the push lock");
        }
    }
    Ok(f)
}

/// git's pre-receive hook: deploy a push to the deploy branch; other refs are accepted as is.
pub fn pre_receive() -> Result<i32> {
    let info = GearInfo::load_in_gear()?;
    let _lock = push_lock()?;
    // A switch left by an earlier push that died is settled before this one starts.
    settle(true);
    let mut code = 0;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_old, new, refname] = f[..] else { continue };
        let Some(branch) = refname.strip_prefix("refs/heads/") else {
            continue;
        };
        if !info.deploy_branches.iter().any(|b| b == branch) {
            say(&format!(
                "{refname}: not a deploy branch ({}), stored without deploying",
                info.deploy_branches.join(" or ")
            ));
            continue;
        }
        if new == ZERO {
            say(&format!("{refname} deleted; the live deployment keeps running"));
            continue;
        }
        if deploy(&info, new, branch).is_err() {
            code = 1;
        }
    }
    Ok(code)
}

/// Re-activates a kept deployment without rebuilding (default: the one before the live one).
pub fn rollback(id: Option<&str>) -> Result<String> {
    let info = GearInfo::load_in_gear()?;
    let _lock = push_lock()?;
    settle(true);
    let live = live_id();
    let ok: Vec<Deployment> = list().into_iter().filter(|d| d.result == "deployed").collect();
    let target = match id {
        Some(id) => ok
            .iter()
            .find(|d| d.id == id || d.id.ends_with(&format!("-{id}")) || d.commit.starts_with(id))
            .with_context(|| format!("no kept deployment '{id}' (see `gearshift deploy list`)"))?,
        None => ok
            .iter()
            .rev()
            .find(|d| Some(&d.id) != live.as_ref() && live.as_ref().is_none_or(|l| d.id < *l))
            .context("no earlier deployment is kept to roll back to")?,
    };
    if Some(&target.id) == live.as_ref() {
        bail!("{} is already live", target.id);
    }
    crate::fault::reached("before-rollback");
    switch_to(&info, &target.id)?;
    Ok(target.id.clone())
}

/// Builds and activates a deployment of `commit` from a tar stream on stdin.
pub fn import(commit: &str) -> Result<i32> {
    let info = GearInfo::load_in_gear()?;
    if commit.len() < 7 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("'{}' is not a commit id", commit.escape_default());
    }
    let _lock = push_lock()?;
    Ok(if deploy_from(&info, commit, "scale", Source::Stdin).is_ok() {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_from_proc() {
        let me = std::process::id() as i32;
        assert_eq!(parent_of(me), Some(nix::unistd::getppid().as_raw()));
        assert_eq!(parent_of(0), None);
    }
}
