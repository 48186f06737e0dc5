//! `gearshift daemon`: the long-running root process. It serves the unix socket that
//! `ssh-entry` and `auth-keys` talk to (peer credentials checked), runs and supervises the
//! node's own sshd, and runs each SSH request in a forked worker (`internal-exec`) whose stdio
//! are the client's own descriptors.

mod acme;
pub mod dashboard;
pub mod frontend;
pub mod index;
pub mod metrics;
pub mod oom;
pub mod proto;
pub mod reconcile;
mod watch;

use crate::app::git::PushEvents;
use crate::daemon::frontend::Routes;
use crate::node::Node;
use crate::ssh::auth::Actor;
use crate::ssh::command;
use crate::ssh::{authkeys, login_user, sshd};
use anyhow::{bail, Context, Result};
use proto::{FromDaemon, Job, ToDaemon, JOB_ENV};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Shared {
    node: Node,
    config_path: PathBuf,
    login_uid: u32,
    socket: PathBuf,
    bin: PathBuf,
    stop: Arc<AtomicBool>,
    /// The router's feeder, once it runs.
    routes: std::sync::OnceLock<Routes>,
    /// What `/metrics` counts of the daemon's own work.
    counters: metrics::DaemonCounters,
}

/// Holds `<run>/daemon.lock` (non-blocking) so a second daemon for the node refuses to start.
fn take_lock(node: &Node) -> Result<std::fs::File> {
    std::fs::create_dir_all(node.run_dir())?;
    let path = node.run_dir().join("daemon.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another gearshift daemon is already running for node '{}' (lock {} is held)",
            node.config.name,
            path.display()
        );
    }
    Ok(f)
}

fn bind_socket(node: &Node, path: &Path, gid: u32) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    nix::unistd::chown(path, Some(0.into()), Some(gid.into()))
        .with_context(|| format!("cannot chown {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    // The login user must be able to reach the socket through the run directory.
    for d in [node.root().to_path_buf(), node.run_dir()] {
        let m = std::fs::metadata(&d)?.permissions().mode();
        if m & 0o001 == 0 {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(m | 0o001))?;
        }
    }
    l.set_nonblocking(true)?;
    Ok(l)
}

