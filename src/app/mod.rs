//! Apps: named applications owned by a user, each with one or more gears.

pub mod cartridge;
pub mod domain;
pub mod git;

use crate::gear::isolation::quota;
use crate::gear::{self, Gear};
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::ssh::user;
use crate::{names, state, table};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::os::fd::AsFd;

/// `gearshift app ...`
#[derive(Debug, clap::Subcommand)]
pub enum AppCmd {
    /// Create an app and its gear.
    Create {
        name: String,
        #[arg(long)]
        cartridge: String,
        /// Owning user (default: none, admin-managed).
        #[arg(long)]
        owner: Option<String>,
        /// Resource profile (default from the node config).
        #[arg(long)]
        profile: Option<String>,
    },
    /// List apps.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show an app, its gears, their limits and usage.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Start the app's web process.
    Start { name: String },
    /// Stop the app's web process.
    Stop { name: String },
    /// Restart the app's web process.
    Restart { name: String },
    /// Run N web gears of the app, each fully isolated; the router balances across them.
    Scale { name: String, gears: u32 },
    /// Idle the app: no processes at all until its next request (which wakes it).
    Idle { name: String },
    /// Show whether the web process runs, since when, restarts and last exit.
    Status {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// HTTP health path: a new deployment goes live only once GET PATH answers 2xx.
    /// Without PATH, shows the setting; `--off` removes it (ready = accepts connections).
    Health {
        name: String,
        /// The path to GET, e.g. /healthz.
        path: Option<String>,
        /// How long a new deployment may take to answer 2xx, in seconds (default 30).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_HEALTH_TIMEOUT as i64))]
        timeout: Option<u32>,
        /// Remove the health path.
        #[arg(long, conflicts_with_all = ["path", "timeout"])]
        off: bool,
    },
    /// Destroy an app and everything of its gears.
    Destroy {
        name: String,
        /// Repeat the app's name to confirm.
        #[arg(long)]
        confirm: String,
    },
}

/// The durable record of an app (`<root>/apps/<name>.toml`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct App {
    pub name: String,
    pub owner: Option<String>,
    pub cartridge: String,
    pub profile: String,
    /// Unix time of creation.
    pub created: u64,
    /// `creating` until every gear piece exists, then `ready`.
    pub status: String,
    pub gears: Vec<Gear>,
    /// The user's own environment variables.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Branch whose pushes deploy (default: main or master).
    #[serde(default)]
    pub deploy_branch: Option<String>,
    /// Deployments kept for rollback (default 3).
    #[serde(default)]
    pub keep_deployments: Option<u32>,
    /// Extra host names the router serves this app at (besides APP.DOMAIN).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Idled: no processes; the next request wakes it.
    #[serde(default)]
    pub idle: bool,
    /// Answer plain HTTP with a redirect to HTTPS.
    #[serde(default)]
    pub https_redirect: bool,
    /// GET this path must answer 2xx before a new deployment goes live.
    #[serde(default)]
    pub health_path: Option<String>,
    /// Seconds a new deployment may take to become healthy (default 30).
    #[serde(default)]
    pub health_timeout: Option<u32>,
}

/// The longest health timeout (the supervisor's control socket answers within 60 s).
pub const MAX_HEALTH_TIMEOUT: u32 = 50;
/// The health timeout when none is set (the same as the plain start timeout).
pub const DEFAULT_HEALTH_TIMEOUT: u32 = 30;

/// Checks a health path: absolute, printable ASCII without spaces, at most 1024 bytes.
pub fn check_health_path(p: &str) -> Result<()> {
    if !p.starts_with('/') || p.len() > 1024 || !p.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "'{}' is not a health path: give an absolute path such as /healthz (printable ASCII, no spaces)",
            p.escape_default()
        );
    }
    Ok(())
}

fn path(node: &Node, name: &str) -> std::path::PathBuf {
    node.apps_dir().join(format!("{name}.toml"))
}

/// Loads an app the actor may manage (the same error for missing and not yours).
pub fn load_for(node: &Node, actor: &Actor, name: &str) -> Result<App> {
    let app = load(node, name)?;
    actor.check_app(name, app.owner.as_deref())?;
    Ok(app)
}

