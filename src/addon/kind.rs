//! The kinds of add-on a node can offer, where their host packages live, and what a linked
//! app is told (URL and OpenShift v2 variables). Pure apart from `install_dir`.

use crate::gear::isolation::check::Check;
use anyhow::{bail, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// One kind of add-on service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgresql,
}

/// A linked add-on's credentials (root-only on the host).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Secret {
    pub user: String,
    pub password: String,
    pub database: String,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind> {
        match s {
            "postgresql" | "postgres" => Ok(Kind::Postgresql),
            "mariadb" | "mysql" | "redis" => {
                bail!("'{s}' add-ons are not offered yet: this gearshift offers postgresql")
            }
            _ => bail!("unknown add-on kind '{s}': this gearshift offers postgresql"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Postgresql => "postgresql",
        }
    }

    /// The port the service listens on, on its gear's address.
    pub fn port(self) -> u16 {
        match self {
            Kind::Postgresql => 5432,
        }
    }

    /// The variable a link sets unless `--as` names another.
    pub fn default_var(self) -> &'static str {
        match self {
            Kind::Postgresql => "DATABASE_URL",
        }
    }

    /// The host package that provides the service.
    pub fn package(self) -> &'static str {
        match self {
            Kind::Postgresql => "postgresql",
        }
    }

    /// The service's install directory (holding `bin/`), bound read-only into its gear: the
    /// newest of Debian's /usr/lib/postgresql/N, else Fedora's /usr.
    pub fn install_dir(self) -> Result<PathBuf> {
        let found = match self {
            Kind::Postgresql => newest_postgresql(Path::new("/usr/lib/postgresql"))
                .or_else(|| Path::new("/usr/bin/initdb").exists().then(|| PathBuf::from("/usr"))),
        };
        match found {
            Some(d) => Ok(d),
            None => bail!(
                "this host cannot offer {} add-ons: install the {} package (`make deps`, or apt-get install {} / dnf install {}-server)",
                self.name(),
                self.package(),
                self.package(),
                self.package()
            ),
        }
    }

    /// The URL a linked app gets.
    pub fn url(self, s: &Secret, ip: Ipv4Addr) -> String {
        match self {
            Kind::Postgresql => format!(
                "postgres://{}:{}@{ip}:{}/{}",
                s.user,
                s.password,
                self.port(),
                s.database
            ),
        }
    }

    /// OpenShift v2's variables for a linked app.
    pub fn openshift_env(self, s: &Secret, ip: Ipv4Addr) -> Vec<(String, String)> {
        let p = match self {
            Kind::Postgresql => "OPENSHIFT_POSTGRESQL_DB",
        };
        vec![
            (format!("{p}_HOST"), ip.to_string()),
            (format!("{p}_PORT"), self.port().to_string()),
            (format!("{p}_USERNAME"), s.user.clone()),
            (format!("{p}_PASSWORD"), s.password.clone()),
            (format!("{p}_URL"), self.url(s, ip)),
        ]
    }
}

/// Every kind this gearshift knows.
pub const ALL: &[Kind] = &[Kind::Postgresql];

/// `doctor`'s lines: which add-ons this host can offer, and how to add one it cannot.
pub fn check() -> Vec<Check> {
    ALL.iter()
        .map(|k| {
            let name = format!("addon {}", k.name());
            match k.install_dir() {
                Ok(d) => Check::ok(&name, format!("offered ({})", d.display())),
                Err(_) => Check::absent(
                    &name,
                    false,
                    format!("not offered: the {} package is not installed", k.package()),
                    format!(
                        "make deps, or apt-get install {} / dnf install {}-server",
                        k.package(),
                        k.package()
                    ),
                ),
            }
        })
        .collect()
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

/// A variable name a link may set: `[A-Z_][A-Z0-9_]*`, not one gearshift sets itself.
pub fn check_var(var: &str) -> Result<()> {
    let ok = !var.is_empty()
        && var.len() <= 64
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        bail!("'{var}' is not a variable name: use capitals, digits and _ (e.g. --as REPORTS_DATABASE_URL)");
    }
    if crate::gear::reserved_env(var) {
        bail!("'{var}' is set by gearshift itself: choose another name with --as");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret {
            user: "db".into(),
            password: "pw".into(),
            database: "db".into(),
        }
    }

    #[test]
    fn kinds_and_urls() {
        assert_eq!(Kind::parse("postgresql").unwrap(), Kind::Postgresql);
        assert!(Kind::parse("redis")
            .unwrap_err()
            .to_string()
            .contains("not offered yet"));
        assert!(Kind::parse("oracle").is_err());
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        assert_eq!(Kind::Postgresql.url(&secret(), ip), "postgres://db:pw@10.0.0.5:5432/db");
        let env = Kind::Postgresql.openshift_env(&secret(), ip);
        assert!(env.contains(&("OPENSHIFT_POSTGRESQL_DB_PORT".into(), "5432".into())));
        assert!(env.contains(&("OPENSHIFT_POSTGRESQL_DB_PASSWORD".into(), "pw".into())));
    }

    #[test]
    fn variable_names() {
        check_var("DATABASE_URL").unwrap();
        check_var("REPORTS_DB2").unwrap();
        for bad in ["", "database_url", "2DB", "A-B", "PATH", "OPENSHIFT_X"] {
            assert!(check_var(bad).is_err(), "{bad}");
        }
    }

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
