//! `gearshift app ...`: the app verbs and what they print. The work is in `crate::app`.

use crate::app::condition::{self, AppState};
use crate::app::{self, App};
use crate::gear::isolation::{quota, selinux};
use crate::gear::{self, Gear};
use crate::node::{address, Node};
use crate::ssh::auth::Actor;
use crate::table;
use anyhow::{bail, Result};

/// `gearshift app ...`
#[derive(Debug, clap::Subcommand)]
pub enum AppCmd {
    /// Create an app and its gear.
    Create {
        name: String,
        /// The runtime (see `cartridges`); default: detected from the files at the first push.
        #[arg(long)]
        cartridge: Option<String>,
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
    /// Stop the app: its web and other processes, and everything else running in its gears.
    Stop { name: String },
    /// Restart the app's web process.
    Restart { name: String },
    /// How many of each process type run: `web=2 worker=1` (web: gears, each fully isolated,
    /// the router balances across them; other types: processes in gear 0). A bare N means web=N.
    Scale {
        name: String,
        #[arg(required = true, value_name = "TYPE=N")]
        quantities: Vec<String>,
    },
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
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=app::MAX_HEALTH_TIMEOUT as i64))]
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

pub fn run(node: &Node, actor: &Actor, cmd: AppCmd) -> Result<()> {
    match cmd {
        AppCmd::Create {
            name,
            cartridge,
            owner,
            profile,
        } => create(node, actor, &name, cartridge.as_deref(), owner, profile.as_deref())?,
        AppCmd::List { json } => list(node, actor, json)?,
        AppCmd::Show { name, json } => show(node, actor, &name, json)?,
        AppCmd::Start { name } => {
            app::set_idle(node, actor, &name, false)?;
            app::start_web(node, &app::load_for(node, actor, &name)?)?;
        }
        AppCmd::Scale { name, quantities } => scale(node, actor, &name, &quantities)?,
        AppCmd::Idle { name } => {
            app::lifecycle::idle(node, actor, &name)?;
            println!("idled '{name}': no processes until its next request");
        }
        AppCmd::Stop { name } => app::lifecycle::stop(node, actor, &name)?,
        AppCmd::Restart { name } => {
            app::in_gear(node, actor, &name, &["ctl", "restart"])?;
        }
        AppCmd::Status { name, json } => status(node, actor, &name, json)?,
        AppCmd::Health {
            name,
            path,
            timeout,
            off,
        } => health(node, actor, &name, path, timeout, off)?,
        AppCmd::Destroy { name, confirm } => {
            app::load_for(node, actor, &name)?;
            app::destroy(node, &name, &confirm)?;
            crate::addon::forget_app(node, &name)?;
            println!("destroyed app '{name}'");
        }
    }
    Ok(())
}

/// The owner of what `actor` creates: users create for themselves; only admins name another.
pub(crate) fn owner_for(actor: &Actor, owner: Option<String>, what: &str) -> Result<Option<String>> {
    Ok(match (&actor.user, owner) {
        (Some(me), Some(o)) if !actor.admin && o != *me => {
            bail!("only an admin can create an {what} for another user")
        }
        (Some(me), None) => Some(me.clone()),
        (_, o) => o,
    })
}

fn create(
    node: &Node,
    actor: &Actor,
    name: &str,
    cartridge: Option<&str>,
    owner: Option<String>,
    profile: Option<&str>,
) -> Result<()> {
    let owner = owner_for(actor, owner, "app")?;
    let app = app::create(node, actor, name, cartridge, owner.as_deref(), profile)?;
    let g = &app.gears[0];
    println!(
        "created app '{}' ({}, profile {}): gear {} uid {} ip {} {}",
        app.name,
        cartridge_shown(&app.cartridge),
        app.profile,
        g.id,
        g.uid,
        g.ip,
        g.mcs()
    );
    println!("git remote: {}", address::git_remote(&node.config, &app.name));
    println!("url:        {}", address::app_url(&node.config, &app.name));
    println!(
        "deploy:     git push {} main",
        address::git_remote(&node.config, &app.name)
    );
    Ok(())
}