/// Loads an app, with a clear error when unknown.
pub fn load(node: &Node, name: &str) -> Result<App> {
    names::check_app_name(name)?;
    let p = path(node, name);
    if !p.exists() {
        bail!("unknown app '{name}' (see `gearshift app list`)");
    }
    state::read_toml(&p)
}

/// Every app on the node, by name.
pub fn list(node: &Node) -> Result<Vec<App>> {
    state::records(&node.apps_dir())?
        .iter()
        .map(|(_, p)| state::read_toml::<App>(p))
        .collect()
}

fn save(node: &Node, app: &App) -> Result<()> {
    state::write_toml(&path(node, &app.name), app)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Lowest free uid and IP on the node (call with the node lock held).
fn allocate(node: &Node) -> Result<(u32, std::net::Ipv4Addr)> {
    let apps = list(node)?;
    let used_uids: BTreeSet<u32> = apps.iter().flat_map(|a| a.gears.iter().map(|g| g.uid)).collect();
    let used_ips: BTreeSet<_> = apps.iter().flat_map(|a| a.gears.iter().map(|g| g.ip)).collect();
    let c = &node.config;
    let uid = (c.uid_min..=c.uid_max)
        .find(|u| !used_uids.contains(u))
        .with_context(|| {
            format!(
                "no free gear uid left in {}..={} (widen uid_min/uid_max)",
                c.uid_min, c.uid_max
            )
        })?;
    let net = c.subnet();
    let ip = (2..=net.hosts())
        .filter_map(|n| net.host(n))
        .find(|ip| !used_ips.contains(ip))
        .with_context(|| format!("no free address left in subnet {net}"))?;
    Ok((uid, ip))
}

/// Creates an app and its first gear. Bad input creates nothing; a failure part-way removes
/// whatever was made.
pub fn create(node: &Node, name: &str, cart: &str, owner: Option<&str>, profile: Option<&str>) -> Result<App> {
    names::check_app_name(name)?;
    let cart = cartridge::find(node, cart)?;
    if let Some(o) = owner {
        user::load(node, o)?;
    }
    let profile = profile.unwrap_or(&node.config.default_profile).to_string();
    let limits = node.config.profile(&profile)?.limits()?;
    if quota::backend(node)? == quota::Backend::None && !node.config.disk.allow_unlimited {
        bail!(
            "cannot create app '{name}': no disk quota backend can enforce its disk limit (run `gearshift doctor`; set disk.allow_unlimited = true to accept unlimited disk)"
        );
    }
    let _lock = node.lock()?;
    if path(node, name).exists() {
        bail!("app '{name}' already exists");
    }
    let (uid, ip) = allocate(node)?;
    let g = Gear {
        id: gear::new_id()?,
        app: name.into(),
        index: 0,
        uid,
        ip,
        profile: profile.clone(),
    };
    let mut app = App {
        name: name.into(),
        owner: owner.map(String::from),
        cartridge: cart.manifest.name.clone(),
        profile,
        created: now(),
        status: "creating".into(),
        gears: vec![g.clone()],
        env: Default::default(),
        deploy_branch: None,
        keep_deployments: None,
        aliases: vec![],
        idle: false,
        https_redirect: false,
        health_path: None,
        health_timeout: None,
    };
    // Recorded first, so that a crash part-way leaves a record `app destroy` can clean up.
    save(node, &app)?;
    if let Err(e) = gear::create(node, &g, &limits) {
        let cleanup = gear::destroy(node, &g);
        let _ = std::fs::remove_file(path(node, name));
        return Err(match cleanup {
            Ok(()) => e.context(format!("cannot create app '{name}' (nothing was kept)")),
            Err(c) => e.context(format!("cannot create app '{name}'; clean-up also failed: {c:#}")),
        });
    }
    app.status = "ready".into();
    save(node, &app)?;
    Ok(app)
}

/// Destroys an app: every gear piece, then its record.
pub fn destroy(node: &Node, name: &str, confirm: &str) -> Result<()> {
    names::check_app_name(name)?;
    if confirm != name {
        bail!("refusing to destroy '{name}': pass --confirm {name}");
    }
    let _lock = node.lock()?;
    let app = load(node, name)?;
    for g in &app.gears {
        gear::destroy(node, g)?;
    }
    std::fs::remove_file(path(node, name)).with_context(|| format!("cannot remove the record of '{name}'"))?;
    let _ = std::fs::remove_file(push_lock(node, name));
    Ok(())
}

/// Destroys every app, takes the node down and removes its data root and config.
pub fn destroy_node(node: &Node, confirm: &str) -> Result<()> {
    if confirm != node.config.name {
        bail!(
            "refusing to destroy node '{}': pass --confirm {}",
            node.config.name,
            node.config.name
        );
    }
    for a in list(node)? {
        destroy(node, &a.name, &a.name)?;
    }
    node.down()?;
    if let Some(dir) = crate::ssh::sshd::Paths::of(node).bin.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::fs::remove_dir_all(node.root()).with_context(|| format!("cannot remove {}", node.root().display()))?;
    let _ = std::fs::remove_file(&node.config_path);
    Ok(())
}

fn gear_json(node: &Node, g: &Gear) -> serde_json::Value {
    let stats = gear::cgroup(node, g).map(|c| c.stats()).unwrap_or_default();
    let disk = quota::usage(node, &g.id, g.uid).ok();
    serde_json::json!({
        "id": g.id, "index": g.index, "uid": g.uid, "gid": g.gid(), "mcs": g.mcs(), "ip": g.ip.to_string(),
        "home": g.home(node), "netns": g.netns(), "veth": g.veth_host(), "cgroup": g.cgroup_name(),
        "running": gear::init_pid(node, g).is_some(),
        "memory_bytes": stats.memory_bytes, "memory_limit": stats.memory_limit, "oom_kills": stats.oom_kills,
        "pids": stats.pids, "pids_limit": stats.pids_limit, "cpu_usage_usec": stats.cpu_usage_usec,
        "cpu_throttled": stats.cpu_throttled,
        "disk_bytes": disk.map(|d| d.bytes), "disk_limit": disk.and_then(|d| d.limit_bytes),
        "selinux": gear_selinux(node, g),
    })
}

/// SELinux mode and the gear's labels (its init's process context, its home's file context).
fn gear_selinux(node: &Node, g: &Gear) -> serde_json::Value {
    use crate::gear::isolation::selinux;
    serde_json::json!({
        "mode": selinux::mode(),
        "process": gear::init_pid(node, g).and_then(selinux::process_context),
        "home": selinux::file_context(&g.home(node)),
    })
}

fn mib(b: u64) -> String {
    format!("{:.1}M", b as f64 / (1 << 20) as f64)
}

pub fn run(node: &Node, actor: &Actor, cmd: AppCmd) -> Result<()> {
    match cmd {
        AppCmd::Create {
            name,
            cartridge,
            owner,
            profile,
        } => {
            // Users create apps for themselves; only admins name another owner.
            let owner = match (&actor.user, owner) {
                (Some(me), Some(o)) if !actor.admin && o != *me => {
                    bail!("only an admin can create an app for another user")
                }
                (Some(me), None) => Some(me.clone()),
                (_, o) => o,
            };
            let app = create(node, &name, &cartridge, owner.as_deref(), profile.as_deref())?;
            let g = &app.gears[0];
            println!(
                "created app '{}' ({} cartridge, profile {}): gear {} uid {} ip {} {}",
                app.name,
                app.cartridge,
                app.profile,
                g.id,
                g.uid,
                g.ip,
                g.mcs()
            );
        }
        AppCmd::List { json } => {
            let apps: Vec<App> = list(node)?
                .into_iter()
                .filter(|a| actor.may_manage(a.owner.as_deref()))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&apps)?);
            } else {
                let rows: Vec<Vec<String>> = apps
                    .iter()
                    .map(|a| {
                        let running = a.gears.iter().filter(|g| gear::init_pid(node, g).is_some()).count();
                        vec![
                            a.name.clone(),
                            a.owner.clone().unwrap_or_else(|| "-".into()),
                            a.cartridge.clone(),
                            a.profile.clone(),
                            format!("{running}/{}", a.gears.len()),
                            a.gears.first().map(|g| g.ip.to_string()).unwrap_or_default(),
                            a.status.clone(),
                        ]
                    })
                    .collect();
                table::print(
                    &["NAME", "OWNER", "CARTRIDGE", "PROFILE", "GEARS", "IP", "STATUS"],
                    &rows,
                );
            }
        }
        AppCmd::Show { name, json } => {
            let app = load_for(node, actor, &name)?;
            let gears: Vec<_> = app.gears.iter().map(|g| gear_json(node, g)).collect();
            if json {
                let mut v = serde_json::to_value(&app)?;
                v["gears"] = serde_json::Value::Array(gears);
                v["url"] = format!("http://{}.{}/", app.name, node.config.domain).into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("app:       {}", app.name);
                println!("owner:     {}", app.owner.as_deref().unwrap_or("-"));
                println!("cartridge: {}", app.cartridge);
                println!("profile:   {}", app.profile);
                println!("status:    {}", app.status);
                println!("url:       http://{}.{}/", app.name, node.config.domain);
                for (g, j) in app.gears.iter().zip(gears) {
                    println!("gear {}:", g.index);
                    println!("  id {}  uid/gid {}  selinux {}  ip {}", g.id, g.uid, g.mcs(), g.ip);
                    if let Some(p) = j["selinux"]["process"].as_str() {
                        let home = j["selinux"]["home"].as_str().unwrap_or("-");
                        println!(
                            "  selinux {}: process {p}  home {home}",
                            j["selinux"]["mode"].as_str().unwrap_or("-")
                        );
                    }
                    println!(
                        "  home {}  cgroup {}  netns {}",
                        g.home(node).display(),
                        g.cgroup_name(),
                        g.netns()
                    );
                    println!(
                        "  running {}  memory {} / {}  oom kills {}  pids {} / {}  cpu {:.2}s  throttled {}",
                        j["running"],
                        mib(j["memory_bytes"].as_u64().unwrap_or(0)),
                        mib(j["memory_limit"].as_u64().unwrap_or(0)),
                        j["oom_kills"],
                        j["pids"],
                        j["pids_limit"],
                        j["cpu_usage_usec"].as_u64().unwrap_or(0) as f64 / 1e6,
                        j["cpu_throttled"]
                    );
                    match (j["disk_bytes"].as_u64(), j["disk_limit"].as_u64()) {
                        (Some(b), Some(l)) => println!("  disk {} / {}", mib(b), mib(l)),
                        (Some(b), None) => println!("  disk {} (no limit)", mib(b)),
                        _ => println!("  disk usage unavailable"),
                    }
                }
            }
        }
        AppCmd::Start { name } => {
            set_idle(node, actor, &name, false)?;
            return start_web(node, &load_for(node, actor, &name)?);
        }
        AppCmd::Scale { name, gears } => {
            load_for(node, actor, &name)?;
            scale(node, &name, gears)?;
            println!("'{name}' runs {gears} web gear(s)");
        }
        AppCmd::Idle { name } => {
            let app = load_for(node, actor, &name)?;
            let _quiet = state::Lock::try_exclusive(&push_lock(node, &name))?.with_context(|| {
                format!("'{name}' is being deployed (a git push is running): idle it once the push is done")
            })?;
            set_idle(node, actor, &name, true)?;
            for g in &app.gears {
                gear::stop(node, g)?;
            }
            println!("idled '{name}': no processes until its next request");
        }
        AppCmd::Stop { name } => return in_gear(node, actor, &name, &["ctl", "stop"]).map(|_| ()),
        AppCmd::Restart { name } => return in_gear(node, actor, &name, &["ctl", "restart"]).map(|_| ()),
        AppCmd::Status { name, json } => {
            let app = load_for(node, actor, &name)?;
            for g in &app.gears {
                let st = status_of(node, &app, g)?;
                if json {
                    // gear 0's status, as a single object (as before scaling existed)
                    println!("{st}");
                    break;
                }
                let line = crate::ingear::status_line(&st);
                if app.gears.len() > 1 {
                    println!("gear {}: {line}", g.index);
                } else {
                    println!("{line}");
                }
            }
        }
        AppCmd::Health {
            name,
            path,
            timeout,
            off,
        } => {
            if let Some(p) = &path {
                check_health_path(p)?;
            }
            if off || path.is_some() || timeout.is_some() {
                let app = update(node, actor, &name, |a| {
                    if off {
                        a.health_path = None;
                        a.health_timeout = None;
                    } else {
                        if path.is_some() {
                            a.health_path = path.clone();
                        }
                        if timeout.is_some() {
                            a.health_timeout = timeout;
                        }
                        if a.health_path.is_none() {
                            bail!("give a health path too: `gearshift app health {name} /healthz --timeout N`");
                        }
                    }
                    Ok(())
                })?;
                // The gears' supervisors read it at the next switch (push, rollback, env change).
                for g in &app.gears {
                    gear::meta::write(node, g, &app)?;
                }
            }
            let app = load_for(node, actor, &name)?;
            match &app.health_path {
                Some(p) => println!(
                    "{name}: a new deployment goes live once GET {p} answers 2xx (within {}s)",
                    app.health_timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT)
                ),
                None => println!("{name}: no health path (a new deployment goes live once it accepts connections)"),
            }
        }
        AppCmd::Destroy { name, confirm } => {
            load_for(node, actor, &name)?;
            destroy(node, &name, &confirm)?;
            println!("destroyed app '{name}'");
        }
    }
    Ok(())
}

