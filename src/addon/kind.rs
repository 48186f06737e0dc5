//! The kinds of add-on a node can offer: one small trait (`Service`), one file per kind
//! (`kind/postgresql.rs`, `kind/mariadb.rs`, `kind/redis.rs`) and the table `ALL`; a fourth
//! kind is one more file and one more line in the table. A kind's host half (package, port,
//! URL, the variables a link sets, the node's template) is pure or runs as root; its in-gear
//! half (`fresh`, `command`, `ready`) runs only inside the add-on's gear, as
//! its uid, called from `crate::ingear::service`.

use crate::gear::isolation::check::Check;
use anyhow::{bail, Result};
use std::path::PathBuf;

pub mod mariadb;
pub mod postgresql;
pub mod redis;
pub mod service;

pub use service::{Secret, Service};

/// One kind of add-on service (a row of `ALL`).
#[derive(Clone, Copy)]
pub struct Kind(&'static dyn Service);

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name())
    }
}

impl PartialEq for Kind {
    fn eq(&self, o: &Kind) -> bool {
        self.0.name() == o.0.name()
    }
}

impl std::ops::Deref for Kind {
    type Target = dyn Service;
    fn deref(&self) -> &(dyn Service + 'static) {
        self.0
    }
}

/// Every kind this gearshift knows.
pub const ALL: &[Kind] = &[
    Kind(&postgresql::Postgresql),
    Kind(&mariadb::Mariadb),
    Kind(&redis::Redis),
];

fn offered() -> String {
    ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind> {
        match ALL.iter().find(|k| k.name() == s || k.aliases().contains(&s)) {
            Some(k) => Ok(*k),
            None => bail!("unknown add-on kind '{s}': this gearshift offers {}", offered()),
        }
    }

    /// The service's install directory, or how to add it.
    pub fn install_dir(self) -> Result<PathBuf> {
        match self.0.install_dir() {
            Some(d) => Ok(d),
            None => {
                let (deb, rpm) = self.packages();
                bail!(
                    "this host cannot offer {} add-ons: install the {deb} package (`make deps`, or apt-get install {deb} / dnf install {rpm})",
                    self.name()
                )
            }
        }
    }
}

/// `doctor`'s lines: which add-ons this host can offer, and how to add one it cannot.
pub fn check() -> Vec<Check> {
    ALL.iter()
        .map(|k| {
            let name = format!("addon {}", k.name());
            let (deb, rpm) = k.packages();
            match k.install_dir() {
                Ok(d) => Check::ok(&name, format!("offered ({})", d.display())),
                Err(_) => Check::absent(
                    &name,
                    false,
                    format!("not offered: the {deb} package is not installed"),
                    format!("make deps, or apt-get install {deb} / dnf install {rpm}"),
                ),
            }
        })
        .collect()
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
    use std::net::Ipv4Addr;

    fn secret() -> Secret {
        Secret {
            user: "db".into(),
            password: "pw".into(),
            database: "db".into(),
        }
    }

    #[test]
    fn kinds_and_urls() {
        assert_eq!(Kind::parse("postgresql").unwrap().name(), "postgresql");
        assert_eq!(Kind::parse("postgres").unwrap().name(), "postgresql");
        assert_eq!(Kind::parse("mysql").unwrap().name(), "mariadb");
        assert_eq!(Kind::parse("redis").unwrap().name(), "redis");
        let e = Kind::parse("oracle").unwrap_err().to_string();
        assert!(e.contains("postgresql, mariadb, redis"), "{e}");
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        let pg = Kind::parse("postgresql").unwrap();
        assert_eq!(pg.url(&secret(), ip), "postgres://db:pw@10.0.0.5:5432/db");
        let env = pg.link_env(&secret(), ip);
        assert!(env.contains(&("OPENSHIFT_POSTGRESQL_DB_PORT".into(), "5432".into())));
        assert!(env.contains(&("OPENSHIFT_POSTGRESQL_DB_PASSWORD".into(), "pw".into())));
        let my = Kind::parse("mariadb").unwrap();
        assert_eq!(my.default_var(), "DATABASE_URL");
        assert_eq!(my.url(&secret(), ip), "mysql://db:pw@10.0.0.5:3306/db");
        let env = my.link_env(&secret(), ip);
        assert!(env.contains(&("MARIADB_URL".into(), "mysql://db:pw@10.0.0.5:3306/db".into())));
        assert!(env.contains(&("OPENSHIFT_MYSQL_DB_HOST".into(), "10.0.0.5".into())));
        let r = Kind::parse("redis").unwrap();
        assert_eq!(r.default_var(), "REDIS_URL");
        assert_eq!(r.url(&secret(), ip), "redis://:pw@10.0.0.5:6379");
        assert!(r
            .link_env(&secret(), ip)
            .contains(&("OPENSHIFT_REDIS_PORT".into(), "6379".into())));
    }

    #[test]
    fn every_kind_has_its_own_name_port_and_data() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
                assert_ne!(a.port(), b.port());
                assert_ne!(a.data_dir(), b.data_dir());
            }
        }
    }

    #[test]
    fn variable_names() {
        check_var("DATABASE_URL").unwrap();
        check_var("REPORTS_DB2").unwrap();
        for bad in ["", "database_url", "2DB", "A-B", "PATH", "OPENSHIFT_X"] {
            assert!(check_var(bad).is_err(), "{bad}");
        }
    }
}