fn list(node: &Node, actor: &Actor, json: bool) -> Result<()> {
    let seen: Vec<condition::Seen> = crate::daemon::index::apps(node)?
        .into_iter()
        .filter(|s| actor.may_manage(s.app.owner.as_deref()))
        .collect();
    let states: Vec<String> = seen.iter().map(|s| s.state().to_string()).collect();
    let inits: Vec<usize> = seen.iter().map(|s| s.inits).collect();
    let apps: Vec<App> = seen.into_iter().map(|s| s.app).collect();
    if json {
        let mut v = serde_json::to_value(&apps)?;
        if let Some(list) = v.as_array_mut() {
            for (a, st) in list.iter_mut().zip(&states) {
                a["status"] = st.as_str().into();
                a["state"] = st.as_str().into();
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = apps
        .iter()
        .zip(states)
        .zip(inits)
        .map(|((a, state), running)| {
            vec![
                a.name.clone(),
                a.owner.clone().unwrap_or_else(|| "-".into()),
                a.cartridge.clone(),
                a.profile.clone(),
                format!("{running}/{}", a.gears.len()),
                a.gears.first().map(|g| g.ip.to_string()).unwrap_or_default(),
                state,
            ]
        })
        .collect();
    table::print(
        &["NAME", "OWNER", "CARTRIDGE", "PROFILE", "GEARS", "IP", "STATUS"],
        &rows,
    );
    Ok(())
}

fn show(node: &Node, actor: &Actor, name: &str, json: bool) -> Result<()> {
    let app = app::load_for(node, actor, name)?;
    let gears: Vec<_> = app.gears.iter().map(|g| gear_json(node, g)).collect();
    let (state, statuses) = condition::of(node, &app);
    let state = state.to_string();
    if json {
        let mut v = serde_json::to_value(&app)?;
        v["status"] = state.as_str().into();
        v["state"] = state.as_str().into();
        v["gears"] = serde_json::Value::Array(gears);
        v["url"] = address::app_url(&node.config, &app.name).into();
        v["git_remote"] = address::git_remote(&node.config, &app.name).into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("app:       {}", app.name);
    println!("owner:     {}", app.owner.as_deref().unwrap_or("-"));
    println!("cartridge: {}", cartridge_shown(&app.cartridge));
    println!("profile:   {}", app.profile);
    println!("status:    {state}");
    println!("url:       {}", address::app_url(&node.config, &app.name));
    println!("git:       {}", address::git_remote(&node.config, &app.name));
    let types = process_types(&statuses);
    if !types.is_empty() {
        println!("processes: {}", types.join(", "));
    }
    for (g, j) in app.gears.iter().zip(gears) {
        print_gear(node, g, &j);
    }
    Ok(())
}

/// The lines of one gear in `app show`.
fn print_gear(node: &Node, g: &Gear, j: &serde_json::Value) {
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

/// Prints the app's state and each gear's supervisor status; fails when the app is not serving.
fn status(node: &Node, actor: &Actor, name: &str, json: bool) -> Result<()> {
    let app = app::load_for(node, actor, name)?;
    let (state, gears) = condition::of(node, &app);
    if json {
        // gear 0's status, as a single object (as before scaling existed), with the app's state
        let mut st = gears.first().cloned().unwrap_or_default();
        st["app_state"] = state.to_string().into();
        println!("{st}");
    } else if state == AppState::NeverDeployed {
        println!("{state}");
    } else {
        if app.gears.len() > 1 {
            println!("{state}");
        }
        for (g, st) in app.gears.iter().zip(&gears) {
            let mut line = gear::control::status_line(st);
            if actor.user.is_some() {
                // its hint (`gearshift app start`) in the SSH form
                line = address::for_ssh_user(&node.config, &line);
            }
            if app.gears.len() > 1 {
                println!("gear {}: {line}", g.index);
            } else {
                println!("{line}");
            }
        }
        for t in process_types(&gears) {
            println!("  {t}");
        }
    }
    match state {
        AppState::NeverDeployed => bail!(
            "'{name}' is not serving: nothing was deployed yet (git push {} main)",
            address::git_remote(&node.config, name)
        ),
        AppState::Unreachable => {
            let fix = gear::control::UNREACHABLE_FIX.replace("APP", name);
            let fix = match actor.user {
                Some(_) => address::for_ssh_user(&node.config, &fix),
                None => fix,
            };
            bail!("'{name}' is not serving: its gear's supervisor does not answer (frozen or overloaded): {fix}")
        }
        s if !s.serving() => bail!("'{name}' is not serving: {s} (see `gearshift logs {name}`)"),
        _ => Ok(()),
    }
}

/// `app scale APP web=2 worker=1` (or `app scale APP 2`).
fn scale(node: &Node, actor: &Actor, name: &str, specs: &[String]) -> Result<()> {
    let asked = app::formation::parse(specs)?;
    let record = app::load_for(node, actor, name)?;
    // The types the live deployment has (gear 0's supervisor knows them).
    let known: Option<Vec<String>> = record.gears.first().and_then(|g| {
        let st = app::lifecycle::status_of(node, &record, g).ok()?;
        let types = st["types"].as_array()?;
        Some(types.iter().filter_map(|t| t[0].as_str().map(String::from)).collect())
    });
    if let Some(known) = &known {
        if let Some((t, _)) = asked.iter().find(|(t, _)| t != "web" && !known.contains(t)) {
            bail!(
                "'{name}' has no process type '{t}': its Procfile has {} (add a {t}: line and push)",
                known.join(", ")
            );
        }
    }
    if let Some(n) = asked
        .iter()
        .find(|(t, _)| t == "web")
        .map(|(_, n)| *n)
        .filter(|n| *n > 0)
    {
        app::scale(node, name, n)?;
        // Every gear of a linked app reaches its add-ons.
        crate::addon::sync_links(node)?;
    }
    // The formation recorded and run, all or nothing.
    app::apply::change(node, actor, name, "scale", |a| {
        app::formation::apply(&mut a.formation, &asked);
        Ok(())
    })?;
    let record = app::load_for(node, actor, name)?;
    println!(
        "{}",
        app::formation::describe(name, record.gears.len(), &record.formation)
    );
    Ok(())
}

/// Every process type of the app with its quantity and how many run (`worker=1 (1 running)`),
/// web counted over every gear, the others in gear 0, from the supervisors' statuses.
fn process_types(gears: &[serde_json::Value]) -> Vec<String> {
    let types = |g: &serde_json::Value| -> Vec<(String, u64, u64)> {
        g["types"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| {
                        (
                            t[0].as_str().unwrap_or("?").to_string(),
                            t[1].as_u64().unwrap_or(0),
                            t[2].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let Some(first) = gears.first() else { return vec![] };
    let mut out = Vec::new();
    for (i, (name, n, up)) in types(first).into_iter().enumerate() {
        let (n, up) = if i == 0 && name == "web" {
            gears.iter().map(types).fold((0, 0), |(a, b), t| {
                let w = t.first().map_or((0, 0), |w| (w.1, w.2));
                (a + w.0, b + w.1)
            })
        } else {
            (n, up)
        };
        out.push(if n == 0 && up == 0 {
            format!("{name}=0")
        } else {
            format!("{name}={n} ({up} running)")
        });
    }
    out
}

fn health(node: &Node, actor: &Actor, name: &str, path: Option<String>, timeout: Option<u32>, off: bool) -> Result<()> {
    if let Some(p) = &path {
        app::check_health_path(p)?;
    }
    if off || path.is_some() || timeout.is_some() {
        let app = app::update(node, actor, name, |a| {
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
        app::write_descriptors(node, &app)?;
    }
    let app = app::load_for(node, actor, name)?;
    match &app.health_path {
        Some(p) => println!(
            "{name}: a new deployment goes live once GET {p} answers 2xx (within {}s)",
            app.health_timeout.unwrap_or(app::DEFAULT_HEALTH_TIMEOUT)
        ),
        None => println!("{name}: no health path (a new deployment goes live once it accepts connections)"),
    }
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
    serde_json::json!({
        "mode": selinux::mode(),
        "process": gear::init_pid(node, g).and_then(selinux::process_context),
        "home": selinux::file_context(&g.home(node)),
    })
}

fn mib(b: u64) -> String {
    format!("{:.1}M", b as f64 / (1 << 20) as f64)
}

/// An app's cartridge as `app create` and `app show` name it.
fn cartridge_shown(cartridge: &str) -> String {
    if cartridge.is_empty() {
        "cartridge detected at the first push".into()
    } else {
        format!("{cartridge} cartridge")
    }
}