/// `gearshift daemon`: runs until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("gearshift daemon must run as root");
    }
    let config_path = std::fs::canonicalize(config_path).with_context(|| {
        format!(
            "cannot find node config {} (run `gearshift init`)",
            config_path.display()
        )
    })?;
    let node = Node::load(&config_path)?;
    let _lock = take_lock(&node)?;
    // Another node's ports, and an exposed admin port without its certificate or login, are
    // refused before anything starts.
    crate::node::clash::refuse_taken_ports(&node)?;
    crate::daemon::frontend::admin_settings(&node)?;
    let ids = login_user::ensure(&node.config.ssh_user, &node.login_home())?;
    let paths = sshd::prepare(&node, &config_path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("cannot install signal handlers")?;
    }
    let socket = authkeys::socket_path(&node);
    let listener = bind_socket(&node, &socket, ids.gid)?;
    let shared = Arc::new(Shared {
        node: node.clone(),
        config_path,
        login_uid: ids.uid,
        socket: socket.clone(),
        bin: paths.bin.clone(),
        stop: Arc::clone(&stop),
        routes: std::sync::OnceLock::new(),
        counters: metrics::DaemonCounters::new(),
    });
    let sup = {
        let stop = Arc::clone(&stop);
        let paths = paths.clone();
        std::thread::spawn(move || sshd::supervise(&paths, &stop))
    };
    // After a reboot (or any start from empty process state): every gear that should run.
    let up = std::process::Command::new("/proc/self/exe")
        .arg("--config")
        .arg(&shared.config_path)
        .args(["node", "up"])
        .stdin(std::process::Stdio::null())
        .status();
    if !matches!(up, Ok(s) if s.success()) {
        eprintln!("gearshift daemon: `gearshift node up` reported problems ({up:?}); serving what runs");
    }
    let (router, routes) =
        crate::daemon::frontend::start(&node, &shared.config_path, Arc::clone(&stop), shared.counters.clone())
            .context("cannot start the router")?;
    let hooks = {
        let (r, r2) = (routes.clone(), routes.clone());
        reconcile::Hooks {
            apps: Box::new(move || r.apps()),
            repaired: Box::new(move |app| {
                if let Err(e) = r2.sync_app(app) {
                    eprintln!("gearshift daemon: cannot update the routes of {app}: {e:#}");
                }
            }),
        }
    };
    reconcile::start(node.clone(), shared.config_path.clone(), Arc::clone(&stop), hooks)
        .context("cannot start the reconciler")?;
    let _ = shared.routes.set(routes);
    crate::daemon::acme::start(node.clone(), router.challenges(), Arc::clone(&stop))
        .context("cannot start the ACME thread")?;
    eprintln!(
        "gearshift daemon: node '{}' ready: sshd on port {} (log {}), socket {}",
        node.config.name,
        node.config.ssh_port,
        paths.log.display(),
        socket.display()
    );
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = [libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd for the duration of the call; wakes at least every 200 ms to
        // notice a stop signal.
        if unsafe { libc::poll(pfd.as_mut_ptr(), 1, 200) } <= 0 {
            continue;
        }
        match listener.accept() {
            Ok((conn, _)) => {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    if let Err(e) = serve(&shared, &conn) {
                        let _ = proto::reply(
                            &conn,
                            &FromDaemon::Error {
                                message: format!("{e:#}"),
                            },
                        );
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                eprintln!("gearshift daemon: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    eprintln!("gearshift daemon: stopping");
    router.shutdown();
    let _ = std::fs::remove_file(&socket);
    let _ = sup.join();
    if let Some(dir) = paths.bin.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(0)
}

/// One connection: check who is calling, then answer its one request.
fn serve(sh: &Shared, conn: &UnixStream) -> Result<()> {
    conn.set_nonblocking(false)?;
    let uid = proto::peer_uid(conn)?;
    if uid != 0 && uid != sh.login_uid {
        bail!("uid {uid} may not use the gearshift daemon");
    }
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (msg, fds): (ToDaemon, Vec<OwnedFd>) = proto::recv(conn)?;
    conn.set_read_timeout(None)?;
    match msg {
        ToDaemon::AuthorizedKeys => {
            let (text, warnings) = authkeys::authorized_keys(&sh.node, &sh.bin, &sh.socket);
            for w in &warnings {
                eprintln!("gearshift daemon: auth-keys: {w}");
            }
            proto::reply(conn, &FromDaemon::Keys { text, warnings })
        }
        ToDaemon::Apps => {
            // Every app's record and environment: root's CLI (a worker, for an SSH user, filters
            // by owner) only.
            if uid != 0 {
                bail!("only root may ask the gearshift daemon for every app");
            }
            let Some(routes) = sh.routes.get() else {
                bail!("the gearshift daemon is still starting: try again in a moment");
            };
            proto::reply(conn, &index::answer(routes)?)
        }
        ToDaemon::Exec {
            user,
            key,
            command,
            tty,
            term,
            winsize,
        } => {
            let [stdin, stdout, stderr]: [OwnedFd; 3] = fds.try_into().map_err(|_| {
                anyhow::anyhow!("a request must pass exactly three descriptors (stdin, stdout, stderr)")
            })?;
            // Never trust the client's parse: parse again, and re-check the user.
            let request = command::parse(&command)?;
            let u = crate::ssh::user::load(&sh.node, &user)?;
            // Every command, also one over a multiplexed connection opened before the key was
            // removed: the key must still be the user's.
            key_authorised(&sh.node, &user, key.as_deref())?;
            eprintln!(
                "gearshift daemon: {user}: {}",
                command::redacted(&command).chars().take(200).collect::<String>()
            );
            let job = Job {
                key,
                user: u.name,
                admin: u.admin,
                request,
                winsize,
            };
            let push = match &job.request {
                command::Request::Git {
                    op: command::GitOp::ReceivePack,
                    app,
                } => PushEvents::start(
                    &sh.node,
                    &Actor::user(&job.user, job.admin).with_key(job.key.clone()),
                    app,
                ),
                _ => None,
            };
            let code = run_worker(sh, conn, &job, [stdin, stdout, stderr], tty.then_some(term).flatten());
            if let Some(p) = push {
                let app = p.app().to_string();
                let deployed = p.end(&sh.node, *code.as_ref().unwrap_or(&1));
                sh.counters.deploy(&app, if deployed { "deployed" } else { "failed" });
            }
            let code = code?;
            if code == 0 {
                // Before the client hears of success: the router routes to what it changed.
                if let Some(routes) = sh.routes.get() {
                    for app in routed_apps(&sh.node, routes, &job.request) {
                        if let Err(e) = routes.sync_app(&app) {
                            eprintln!("gearshift daemon: cannot update the routes of {app}: {e:#}");
                        }
                    }
                }
            }
            proto::reply(conn, &FromDaemon::Exit { code })
        }
    }
}

/// The apps whose routes a successful request may have changed: the app of a push, or the
/// apps a verb names (`app start shop`, `deploy rollback shop`): each word that names an app on
/// disk, or one the route table still holds (`app destroy shop` removed its record).
fn routed_apps(node: &Node, routes: &Routes, request: &command::Request) -> Vec<String> {
    use command::{GitOp, Request};
    match request {
        Request::Git {
            op: GitOp::ReceivePack,
            app,
        } => vec![app.clone()],
        Request::Verb { argv } => argv
            .iter()
            .filter(|w| {
                crate::names::check_app_name(w).is_ok() && (crate::app::path(node, w).exists() || routes.holds(w))
            })
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether the key with fingerprint `key` still belongs to `user` (Err: what to do instead).
fn key_authorised(node: &Node, user: &str, key: Option<&str>) -> Result<()> {
    let Some(fp) = key else {
        bail!("this SSH login names no key (an old authorized_keys line?): log in again");
    };
    let u = crate::ssh::user::load(node, user)?;
    if !u.has_fingerprint(fp) {
        bail!(
            "SSH key {fp} is no longer one of user '{user}''s keys: log in with a key you still have, \
             or ask an admin to add it again"
        );
    }
    Ok(())
}

/// Forks `gearshift internal-exec` with the client's stdio and waits for it; a client that
/// goes away takes its worker down with it, and so does removing the key it logged in with
/// (checked every second: `logs -f` and `shell` end too).
fn run_worker(sh: &Shared, conn: &UnixStream, job: &Job, fds: [OwnedFd; 3], term: Option<String>) -> Result<i32> {
    let [i, o, e] = fds;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("--config")
        .arg(&sh.config_path)
        .arg("internal-exec")
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env(JOB_ENV, serde_json::to_string(job)?)
        .stdin(Stdio::from(i))
        .stdout(Stdio::from(o))
        .stderr(Stdio::from(e));
    if let Some(t) = term {
        cmd.env("TERM", t);
    }
    cmd.envs(crate::fault::passed_on());
    // SAFETY: the pre-exec closure only calls prctl, which is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            // A worker dies with the daemon (the thread that started it, precisely, which lives
            // as long as the request); what it runs in a gear dies with the worker in turn.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start a worker")?;
    let mut checked = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            use std::os::unix::process::ExitStatusExt;
            return Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)));
        }
        let mut pfd = [libc::pollfd {
            fd: conn.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), 1, 100) };
        let gone = n > 0 && pfd[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLIN) != 0;
        if gone || sh.stop.load(Ordering::Relaxed) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let st = child.wait()?;
            return Ok(st.code().unwrap_or(143));
        }
        if checked.elapsed() >= std::time::Duration::from_secs(1) {
            checked = std::time::Instant::now();
            if let Err(e) = key_authorised(&sh.node, &job.user, job.key.as_deref()) {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                child.wait()?;
                eprintln!("gearshift daemon: {}: session ended: {e:#}", job.user);
                return Err(e.context("this session was ended"));
            }
        }
    }
}
