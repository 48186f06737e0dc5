//! Who the backend is told the client is. The router writes `X-Forwarded-For`, `X-Real-IP`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded` and `X-Request-Id` itself: a client's own
//! copies are dropped, so an app that reads the leftmost `X-Forwarded-For` or `X-Real-IP` gets
//! the real peer. Only a peer in `trusted_proxies` (a load balancer in front of gearshift) has
//! its forwarded headers kept, with itself appended.

use std::net::IpAddr;

/// Address blocks whose forwarded headers are believed (`192.0.2.0/24`, `2001:db8::/32`, an IP).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `ADDR[/PREFIX]` blocks; Err names the one that is not an address block.
    pub fn parse<S: AsRef<str>>(blocks: &[S]) -> Result<TrustedProxies, String> {
        let mut out = Vec::new();
        for b in blocks {
            let b = b.as_ref().trim();
            let bad = || format!("trusted_proxies: '{b}' is not an address or ADDRESS/PREFIX block (e.g. 10.0.0.0/8)");
            let (a, p) = b.split_once('/').unwrap_or((b, ""));
            let ip: IpAddr = a.parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = if p.is_empty() {
                max
            } else {
                p.parse().map_err(|_| bad())?
            };
            if prefix > max {
                return Err(bad());
            }
            out.push((ip, prefix));
        }
        Ok(TrustedProxies(out))
    }

    /// Whether the peer `ip` (as the router prints it) is a trusted proxy.
    pub fn trusts(&self, ip: &str) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let Ok(ip) = ip.trim().parse::<IpAddr>() else {
            return false;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|(net, prefix)| within(ip, *net, *prefix))
    }

    /// The client of a request that came through trusted proxies: the rightmost address of
    /// `chain` (their `X-Forwarded-For` with the peer appended) that is not a trusted proxy,
    /// else the leftmost.
    pub fn client<'a>(&self, chain: &'a str) -> &'a str {
        let hops = chain.split(',').map(str::trim).filter(|h| !h.is_empty());
        let first = hops.clone().next().unwrap_or("");
        hops.rev().find(|h| !self.trusts(h)).unwrap_or(first)
    }
}

fn within(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Appends one `Forwarded` element (RFC 7239) for a hop from `ip` over `proto` to `host`.
pub fn forwarded_element(out: &mut Vec<u8>, ip: &str, proto: &str, host: &str) {
    if ip.contains(':') {
        out.extend_from_slice(b"for=\"[");
        out.extend_from_slice(ip.as_bytes());
        out.extend_from_slice(b"]\"");
    } else {
        out.extend_from_slice(b"for=");
        out.extend_from_slice(ip.as_bytes());
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto.as_bytes());
    if !host.is_empty() && !host.contains(['"', '\\']) {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(host.as_bytes());
        out.push(b'"');
    }
}

/// Headers the router writes itself: a client's copies never reach the backend.
pub fn is_router_written(name: &str) -> bool {
    [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
        "forwarded",
        "x-request-id",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_blocks() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]).unwrap();
        assert!(t.trusts("10.1.2.3") && t.trusts("192.0.2.7") && t.trusts("2001:db8::1"));
        assert!(t.trusts("::ffff:10.9.9.9"), "an IPv4-mapped peer");
        assert!(!t.trusts("192.0.2.8") && !t.trusts("11.0.0.1") && !t.trusts("2001:db9::1") && !t.trusts("x"));
        assert!(!TrustedProxies::default().trusts("10.1.2.3"));
        assert!(TrustedProxies::parse(&["0.0.0.0/0"]).unwrap().trusts("8.8.8.8"));
        for bad in ["10.0.0.0/33", "ten", "10.0.0.0/x", "::/129"] {
            let e = TrustedProxies::parse(&[bad]).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let t = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        assert_eq!(t.client("1.1.1.1, 203.0.113.9, 10.0.0.2, 10.0.0.1"), "203.0.113.9");
        assert_eq!(t.client("10.0.0.3, 10.0.0.1"), "10.0.0.3");
        assert_eq!(t.client("203.0.113.9"), "203.0.113.9");
    }

    #[test]
    fn forwarded_elements() {
        let mut v = Vec::new();
        forwarded_element(&mut v, "203.0.113.9", "https", "shop.example:8443");
        assert_eq!(v, b"for=203.0.113.9;proto=https;host=\"shop.example:8443\"");
        v.clear();
        forwarded_element(&mut v, "2001:db8::1", "http", "a\"b");
        assert_eq!(v, b"for=\"[2001:db8::1]\";proto=http");
        assert!(is_router_written("X-Real-IP") && is_router_written("forwarded") && !is_router_written("x-keep"));
    }
}
