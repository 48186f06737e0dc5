//! The node configuration (`/etc/gearshift/gearshift.toml`): documented defaults, profiles, parsing.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Where the node config lives unless `--config` or `GEARSHIFT_CONFIG` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/gearshift/gearshift.toml";

/// The whole node configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Node name: names its cgroup parent, nftables table and loop image.
    pub name: String,
    /// Apps are served at APP.DOMAIN.
    pub domain: String,
    pub http_port: u16,
    pub https_port: u16,
    pub ssh_port: u16,
    /// Loopback-only admin endpoint of the router (`/metrics`, status).
    #[serde(default = "default_admin_port")]
    pub admin_port: u16,
    /// Also serve the admin port's pages here ("ADDR:PORT"), over TLS (`admin.pem` in the data
    /// root, for `admin_host`) and behind a login (`gearshift node admin-password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// The host name the exposed admin port's certificate is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_host: Option<String>,
    /// Idle an app after this many seconds without requests (0: never).
    #[serde(default)]
    pub idle_after_secs: u64,
    /// Whether a request to a stopped (not idled) app starts it, or gets a 502.
    #[serde(default)]
    pub wake_stopped: bool,
    /// What a gear start does when the kernel has Landlock but refuses the gear's ruleset:
    /// `require` (the gear does not start) or `warn` (logged; the gear starts without it).
    #[serde(default)]
    pub landlock: LandlockMode,
    /// All state lives under this directory.
    pub data_root: PathBuf,
    /// Gear uids (and gids) are taken from this inclusive range; none of them needs a host passwd entry.
    pub uid_min: u32,
    pub uid_max: u32,
    /// Gears get addresses in this subnet; the bridge takes the first one.
    pub subnet: String,
    /// How many gears (apps' and add-ons' together) the node is sized for: the subnet, the uid
    /// range and the bridge must hold that many, and `doctor` checks the kernel's limits against
    /// it. Unset: as many as the subnet, the uid range and one bridge hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gears: Option<u32>,
    pub bridge: String,
    /// Directory name created beneath the daemon's own cgroup in every hierarchy.
    pub cgroup_parent: String,
    /// Login user for git and ssh (issue: git push deploys).
    pub ssh_user: String,
    pub default_profile: String,
    /// Directories searched, in order, for cartridges (`NAME/manifest.toml`).
    pub cartridge_path: Vec<PathBuf>,
    pub disk: DiskConfig,
    pub profiles: BTreeMap<String, Profile>,
    /// The HTTP router's settings (`[router]`).
    #[serde(default)]
    pub router: RouterSettings,
    /// What each SSH user (not an admin) may create (`[limits]`).
    #[serde(default)]
    pub limits: UserLimits,
    /// Automatic TLS certificates over ACME (`[acme]`).
    #[serde(default)]
    pub acme: AcmeSettings,
}

/// Let's Encrypt's production directory: the default `acme.directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The `[acme]` section: where certificates come from, for which hosts, when they are renewed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeSettings {
    /// Every host name of every app gets a certificate over ACME (but `localhost` and
    /// `*.localhost`, and hosts with a certificate from `domain cert`); off: only the hosts
    /// added with `domain add APP HOST --acme`.
    pub enabled: bool,
    /// The contact address given to the ACME server (expiry warnings); required with `enabled`.
    pub email: Option<String>,
    /// The ACME server's directory URL.
    pub directory: String,
    /// PEM file of the only CAs trusted for the ACME server's HTTPS (a test server such as
    /// pebble); unset: the bundled Mozilla roots.
    pub ca_bundle: Option<PathBuf>,
    /// A certificate is renewed this many days before it expires.
    pub renew_days: u64,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        AcmeSettings {
            enabled: false,
            email: None,
            directory: LETS_ENCRYPT.to_string(),
            ca_bundle: None,
            renew_days: 30,
        }
    }
}