/// Runs `gearshift gear ARGS...` inside the app's first gear, as the gear's user, and fails
/// when it does (its own message is already on stderr). The calling process joins the gear.
pub fn in_gear(node: &Node, actor: &Actor, name: &str, args: &[&str]) -> Result<i32> {
    let mut argv = vec!["/opt/gearshift/bin/gearshift".to_string(), "gear".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let code = run_in_gear_tty(node, actor, name, 0, &argv, false)?;
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
        gear::control::command(&gear::isolation::network::netns_path(&g.netns()), cmd)
            .with_context(|| format!("cannot start the web process of '{}' (gear {})", app.name, g.index))
    };
    // Every gear starts before we wait for any: a scaled app wakes in one app start time.
    for g in &app.gears {
        gear::ensure_running(node, g)?;
        ask(g, "start")?;
    }
    for g in &app.gears {
        println!("{}", crate::ingear::status_line(&ask(g, "start wait")?["status"]));
    }
    Ok(())
}

/// A gear's supervisor status, asked from the host (no process in the gear, and an idle or
/// stopped gear is not started just to be asked).
fn status_of(node: &Node, app: &App, g: &Gear) -> Result<serde_json::Value> {
    let idle = || serde_json::json!({"state": "idle", "pid": null, "port": 0, "restarts": 0});
    if app.idle {
        return Ok(idle());
    }
    match gear::control::command(&gear::isolation::network::netns_path(&g.netns()), "status") {
        Ok(v) => Ok(v["status"].clone()),
        // idled meanwhile (automatic idling), or the gear's init is down
        Err(_) if load(node, &app.name)?.idle => Ok(idle()),
        Err(_) => Ok(serde_json::json!({"state": "down", "pid": null, "port": 0, "restarts": 0})),
    }
}

