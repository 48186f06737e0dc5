//! The node config (gearshift.toml), its sizes, rates and subnet.
#![no_main]
use gearshift_fuzz::node::config::{parse_rate_kbit, parse_size, Config, Subnet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = toml::from_str::<Config>(text) {
        if c.validate().is_ok() {
            for p in c.profiles.values() {
                let _ = p.limits();
            }
            let s = c.subnet();
            let _ = (s.gateway(), s.host(s.hosts()), s.to_string());
        }
    }
    let _ = parse_size(text);
    let _ = parse_rate_kbit(text);
    if let Ok(s) = Subnet::parse(text) {
        let _ = Subnet::parse(&s.to_string()).expect("a subnet's own text must parse");
        for n in [0, 1, s.hosts(), s.hosts().saturating_add(1), u32::MAX] {
            if let Some(ip) = s.host(n) {
                let _ = s.index_of(ip);
            }
        }
    }
});