/// The `landlock` setting: whether a gear needs its Landlock ruleset to start.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LandlockMode {
    /// A kernel with Landlock that refuses the ruleset fails the gear's start.
    #[default]
    Require,
    /// It is logged as a warning and the gear starts without Landlock.
    Warn,
}

/// The `[limits]` section: per-user limits for SSH users who are not admins.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UserLimits {
    /// Apps one user may own (0: no limit).
    pub max_apps_per_user: usize,
    /// Add-ons one user may own (0: no limit), counted apart from apps.
    pub max_addons_per_user: usize,
    /// Profiles users may choose for their apps (empty: every profile).
    pub user_profiles: Vec<String>,
}

/// The `[router]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSettings {
    /// Load balancers in front of the node (`10.0.0.0/8`, `192.0.2.7`): their `X-Forwarded-*`,
    /// `Forwarded` and `X-Request-Id` are kept (the peer appended); everyone else's are replaced.
    pub trusted_proxies: Vec<String>,
    /// Client connections one IP address may hold open; more get a 503.
    pub max_connections_per_ip: usize,
    /// Requests one app may be served at once (held, forwarded or relayed); more get a 503.
    pub max_connections_per_app: usize,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            trusted_proxies: Vec::new(),
            max_connections_per_ip: 256,
            max_connections_per_app: 1024,
        }
    }
}

/// How gear homes get a disk quota.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// `auto`, `btrfs-loop`, `ext4`, `xfs` or `none`.
    pub backend: String,
    /// Size of the loop-mounted btrfs image that holds gear homes (btrfs-loop backend).
    pub image_size: String,
    /// Create gears even when no quota backend can enforce their disk limit.
    pub allow_unlimited: bool,
    /// Let the gears' disk quotas add up to more than the filesystem holding them (a warning is
    /// printed); off: `app create`, `app scale` and `addon create` that would are refused.
    #[serde(default)]
    pub overcommit: bool,
}

/// Resource limits for one gear.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Memory limit, e.g. "512M".
    pub memory: String,
    /// CPU limit in cores, e.g. 0.5.
    pub cpu: f64,
    /// Maximum number of tasks.
    pub pids: u64,
    /// Disk blocks, e.g. "1G".
    pub disk: String,
    /// Maximum number of inodes (ext4/xfs backends).
    pub inodes: u64,
    /// Network bandwidth each way, e.g. "10mbit".
    pub bandwidth: String,
    /// Relative io weight, 1..=10000 (v2) / 10..=1000 (v1).
    pub io_weight: u32,
}

/// A profile with its units resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu_millis: u64,
    pub pids: u64,
    pub disk_bytes: u64,
    pub inodes: u64,
    pub bandwidth_kbit: u64,
    pub io_weight: u32,
}

impl Profile {
    /// Resolves the units of this profile.
    pub fn limits(&self) -> Result<Limits> {
        if !(self.cpu > 0.0 && self.cpu <= 1024.0) {
            bail!("cpu must be a number of cores above 0, got {}", self.cpu);
        }
        Ok(Limits {
            memory_bytes: parse_size(&self.memory).context("memory")?,
            cpu_millis: (self.cpu * 1000.0).round() as u64,
            pids: self.pids,
            disk_bytes: parse_size(&self.disk).context("disk")?,
            inodes: self.inodes,
            bandwidth_kbit: parse_rate_kbit(&self.bandwidth).context("bandwidth")?,
            io_weight: self.io_weight.clamp(10, 1000),
        })
    }
}

