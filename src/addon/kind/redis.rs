//! Redis add-ons: the host's redis-server (Debian and Fedora `redis`), with a password, an
//! append-only file (a write is in the file before the client hears OK, so it survives a
//! kill -9 of the server) and RDB snapshots in the data directory.

use super::service::{Secret, Service};
use crate::gear::meta::GearInfo;
use crate::ingear::service::steps;
use anyhow::Result;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The configuration the first start writes (holds the password; the gear's uid only).
const CONF: &str = "redis.conf";

pub struct Redis;

impl Service for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }
    fn port(&self) -> u16 {
        6379
    }
    fn default_var(&self) -> &'static str {
        "REDIS_URL"
    }
    fn packages(&self) -> (&'static str, &'static str) {
        ("redis-server", "redis")
    }
    fn install_dir(&self) -> Option<PathBuf> {
        Path::new("/usr/bin/redis-server")
            .exists()
            .then(|| PathBuf::from("/usr"))
    }
    fn url(&self, s: &Secret, ip: Ipv4Addr) -> String {
        format!("redis://:{}@{ip}:{}", s.password, self.port())
    }
    /// The names of OpenShift v2's community Redis cartridge.
    fn link_env(&self, s: &Secret, ip: Ipv4Addr) -> Vec<(String, String)> {
        vec![
            ("OPENSHIFT_REDIS_HOST".into(), ip.to_string()),
            ("OPENSHIFT_REDIS_PORT".into(), self.port().to_string()),
            ("REDIS_PASSWORD".into(), s.password.clone()),
        ]
    }
    fn data_dir(&self) -> &'static str {
        "app-root/data/redis"
    }

    fn fresh(&self, _info: &GearInfo, data: &Path) -> Result<()> {
        let pw = steps::init_password()?;
        steps::write_private(
            &data.join(CONF),
            &format!(
                "# gearshift: address, port and dir come on the command line\nrequirepass {pw}\nprotected-mode no\ndaemonize no\nlogfile \"\"\nappendonly yes\nappendfsync everysec\ndbfilename dump.rdb\nunixsocket /tmp/redis.sock\nunixsocketperm 700\nmaxclients 1000\n"
            ),
        )
    }

    fn command(&self, info: &GearInfo, data: &Path) -> Result<Command> {
        let mut c = Command::new(steps::bin("redis-server"));
        c.arg(data.join(CONF))
            .arg("--bind")
            .arg(info.ip.to_string())
            .arg("--port")
            .arg(info.port.to_string())
            .arg("--dir")
            .arg(data);
        Ok(c)
    }

    fn ready(&self, info: &GearInfo, _data: &Path) -> Result<()> {
        steps::wait_port(info.ip, info.port)
    }
}
