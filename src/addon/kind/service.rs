//! The one trait every kind of add-on implements (`super::ALL` lists them), the credentials
//! it is given, and OpenShift v2's usual variables.

use crate::gear::meta::GearInfo;
use anyhow::Result;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// A linked add-on's credentials (root-only on the host).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Secret {
    pub user: String,
    pub password: String,
    pub database: String,
}

/// What one kind of add-on service is, on the host and in its gear.
pub trait Service: Sync {
    /// The name users type and records keep.
    fn name(&self) -> &'static str;
    /// Other names `addon create` accepts.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// The port the service listens on, on its gear's address.
    fn port(&self) -> u16;
    /// The variable a link sets unless `--as` names another.
    fn default_var(&self) -> &'static str;
    /// The host packages that provide it: (Debian, Fedora).
    fn packages(&self) -> (&'static str, &'static str);
    /// The install directory whose `bin/` the gear sees at /opt/gearshift/cartridge/bin, when
    /// the host has the service.
    fn install_dir(&self) -> Option<PathBuf>;
    /// The URL a linked app gets.
    fn url(&self, s: &Secret, ip: Ipv4Addr) -> String;
    /// The other variables a link sets where the app has no such variable yet (OpenShift v2's).
    fn link_env(&self, s: &Secret, ip: Ipv4Addr) -> Vec<(String, String)>;
    /// Host, once per node, as an unprivileged uid: the command that initialises `template`
    /// (an empty directory), which every new add-on of the kind copies; None: starts empty.
    fn template_command(&self, _install: &Path, _template: &Path) -> Option<std::process::Command> {
        None
    }
    /// The data directory under the gear's home.
    fn data_dir(&self) -> &'static str;
    /// In the gear, first start: finish the new data directory `data` (a copy of the template,
    /// not yet in place): configuration, the password root left.
    fn fresh(&self, info: &GearInfo, data: &Path) -> Result<()>;
    /// In the gear: the server, run in the foreground.
    fn command(&self, info: &GearInfo, data: &Path) -> Result<std::process::Command>;
    /// In the gear, after each start: returns once the server serves the add-on's user and
    /// database (made on the first start).
    fn ready(&self, info: &GearInfo, data: &Path) -> Result<()>;
    /// In the gear (`/bin/sh -c`, the gear's environment and GEARSHIFT_ADDON_PASSWORD): write
    /// a consistent dump to stdout.
    fn backup_script(&self) -> String;
    /// In the gear, likewise: load a dump from stdin; refuse (saying so, exit 3) when the
    /// add-on holds data unless GEARSHIFT_ADDON_FORCE is set, and when the input is not a dump.
    fn restore_script(&self) -> String;
}

/// OpenShift v2's usual five variables under `prefix` (`OPENSHIFT_POSTGRESQL_DB`).
pub fn openshift_vars(prefix: &str, port: u16, url: String, s: &Secret, ip: Ipv4Addr) -> Vec<(String, String)> {
    vec![
        (format!("{prefix}_HOST"), ip.to_string()),
        (format!("{prefix}_PORT"), port.to_string()),
        (format!("{prefix}_USERNAME"), s.user.clone()),
        (format!("{prefix}_PASSWORD"), s.password.clone()),
        (format!("{prefix}_URL"), url),
    ]
}
