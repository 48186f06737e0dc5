//! The kernel limits that grow with the number of gears: what a node sized for G gears
//! (`max_gears`, else what its subnet, uid range and bridge hold) needs of each, `doctor`'s line
//! for each, and `node up` raising the ones below the need (it never lowers one).

use crate::gear::isolation::check::Check;

/// One kernel limit and what the node needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The sysctl name (`net.ipv4.neigh.default.gc_thresh3`).
    pub key: &'static str,
    pub need: u64,
    /// Why it grows with the gears, in a few words.
    pub why: &'static str,
}

/// What a node of `gears` gears needs of each limit.
pub fn needed(gears: u32) -> Vec<Limit> {
    let g = u64::from(gears);
    vec![
        Limit {
            key: "net.ipv4.neigh.default.gc_thresh3",
            // One neighbour entry per gear on the bridge, plus the host's own.
            need: (g + 256).max(1024),
            why: "one ARP entry per gear; past it new gears are unreachable (neighbour table overflow)",
        },
        Limit {
            key: "net.ipv4.neigh.default.gc_thresh2",
            need: (g + 128).max(512),
            why: "entries kept without garbage collection for 5 s",
        },
        Limit {
            key: "net.netfilter.nf_conntrack_max",
            // The router's pooled connections to each gear and the gear's own outbound ones.
            need: g * 128 + 16_384,
            why: "tracked connections (router to gears, gears' outbound)",
        },
        Limit {
            key: "kernel.pid_max",
            // init, supervisor, web process and its threads, workers, a build's processes.
            need: (g * 48 + 8192).max(32_768),
            why: "every gear's processes and threads",
        },
        Limit {
            key: "kernel.threads-max",
            need: g * 48 + 8192,
            why: "every gear's processes and threads",
        },
        Limit {
            key: "fs.file-max",
            need: g * 1024 + 65_536,
            why: "open files of every gear, the router's two per proxied connection",
        },
        Limit {
            key: "fs.inotify.max_user_instances",
            // Per uid: each gear has its own uid, so this is per gear, not per node.
            need: 128,
            why: "per gear (each has its own uid): file watchers of apps (nodemon, webpack)",
        },
        Limit {
            key: "fs.inotify.max_user_watches",
            need: 8192,
            why: "per gear (each has its own uid): watched files of an app's watcher",
        },
    ]
}

fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// The limit's current value (None: this kernel has no such limit, e.g. conntrack not loaded).
pub fn read(key: &str) -> Option<u64> {
    std::fs::read_to_string(proc_path(key)).ok()?.trim().parse().ok()
}

/// Doctor's line for one limit at its current value.
pub fn judge(l: &Limit, now: Option<u64>, gears: u32) -> Check {
    let name = format!("limit {}", l.key);
    match now {
        None => Check::ok(&name, "not present in this kernel (its module is not loaded); nothing to raise"),
        Some(v) if v >= l.need => Check::ok(&name, format!("{v} (needs {} for {gears} gears)", l.need)),
        Some(v) => Check::warn(
            &name,
            format!("{v}, below the {} a node of {gears} gears needs: {}", l.need, l.why),
            format!(
                "`gearshift node up` raises it; to keep it across reboots: echo '{} = {}' > /etc/sysctl.d/90-gearshift.conf",
                l.key, l.need
            ),
        ),
    }
}

/// `doctor`: every limit against the node's gear count.
pub fn check(gears: u32) -> Vec<Check> {
    needed(gears).iter().map(|l| judge(l, read(l.key), gears)).collect()
}

/// `node up`: raises every limit below the need (never lowers one); what it raised, a line
/// each, and what it could not.
pub fn raise(gears: u32) -> Vec<String> {
    let mut out = Vec::new();
    for l in needed(gears) {
        let Some(v) = read(l.key) else { continue };
        if v >= l.need {
            continue;
        }
        match std::fs::write(proc_path(l.key), l.need.to_string()) {
            Ok(()) => out.push(format!("raised {} from {v} to {} ({gears} gears)", l.key, l.need)),
            Err(e) => out.push(format!(
                "cannot raise {} from {v} to {} for {gears} gears: {e} (set it in /etc/sysctl.d)",
                l.key, l.need
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gear::isolation::check::Status;

    #[test]
    fn needs_grow_with_the_gears_and_never_ask_below_the_usual_defaults() {
        let small = needed(200);
        let big = needed(1000);
        let of = |v: &[Limit], k: &str| v.iter().find(|l| l.key == k).unwrap().need;
        // A small node needs nothing above a stock kernel's defaults.
        assert_eq!(of(&small, "net.ipv4.neigh.default.gc_thresh3"), 1024);
        assert_eq!(of(&small, "kernel.pid_max"), 32_768);
        // 1000 gears overflow the default neighbour table and pid space.
        assert_eq!(of(&big, "net.ipv4.neigh.default.gc_thresh3"), 1256);
        assert!(of(&big, "kernel.pid_max") > 32_768);
        for (a, b) in small.iter().zip(&big) {
            assert!(b.need >= a.need, "{} shrinks with more gears", a.key);
        }
    }

    #[test]
    fn doctor_lines_name_the_need_and_the_fix() {
        let l = &needed(1000)[0];
        let c = judge(l, Some(1024), 1000);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("1024, below the 1256 a node of 1000 gears needs"),
            "{}",
            c.detail
        );
        assert!(c.fix.unwrap().contains("net.ipv4.neigh.default.gc_thresh3 = 1256"));
        assert_eq!(judge(l, Some(4096), 1000).status, Status::Ok);
        assert_eq!(judge(l, None, 1000).status, Status::Ok);
    }
}
