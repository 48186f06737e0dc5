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

    /// The server runs its init file before it listens: once it accepts, the user exists.
    fn ready(&self, info: &GearInfo, data: &Path) -> Result<()> {
        steps::wait_port(info.ip, info.port)?;
        match std::fs::remove_file(data.join(INIT_SQL)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