fn profile(memory: &str, cpu: f64, pids: u64, disk: &str, inodes: u64, bw: &str, io: u32) -> Profile {
    Profile {
        memory: memory.into(),
        cpu,
        pids,
        disk: disk.into(),
        inodes,
        bandwidth: bw.into(),
        io_weight: io,
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut profiles = BTreeMap::new();
        profiles.insert("small".into(), profile("512M", 1.0, 512, "1G", 80_000, "20mbit", 100));
        profiles.insert("medium".into(), profile("1G", 1.0, 1024, "2G", 160_000, "50mbit", 200));
        profiles.insert("large".into(), profile("2G", 2.0, 2048, "4G", 320_000, "100mbit", 400));
        Config {
            name: "gearshift".into(),
            domain: "localhost".into(),
            http_port: 80,
            https_port: 443,
            ssh_port: 2222,
            admin_port: default_admin_port(),
            admin_listen: None,
            admin_host: None,
            idle_after_secs: 0,
            wake_stopped: false,
            landlock: LandlockMode::Require,
            data_root: PathBuf::from("/var/lib/gearshift"),
            max_gears: None,
            uid_min: 400_000,
            uid_max: 449_999,
            subnet: "10.77.0.0/20".into(),
            bridge: "gearshift0".into(),
            cgroup_parent: "gearshift".into(),
            ssh_user: "gearshift".into(),
            default_profile: "small".into(),
            cartridge_path: vec![PathBuf::from("/usr/local/share/gearshift/cartridges")],
            disk: DiskConfig {
                backend: "auto".into(),
                image_size: "20G".into(),
                allow_unlimited: false,
                overcommit: false,
            },
            profiles,
            router: RouterSettings::default(),
            limits: UserLimits::default(),
            acme: AcmeSettings::default(),
        }
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read node config {} (run `gearshift init` first)",
                path.display()
            )
        })?;
        let cfg: Config =
            toml::from_str(&text).with_context(|| format!("node config {} is not valid", path.display()))?;
        cfg.validate()
            .with_context(|| format!("node config {} is not valid", path.display()))?;
        Ok(cfg)
    }

    /// Checks the values that the rest of gearshift relies on.
    pub fn validate(&self) -> Result<()> {
        crate::names::check_node_name(&self.name)?;
        if self.uid_min == 0 || self.uid_min > self.uid_max || self.uid_max > 523_776 {
            bail!(
                "uid range {}..={} must be non-empty, above 0 and at most 523776 (the MCS label space)",
                self.uid_min,
                self.uid_max
            );
        }
        let net = Subnet::parse(&self.subnet)?;
        if net.prefix > 29 {
            bail!("subnet {} is too small for gears", self.subnet);
        }
        if let Some(want) = self.max_gears {
            if want == 0 {
                bail!("max_gears must be at least 1");
            }
            let short: Vec<String> = (self.gear_limits().into_iter())
                .filter(|(n, _)| *n < want)
                .map(|(_, why)| why)
                .collect();
            if !short.is_empty() {
                bail!(
                    "max_gears = {want} does not fit: {} (or set max_gears to at most {})",
                    short.join("; "),
                    self.gear_room().0
                );
            }
        }
        if self.bridge.is_empty()
            || self.bridge.len() > 15
            || !self
                .bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("bridge name '{}' must be 1-15 characters of [A-Za-z0-9_-]", self.bridge);
        }
        if self.admin_listen_addr()?.is_some_and(|a| a.port() == 0) {
            bail!("admin_listen needs a port other than 0 (e.g. \"0.0.0.0:8443\")");
        }
        let ports = self.ports();
        for (i, (a, pa)) in ports.iter().enumerate() {
            if let Some((b, _)) = ports[i + 1..].iter().find(|(_, pb)| pb == pa) {
                bail!("{a} and {b} are both {pa}: each listener needs its own port (change one in the node config)");
            }
        }
        if !self.data_root.is_absolute() {
            bail!("data_root must be an absolute path");
        }
        if !["auto", "btrfs-loop", "ext4", "xfs", "none"].contains(&self.disk.backend.as_str()) {
            bail!("disk.backend must be auto, btrfs-loop, ext4, xfs or none");
        }
        parse_size(&self.disk.image_size).context("disk.image_size")?;
        for (name, p) in &self.profiles {
            p.limits().with_context(|| format!("profile {name}"))?;
        }
        crate::router::TrustedProxies::parse(&self.router.trusted_proxies).map_err(anyhow::Error::msg)?;
        if self.router.max_connections_per_ip == 0 || self.router.max_connections_per_app == 0 {
            bail!("router.max_connections_per_ip and router.max_connections_per_app must be at least 1");
        }
        if self.acme.enabled && self.acme.email.as_deref().is_none_or(|e| !e.contains('@')) {
            bail!("acme.enabled needs acme.email, the contact address for the certificates (e.g. email = \"ops@example.com\")");
        }
        if !self.acme.directory.starts_with("https://") {
            bail!("acme.directory must be an https:// URL (the ACME server's directory)");
        }
        for p in &self.limits.user_profiles {
            self.profile(p).context("limits.user_profiles")?;
        }
        if !self.profiles.contains_key(&self.default_profile) {
            bail!("default_profile '{}' is not a defined profile", self.default_profile);
        }
        Ok(())
    }

    /// The exposed admin port's address (`admin_listen`), if set.
    pub fn admin_listen_addr(&self) -> Result<Option<SocketAddr>> {
        let Some(at) = &self.admin_listen else {
            return Ok(None);
        };
        at.parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("admin_listen {at:?} is not ADDR:PORT (e.g. \"0.0.0.0:8443\")"))
    }

    /// Every port the node listens on, named by its key: the router's, its sshd's, the
    /// loopback admin port and, when set, the exposed one (`admin_listen`).
    pub fn ports(&self) -> Vec<(&'static str, u16)> {
        let mut ports = vec![
            ("http_port", self.http_port),
            ("https_port", self.https_port),
            ("ssh_port", self.ssh_port),
            ("admin_port", self.admin_port),
        ];
        if let Ok(Some(at)) = self.admin_listen_addr() {
            ports.push(("admin_listen", at.port()));
        }
        ports
    }

    /// The profile called `name`, with a clear error listing the known ones.
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).with_context(|| {
            let known: Vec<_> = self.profiles.keys().cloned().collect();
            format!("unknown profile '{name}' (known: {})", known.join(", "))
        })
    }

    pub fn subnet(&self) -> Subnet {
        Subnet::parse(&self.subnet).expect("validated")
    }

    /// How many gears the subnet, the uid range and the bridge hold together, and what holds
    /// the fewest, said with its fix.
    pub fn gear_room(&self) -> (u32, String) {
        self.gear_limits()
            .into_iter()
            .min_by_key(|(n, _)| *n)
            .expect("three limits")
    }

    /// How many gears each of the subnet, the uid range and one bridge holds, with its fix.
    fn gear_limits(&self) -> Vec<(u32, String)> {
        let net = Subnet::parse(&self.subnet).ok();
        // The bridge takes the subnet's first address.
        let addresses = net.map_or(0, |n| n.hosts().saturating_sub(1));
        let uids = self.uid_max.saturating_sub(self.uid_min).saturating_add(1);
        let wider = |n: u32| {
            // The longest prefix with room for n gears (and the bridge).
            (8..=30u8)
                .rev()
                .find(|p| (1u64 << (32 - p)) >= u64::from(n) + 3)
                .unwrap_or(8)
        };
        let want = self.max_gears.unwrap_or(0);
        [
            (
                addresses,
                format!(
                    "subnet {} has room for {addresses} gears (the bridge takes one address): give a /{} or larger",
                    self.subnet,
                    wider(want.max(addresses + 1))
                ),
            ),
            (
                uids,
                format!(
                    "uid range {}-{} holds {uids} gears: widen it to at least {}-{}",
                    self.uid_min,
                    self.uid_max,
                    self.uid_min,
                    self.uid_min.saturating_add(want.max(uids + 1)).saturating_sub(1)
                ),
            ),
            (
                BRIDGE_MAX_GEARS,
                format!("a Linux bridge takes at most 1024 ports, so one node holds at most {BRIDGE_MAX_GEARS} gears"),
            ),
        ]
        .into()
    }

    /// The number of gears the node is sized for: `max_gears`, else what fits.
    pub fn gear_capacity(&self) -> u32 {
        self.max_gears.unwrap_or_else(|| self.gear_room().0)
    }
}

