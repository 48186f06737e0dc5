//! Traffic shaping of a gear's veth, both directions (egress of each end).
//!
//! A token bucket (`tbf`) is the root qdisc of the host end's egress (traffic going into
//! the gear) and of the gear's `eth0` egress inside its netns (traffic the gear sends).
//! No `police` action is needed, which some kernels lack.

use super::check::Check;
use super::netcmd::{probe_detail, probe_fix, run, ProbeResults};
use anyhow::{Context, Result};
use std::process::Command;

/// The two ends a gear's traffic passes: the host end of its veth, and `eth0` in its netns.
struct Link<'a> {
    netns: &'a str,
    veth_host: &'a str,
    bandwidth_kbit: u64,
}

/// Limits the bandwidth of the gear in network namespace `netns` (host end of its veth:
/// `veth_host`) to `bandwidth_kbit` (1 kbit = 1000 bit/s) in each direction. Idempotent
/// (`tc qdisc replace`). A `bandwidth_kbit` of 0 means unlimited: any shaping previously
/// installed is removed.
pub fn shape(netns: &str, veth_host: &str, bandwidth_kbit: u64) -> Result<()> {
    let g = &Link {
        netns,
        veth_host,
        bandwidth_kbit,
    };
    if g.bandwidth_kbit == 0 {
        unshape(g);
        return Ok(());
    }
    let p = TbfParams::for_rate(g.bandwidth_kbit);
    let args = p.args();
    run(
        &format!(
            "shape traffic into the gear on {} to {} kbit/s",
            g.veth_host, g.bandwidth_kbit
        ),
        Command::new("tc")
            .args(["qdisc", "replace", "dev", g.veth_host, "root", "tbf"])
            .args(&args),
    )?;
    run(
        &format!(
            "shape traffic out of the gear (eth0 in netns {}) to {} kbit/s",
            g.netns, g.bandwidth_kbit
        ),
        Command::new("tc")
            .args(["-n", g.netns, "qdisc", "replace", "dev", "eth0", "root", "tbf"])
            .args(&args),
    )
    .context("does the gear's network namespace exist (gear_up creates it)?")?;
    Ok(())
}

/// The host's interfaces whose root qdisc is a token bucket (one `tc qdisc show` for all of
/// them): what [`super::network::gear_drift`] compares a limited gear's host end with.
pub fn shaped_devices() -> Result<std::collections::HashSet<String>> {
    let out = run("list the host's qdiscs", Command::new("tc").args(["qdisc", "show"]))?;
    Ok(tbf_roots(&out))
}

/// The devices of `tc qdisc show`'s lines `qdisc tbf H: dev DEV root ...`.
fn tbf_roots(listing: &str) -> std::collections::HashSet<String> {
    listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 4 && f[0] == "qdisc" && f[1] == "tbf" && f[3] == "dev" && f.get(5) == Some(&"root"))
                .then(|| f[4].to_string())
        })
        .collect()
}

/// Best-effort removal of both root qdiscs (absent ones are not an error).
fn unshape(g: &Link) {
    let _ = run(
        "remove shaping",
        Command::new("tc").args(["qdisc", "del", "dev", g.veth_host, "root"]),
    );
    let _ = run(
        "remove shaping",
        Command::new("tc").args(["-n", g.netns, "qdisc", "del", "dev", "eth0", "root"]),
    );
}

/// Token bucket parameters for one rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TbfParams {
    rate_kbit: u64,
    /// Bucket size in bytes: what may pass at line speed after an idle period.
    burst: u64,
    /// Queue size in bytes; beyond it packets are dropped (TCP then backs off).
    limit: u64,
}

impl TbfParams {
    /// Burst: 10 ms worth of the rate, at least 10 full-size frames (so a timer tick
    /// never starves the link, which would make the measured rate fall short).
    /// Limit: 100 ms worth of the rate, at least 64 KiB plus the burst (a whole GSO
    /// super-packet then always fits, so queueing never drops it outright).
    fn for_rate(rate_kbit: u64) -> TbfParams {
        let bytes_per_sec = rate_kbit.saturating_mul(1000) / 8;
        let burst = (bytes_per_sec / 100).max(15_140);
        let limit = (bytes_per_sec / 10).max(65_536 + burst);
        TbfParams {
            rate_kbit,
            burst,
            limit,
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "rate".into(),
            format!("{}kbit", self.rate_kbit),
            "burst".into(),
            self.burst.to_string(),
            "limit".into(),
            self.limit.to_string(),
        ]
    }
}

/// The probe script's tc steps (run by `network`'s probe in its throwaway netns).
pub(super) const PROBE: &str = "p htb tc qdisc add dev lo root handle 1: htb default 1
tc qdisc del dev lo root >/dev/null 2>&1
p tbf tc qdisc add dev lo root tbf rate 8mbit burst 32kbit latency 50ms
";

