//! What each attack of `attack.py` must get, and the check of its report: pure logic, so the
//! table and the parser are tested without a node.

/// Every way a TCP connect can fail that means "not reachable" (the firewall rejects or drops).
const UNREACHABLE: &[&str] = &["ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH"];
/// Not in the gear's view of the filesystem, or not for its uid.
const NOT_THERE: &[&str] = &["ENOENT", "EACCES"];
/// A write into the kernel's or another tenant's files.
const NO_WRITE: &[&str] = &["EROFS", "EACCES", "ENOENT", "EPERM"];

/// (attack, the outcomes it may get). `escaped` and `error` are never among them.
pub const EXPECTED: &[(&str, &[&str])] = &[
    ("read-other-gear-file", NOT_THERE),
    ("read-other-gear-inner-path", &["ENOENT"]),
    ("list-other-gear-home", NOT_THERE),
    ("write-other-gear-home", NO_WRITE),
    ("list-gears-dir", NOT_THERE),
    ("see-foreign-processes", &["none"]),
    ("signal-other-gear", &["ESRCH"]),
    ("pidfd-open-other-gear", &["ESRCH"]),
    ("ptrace-other-gear", &["ESRCH"]),
    ("proc-mem-other-gear", &["ENOENT"]),
    ("proc-environ-other-gear", &["ENOENT"]),
    ("proc-fd-other-gear", &["ENOENT"]),
    ("connect-other-gear", UNREACHABLE),
    ("ptrace-daemon", &["ESRCH"]),
    ("proc-mem-daemon", &["ENOENT"]),
    ("proc-environ-daemon", &["ENOENT"]),
    ("proc-fd-daemon", &["ENOENT"]),
    ("process-vm-readv-daemon", &["ESRCH"]),
    ("connect-daemon-socket", NOT_THERE),
    // EACCES: the exec itself refused (an enforcing SELinux policy may)
    ("setuid-binary", &["no-elevation", "EACCES"]),
    ("setuid-root", &["EPERM"]),
    ("setgroups", &["EPERM"]),
    ("capset-all", &["EPERM"]),
    ("mount-tmpfs", &["EPERM"]),
    ("unshare-user", &["EPERM"]),
    ("unshare-mount", &["EPERM"]),
    ("unshare-pid", &["EPERM"]),
    ("unshare-net", &["EPERM"]),
    ("unshare-uts", &["EPERM"]),
    ("unshare-ipc", &["EPERM"]),
    ("unshare-cgroup", &["EPERM"]),
    ("unshare-time", &["EPERM"]),
    ("unshare-files-fs-sysvsem", &["EPERM"]),
    ("clone-newuser", &["EPERM"]),
    ("clone-newns", &["EPERM"]),
    // clone3 fails with ENOSYS so libc falls back to clone, whose flags seccomp can see
    ("clone3-newuser", &["ENOSYS"]),
    ("setns-net", &["EPERM"]),
    ("chroot", &["EPERM"]),
    ("pivot-root", &["EPERM"]),
    ("mknod-device", &["EPERM"]),
    ("open-by-handle", &["EPERM"]),
    ("init-module", &["EPERM"]),
    ("finit-module", &["EPERM"]),
    ("kexec-load", &["EPERM"]),
    ("reboot", &["EPERM"]),
    ("swapon", &["EPERM"]),
    ("acct", &["EPERM"]),
    ("iopl", &["EPERM"]),
    ("ioperm", &["EPERM"]),
    ("syslog-read", &["EPERM"]),
    ("sethostname", &["EPERM"]),
    ("settimeofday", &["EPERM"]),
    ("keyctl", &["EPERM"]),
    ("add-key", &["EPERM"]),
    ("bpf-map-create", &["EPERM"]),
    ("perf-event-open", &["EPERM"]),
    ("userfaultfd", &["EPERM"]),
    ("io-uring-setup", &["EPERM"]),
    ("write-proc-sys", NO_WRITE),
    ("write-proc-sys-net", NO_WRITE),
    ("write-sysrq-trigger", NO_WRITE),
    ("write-sys", NO_WRITE),
    ("write-root-cgroup", NO_WRITE),
    ("read-kmsg", &["ENOENT", "EACCES", "EPERM"]),
    ("read-host-disk", &["ENOENT", "EACCES", "EPERM"]),
    ("read-dev-mem", &["ENOENT", "EACCES", "EPERM"]),
    // Landlock's refusal: the directory is the gear's own for every other check
    ("write-run-beyond-landlock", &["EACCES"]),
    // the gear's /etc lies in its read-only root; the host's is a read-only bind it cannot undo
    ("write-own-etc-passwd", &["EROFS", "EACCES"]),
    ("plant-in-own-etc", &["EROFS", "EACCES"]),
    ("write-host-etc", &["EROFS", "EACCES"]),
    ("umount-host-etc", &["EPERM"]),
    // EPERM: no CAP_NET_RAW; EACCES: SELinux refused the socket class before the capability check
    ("socket-raw", &["EPERM", "EACCES"]),
    ("socket-packet", &["EAFNOSUPPORT"]),
    ("socket-vsock", &["EAFNOSUPPORT"]),
    ("socket-netlink-audit", &["EAFNOSUPPORT"]),
    ("bind-port-80", &["EACCES"]),
    // the gear's own loopback: nothing listens there
    ("connect-host-loopback-sshd", &["ECONNREFUSED"]),
    ("connect-node-sshd-via-bridge", UNREACHABLE),
    ("connect-host-sshd-22", UNREACHABLE),
    ("read-node-config", NOT_THERE),
    ("read-default-config", NOT_THERE),
    ("read-node-host-key", NOT_THERE),
    ("read-system-host-key", NOT_THERE),
    ("read-shadow", NOT_THERE),
    ("read-other-gear-env", NOT_THERE),
    ("open-100k-files", &["EMFILE"]),
    ("fork-bomb", &["EAGAIN"]),
    ("memory-bomb", &["oom-killed"]),
    ("disk-fill", &["EDQUOT", "ENOSPC"]),
    ("inode-fill", &["EDQUOT", "ENOSPC"]),
    ("tmp-fill", &["ENOSPC"]),
    ("bandwidth-flood", &["shaped"]),
];

