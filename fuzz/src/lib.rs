//! gearshift's parsers, compiled from ../src as the binary has them (same module paths, so their
//! `crate::` and `super::` uses resolve), for the fuzz targets in fuzz_targets/.
#![allow(dead_code)]

#[path = "../../src/names.rs"]
pub mod names;

#[path = "../../src/ssh"]
pub mod ssh {
    pub mod command;
    pub mod key;
    pub mod words;
}

#[path = "../../src/router"]
pub mod router {
    pub mod body;
    pub mod forwarded;
    pub mod heads;
    pub mod http;

    pub use forwarded::TrustedProxies;

    /// What heads.rs takes of the router's shared state: the trusted proxies and request ids.
    pub mod shared {
        #[derive(Default)]
        pub struct Cfg {
            pub trusted_proxies: super::TrustedProxies,
        }

        #[derive(Default)]
        pub struct Inner {
            pub cfg: Cfg,
        }

        impl Inner {
            pub fn request_id(&self, out: &mut String) {
                out.push_str("0123456789abcdef0123456789abcdef");
            }
        }
    }
}

#[path = "../../src/ingear"]
pub mod ingear {
    pub mod appjson;
    pub mod cron;
    pub mod healthcheck;
    pub mod procfile;
}

#[path = "../../src/node"]
pub mod node {
    pub mod config;
}
