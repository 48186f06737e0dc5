//! `gearshift top`: one line per gear (state, CPU, memory, OOM kills, pids, disk, network,
//! requests/s, p95 latency), refreshed every second until `q`, sorted by the column a key
//! chooses; `--once` prints one frame, `--json` the same data as JSON (one object per frame).

use crate::app::condition::Seen;
use crate::app::sample::{self, Reading, Row};
use crate::node::Node;
use crate::ssh::auth::Actor;
use anyhow::Result;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// How long `--once` samples to compute rates.
const ONCE_SAMPLE: Duration = Duration::from_millis(1000);
/// The refresh interval of the live view.
const REFRESH: Duration = Duration::from_secs(1);

/// The column rows are sorted by: the app name ascending, any other largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    App,
    Cpu,
    Mem,
    Oom,
    Disk,
    Net,
    Req,
    P95,
}

impl SortKey {
    const ALL: [(SortKey, &'static str, u8); 8] = [
        (SortKey::App, "app", b'a'),
        (SortKey::Cpu, "cpu", b'c'),
        (SortKey::Mem, "mem", b'm'),
        (SortKey::Oom, "oom", b'o'),
        (SortKey::Disk, "disk", b'd'),
        (SortKey::Net, "net", b'n'),
        (SortKey::Req, "req", b'r'),
        (SortKey::P95, "p95", b'p'),
    ];

    /// `--sort NAME`.
    pub fn parse(name: &str) -> Result<SortKey> {
        let names: Vec<&str> = Self::ALL.iter().map(|k| k.1).collect();
        Self::ALL
            .iter()
            .find(|k| k.1 == name)
            .map(|k| k.0)
            .ok_or_else(|| anyhow::anyhow!("unknown sort column '{name}' (choose one of: {})", names.join(", ")))
    }

    /// The key that chooses it in the live view.
    fn from_key(c: u8) -> Option<SortKey> {
        Self::ALL.iter().find(|k| k.2 == c.to_ascii_lowercase()).map(|k| k.0)
    }

    fn name(self) -> &'static str {
        Self::ALL.iter().find(|k| k.0 == self).map_or("app", |k| k.1)
    }

    /// Sorts `rows` (ties, and the app column, by app and gear).
    pub fn sort(self, rows: &mut [Row]) {
        let v = |r: &Row| -> f64 {
            match self {
                SortKey::App => 0.0,
                SortKey::Cpu => r.cpu_percent,
                SortKey::Mem => r.memory_bytes as f64,
                SortKey::Oom => r.oom_kills as f64,
                SortKey::Disk => r.disk_bytes.unwrap_or(0) as f64,
                SortKey::Net => r.net_rx_rate.unwrap_or(0.0) + r.net_tx_rate.unwrap_or(0.0),
                SortKey::Req => r.requests_per_sec.unwrap_or(0.0),
                SortKey::P95 => r.p95_ms.unwrap_or(0.0),
            }
        };
        rows.sort_by(|a, b| {
            v(b).total_cmp(&v(a))
                .then_with(|| a.app.cmp(&b.app))
                .then(a.gear.cmp(&b.gear))
        });
    }
}

/// The apps `actor` may manage, with their states (the daemon's index, or the files).
fn visible(node: &Node, actor: &Actor) -> Result<Vec<Seen>> {
    let all = crate::daemon::index::apps(node)?;
    Ok(all
        .into_iter()
        .filter(|s| actor.may_manage(s.app.owner.as_deref()))
        .collect())
}

pub fn run(node: &Node, actor: &Actor, once: bool, json: bool, mut sort: SortKey) -> Result<()> {
    let mut before = sample::read(node, &visible(node, actor)?)?;
    let rows = |before: &Reading, now: &Reading, sort: SortKey| {
        let mut r = sample::rows(before, now);
        sort.sort(&mut r);
        r
    };
    if once {
        std::thread::sleep(ONCE_SAMPLE);
        let now = sample::read(node, &visible(node, actor)?)?;
        print_frame(&rows(&before, &now, sort), &now, json, None)?;
        return Ok(());
    }
    let stdin = std::io::stdin();
    let _raw = RawInput::new(stdin.as_fd());
    let mut watch_stdin = true;
    loop {
        if watch_stdin {
            match wait_key(stdin.as_fd(), REFRESH) {
                Key::Quit => return Ok(()),
                Key::Closed => watch_stdin = false,
                Key::Sort(k) => sort = k,
                Key::None => {}
            }
        } else {
            std::thread::sleep(REFRESH);
        }
        let now = sample::read(node, &visible(node, actor)?)?;
        let live = (!json).then_some(sort);
        if print_frame(&rows(&before, &now, sort), &now, json, live).is_err() {
            return Ok(()); // the terminal went away
        }
        before = now;
    }
}