/// The `tc.htb` and `tc.tbf` lines from the probe results: one of the two is enough.
pub(super) fn checks_from(probe: &ProbeResults) -> Vec<Check> {
    const TC: &str = "apt-get install iproute2 / dnf install iproute-tc";
    let htb = probe_detail(probe.get("htb"), "tc qdisc htb");
    let tbf = probe_detail(probe.get("tbf"), "tc qdisc tbf");
    let tc_ok = htb.is_ok() || tbf.is_ok();
    let mut out = Vec::new();
    for (name, res, kfix) in [
        ("tc.htb", &htb, ("CONFIG_NET_SCH_HTB", TC)),
        ("tc.tbf", &tbf, ("CONFIG_NET_SCH_TBF", TC)),
    ] {
        out.push(match res {
            Ok(d) => Check::ok(name, d.clone()),
            // One of htb/tbf is enough: the other is only required when both fail.
            Err(e) => Check::absent(name, !tc_ok, e.clone(), probe_fix(e, kfix)),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::network::testutil::{skip_reason, Fixture};
    use super::super::network::GearNet;
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpStream};
    use std::time::{Duration, Instant};

    #[test]
    fn tbf_roots_are_read_from_the_listing() {
        let l = "qdisc noqueue 0: dev lo root refcnt 2 \nqdisc tbf 8135: dev gh7dac2a4208eb root refcnt 3 rate 20Mbit burst 25000b lat 90ms \nqdisc tbf 1: dev x parent 1:1 rate 1Mbit\nqdisc fq_codel 0: dev eth0 root refcnt 2\n";
        let s = tbf_roots(l);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s.contains("gh7dac2a4208eb"));
    }

    /// In the gear: accepts one connection, reads it to EOF, answers the byte count.
    const SINK: &str = r#"
import socket
s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
n = 0
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    n += len(d)
c.sendall(str(n).encode())
c.close()
"#;

    /// In the gear: accepts one connection, sends argv[1] bytes, closes.
    const SOURCE: &str = r#"
import socket, sys
total = int(sys.argv[1])
s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
buf = b"x" * (1 << 16)
sent = 0
while sent < total:
    c.sendall(buf[: total - sent])
    sent += min(len(buf), total - sent)
c.close()
"#;

    fn connect(ip: std::net::Ipv4Addr, port: &str) -> TcpStream {
        let addr = SocketAddr::new(ip.into(), port.parse().unwrap());
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("host -> gear");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Host -> gear (shaped on the host end's egress); kbit/s of payload.
    fn measure_download(f: &mut Fixture, g: &GearNet, bytes: usize) -> f64 {
        let port = f.spawn_in(&g.netns, SINK, &[]);
        let mut s = connect(g.ip, &port);
        let buf = vec![0u8; 1 << 16];
        let start = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len());
            s.write_all(&buf[..n]).unwrap();
            left -= n;
        }
        s.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(answer, bytes.to_string(), "the gear did not receive everything");
        bytes as f64 * 8.0 / 1000.0 / secs
    }

    /// Gear -> host as the reply stream of a host connection (shaped on the gear's eth0).
    fn measure_upload(f: &mut Fixture, g: &GearNet, bytes: usize) -> f64 {
        let port = f.spawn_in(&g.netns, SOURCE, &[&bytes.to_string()]);
        let mut s = connect(g.ip, &port);
        let start = Instant::now();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(got, bytes, "the host did not receive everything");
        bytes as f64 * 8.0 / 1000.0 / secs
    }

    fn assert_within(what: &str, measured: f64, configured: u64) {
        let ratio = measured / configured as f64;
        eprintln!(
            "{what}: {measured:.0} kbit/s measured, {configured} kbit/s configured ({:.1}%)",
            ratio * 100.0
        );
        assert!(
            (0.8..=1.2).contains(&ratio),
            "{what}: {measured:.0} kbit/s is not within 20% of {configured}"
        );
    }

    fn qdisc(args: &[&str]) -> String {
        run("show qdisc", Command::new("tc").args(args)).unwrap()
    }

    fn check_rate(t: u32, kbit: u64) {
        if let Some(why) = skip_reason() {
            eprintln!("skipping bandwidth test: {why}");
            return;
        }
        let mut f = Fixture::new(t);
        let g = f.gear(1, kbit);
        shape(&g.netns, &g.veth_host, g.bandwidth_kbit).expect("shape again (idempotent)");
        let host_end = qdisc(&["qdisc", "show", "dev", &g.veth_host]);
        let gear_end = qdisc(&["-n", &g.netns, "qdisc", "show", "dev", "eth0"]);
        for q in [&host_end, &gear_end] {
            assert!(
                q.contains("tbf") && q.lines().count() == 1,
                "expected one tbf qdisc: {q}"
            );
        }
        // About 3 seconds per direction.
        let bytes = (kbit as usize * 1000 / 8) * 3;
        assert_within("host -> gear", measure_download(&mut f, &g, bytes), kbit);
        assert_within("gear -> host", measure_upload(&mut f, &g, bytes), kbit);
    }

    #[test]
    fn shapes_both_directions_at_8_mbit() {
        check_rate(4, 8000);
    }

    #[test]
    fn shapes_both_directions_at_20_mbit() {
        check_rate(5, 20_000);
    }

    #[test]
    fn tbf_parameters_scale_with_the_rate() {
        let low = TbfParams::for_rate(1000);
        assert_eq!((low.burst, low.limit), (15_140, 65_536 + 15_140));
        let high = TbfParams::for_rate(1_000_000);
        assert_eq!((high.burst, high.limit), (1_250_000, 12_500_000));
        assert_eq!(
            TbfParams::for_rate(8000).args()[..2],
            ["rate".to_string(), "8000kbit".to_string()]
        );
    }
}