/// Held shared by every push to the app, exclusively while it is idled (host side, root only).
pub fn push_lock(node: &Node, name: &str) -> std::path::PathBuf {
    node.run_dir().join("pushes").join(format!("{name}.lock"))
}

/// The most web gears one app may run.
pub const MAX_GEARS: u32 = 16;

/// Adds or removes web gears until the app has `n`; new gears get the live deployment of
/// gear 0 (built in each gear, inside its own limits).
pub fn scale(node: &Node, name: &str, n: u32) -> Result<()> {
    if !(1..=MAX_GEARS).contains(&n) {
        bail!("an app runs 1 to {MAX_GEARS} web gears, not {n}");
    }
    let (app, added) = {
        let _lock = node.lock()?;
        let mut app = load(node, name)?;
        let limits = node.config.profile(&app.profile)?.limits()?;
        let mut added = Vec::new();
        while app.gears.len() < n as usize {
            let (uid, ip) = allocate(node)?;
            let index = app.gears.iter().map(|g| g.index).max().map_or(0, |m| m + 1);
            let g = Gear {
                id: gear::new_id()?,
                app: name.into(),
                index,
                uid,
                ip,
                profile: app.profile.clone(),
            };
            app.gears.push(g.clone());
            save(node, &app)?;
            if let Err(e) = gear::create(node, &g, &limits) {
                let _ = gear::destroy(node, &g);
                app.gears.retain(|x| x.id != g.id);
                save(node, &app)?;
                return Err(e.context(format!("cannot add gear {index} to '{name}'")));
            }
            added.push(g);
        }
        while app.gears.len() > n as usize {
            let g = app.gears.pop().expect("more gears than wanted");
            gear::destroy(node, &g)?;
            save(node, &app)?;
        }
        (app, added)
    };
    for g in &added {
        replicate(node, &app, g)?;
    }
    Ok(())
}

