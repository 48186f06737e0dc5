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
                "# gearshift: address, port and dir come on the command line\nrequirepass {pw}\nprotected-mode no\ndaemonize no\nlogfile \"\"\nappendonly yes\nappendfsync everysec\ndbfilename dump.rdb\nunixsocket /tmp/redis.sock\nunixsocketperm 700\nenable-debug-command local\nmaxclients 1000\n"
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
    /// BGSAVE, then the new RDB file once the save count has grown.
    fn backup_script(&self) -> String {
        r#"set -e
export REDISCLI_AUTH="$GEARSHIFT_ADDON_PASSWORD"
R="/opt/gearshift/cartridge/bin/redis-cli -h $GEARSHIFT_ADDON_IP -p $GEARSHIFT_ADDON_PORT"
saves() { $R INFO persistence | tr -d '\r' | sed -n 's/^rdb_saves://p'; }
busy() { $R INFO persistence | tr -d '\r' | grep -q '^rdb_bgsave_in_progress:1'; }
before=$(saves)
while busy; do sleep 0.05; done
$R BGSAVE >/dev/null
while [ "$(saves)" = "$before" ] || busy; do sleep 0.05; done
$R INFO persistence | tr -d '\r' | grep -q '^rdb_last_bgsave_status:ok' || { echo "BGSAVE failed (see app-root/logs/service.log)" >&2; exit 1; }
exec cat "$HOME/app-root/data/redis/dump.rdb""#
            .into()
    }

    /// Checked with redis-check-rdb first; then loaded with DEBUG RELOAD (from the socket) and
    /// the append-only file rewritten from it.
    fn restore_script(&self) -> String {
        r#"export REDISCLI_AUTH="$GEARSHIFT_ADDON_PASSWORD"
D="$HOME/app-root/data/redis"
R="/opt/gearshift/cartridge/bin/redis-cli -s /tmp/redis.sock"
cat > "$D/restore.rdb" || exit 1
if ! /opt/gearshift/cartridge/bin/redis-check-rdb "$D/restore.rdb" >/dev/null 2>&1; then
  rm -f "$D/restore.rdb"
  echo "the input is not a Redis RDB file (redis-check-rdb refused it); nothing was changed" >&2
  exit 3
fi
n=$($R DBSIZE </dev/null) || exit 1
if [ "$n" != 0 ] && [ -z "$GEARSHIFT_ADDON_FORCE" ]; then
  rm -f "$D/restore.rdb"
  echo "the add-on holds $n keys: restore into a new add-on, or pass --force to replace them" >&2
  exit 3
fi
set -e
$R CONFIG SET appendonly no >/dev/null
mv "$D/restore.rdb" "$D/dump.rdb"
$R DEBUG RELOAD NOSAVE | grep -q OK
$R CONFIG SET appendonly yes >/dev/null"#
            .into()
    }
}
