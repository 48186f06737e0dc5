//! `gearshift top`: one line per gear (state, CPU, memory, OOM kills, pids, disk, network,
//! requests/s), refreshed every second until `q`; `--once` prints one frame, `--json` the same
//! data as JSON (one object per frame).

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

pub fn run(node: &Node, actor: &Actor, once: bool, json: bool) -> Result<()> {
    let mut before = sample::read(node, actor)?;
    if once {
        std::thread::sleep(ONCE_SAMPLE);
        let now = sample::read(node, actor)?;
        print_frame(&sample::rows(&before, &now), &now, json, false)?;
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
                Key::None => {}
            }
        } else {
            std::thread::sleep(REFRESH);
        }
        let now = sample::read(node, actor)?;
        if print_frame(&sample::rows(&before, &now), &now, json, !json).is_err() {
            return Ok(()); // the terminal went away
        }
        before = now;
    }
}

fn print_frame(rows: &[Row], now: &Reading, json: bool, clear: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({"gears": rows, "requests_available": now.requests.is_some()});
        writeln!(out, "{v}")?;
    } else {
        if clear {
            write!(out, "\x1b[H\x1b[2J")?;
        }
        write!(out, "{}", format(rows, now.requests.is_some()))?;
        if clear {
            writeln!(out, "(q to quit)")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The table at 80 columns: the app name is shortened, the state is its first word.
pub fn format(rows: &[Row], with_requests: bool) -> String {
    let mut o = String::new();
    let line = |cells: [&str; 9], o: &mut String| {
        let widths = [12, 8, 7, 9, 3, 4, 9, 11, 5];
        let n = if with_requests { 9 } else { 8 };
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
        ],
        &mut o,
    );
    for r in rows {
        let mut name = format!("{}.{}", r.app, r.gear);
        if name.chars().count() > 12 {
            let suffix = format!("~.{}", r.gear);
            name = r.app.chars().take(12 - suffix.len()).collect::<String>() + &suffix;
        }
        let state: String = r.state.split([' ', '(']).next().unwrap_or("").chars().take(8).collect();
        let cpu = format!("{:.0}/{:.0}", r.cpu_percent, r.cpu_quota_percent);
        let mem = format!("{}/{}", size(Some(r.memory_bytes)), size(Some(r.memory_limit)));
        let disk = format!("{}/{}", size(r.disk_bytes), size(r.disk_limit));
        let net = format!("{}/{}", rate(r.net_rx_rate), rate(r.net_tx_rate));
        let req = r.requests_per_sec.map_or("-".to_string(), |v| format!("{v:.1}"));
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
            ],
            &mut o,
        );
    }
    o
}

/// Bytes in 1024 steps, at most 4 characters: `0`, `900`, `41M`, `1.5G`.
fn size(b: Option<u64>) -> String {
    let Some(b) = b.filter(|b| *b > 0 && *b < u64::MAX / 2) else {
        return "-".into();
    };
    let mut v = b as f64;
    for unit in ["", "K", "M", "G", "T"] {
        if v < 1024.0 {
            return if v < 10.0 && !unit.is_empty() {
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
    None,
}

/// Waits up to `t` for input; `q` or Ctrl-C quits.
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
                Ok(_) => Key::None,
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
        };
        let t = format(&[r], true);
        for l in t.lines() {
            assert!(l.chars().count() <= 80, "too wide: {l:?}");
        }
        let body = t.lines().nth(1).unwrap();
        assert!(body.starts_with("a-very-l~.12 crashed"), "{body}");
        assert!(body.contains("1000M/2.0G"), "{body}");
        assert!(!format(&[], false).contains("REQ/S"));
    }
}