/// Runs a command in a gear from a forked child (spawning into a gear changes the caller's
/// namespaces), with the given stdin/stdout; returns the child's pid.
fn fork_in_gear(
    node: &Node,
    app: &str,
    index: u32,
    argv: &[&str],
    stdin: Option<std::os::fd::OwnedFd>,
    stdout: Option<std::os::fd::OwnedFd>,
) -> Result<nix::unistd::Pid> {
    use std::os::fd::AsRawFd;
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    // SAFETY: the CLI and the daemon's workers are single-threaded; the child only uses its own
    // copies and leaves with _exit.
    match unsafe { nix::unistd::fork() }.context("cannot fork")? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            // SAFETY: dup2 onto the standard descriptors of this child.
            unsafe {
                if let Some(fd) = &stdin {
                    libc::dup2(fd.as_raw_fd(), 0);
                }
                if let Some(fd) = &stdout {
                    libc::dup2(fd.as_raw_fd(), 1);
                }
            }
            drop((stdin, stdout));
            let code = run_in_gear_tty(node, &Actor::root(), app, index, &argv, false).unwrap_or_else(|e| {
                eprintln!("gearshift: {e:#}");
                1
            });
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
    }
}

fn wait_code(pid: nix::unistd::Pid) -> i32 {
    match nix::sys::wait::waitpid(pid, None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => c,
        _ => 1,
    }
}

