//! What an add-on's service is set up with inside its gear (the gear's uid, no privileges):
//! its log, the kit's binaries, a step run with its output logged, a wait for the port, the
//! password root left for the first start. Used by the supervisor (`super`) and by each kind's
//! in-gear half (`crate::addon::kind::*`).

use crate::gear::layout;
use crate::gear::meta::GearInfo;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The service's output, appended to.
pub const SERVICE_LOG: &str = "app-root/logs/service.log";
/// Where root leaves the initial password for the gear (removed once the add-on is created).
pub const INIT_PASSWORD: &str = "/opt/gearshift/meta/addon-init.pw";
/// The node's template data directory of the kind, in the kit bound at /opt/gearshift/cartridge.
pub const TEMPLATE: &str = "/opt/gearshift/cartridge/template";

/// Descriptor variables naming the add-on's first user and database.
pub const USER_VAR: &str = "GEARSHIFT_ADDON_USER";
pub const DB_VAR: &str = "GEARSHIFT_ADDON_DB";

/// The add-on's user and database, as the descriptor names them (quotes dropped).
pub fn names(info: &GearInfo) -> Result<(String, String)> {
    let get = |k: &str| -> Result<String> {
        let v = info.env.get(k).with_context(|| format!("the descriptor has no {k}"))?;
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            bail!("the descriptor's {k} is not a plain name");
        }
        Ok(v.clone())
    };
    Ok((get(USER_VAR)?, get(DB_VAR)?))
}

/// Appends one line of gearshift's own to the service log.
pub fn note(msg: &str) {
    let path = layout::in_home(SERVICE_LOG);
    let _ = std::fs::create_dir_all(layout::in_home(layout::LOGS));
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "[gearshift {}] {msg}", crate::clock::iso_now());
    }
}

/// The service log, for a child's stdout and stderr.
pub fn log_file() -> Result<std::fs::File> {
    let _ = std::fs::create_dir_all(layout::in_home(layout::LOGS));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout::in_home(SERVICE_LOG))
        .context("cannot open the service log")
}

/// The service's binaries, as the gear sees them (the kind's install directory's `bin`).
pub fn bin(name: &str) -> PathBuf {
    Path::new("/opt/gearshift/cartridge/bin").join(name)
}

/// Runs one setup step with its output in the service log; a failure carries the step's last
/// words too (the log may be where the disk ran out).
pub fn run_logged(cmd: &mut std::process::Command, what: &str) -> Result<()> {
    let o = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if let Ok(mut log) = log_file() {
        let _ = log.write_all(&o.stdout).and_then(|_| log.write_all(&o.stderr));
    }
    if !o.status.success() {
        let last = crate::gear::home_file::last_lines(&String::from_utf8_lossy(&o.stderr), 2).join(" / ");
        let last: String = last.chars().take(400).collect();
        bail!("{what} failed ({}): {last}; see {SERVICE_LOG}", o.status);
    }
    Ok(())
}

/// The password root left for the first start: alphanumeric, or an error.
pub fn init_password() -> Result<String> {
    let pw = std::fs::read_to_string(INIT_PASSWORD)
        .with_context(|| format!("cannot read {INIT_PASSWORD} (destroy and create the add-on again)"))?;
    let pw = pw.trim().to_string();
    if pw.is_empty() || !pw.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("the add-on's initial password is not alphanumeric");
    }
    Ok(pw)
}

/// How long a service's start may take at each step (listening; its user able to log in): a
/// database's first start on a small, slow VM (InnoDB's redo log, PostgreSQL's recovery) can
/// pass 30 s, as it did under emulation in the test VM.
pub const START_LIMIT: Duration = Duration::from_secs(60);

/// Waits until the service accepts TCP connections on the gear's address ([`START_LIMIT`]).
pub fn wait_port(ip: std::net::Ipv4Addr, port: u16) -> Result<()> {
    let t = Instant::now();
    while std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(200)).is_err() {
        if t.elapsed() > START_LIMIT {
            bail!(
                "the service does not accept connections on {ip}:{port} after {} s (see {SERVICE_LOG})",
                START_LIMIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Writes a file only the gear's uid may read.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