/// What the hostile push's hook tries, as the gear's uid during the build.
pub const HOOK_EXPECTED: &[(&str, &[&str])] = &[
    ("read-node-config", NOT_THERE),
    ("read-node-host-key", NOT_THERE),
    ("connect-daemon-socket", NOT_THERE),
    ("list-gears-dir", NOT_THERE),
    ("write-host-tmp", &["contained"]),
];

/// The break-2 watcher's one attack.
pub const WATCH_EXPECTED: &[(&str, &[&str])] = &[("pidfd-getfd-root-started", &["nothing-of-roots"])];

/// One `ATTACK NAME OUTCOME DETAIL` line.
#[derive(Debug, PartialEq, Eq)]
pub struct Attempt {
    pub name: String,
    pub outcome: String,
    pub detail: String,
}

/// The attempts in the helper's output (other lines are ignored).
pub fn attempts(output: &str) -> Vec<Attempt> {
    output
        .lines()
        .filter_map(|l| l.trim_start_matches("remote: ").strip_prefix("ATTACK "))
        .map(|l| {
            let mut f = l.splitn(3, ' ');
            Attempt {
                name: f.next().unwrap_or_default().to_string(),
                outcome: f.next().unwrap_or_default().to_string(),
                detail: f.next().unwrap_or_default().trim().to_string(),
            }
        })
        .collect()
}

/// Every way `output` differs from `expected`, one line each naming the attack: an attack that
/// got an outcome it must not (escaped, or another errno), one that is missing, one not in the
/// table. Empty when every attack failed as it must.
pub fn breaches(expected: &[(&str, &[&str])], output: &str) -> Vec<String> {
    let got = attempts(output);
    let mut out = Vec::new();
    for (name, allowed) in expected {
        match got.iter().find(|a| a.name == *name) {
            None => out.push(format!("{name}: no report (the helper died or skipped it)")),
            Some(a) if !allowed.contains(&a.outcome.as_str()) => out.push(format!(
                "{name}: got {} ({}), must get one of {allowed:?}",
                a.outcome, a.detail
            )),
            Some(_) => {}
        }
    }
    for a in &got {
        if !expected.iter().any(|(n, _)| *n == a.name) {
            out.push(format!(
                "{}: reported but not in the table ({} {})",
                a.name, a.outcome, a.detail
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_forty_attacks_each_named_once_and_none_may_escape() {
        assert!(EXPECTED.len() >= 40, "{} attacks", EXPECTED.len());
        for (i, (name, allowed)) in EXPECTED.iter().enumerate() {
            assert!(!EXPECTED[..i].iter().any(|(n, _)| n == name), "{name} twice");
            assert!(!allowed.is_empty() && !allowed.contains(&"escaped") && !allowed.contains(&"error"));
        }
    }

    #[test]
    fn every_attack_of_the_helper_is_in_the_table() {
        let helper = include_str!("attack.py");
        for (name, _) in EXPECTED.iter().chain(HOOK_EXPECTED).chain(WATCH_EXPECTED) {
            assert!(helper.contains(&format!("\"{name}\"")), "{name} is not in attack.py");
        }
    }

    #[test]
    fn a_breach_names_the_attack() {
        let table: &[(&str, &[&str])] = &[("a", &["EPERM"]), ("b", &["ENOENT"]), ("c", &["EPERM"])];
        let out = "noise\nATTACK a EPERM fine\nremote: ATTACK b escaped read 12 bytes\nATTACK d EPERM x\n";
        let b = breaches(table, out);
        assert_eq!(b.len(), 3, "{b:?}");
        assert!(b[0].starts_with("b: got escaped (read 12 bytes)"), "{b:?}");
        assert!(b[1].starts_with("c: no report"), "{b:?}");
        assert!(b[2].starts_with("d: reported but not in the table"), "{b:?}");
        assert!(breaches(table, "ATTACK a EPERM\nATTACK b ENOENT\nATTACK c EPERM\n").is_empty());
    }
}