/// Hands gear 0's live deployment to gear `to` (`gear export` piped into `gear import`).
pub fn replicate(node: &Node, app: &App, to: &Gear) -> Result<()> {
    let g0 = app.gears.first().context("the app has no gears")?;
    if g0.id == to.id {
        return Ok(());
    }
    let (rd, wr) = nix::unistd::pipe().context("cannot create a pipe")?;
    let gs = "/opt/gearshift/bin/gearshift";
    // Plain tools on gear 0's side, so a gear started by an older gearshift binary works too.
    let live = "d=$(readlink -f ~/app-root/repo 2>/dev/null) && [ -f \"$d/../metadata.toml\" ] && sed -n 's/^commit = \"\\([0-9a-f]*\\)\"$/\\1/p' \"$d/../metadata.toml\" || true";
    let probe = fork_in_gear(node, &app.name, g0.index, &["/bin/sh", "-c", live], None, Some(wr))?;
    let mut commit = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(rd), &mut commit)?;
    if wait_code(probe) != 0 {
        bail!("cannot read the live deployment of gear 0 of '{}'", app.name);
    }
    let commit = commit.trim().to_string();
    if commit.is_empty() {
        return Ok(()); // nothing deployed yet: the first push reaches every gear
    }
    if commit.len() < 7 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("gear 0 of '{}' reports a strange live commit", app.name);
    }
    eprintln!("-----> gear {}: deploying {}", to.index, &commit[..8]);
    let (rd, wr) = nix::unistd::pipe().context("cannot create a pipe")?;
    let repo = format!("/home/{0}/git/{0}.git", app.name);
    let export = fork_in_gear(
        node,
        &app.name,
        g0.index,
        &["git", "-C", &repo, "archive", "--format=tar", &commit],
        None,
        Some(wr),
    )?;
    // Its progress goes to stderr: after a push, stdout is the finished git protocol stream.
    let progress = std::io::stderr().as_fd().try_clone_to_owned()?;
    let import = fork_in_gear(
        node,
        &app.name,
        to.index,
        &[gs, "gear", "import", &commit],
        Some(rd),
        Some(progress),
    )?;
    let (e, i) = (wait_code(export), wait_code(import));
    if e != 0 || i != 0 {
        bail!(
            "gear {} of '{}' did not take the deployment {} (export {e}, import {i})",
            to.index,
            app.name,
            &commit[..commit.len().min(8)]
        );
    }
    Ok(())
}

