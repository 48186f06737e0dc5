//! MariaDB add-ons: the host's mariadbd (Debian `mariadb-server`, Fedora `mariadb-server`), a
//! template data directory made once per node by mariadb-install-db; the add-on's user
//! (`'NAME'@'%'`, its password) and database come from an init file run by the server's first
//! start, then removed.

use super::service::{openshift_vars, Secret, Service};
use crate::gear::meta::GearInfo;
use crate::ingear::service::steps;
use anyhow::{bail, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The SQL the first start runs (holds the password: removed once the server accepts).
const INIT_SQL: &str = "gearshift-init.sql";
/// Small redo logs: the template is copied once per add-on.
const LOG_SIZE: &str = "--innodb-log-file-size=8M";

pub struct Mariadb;

/// The server binary: Debian's /usr/sbin, Fedora's /usr/libexec.
fn server() -> Option<PathBuf> {
    ["/usr/sbin/mariadbd", "/usr/libexec/mariadbd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Service for Mariadb {
    fn name(&self) -> &'static str {
        "mariadb"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["mysql"]
    }
    fn port(&self) -> u16 {
        3306
    }
    fn default_var(&self) -> &'static str {
        "DATABASE_URL"
    }
    fn packages(&self) -> (&'static str, &'static str) {
        ("mariadb-server", "mariadb-server")
    }
    fn install_dir(&self) -> Option<PathBuf> {
        (server().is_some() && Path::new("/usr/bin/mariadb-install-db").exists()).then(|| PathBuf::from("/usr"))
    }
    fn url(&self, s: &Secret, ip: Ipv4Addr) -> String {
        format!("mysql://{}:{}@{ip}:{}/{}", s.user, s.password, self.port(), s.database)
    }
    fn link_env(&self, s: &Secret, ip: Ipv4Addr) -> Vec<(String, String)> {
        let mut v = vec![("MARIADB_URL".to_string(), self.url(s, ip))];
        v.extend(openshift_vars(
            "OPENSHIFT_MYSQL_DB",
            self.port(),
            self.url(s, ip),
            s,
            ip,
        ));
        v
    }
    fn template_command(&self, install: &Path, template: &Path) -> Option<Command> {
        let mut c = Command::new(install.join("bin/mariadb-install-db"));
        c.arg("--no-defaults")
            .arg(format!("--datadir={}", template.display()))
            .args([
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                "--skip-name-resolve",
                LOG_SIZE,
            ]);
        Some(c)
    }
    fn data_dir(&self) -> &'static str {
        "app-root/data/mariadb"
    }

    fn fresh(&self, info: &GearInfo, data: &Path) -> Result<()> {
        let (user, db) = steps::names(info)?;
        let pw = steps::init_password()?;
        steps::write_private(
            &data.join(INIT_SQL),
            &format!(
                "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{pw}';\nGRANT ALL PRIVILEGES ON *.* TO '{user}'@'%' WITH GRANT OPTION;\nCREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4;\n"
            ),
        )
    }

    fn command(&self, info: &GearInfo, data: &Path) -> Result<Command> {
        let Some(server) = server() else {
            bail!("mariadbd is not installed on the host (mariadb-server)");
        };
        let mut c = Command::new(server);
        c.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--bind-address={}", info.ip))
            .arg(format!("--port={}", info.port))
            .args([
                "--socket=/tmp/mariadb.sock",
                "--pid-file=/tmp/mariadb.pid",
                "--skip-name-resolve",
                LOG_SIZE,
                "--innodb-buffer-pool-size=32M",
                "--performance-schema=OFF",
                "--max-connections=50",
                "--character-set-server=utf8mb4",
            ]);
        if data.join(INIT_SQL).exists() {
            c.arg(format!("--init-file={}", data.join(INIT_SQL).display()));
        }
        Ok(c)
    }

    /// On the first start, once the add-on's user can log in (the server listens before its
    /// init file has run), the init file goes.
    fn ready(&self, info: &GearInfo, data: &Path) -> Result<()> {
        steps::wait_port(info.ip, info.port)?;
        let init = data.join(INIT_SQL);
        if !init.exists() {
            return Ok(());
        }
        let (user, db) = steps::names(info)?;
        let pw = steps::init_password()?;
        let t = std::time::Instant::now();
        loop {
            let o = Command::new("/usr/bin/mariadb")
                .args([
                    "--no-defaults",
                    "-h",
                    &info.ip.to_string(),
                    "-P",
                    &info.port.to_string(),
                ])
                .args(["-u", &user, "-e", "SELECT 1", &db])
                .env_clear()
                .env("MYSQL_PWD", &pw)
                .stdin(std::process::Stdio::null())
                .output()?;
            if o.status.success() {
                break;
            }
            if t.elapsed() > steps::START_LIMIT {
                bail!(
                    "the add-on's user cannot log in after {} s: {} (see {})",
                    steps::START_LIMIT.as_secs(),
                    String::from_utf8_lossy(&o.stderr).trim(),
                    steps::SERVICE_LOG
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::remove_file(init)?;
        Ok(())
    }

    fn backup_script(&self) -> String {
        "MYSQL_PWD=\"$GEARSHIFT_ADDON_PASSWORD\" exec /usr/bin/mariadb-dump -h \"$GEARSHIFT_ADDON_IP\" -P \"$GEARSHIFT_ADDON_PORT\" -u \"$GEARSHIFT_ADDON_USER\" --single-transaction --routines --triggers --events \"$GEARSHIFT_ADDON_DB\"".into()
    }

    fn restore_script(&self) -> String {
        r#"export MYSQL_PWD="$GEARSHIFT_ADDON_PASSWORD"
M="/usr/bin/mariadb -h $GEARSHIFT_ADDON_IP -P $GEARSHIFT_ADDON_PORT -u $GEARSHIFT_ADDON_USER"
n=$($M -N -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '$GEARSHIFT_ADDON_DB'" </dev/null) || exit 1
if [ "$n" != 0 ] && [ -z "$GEARSHIFT_ADDON_FORCE" ]; then
  echo "the add-on's database is not empty ($n tables): restore into a new add-on, or pass --force to replace them" >&2
  exit 3
fi
if [ -n "$GEARSHIFT_ADDON_FORCE" ]; then
  $M -e "DROP DATABASE IF EXISTS \`$GEARSHIFT_ADDON_DB\`; CREATE DATABASE \`$GEARSHIFT_ADDON_DB\` CHARACTER SET utf8mb4" </dev/null || exit 1
fi
exec $M "$GEARSHIFT_ADDON_DB""#
            .into()
    }
}
