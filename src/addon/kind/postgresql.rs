//! PostgreSQL add-ons: Debian's newest /usr/lib/postgresql/N (or Fedora's /usr), a template
//! cluster made once per node by initdb, `pg_hba.conf` that trusts the socket (in the gear's
//! private /tmp, mode 0700: only the gear's uid connects; no peer lookup, which needs a passwd
//! entry the gear's uid does not have) and asks every network client for its password; the add-on's role and database
//! are made through the socket once the server runs.

use super::service::{openshift_vars, Secret, Service};
use crate::gear::meta::GearInfo;
use crate::ingear::service::steps::{self, bin, SERVICE_LOG};
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The template cluster's superuser.
pub const TEMPLATE_SUPERUSER: &str = "gearshift";
/// How the in-gear scripts reach the add-on's database (the password in PGPASSWORD).
const CONNECT: &str =
    r#"-h "$GEARSHIFT_ADDON_IP" -p "$GEARSHIFT_ADDON_PORT" -U "$GEARSHIFT_ADDON_USER" -d "$GEARSHIFT_ADDON_DB""#;
/// Marks (in the data directory) that the add-on's role and database exist.
const DB_MADE: &str = "gearshift-database-created";

pub struct Postgresql;

impl Service for Postgresql {
    fn name(&self) -> &'static str {
        "postgresql"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["postgres"]
    }
    fn port(&self) -> u16 {
        5432
    }
    fn default_var(&self) -> &'static str {
        "DATABASE_URL"
    }
    fn packages(&self) -> (&'static str, &'static str) {
        ("postgresql", "postgresql-server")
    }
    fn install_dir(&self) -> Option<PathBuf> {
        newest_postgresql(Path::new("/usr/lib/postgresql"))
            .or_else(|| Path::new("/usr/bin/initdb").exists().then(|| PathBuf::from("/usr")))
    }
    fn url(&self, s: &Secret, ip: Ipv4Addr) -> String {
        format!(
            "postgres://{}:{}@{ip}:{}/{}",
            s.user,
            s.password,
            self.port(),
            s.database
        )
    }
    fn link_env(&self, s: &Secret, ip: Ipv4Addr) -> Vec<(String, String)> {
        openshift_vars("OPENSHIFT_POSTGRESQL_DB", self.port(), self.url(s, ip), s, ip)
    }
    fn template_command(&self, install: &Path, template: &Path) -> Option<Command> {
        let mut c = Command::new(install.join("bin/initdb"));
        c.arg("-D")
            .arg(template)
            .args([
                "-U",
                TEMPLATE_SUPERUSER,
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]);
        Some(c)
    }
    fn data_dir(&self) -> &'static str {
        "app-root/data/pgdata"
    }

    fn fresh(&self, _info: &GearInfo, data: &Path) -> Result<()> {
        std::fs::write(
            data.join("pg_hba.conf"),
            "# gearshift: the socket (in the gear's own /tmp, mode 0700: the gear's uid only) is trusted; from the network, the add-on's password\nlocal all all trust\nhost all all 0.0.0.0/0 scram-sha-256\n",
        )
        .context("cannot write pg_hba.conf")
    }

    fn command(&self, info: &GearInfo, data: &Path) -> Result<Command> {
        let mut c = Command::new(bin("postgres"));
        c.arg("-D")
            .arg(data)
            .args(["-c", &format!("listen_addresses={}", info.ip)])
            .args(["-c", &format!("port={}", info.port)])
            .args([
                "-c",
                "unix_socket_directories=/tmp",
                "-c",
                "unix_socket_permissions=0700",
            ])
            .args(["-c", "shared_buffers=32MB", "-c", "max_connections=50"]);
        Ok(c)
    }

    /// Creates the add-on's role (with the password root left in the meta directory) and
    /// database once, through the server's socket in the gear's /tmp, as the template's
    /// superuser; waits for the server to accept (`steps::START_LIMIT`).
    fn ready(&self, info: &GearInfo, data: &Path) -> Result<()> {
        let marker = data.join(DB_MADE);
        if marker.exists() {
            return Ok(());
        }
        let (user, db) = steps::names(info)?;
        let password = steps::init_password()?;
        let steps = [
            format!("CREATE ROLE \"{user}\" SUPERUSER LOGIN PASSWORD '{password}'"),
            format!("CREATE DATABASE \"{db}\" OWNER \"{user}\""),
        ];
        let t = Instant::now();
        for sql in &steps {
            while let Err(why) = psql(info, sql)? {
                if t.elapsed() > steps::START_LIMIT {
                    bail!("cannot create the add-on's role and database {db}: psql: {why} (see {SERVICE_LOG})");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::fs::write(&marker, b"").context("cannot mark the database created")
    }
    /// As the add-on's own user, with its password, over the gear's address.
    fn backup_script(&self) -> String {
        format!(
            "export PGPASSWORD=\"$GEARSHIFT_ADDON_PASSWORD\"\nexec /opt/gearshift/cartridge/bin/pg_dump {CONNECT} -Fc"
        )
    }

    /// pg_restore in one transaction: a bad or truncated dump changes nothing.
    fn restore_script(&self) -> String {
        format!(
            r#"export PGPASSWORD="$GEARSHIFT_ADDON_PASSWORD"
B=/opt/gearshift/cartridge/bin
n=$($B/psql {CONNECT} -Atc "SELECT count(*) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname NOT IN ('pg_catalog', 'information_schema') AND s.nspname NOT LIKE 'pg_toast%' AND c.relkind IN ('r', 'v', 'm', 'S', 'f', 'p')" </dev/null) || exit 1
if [ "$n" != 0 ] && [ -z "$GEARSHIFT_ADDON_FORCE" ]; then
  echo "the add-on's database is not empty ($n tables, views and sequences): restore into a new add-on, or pass --force to replace them" >&2
  exit 3
fi
exec $B/pg_restore {CONNECT} --no-owner --single-transaction --exit-on-error ${{GEARSHIFT_ADDON_FORCE:+--clean --if-exists}}"#
        )
    }
}

/// Runs one statement as the template's superuser; Ok(Err(why)) when the server refused it
/// (not up yet, or an error other than "already exists").
fn psql(info: &GearInfo, sql: &str) -> Result<std::result::Result<(), String>> {
    let o = Command::new(bin("psql"))
        .args([
            "-h",
            "/tmp",
            "-p",
            &info.port.to_string(),
            "-U",
            TEMPLATE_SUPERUSER,
            "-d",
            "postgres",
            "-Atqc",
            sql,
        ])
        .env_clear()
        .env("PGCONNECT_TIMEOUT", "2")
        .stdin(Stdio::null())
        .output()
        .context("cannot run psql")?;
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() || err.contains("already exists") {
        Ok(Ok(()))
    } else {
        Ok(Err(err.trim().to_string()))
    }
}

/// The highest-numbered /usr/lib/postgresql/N holding bin/postgres and bin/initdb.
fn newest_postgresql(base: &Path) -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(base)
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .filter(|(_, p)| p.join("bin/postgres").exists() && p.join("bin/initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_wins() {
        let d = std::env::temp_dir().join(format!("gs-pgdirs-{}", std::process::id()));
        for v in ["9", "15", "13", "x"] {
            std::fs::create_dir_all(d.join(v).join("bin")).unwrap();
            for b in ["postgres", "initdb"] {
                std::fs::write(d.join(v).join("bin").join(b), "").unwrap();
            }
        }
        assert_eq!(newest_postgresql(&d), Some(d.join("15")));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