/// Records whether the app is idle (the router wakes idle apps on their next request).
pub fn set_idle(node: &Node, actor: &Actor, name: &str, idle: bool) -> Result<()> {
    let _lock = node.lock()?;
    let mut app = load_for(node, actor, name)?;
    if app.idle != idle {
        app.idle = idle;
        save(node, &app)?;
    }
    Ok(())
}

/// Changes an app's record under the node lock.
pub fn update(node: &Node, actor: &Actor, name: &str, change: impl FnOnce(&mut App) -> Result<()>) -> Result<App> {
    let _lock = node.lock()?;
    let mut app = load_for(node, actor, name)?;
    change(&mut app)?;
    save(node, &app)?;
    Ok(app)
}

/// Replaces the app's user environment, rewrites its gears' descriptors and restarts the web
/// process if it runs.
pub fn set_env(
    node: &Node,
    actor: &Actor,
    name: &str,
    change: impl FnOnce(&mut std::collections::BTreeMap<String, String>) -> Result<()>,
) -> Result<()> {
    let app = {
        let _lock = node.lock()?;
        let mut app = load_for(node, actor, name)?;
        change(&mut app.env)?;
        save(node, &app)?;
        for g in &app.gears {
            gear::meta::write(node, g, &app)?;
        }
        app
    };
    in_gear(node, actor, &app.name, &["ctl", "restart-if-wanted"]).map(|_| ())
}

/// `gearshift run APP -- CMD...`: runs CMD in the gear and returns its exit code.
pub fn run_in_gear(node: &Node, actor: &Actor, name: &str, index: u32, command: &[String]) -> Result<i32> {
    run_in_gear_tty(node, actor, name, index, command, std::io::stdin().is_terminal())
}

/// Like `run_in_gear`, never with a pty (binary protocols such as git's).
pub fn run_in_gear_plain(node: &Node, actor: &Actor, name: &str, index: u32, command: &[String]) -> Result<i32> {
    run_in_gear_tty(node, actor, name, index, command, false)
}

fn run_in_gear_tty(node: &Node, actor: &Actor, name: &str, index: u32, command: &[String], tty: bool) -> Result<i32> {
    let app = load_for(node, actor, name)?;
    let g = app
        .gears
        .iter()
        .find(|g| g.index == index)
        .with_context(|| format!("app '{name}' has no gear {index}"))?;
    let pid = gear::ensure_running(node, g)?;
    let cg = gear::cgroup(node, g)?;
    let term = if tty { std::env::var("TERM").ok() } else { None };
    let who = gear::identity(g);
    gear::spawn::exec(&gear::spawn::ExecSpec {
        init_pid: pid,
        cgroup: &cg,
        who: &who,
        argv: command.to_vec(),
        env: gear::env(node, g, &app.cartridge, &app.env, term),
        tty,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_paths() {
        for ok in ["/", "/healthz", "/status?deep=1"] {
            super::check_health_path(ok).unwrap();
        }
        for bad in ["", "healthz", "/a b", "/\n", "/ä", &format!("/{}", "a".repeat(1024))] {
            assert!(super::check_health_path(bad).is_err(), "{bad:?}");
        }
    }
}