/// One frame; `live` (the live view's sort column) clears the screen first and adds the keys.
fn print_frame(rows: &[Row], now: &Reading, json: bool, live: Option<SortKey>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({"gears": rows, "requests_available": now.requests.is_some()});
        writeln!(out, "{v}")?;
    } else {
        if live.is_some() {
            write!(out, "\x1b[H\x1b[2J")?;
        }
        write!(out, "{}", format(rows, now.requests.is_some()))?;
        if let Some(k) = live {
            writeln!(
                out,
                "sorted by {} (keys: a app, c cpu, m mem, o oom, d disk, n net, r req, p p95; q quits)",
                k.name()
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The table at 80 columns: the app name is shortened, the state is its first word.
pub fn format(rows: &[Row], with_requests: bool) -> String {
    let mut o = String::new();
    let line = |cells: [&str; 10], o: &mut String| {
        let widths = [11, 8, 7, 9, 3, 4, 9, 10, 5, 5];
        let n = if with_requests { 10 } else { 8 };
        let mut l = String::new();
        for (i, c) in cells.iter().take(n).enumerate() {
            let w = widths[i];
            if i == 0 || i == 1 {
                l.push_str(&format!("{c:<w$} "));
            } else {
                l.push_str(&format!("{c:>w$} "));
            }
        }
        o.push_str(l.trim_end());
        o.push('\n');
    };
    line(
        [
            "APP.GEAR",
            "STATE",
            "CPU%/Q",
            "MEM/LIM",
            "OOM",
            "PIDS",
            "DISK/Q",
            "NET IN/OUT",
            "REQ/S",
            "P95",
        ],
        &mut o,
    );
    for r in rows {
        let mut name = format!("{}.{}", r.app, r.gear);
        if name.chars().count() > 11 {
            let suffix = format!("~.{}", r.gear);
            name = r.app.chars().take(11 - suffix.len()).collect::<String>() + &suffix;
        }
        let state: String = r.state.split([' ', '(']).next().unwrap_or("").chars().take(8).collect();
        let cpu = format!("{:.0}/{:.0}", r.cpu_percent, r.cpu_quota_percent);
        let mem = format!("{}/{}", size(Some(r.memory_bytes)), size(Some(r.memory_limit)));
        let disk = format!("{}/{}", size(r.disk_bytes), size(r.disk_limit));
        let net = format!("{}/{}", rate(r.net_rx_rate), rate(r.net_tx_rate));
        let req = r.requests_per_sec.map_or("-".to_string(), |v| {
            if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        });
        let p95 = r.p95_ms.map_or("-".to_string(), millis);
        line(
            [
                &name,
                &state,
                &cpu,
                &mem,
                &r.oom_kills.to_string(),
                &r.pids.to_string(),
                &disk,
                &net,
                &req,
                &p95,
            ],
            &mut o,
        );
    }
    o
}

/// A latency in at most 5 characters: `4ms`, `250ms`, `1.2s`, `12s`.
fn millis(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if ms < 10_000.0 {
        format!("{:.1}s", ms / 1000.0)
    } else {
        format!("{:.0}s", ms / 1000.0)
    }
}

/// Bytes in 1024 steps, at most 4 characters: `0`, `900`, `41M`, `1.5G`, `2G`.
fn size(b: Option<u64>) -> String {
    let Some(b) = b.filter(|b| *b > 0 && *b < u64::MAX / 2) else {
        return "-".into();
    };
    let mut v = b as f64;
    for unit in ["", "K", "M", "G", "T"] {
        if v < 1024.0 {
            return if v < 10.0 && !unit.is_empty() && v.fract() != 0.0 {
                format!("{v:.1}{unit}")
            } else {
                format!("{v:.0}{unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{v:.0}P")
}

fn rate(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(v) if v < 1.0 => "0".into(),
        Some(v) => size(Some(v as u64)),
    }
}

enum Key {
    Quit,
    Closed,
    Sort(SortKey),
    None,
}

/// Waits up to `t` for input; `q` or Ctrl-C quits, a column's key sorts by it.
fn wait_key(fd: BorrowedFd<'_>, t: Duration) -> Key {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(t.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, ms) {
        Ok(n) if n > 0 => {
            let mut b = [0u8; 64];
            match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut b) {
                Ok(0) | Err(_) => Key::Closed,
                Ok(n) if b[..n].iter().any(|c| matches!(c, b'q' | b'Q' | 3)) => Key::Quit,
                Ok(n) => b[..n]
                    .iter()
                    .rev()
                    .find_map(|c| SortKey::from_key(*c))
                    .map_or(Key::None, Key::Sort),
            }
        }
        _ => Key::None,
    }
}

/// A terminal on stdin reads single keys without echo while the view runs; restored on drop.
struct RawInput<'a> {
    fd: BorrowedFd<'a>,
    saved: Option<nix::sys::termios::Termios>,
}

impl<'a> RawInput<'a> {
    fn new(fd: BorrowedFd<'a>) -> RawInput<'a> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let saved = tcgetattr(fd).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            raw.local_flags
                .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
            let _ = tcsetattr(fd, SetArg::TCSANOW, &raw);
        }
        RawInput { fd, saved }
    }
}

impl Drop for RawInput<'_> {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(self.fd, nix::sys::termios::SetArg::TCSANOW, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(None), "-");
        assert_eq!(size(Some(0)), "-");
        assert_eq!(size(Some(900)), "900");
        assert_eq!(size(Some(41 << 20)), "41M");
        assert_eq!(size(Some(3 << 29)), "1.5G");
        assert_eq!(size(Some(128 << 20)), "128M");
        assert_eq!(size(Some(2 << 30)), "2G");
        assert_eq!(size(Some(u64::MAX)), "-");
    }

    #[test]
    fn a_frame_fits_80_columns() {
        let r = Row {
            app: "a-very-long-application-name".into(),
            gear: 12,
            state: "crashed (restarts 6, last exit 3)".into(),
            cpu_percent: 100.0,
            cpu_quota_percent: 200.0,
            memory_bytes: 1000 << 20,
            memory_limit: 1 << 31,
            oom_kills: 999,
            pids: 2048,
            pids_limit: 2048,
            disk_bytes: Some(900 << 20),
            disk_limit: Some(4 << 30),
            net_rx_rate: Some(1000.0 * 1024.0),
            net_tx_rate: Some(9.5 * 1024.0 * 1024.0),
            requests_per_sec: Some(1234.5),
            p95_ms: Some(12_345.0),
        };
        let t = format(&[r], true);
        for l in t.lines() {
            assert!(l.chars().count() <= 80, "too wide: {l:?}");
        }
        let body = t.lines().nth(1).unwrap();
        assert!(body.starts_with("a-very-~.12 crashed"), "{body}");
        assert!(body.ends_with("12s"), "{body}");
        assert!(body.contains("1000M/2G"), "{body}");
        assert!(!format(&[], false).contains("REQ/S"));
    }

    #[test]
    fn keys_choose_the_sort_column() {
        let row = |app: &str, cpu: f64, mem: u64| Row {
            app: app.into(),
            gear: 0,
            state: "running".into(),
            cpu_percent: cpu,
            cpu_quota_percent: 100.0,
            memory_bytes: mem,
            memory_limit: 0,
            oom_kills: 0,
            pids: 1,
            pids_limit: 0,
            disk_bytes: None,
            disk_limit: None,
            net_rx_rate: None,
            net_tx_rate: None,
            requests_per_sec: None,
            p95_ms: None,
        };
        let mut rows = vec![row("b", 5.0, 10), row("c", 50.0, 1), row("a", 5.0, 99)];
        SortKey::from_key(b'c').unwrap().sort(&mut rows);
        let order = |rows: &[Row]| rows.iter().map(|r| r.app.clone()).collect::<Vec<_>>().join("");
        assert_eq!(order(&rows), "cab");
        SortKey::from_key(b'M').unwrap().sort(&mut rows);
        assert_eq!(order(&rows), "abc");
        SortKey::parse("app").unwrap().sort(&mut rows);
        assert_eq!(order(&rows), "abc");
        assert!(SortKey::parse("size").unwrap_err().to_string().contains("cpu, mem"));
        assert_eq!(millis(4.4), "4ms");
        assert_eq!(millis(1234.0), "1.2s");
    }
}