/// A Linux bridge has at most 1024 ports (BR_MAX_PORTS), numbered from 1: one per gear's veth.
pub const BRIDGE_MAX_GEARS: u32 = 1023;

fn default_admin_port() -> u16 {
    8001
}

/// An IPv4 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Result<Subnet> {
        let (a, p) = s
            .split_once('/')
            .with_context(|| format!("subnet '{s}' must be CIDR, like 10.77.0.0/20"))?;
        let addr: Ipv4Addr = a.parse().with_context(|| format!("'{a}' is not an IPv4 address"))?;
        let prefix: u8 = p.parse().with_context(|| format!("'{p}' is not a prefix length"))?;
        if !(8..=30).contains(&prefix) {
            bail!("subnet prefix must be between /8 and /30, got /{prefix}");
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// Number of usable host addresses.
    pub fn hosts(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    /// The n-th host address (1-based): host(1) is the bridge/gateway.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        (n >= 1 && n <= self.hosts()).then(|| Ipv4Addr::from(u32::from(self.network) + n))
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1).expect("subnet has hosts")
    }

    pub fn index_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let n = u32::from(ip).wrapping_sub(u32::from(self.network));
        (n >= 1 && n <= self.hosts()).then_some(n)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Parses "512M", "1G", "100k", "1048576" (bytes, powers of 1024).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_lowercase();
            let m: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => bail!("size '{s}' has an unknown unit (use K, M, G or T)"),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("size '{s}' is not a number with a unit like 512M"))?;
    if n.is_nan() || n < 0.0 {
        bail!("size '{s}' must not be negative");
    }
    Ok((n * mult as f64) as u64)
}

