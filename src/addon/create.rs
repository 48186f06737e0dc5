//! Creating and destroying add-ons: the record first (so a crash part-way leaves something
//! `addon destroy` can clean up), the credentials, then the gear, whose supervisor initialises
//! the service; created once the service accepts connections on the gear's address.

use super::{boot, load, path, save, save_secret, secret_path, write_descriptor, Addon, Kind, Secret};
use crate::gear::{self, Gear};
use crate::ingear::service::steps;
use crate::names;
use crate::node::Node;
use crate::ssh::auth::Actor;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// How long a new add-on's service may take to accept its first connection: its gear's own
/// two steps (listening, then its user able to log in) may each take `START_LIMIT`, and its
/// supervisor needs a moment to start them.
const READY_TIMEOUT: Duration = Duration::from_secs(2 * steps::START_LIMIT.as_secs() + 30);

fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .context("cannot read /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Waits until something accepts TCP connections at `addr`.
pub fn wait_accepting(addr: std::net::SocketAddr, limit: Duration) -> Result<Duration> {
    let t = Instant::now();
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(t.elapsed());
        }
        if t.elapsed() > limit {
            bail!("nothing accepts connections at {addr} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Failed starts after which a new add-on's service is given up: a start that fails again and
/// again (no room for its data, a bad setting) is not a slow one.
const GIVE_UP_AFTER: u64 = 3;

/// Waits until the add-on's supervisor reports its service running (data initialised, server
/// started, the add-on's database made); fails at `limit`, or once it failed to start
/// [`GIVE_UP_AFTER`] times (its supervisor restarts it 1, 2, 4 s apart).
fn wait_running(a: &Addon, limit: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        let st = super::status_of(a);
        if st["state"] == "running" {
            return Ok(());
        }
        let failed = st["restarts"].as_u64().unwrap_or(0);
        if failed >= GIVE_UP_AFTER {
            bail!(
                "the {} service of add-on '{}' failed to start {failed} times (last: {})",
                a.kind,
                a.name,
                st["last_exit"].as_str().unwrap_or("?")
            );
        }
        if t.elapsed() > limit {
            bail!(
                "the {} service of add-on '{}' is not running after {limit:?} (state: {}, last exit: {})",
                a.kind,
                a.name,
                st["state"],
                st["last_exit"]
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates an add-on of `kind` and its gear, and returns once its service accepts connections.
/// Bad input creates nothing; a failure part-way removes whatever was made. The per-user
/// limits of `actor` (`app/admission.rs`) and the node's disk are checked under the node lock.
pub fn create(
    node: &Node,
    actor: &Actor,
    kind: &str,
    name: &str,
    owner: Option<&str>,
    profile: Option<&str>,
) -> Result<Addon> {
    let kind = Kind::parse(kind)?;
    names::check_app_name(name)?;
    kind.install_dir()?;
    let (profile, limits) = crate::app::create::gear_terms(node, &format!("add-on '{name}'"), owner, profile)?;
    let _lock = node.lock()?;
    if path(node, name).exists() {
        bail!("add-on '{name}' already exists");
    }
    if crate::app::load(node, name).is_ok() {
        bail!("the name '{name}' is taken by an app: choose another name for the add-on");
    }
    crate::app::admission::check_new(node, actor, crate::app::admission::Creation::Addon, Some(&profile))?;
    crate::app::disk_admission::check(node, &format!("add-on '{name}'"), &profile, 1)?;
    let (uid, ip) = crate::app::allocate(node)?;
    let g = Gear {
        id: gear::new_id()?,
        app: name.into(),
        index: 0,
        uid,
        ip,
        profile: profile.clone(),
    };
    let mut a = Addon {
        name: name.into(),
        kind: kind.name().into(),
        owner: owner.map(String::from),
        profile,
        created: crate::clock::now(),
        status: "creating".into(),
        gears: vec![g.clone()],
        links: vec![],
    };
    let s = Secret {
        user: name.into(),
        password: random_hex(24)?,
        database: name.into(),
    };
    save(node, &a)?;
    let made = (|| -> Result<()> {
        save_secret(node, name, &s)?;
        // Closed to the host's other users before the service listens.
        super::sync_links(node)?;
        // The gear's own password, for its initdb: readable by the gear's uid only, and
        // removed once the service runs.
        let pw = node.gear_meta_dir(&g.id).join("addon-init.pw");
        crate::state::write_atomic(&pw, s.password.as_bytes(), 0o400)?;
        std::os::unix::fs::lchown(&pw, Some(uid), Some(uid))?;
        gear::create(node, &g, &limits, &super::descriptor(node, &a, &s)?, &boot(&a))?;
        wait_running(&a, READY_TIMEOUT)?;
        wait_accepting((g.ip, kind.port()).into(), READY_TIMEOUT)
            .with_context(|| format!("the {} service of add-on '{name}' did not start", kind.name()))?;
        let _ = std::fs::remove_file(&pw);
        Ok(())
    })();
    if let Err(e) = made {
        // Read before the gear (and its log) goes: what the service said is the reason.
        let said = service_output(node, &g);
        let e = match said {
            Some(t) => anyhow::anyhow!("{e:#}; the service's last output ({}):\n{t}", steps::SERVICE_LOG),
            None => e,
        };
        let cleanup = gear::destroy(node, &g);
        let _ = std::fs::remove_file(secret_path(node, name));
        let _ = std::fs::remove_file(path(node, name));
        return Err(match cleanup {
            Ok(()) => e.context(format!("cannot create add-on '{name}' (nothing was kept)")),
            Err(c) => e.context(format!("cannot create add-on '{name}'; clean-up also failed: {c:#}")),
        });
    }
    a.status = "ready".into();
    save(node, &a)?;
    write_descriptor(node, &a, &s)?;
    Ok(a)
}

/// The last lines of the add-on gear's service log (indented, fit for a terminal), if it wrote
/// any.
fn service_output(node: &Node, g: &Gear) -> Option<String> {
    let text = gear::home_file::tail_gear_file(&g.home(node), steps::SERVICE_LOG, 4096).ok()?;
    let tail = gear::home_file::last_lines(&text, SERVICE_OUTPUT_LINES);
    (!tail.is_empty()).then(|| {
        tail.iter()
            .map(|l| format!("       {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Lines of a failed service's log shown to whoever created the add-on.
const SERVICE_OUTPUT_LINES: usize = 15;

/// Destroys an add-on: refused while apps are linked unless `force` (which unlinks them
/// first), then every gear piece, its credentials and its record.
pub fn destroy(node: &Node, actor: &Actor, name: &str, confirm: &str, force: bool) -> Result<()> {
    names::check_app_name(name)?;
    if confirm != name {
        bail!("refusing to destroy add-on '{name}': pass --confirm {name}");
    }
    let a = super::load_for(node, actor, name)?;
    if !a.links.is_empty() {
        let apps: Vec<&str> = a.links.iter().map(|l| l.app.as_str()).collect();
        if !force {
            bail!(
                "add-on '{name}' is linked to {}: unlink first (`addon unlink APP {name}`) or pass --force",
                apps.join(", ")
            );
        }
        for app in apps {
            super::unlink(node, &Actor::root(), app, name)
                .with_context(|| format!("cannot unlink app '{app}' from add-on '{name}'"))?;
        }
    }
    let _lock = node.lock()?;
    let a = load(node, name).context("after unlinking")?;
    for g in &a.gears {
        gear::destroy(node, g)?;
    }
    let _ = std::fs::remove_file(secret_path(node, name));
    std::fs::remove_file(path(node, name)).with_context(|| format!("cannot remove the record of add-on '{name}'"))?;
    super::sync_links(node)
}