/// Parses "10mbit", "512kbit", "1gbit" into kbit/s.
pub fn parse_rate_kbit(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("gbit") {
        (n, 1_000_000)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n, 1_000)
    } else if let Some(n) = t.strip_suffix("kbit") {
        (n, 1)
    } else {
        bail!("bandwidth '{s}' needs a unit: kbit, mbit or gbit");
    };
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("bandwidth '{s}' is not a number"))?;
    if n.is_nan() || n <= 0.0 {
        bail!("bandwidth '{s}' must be above 0");
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = Config::default();
        c.validate().unwrap();
        let text = toml::to_string_pretty(&c).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn acme_settings_are_checked() {
        let mut c = Config::default();
        assert_eq!(c.acme.directory, LETS_ENCRYPT);
        assert_eq!(c.acme.renew_days, 30);
        c.acme.enabled = true;
        let e = format!("{:#}", c.validate().unwrap_err());
        assert!(e.contains("acme.enabled needs acme.email"), "{e}");
        c.acme.email = Some("ops@example.com".into());
        c.validate().unwrap();
        c.acme.directory = "http://insecure.example/dir".into();
        assert!(format!("{:#}", c.validate().unwrap_err()).contains("https://"));
        // A config written before [acme] existed parses with the defaults.
        let text = toml::to_string_pretty(&Config::default()).unwrap();
        let cut = text.find("[acme]").unwrap();
        let old: Config = toml::from_str(&text[..cut]).unwrap();
        assert_eq!(old.acme, AcmeSettings::default());
    }

    #[test]
    fn landlock_and_overcommit_settings_parse() {
        let text = toml::to_string_pretty(&Config::default()).unwrap();
        assert!(
            text.contains("landlock = \"require\"") && text.contains("overcommit = false"),
            "{text}"
        );
        let c: Config = toml::from_str(
            &text
                .replace("landlock = \"require\"", "landlock = \"warn\"")
                .replace("overcommit = false", "overcommit = true"),
        )
        .unwrap();
        assert_eq!(c.landlock, LandlockMode::Warn);
        assert!(c.disk.overcommit);
        // Configs written before these settings existed keep the safe defaults.
        let old: Config = toml::from_str(
            &text
                .replace("landlock = \"require\"\n", "")
                .replace("overcommit = false\n", ""),
        )
        .unwrap();
        assert_eq!((old.landlock, old.disk.overcommit), (LandlockMode::Require, false));
        let e = toml::from_str::<Config>(&text.replace("landlock = \"require\"", "landlock = \"maybe\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("require") && e.contains("warn"), "{e}");
    }

    #[test]
    fn max_gears_must_fit_the_subnet_the_uids_and_one_bridge() {
        let node = |subnet: &str, uids: (u32, u32), max: Option<u32>| Config {
            subnet: subnet.into(),
            uid_min: uids.0,
            uid_max: uids.1,
            max_gears: max,
            ..Config::default()
        };
        // Unset: as many as fit, and what binds says so.
        let c = node("10.1.0.0/24", (400_000, 400_999), None);
        c.validate().unwrap();
        assert_eq!(c.gear_capacity(), 253);
        assert!(
            c.gear_room().1.contains("subnet 10.1.0.0/24 has room for 253 gears"),
            "{}",
            c.gear_room().1
        );
        // A /24 cannot hold 500: the error names the subnet and the prefix that would.
        let e = node("10.1.0.0/24", (400_000, 400_999), Some(500))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_gears = 500 does not fit") && e.contains("give a /23 or larger"),
            "{e}"
        );
        // 200 uids cannot hold 500.
        let e = node("10.1.0.0/22", (400_000, 400_199), Some(500))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("uid range 400000-400199 holds 200 gears") && e.contains("400000-400499"),
            "{e}"
        );
        // One bridge: 1023 gears at most, however large the subnet and the uid range.
        let e = node("10.0.0.0/16", (400_000, 449_999), Some(2000))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 1024 ports") && e.contains("at most 1023"), "{e}");
        let c = node("10.1.0.0/22", (400_000, 400_999), Some(500));
        c.validate().unwrap();
        assert_eq!(c.gear_capacity(), 500);
        assert_eq!(Config::default().gear_capacity(), BRIDGE_MAX_GEARS);
        assert!(node("10.1.0.0/22", (400_000, 400_999), Some(0)).validate().is_err());
    }

    #[test]
    fn listeners_need_their_own_ports() {
        let c = Config {
            http_port: 18090,
            admin_port: 18092,
            ssh_port: 18092,
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("ssh_port and admin_port are both 18092"), "{e}");
        // The exposed admin port is a listener too, whatever its address.
        let exposed = |at: &str| Config {
            http_port: 18090,
            https_port: 18093,
            ssh_port: 18091,
            admin_port: 18092,
            admin_listen: Some(at.into()),
            ..Config::default()
        };
        exposed("0.0.0.0:8443").validate().unwrap();
        assert_eq!(exposed("[::]:8443").ports().last(), Some(&("admin_listen", 8443)));
        for (at, want) in [
            ("0.0.0.0:18090", "http_port and admin_listen are both 18090"),
            ("10.0.0.5:18093", "https_port and admin_listen are both 18093"),
            ("127.0.0.1:18092", "admin_port and admin_listen are both 18092"),
            ("0.0.0.0:0", "admin_listen needs a port other than 0"),
            ("8443", "admin_listen \"8443\" is not ADDR:PORT"),
            ("admin.example:8443", "is not ADDR:PORT"),
        ] {
            let e = exposed(at).validate().unwrap_err().to_string();
            assert!(e.contains(want), "{at}: {e}");
        }
    }

    #[test]
    fn sizes_and_rates() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_rate_kbit("8mbit").unwrap(), 8000);
        assert!(parse_rate_kbit("8").is_err());
    }

    #[test]
    fn subnet_hosts() {
        let s = Subnet::parse("10.77.1.9/24").unwrap();
        assert_eq!(s.network, Ipv4Addr::new(10, 77, 1, 0));
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 77, 1, 1));
        assert_eq!(s.host(254), Some(Ipv4Addr::new(10, 77, 1, 254)));
        assert_eq!(s.host(255), None);
        assert_eq!(s.index_of(Ipv4Addr::new(10, 77, 1, 7)), Some(7));
        assert!(Subnet::parse("10.0.0.0").is_err());
    }
}
