//! `gearshift doctor`: one line per kernel mechanism and tool, ok or missing, with a fix.
//!
//! Statuses: `ok` (works), `missing` (something the node requires does not work: the exit
//! code is non-zero), `warn` (absent or degraded but optional; gearshift runs without it).
//! Every kernel mechanism is actually tried, not just looked up: namespaces are unshared and a
//! seccomp filter installed in forked children, and the network pieces (veth, bridge, tc, nft)
//! are created inside a throwaway network namespace, so the host is never changed.

use crate::gear::isolation::quota;
use crate::node::Node;
use anyhow::{Context, Result};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How one mechanism fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and working.
    Ok,
    /// Required by the node and absent or broken.
    Missing,
    /// Optional and absent, or present in a degraded state.
    Warn,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Warn => "warn",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// One-line fix (Debian and Fedora package names where a package is the fix).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    /// `missing` when `required`, else `warn`.
    fn absent(name: &str, required: bool, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        let status = if required { Status::Missing } else { Status::Warn };
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::absent(name, false, detail, fix)
    }
}

/// Prints the report; returns the process exit code (non-zero if something required is missing).
pub fn run(node: Option<&Node>, json: bool) -> Result<i32> {
    let checks = collect(node);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&checks).context("cannot format the report as JSON")?
        );
    } else {
        print!("{}", format_report(&checks));
        let missing = checks.iter().filter(|c| c.status == Status::Missing).count();
        let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
        println!();
        if missing == 0 {
            println!("doctor: everything the node requires works ({warns} warning(s))");
        } else {
            println!("doctor: {missing} required mechanism(s) missing, {warns} warning(s): see the fix: hints");
        }
    }
    Ok(exit_code(&checks))
}

/// Runs every check, in report order.
pub fn collect(node: Option<&Node>) -> Vec<Check> {
    let mut out = vec![kernel_check()];
    out.extend(cgroup_checks_host());
    out.extend(namespace_checks());
    out.push(seccomp_check());
    out.push(no_new_privs_check());
    out.push(landlock_check());
    out.push(selinux_check());
    out.push(quota_check(node));
    out.extend(network_checks());
    out.push(ip_forward_check());
    out.push(sshd_check());
    out.push(git_check());
    out.push(btrfs_check());
    out
}

/// 1 when any check is `missing`, else 0.
pub fn exit_code(checks: &[Check]) -> i32 {
    i32::from(checks.iter().any(|c| c.status == Status::Missing))
}

/// Aligned text: `STATUS  NAME  DETAIL  [fix: ...]`.
pub fn format_report(checks: &[Check]) -> String {
    let w_status = checks.iter().map(|c| c.status.as_str().len()).max().unwrap_or(0);
    let w_name = checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
    // Fixes line up after details up to this width; longer details just get two spaces.
    const MAX_DETAIL_PAD: usize = 64;
    let w_detail = checks
        .iter()
        .filter(|c| c.fix.is_some())
        .map(|c| c.detail.chars().count())
        .filter(|&n| n <= MAX_DETAIL_PAD)
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for c in checks {
        let mut line = format!("{:<w_status$}  {:<w_name$}  {}", c.status.as_str(), c.name, c.detail);
        if let Some(fix) = &c.fix {
            let pad = w_detail.saturating_sub(c.detail.chars().count());
            line.push_str(&" ".repeat(pad));
            line.push_str("  fix: ");
            line.push_str(fix);
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// kernel

fn kernel_check() -> Check {
    match nix::sys::utsname::uname() {
        Ok(u) => Check::ok(
            "kernel",
            format!(
                "{} {} ({})",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy(),
                u.machine().to_string_lossy()
            ),
        ),
        Err(e) => Check::warn("kernel", format!("uname failed: {e}"), "check /proc is mounted"),
    }
}

// ---------------------------------------------------------------------------------------------
// cgroups

/// Cgroup hierarchies mounted in this process's mount namespace.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// v1 controller name -> mount point (named hierarchies like `name=systemd` are left out).
    pub v1: BTreeMap<String, String>,
    /// The cgroup2 mount point, if any (the first one).
    pub v2: Option<String>,
}

/// Controllers the v1 kernel may offer (anything else in the super options is a mount option).
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` for cgroup v1 and v2 mounts.
pub fn parse_mountinfo(text: &str) -> CgroupMounts {
    let mut m = CgroupMounts::default();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let mount_point = unescape_mountinfo(pre[4]);
        match post[0] {
            "cgroup2" if m.v2.is_none() => m.v2 = Some(mount_point),
            "cgroup" => {
                for opt in post[2].split(',') {
                    if V1_CONTROLLERS.contains(&opt) {
                        m.v1.entry(opt.to_string()).or_insert_with(|| mount_point.clone());
                    }
                }
            }
            _ => {}
        }
    }
    m
}

/// Controllers `/proc/cgroups` lists as compiled in and enabled (v1 view).
pub fn parse_proc_cgroups(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == "1").then(|| f[0].to_string())
        })
        .collect()
}

/// The cgroup lines from what the host has mounted (pure: file contents are passed in).
pub fn cgroup_checks(m: &CgroupMounts, v2_controllers: &[String], enabled: &[String]) -> Vec<Check> {
    let mut out = Vec::new();
    let has_v1 = !m.v1.is_empty();
    let v2_desc = |p: &str| {
        if v2_controllers.is_empty() {
            format!("v2 at {p} has no controllers")
        } else {
            format!("v2 at {p} with {}", v2_controllers.join(" "))
        }
    };
    let version = match (has_v1, &m.v2) {
        (true, Some(p)) => Some(format!(
            "hybrid: v1 controllers ({}), {}",
            m.v1.keys().cloned().collect::<Vec<_>>().join(" "),
            v2_desc(p)
        )),
        (true, None) => Some(format!("v1 ({})", m.v1.keys().cloned().collect::<Vec<_>>().join(" "))),
        (false, Some(p)) => Some(format!("v2 only: {}", v2_desc(p))),
        (false, None) => None,
    };
    out.push(match version {
        Some(d) => Check::ok("cgroup", d),
        None => Check::absent(
            "cgroup",
            true,
            "no cgroup filesystem is mounted",
            "mount -t cgroup2 none /sys/fs/cgroup (systemd hosts do this at boot)",
        ),
    });
    let v2_has = |c: &str| v2_controllers.iter().any(|x| x == c);
    // (line name, v1 controller, v2 controller, v2 core file that stands in, required)
    let table: &[(&str, &str, &str, Option<&str>, bool)] = &[
        ("cgroup.memory", "memory", "memory", None, true),
        ("cgroup.cpu", "cpu", "cpu", None, true),
        ("cgroup.cpuacct", "cpuacct", "cpu", Some("cpu.stat"), false),
        ("cgroup.pids", "pids", "pids", None, true),
        ("cgroup.io", "blkio", "io", None, false),
        ("cgroup.freezer", "freezer", "", Some("cgroup.freeze"), false),
    ];
    for &(name, v1, v2, core, required) in table {
        let check = if let Some(p) = m.v1.get(v1) {
            Check::ok(name, format!("v1 {v1} at {p}"))
        } else if let (Some(p), true) = (&m.v2, !v2.is_empty() && v2_has(v2)) {
            Check::ok(name, format!("v2 {v2} at {p}"))
        } else if let (Some(p), Some(file), false) = (&m.v2, core, has_v1) {
            Check::ok(name, format!("v2 {file} (core) at {p}"))
        } else {
            let detail = if enabled.iter().any(|e| e == v1) {
                format!("{v1} is compiled in but not mounted")
            } else {
                format!(
                    "neither v1 {v1} nor v2 {} is available",
                    if v2.is_empty() { "freezer" } else { v2 }
                )
            };
            let fix = if enabled.iter().any(|e| e == v1) {
                format!("mount -t cgroup -o {v1} cgroup /sys/fs/cgroup/{v1}, or boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)")
            } else if m.v2.is_some() {
                format!(
                    "enable it: echo +{} > {}/cgroup.subtree_control (and in each parent)",
                    if v2.is_empty() { v1 } else { v2 },
                    m.v2.as_deref().unwrap_or("/sys/fs/cgroup")
                )
            } else {
                format!("use a kernel built with the {v1} cgroup controller")
            };
            Check::absent(name, required, detail, fix)
        };
        out.push(check);
    }
    out
}

fn cgroup_checks_host() -> Vec<Check> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let m = parse_mountinfo(&mountinfo);
    let v2_controllers: Vec<String> =
        m.v2.as_ref()
            .and_then(|p| std::fs::read_to_string(Path::new(p).join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
    let enabled = parse_proc_cgroups(&std::fs::read_to_string("/proc/cgroups").unwrap_or_default());
    cgroup_checks(&m, &v2_controllers, &enabled)
}

// ---------------------------------------------------------------------------------------------
// forked probes

/// Runs `probe` in a forked child and returns its exit status (the probe returns 0 or an errno).
///
/// `probe` runs between fork and `_exit`, so it must only make async-signal-safe calls
/// (raw syscalls, no allocation, no locks).
fn in_child(probe: impl FnOnce() -> i32) -> std::result::Result<i32, String> {
    // SAFETY: the child only runs `probe` (documented to make raw syscalls only) and then
    // `_exit`s without unwinding or running destructors; the parent just waits for it.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = probe();
            // SAFETY: `_exit` never returns and is async-signal-safe.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Err(format!("probe killed by {sig}")),
            Ok(other) => Err(format!("probe ended oddly: {other:?}")),
            Err(e) => Err(format!("waitpid failed: {e}")),
        },
        Err(e) => Err(format!("fork failed: {e}")),
    }
}

fn errno_name(code: i32) -> String {
    nix::errno::Errno::from_raw(code).to_string()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Unshares `flags` (plus a user namespace when not root) in a child; Ok(()) or the errno text.
fn try_unshare(flags: libc::c_int) -> std::result::Result<(), String> {
    let flags = if is_root() { flags } else { flags | libc::CLONE_NEWUSER };
    let r = in_child(move || {
        // SAFETY: unshare is a plain syscall affecting only this (child) process.
        if unsafe { libc::unshare(flags) } == 0 {
            0
        } else {
            // SAFETY: reading errno of this thread right after the failed call.
            unsafe { *libc::__errno_location() }
        }
    })?;
    if r == 0 {
        Ok(())
    } else {
        Err(format!("unshare failed: {}", errno_name(r)))
    }
}

// ---------------------------------------------------------------------------------------------
// namespaces

fn namespace_checks() -> Vec<Check> {
    let kinds: &[(&str, libc::c_int, bool)] = &[
        ("mnt", libc::CLONE_NEWNS, true),
        ("pid", libc::CLONE_NEWPID, true),
        ("net", libc::CLONE_NEWNET, true),
        ("ipc", libc::CLONE_NEWIPC, true),
        ("uts", libc::CLONE_NEWUTS, true),
        ("cgroup", libc::CLONE_NEWCGROUP, false),
        ("user", libc::CLONE_NEWUSER, false),
    ];
    let fix_for = |kind: &str| -> String {
        if kind == "user" {
            "sysctl -w user.max_user_namespaces=10000 (and kernel.unprivileged_userns_clone=1 on Debian kernels)".into()
        } else if is_root() {
            format!("use a kernel built with CONFIG_{}_NS", kind.to_uppercase())
        } else {
            "run `gearshift doctor` as root".into()
        }
    };
    let mut out = Vec::new();
    for &(kind, flag, required) in kinds {
        let name = format!("ns.{kind}");
        let proc_path = format!("/proc/self/ns/{kind}");
        if !Path::new(&proc_path).exists() {
            out.push(Check::absent(
                &name,
                required,
                format!("{proc_path} does not exist"),
                fix_for(kind),
            ));
            continue;
        }
        out.push(match try_unshare(flag) {
            Ok(()) => Check::ok(&name, "unshare works"),
            Err(e) => Check::absent(&name, required, e, fix_for(kind)),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// seccomp, no_new_privs, Landlock, SELinux

fn proc_status_field(field: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|v| v.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

fn seccomp_check() -> Check {
    const FIX: &str = "use a kernel built with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER";
    let Some(mode) = proc_status_field("Seccomp") else {
        return Check::absent(
            "seccomp",
            true,
            "no Seccomp: field in /proc/self/status (CONFIG_SECCOMP off)",
            FIX,
        );
    };
    // One BPF instruction: return SECCOMP_RET_ALLOW.
    let filter = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    let prog_ptr = &prog as *const libc::sock_fprog;
    let r = in_child(move || {
        // SAFETY: prctl syscalls on this (child) process; `prog_ptr` points at a filter that the
        // parent keeps alive until the child has exited (the child has a copy of the memory).
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, prog_ptr) != 0
            {
                return *libc::__errno_location();
            }
        }
        0
    });
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let actions = actions.trim();
    match r {
        Ok(0) => Check::ok(
            "seccomp",
            format!(
                "filter mode works (this process: mode {mode}){}",
                if actions.is_empty() {
                    String::new()
                } else {
                    format!("; actions: {actions}")
                }
            ),
        ),
        Ok(code) => Check::absent(
            "seccomp",
            true,
            format!("installing a filter failed: {}", errno_name(code)),
            FIX,
        ),
        Err(e) => Check::absent("seccomp", true, e, FIX),
    }
}

fn no_new_privs_check() -> Check {
    let current = proc_status_field("NoNewPrivs").unwrap_or_else(|| "?".into());
    let r = in_child(|| {
        // SAFETY: prctl on this (child) process only.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return *libc::__errno_location();
            }
            if libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 {
                return libc::EINVAL;
            }
        }
        0
    });
    match r {
        Ok(0) => Check::ok("no_new_privs", format!("prctl works (this process: {current})")),
        Ok(code) => Check::warn(
            "no_new_privs",
            format!("PR_SET_NO_NEW_PRIVS failed: {}", errno_name(code)),
            "use Linux >= 3.5",
        ),
        Err(e) => Check::warn("no_new_privs", e, "use Linux >= 3.5"),
    }
}

fn landlock_check() -> Check {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attr and size 0 this syscall only returns the ABI version; no
    // memory is read or written and no file descriptor is created.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi >= 1 {
        return Check::ok("landlock", format!("ABI version {abi}"));
    }
    let err = std::io::Error::last_os_error();
    let detail = match err.raw_os_error() {
        Some(libc::ENOSYS) => "not built into this kernel (ENOSYS)".to_string(),
        Some(libc::EOPNOTSUPP) => "built in but not enabled at boot (EOPNOTSUPP)".to_string(),
        _ => format!("landlock_create_ruleset failed: {err}"),
    };
    Check::warn(
        "landlock",
        format!("{detail}; gears run without Landlock"),
        "optional: boot with lsm=landlock,... (CONFIG_SECURITY_LANDLOCK=y)",
    )
}

fn selinux_check() -> Check {
    use crate::gear::isolation::selinux;
    if selinux::mode() != "disabled" && !selinux::policy_loaded() {
        return Check::absent(
            "selinux",
            true,
            format!(
                "{}, but the gearshift policy (gear_t, gear_file_t) is not loaded",
                selinux::mode()
            ),
            "run `gearshift init` (it installs selinux/gearshift.cil with semodule -i)",
        );
    }
    match std::fs::read_to_string("/sys/fs/selinux/enforce") {
        Ok(s) if s.trim() == "1" => Check::ok(
            "selinux",
            "enforcing, policy module gearshift loaded (gears run as gear_t with their own MCS category pair)",
        ),
        Ok(_) => Check::warn(
            "selinux",
            "permissive: labels are set but not enforced",
            "setenforce 1 (and SELINUX=enforcing in /etc/selinux/config)",
        ),
        Err(_) => Check::warn(
            "selinux",
            "disabled (no /sys/fs/selinux/enforce): gears get no MCS labels",
            "optional; on Fedora/RHEL set SELINUX=enforcing in /etc/selinux/config and reboot",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// disk quota

fn quota_check(node: Option<&Node>) -> Check {
    match node {
        Some(node) => {
            let (ok, detail) = quota::describe(node);
            if ok {
                Check::ok("quota", detail)
            } else {
                Check::absent(
                    "quota",
                    true,
                    detail,
                    "set [disk] backend = \"btrfs-loop\" (apt-get install btrfs-progs / dnf install btrfs-progs), or allow_unlimited = true",
                )
            }
        }
        None => Check::warn(
            "quota",
            "no node config: the disk quota backend is chosen by the node",
            "run `gearshift init` (or pass --config) and run doctor again",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// network: veth, bridge, tc, nftables/iptables, all inside a throwaway netns

/// PATH for the tools doctor runs (sbin dirs included even for a non-root PATH).
fn tool_path() -> String {
    let cur = std::env::var("PATH").unwrap_or_default();
    format!("{cur}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

/// Runs a command (with a timeout) and returns (exit code, stdout+stderr), or None if absent.
fn run_tool(cmd: &mut Command, timeout: Duration) -> Option<(i32, String)> {
    let mut child = cmd
        .env("PATH", tool_path())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = child.wait_with_output().ok()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    match status {
        Some(st) => Some((st.code().unwrap_or(-1), text)),
        None => Some((-1, format!("timed out after {} s", timeout.as_secs()))),
    }
}

/// First non-empty line of a tool's `--version`-style output, or None if it is not installed.
fn tool_version(program: &str, args: &[&str]) -> Option<String> {
    let (code, out) = run_tool(Command::new(program).args(args), Duration::from_secs(5))?;
    if code == 127 {
        return None;
    }
    out.lines().map(str::trim).find(|l| !l.is_empty()).map(String::from)
}

/// The probe script; each step prints `NAME<TAB>RC<TAB>OUTPUT` on one line.
const NET_PROBE: &str = r#"
p() { n=$1; shift; o=$("$@" 2>&1 </dev/null); r=$?; printf '%s\t%s\t%s\n' "$n" "$r" "$(printf '%s\n' "$o" | head -n 1 | tr '\t' ' ')"; }
p veth ip link add gsprobe0 type veth peer name gsprobe1
p bridge ip link add gsprobebr0 type bridge
p htb tc qdisc add dev lo root handle 1: htb default 1
tc qdisc del dev lo root >/dev/null 2>&1
p tbf tc qdisc add dev lo root tbf rate 8mbit burst 32kbit latency 50ms
p nft nft add table inet gsprobe
p iptables iptables -t nat -S
"#;

/// Parses the probe script's output into name -> (rc, output).
pub fn parse_probe_output(text: &str) -> BTreeMap<String, (i32, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let name = f.next()?.to_string();
            let rc = f.next()?.trim().parse().ok()?;
            Some((name, (rc, f.next().unwrap_or("").trim().to_string())))
        })
        .collect()
}

/// Runs the probe script in a new network namespace (and user namespace when not root).
fn run_net_probe() -> std::result::Result<BTreeMap<String, (i32, String)>, String> {
    let root = is_root();
    // Not root: a user namespace mapping our uid/gid to 0 gives the probe (and the tools it
    // execs) CAP_NET_ADMIN over the new netns. The map lines are built before fork.
    let uid_map = format!("0 {} 1\n", nix::unistd::geteuid());
    let gid_map = format!("0 {} 1\n", nix::unistd::getegid());
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(NET_PROBE);
    // SAFETY: the closure runs in the forked child before exec and only makes raw syscalls
    // (unshare, open, write, close) on memory prepared before the fork; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            let flags = if root {
                libc::CLONE_NEWNET
            } else {
                libc::CLONE_NEWNET | libc::CLONE_NEWUSER
            };
            if libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if !root {
                for (path, data) in [
                    (c"/proc/self/setgroups", "deny".as_bytes()),
                    (c"/proc/self/uid_map", uid_map.as_bytes()),
                    (c"/proc/self/gid_map", gid_map.as_bytes()),
                ] {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, data.as_ptr().cast(), data.len());
                    libc::close(fd);
                    if n < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .env("PATH", tool_path())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the probe in a new network namespace: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the network probe timed out after 10 s".into());
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot read the probe's output: {e}"))?;
    Ok(parse_probe_output(&String::from_utf8_lossy(&out.stdout)))
}

/// Turns one probe result into a short detail (for failures: the tool's own message).
fn probe_detail(res: Option<&(i32, String)>, what: &str) -> std::result::Result<String, String> {
    match res {
        Some((0, _)) => Ok(format!("{what} works (probed in a throwaway netns)")),
        Some((127, _)) => Err("tool not installed".into()),
        Some((rc, out)) => {
            let msg: String = out.chars().take(120).collect();
            Err(format!("{what} failed (exit {rc}): {msg}"))
        }
        None => Err("probe did not run".into()),
    }
}

/// The fix for a failed probe: the package when the tool is absent, else the kernel option.
fn probe_fix(err: &str, (kernel_option, package): (&str, &str)) -> String {
    if err == "tool not installed" {
        package.to_string()
    } else if err.contains("not permitted") && !is_root() {
        "run `gearshift doctor` as root".to_string()
    } else {
        format!("use a kernel with {kernel_option}")
    }
}

/// Network lines from the probe results (pure).
pub fn network_checks_from(
    probe: &std::result::Result<BTreeMap<String, (i32, String)>, String>,
    nft_version: Option<&str>,
    iptables_version: Option<&str>,
) -> Vec<Check> {
    const IPROUTE: &str = "apt-get install iproute2 / dnf install iproute";
    const TC: &str = "apt-get install iproute2 / dnf install iproute-tc";
    let probe = match probe {
        Ok(p) => p,
        Err(e) => {
            let fix = if is_root() {
                "check that network namespaces work (see ns.net)"
            } else {
                "run `gearshift doctor` as root"
            };
            return ["veth", "bridge", "tc.htb", "tc.tbf", "firewall"]
                .iter()
                .map(|n| Check::absent(n, true, e.clone(), fix))
                .collect();
        }
    };
    let mut out = Vec::new();
    for (name, key, what, kfix) in [
        ("veth", "veth", "ip link add type veth", ("CONFIG_VETH", IPROUTE)),
        (
            "bridge",
            "bridge",
            "ip link add type bridge",
            ("CONFIG_BRIDGE", IPROUTE),
        ),
    ] {
        out.push(match probe_detail(probe.get(key), what) {
            Ok(d) => Check::ok(name, d),
            Err(e) => {
                let fix = probe_fix(&e, kfix);
                Check::absent(name, true, e, fix)
            }
        });
    }
    let htb = probe_detail(probe.get("htb"), "tc qdisc htb");
    let tbf = probe_detail(probe.get("tbf"), "tc qdisc tbf");
    let tc_ok = htb.is_ok() || tbf.is_ok();
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
    let nft = probe_detail(probe.get("nft"), "nft add table inet");
    let ipt = probe_detail(probe.get("iptables"), "iptables -t nat");
    const NFT_FIX: &str = "apt-get install nftables / dnf install nftables";
    out.push(match (nft_version, &nft, iptables_version, &ipt) {
        (Some(v), Ok(d), _, _) => Check::ok("firewall", format!("{v}; {d}")),
        (_, _, Some(v), Ok(d)) => Check::ok("firewall", format!("{v}; {d} (nftables preferred: {NFT_FIX})")),
        (Some(v), Err(e), _, _) => Check::absent(
            "firewall",
            true,
            format!("{v}, but {e}"),
            "use a kernel with CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET",
        ),
        (None, _, Some(v), Err(e)) => Check::absent("firewall", true, format!("no nft; {v}, but {e}"), NFT_FIX),
        (None, _, None, _) => Check::absent("firewall", true, "neither nft nor iptables is installed", NFT_FIX),
    });
    out
}

fn network_checks() -> Vec<Check> {
    let probe = run_net_probe();
    let nft = tool_version("nft", &["--version"]);
    let ipt = tool_version("iptables", &["--version"]);
    network_checks_from(&probe, nft.as_deref(), ipt.as_deref())
}

fn ip_forward_check() -> Check {
    match std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
        Ok(s) if s.trim() == "1" => Check::ok("ip_forward", "net.ipv4.ip_forward = 1"),
        Ok(s) => Check::warn(
            "ip_forward",
            format!("net.ipv4.ip_forward = {}: gears cannot reach other networks", s.trim()),
            "sysctl -w net.ipv4.ip_forward=1 (persist it in /etc/sysctl.d/)",
        ),
        Err(e) => Check::warn(
            "ip_forward",
            format!("cannot read /proc/sys/net/ipv4/ip_forward: {e}"),
            "check /proc/sys is mounted",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// tools

fn sshd_check() -> Check {
    const FIX: &str = "apt-get install openssh-server / dnf install openssh-server";
    let Some(path) = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        return Check::absent("sshd", true, "no sshd in /usr/sbin, /usr/local/sbin or /sbin", FIX);
    };
    // `ssh -V` prints e.g. "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024" on stderr.
    let version = tool_version("ssh", &["-V"]).map(|v| v.split(',').next().unwrap_or("").trim().to_string());
    Check::ok(
        "sshd",
        format!(
            "{path} ({})",
            version.as_deref().unwrap_or("version unknown: no ssh client")
        ),
    )
}

fn git_check() -> Check {
    match tool_version("git", &["--version"]) {
        Some(v) => Check::ok("git", v),
        None => Check::absent(
            "git",
            true,
            "git is not installed",
            "apt-get install git / dnf install git",
        ),
    }
}

fn btrfs_check() -> Check {
    let kernel = std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.split_whitespace().last() == Some("btrfs")))
        .unwrap_or(false);
    let kdesc = if kernel {
        "kernel has btrfs"
    } else {
        "kernel has no btrfs"
    };
    match tool_version("btrfs", &["--version"]) {
        Some(v) => Check::ok("btrfs-progs", format!("{v}; {kdesc}")),
        None => Check::warn(
            "btrfs-progs",
            format!("not installed ({kdesc}); needed for the btrfs-loop quota backend"),
            "apt-get install btrfs-progs / dnf install btrfs-progs",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V2: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn find<'a>(c: &'a [Check], name: &str) -> &'a Check {
        c.iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} line"))
    }

    #[test]
    fn doctor_parses_hybrid_mountinfo() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.v2.as_deref(), Some("/sys/fs/cgroup/unified"));
        assert_eq!(m.v1.get("memory").map(String::as_str), Some("/sys/fs/cgroup/memory"));
        assert!(!m.v1.contains_key("name=systemd") && !m.v1.contains_key("rw"));
        let c = cgroup_checks(&m, &[], &v(&["memory", "cpu", "pids"]));
        assert!(find(&c, "cgroup").detail.starts_with("hybrid: v1 controllers"), "{c:?}");
        assert!(find(&c, "cgroup")
            .detail
            .contains("/sys/fs/cgroup/unified has no controllers"));
        assert!(c.iter().all(|c| c.status == Status::Ok), "{c:?}");
        assert_eq!(find(&c, "cgroup.io").detail, "v1 blkio at /sys/fs/cgroup/blkio");
        assert_eq!(exit_code(&c), 0);
    }

    #[test]
    fn doctor_parses_v2_and_combined_v1() {
        let m = parse_mountinfo(V2);
        assert!(m.v1.is_empty());
        assert_eq!(m.v2.as_deref(), Some("/sys/fs/cgroup"));
        let c = cgroup_checks(&m, &v(&["cpuset", "cpu", "io", "memory", "pids"]), &[]);
        assert!(find(&c, "cgroup").detail.starts_with("v2 only"));
        assert_eq!(find(&c, "cgroup.memory").detail, "v2 memory at /sys/fs/cgroup");
        assert_eq!(find(&c, "cgroup.cpuacct").detail, "v2 cpu at /sys/fs/cgroup");
        assert_eq!(
            find(&c, "cgroup.freezer").detail,
            "v2 cgroup.freeze (core) at /sys/fs/cgroup"
        );
        // A v2 host without the memory controller enabled: required, so missing.
        let c = cgroup_checks(&m, &v(&["cpu", "pids"]), &[]);
        assert_eq!(find(&c, "cgroup.memory").status, Status::Missing);
        assert!(find(&c, "cgroup.memory").fix.as_deref().unwrap().contains("+memory"));
        assert_eq!(find(&c, "cgroup.io").status, Status::Warn);
        assert_eq!(exit_code(&c), 1);

        let combined = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                        33 31 0:30 / /mnt/my\\040cg rw - cgroup cgroup rw,nosuid,memory\n";
        let m = parse_mountinfo(combined);
        assert_eq!(m.v1.get("cpu").unwrap(), "/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(m.v1.get("cpuacct").unwrap(), "/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(m.v1.get("memory").unwrap(), "/mnt/my cg");
        let c = cgroup_checks(&m, &[], &v(&["pids"]));
        assert!(find(&c, "cgroup").detail.starts_with("v1 ("));
        assert_eq!(find(&c, "cgroup.pids").detail, "pids is compiled in but not mounted");
        assert_eq!(find(&c, "cgroup.pids").status, Status::Missing);
        let c = cgroup_checks(&parse_mountinfo(""), &[], &[]);
        assert_eq!(find(&c, "cgroup").status, Status::Missing);
    }

    #[test]
    fn doctor_parses_proc_cgroups() {
        let t = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\nmemory\t0\t1\t0\npids\t8\t1\t1\n";
        assert_eq!(parse_proc_cgroups(t), v(&["cpuset", "pids"]));
    }

    #[test]
    fn doctor_network_lines_from_probe() {
        let out = "veth\t0\t\nbridge\t0\t\nhtb\t2\tError: Specified qdisc kind is unknown.\ntbf\t0\t\nnft\t127\tsh: nft: not found\niptables\t0\t\n";
        let p = parse_probe_output(out);
        assert_eq!(p.get("htb").unwrap().0, 2);
        let c = network_checks_from(&Ok(p.clone()), None, Some("iptables v1.8.9 (nf_tables)"));
        assert_eq!(find(&c, "veth").status, Status::Ok);
        // tbf works, so htb missing is only a warning.
        assert_eq!(find(&c, "tc.htb").status, Status::Warn);
        assert!(find(&c, "tc.htb").detail.contains("qdisc kind is unknown"));
        assert_eq!(find(&c, "firewall").status, Status::Ok);
        assert!(find(&c, "firewall").detail.starts_with("iptables v1.8.9"));
        let c = network_checks_from(&Ok(p), None, None);
        assert_eq!(find(&c, "firewall").status, Status::Missing);
        assert!(find(&c, "firewall")
            .fix
            .as_deref()
            .unwrap()
            .contains("apt-get install nftables / dnf install nftables"));
        let c = network_checks_from(&Err("unshare failed: EPERM".into()), None, None);
        assert!(c.iter().all(|c| c.status != Status::Ok));
        assert_eq!(exit_code(&c), 1);
    }

    #[test]
    fn doctor_formats_aligned_lines() {
        let checks = vec![
            Check::ok("git", "git version 2.43.0"),
            Check::absent(
                "firewall",
                true,
                "neither nft nor iptables",
                "apt-get install nftables / dnf install nftables",
            ),
            Check::warn("selinux", "disabled", "optional"),
        ];
        let s = format_report(&checks);
        assert_eq!(
            s,
            "ok       git       git version 2.43.0\n\
             missing  firewall  neither nft nor iptables  fix: apt-get install nftables / dnf install nftables\n\
             warn     selinux   disabled                  fix: optional\n"
        );
        assert_eq!(exit_code(&checks), 1);
        assert_eq!(exit_code(&checks[..1]), 0);
        let j = serde_json::to_value(&checks).unwrap();
        assert_eq!(j[1]["status"], "missing");
        assert_eq!(j[0]["fix"], serde_json::Value::Null);
        assert_eq!(j[2]["name"], "selinux");
    }

    #[test]
    fn doctor_unescapes_mountinfo() {
        assert_eq!(unescape_mountinfo("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(unescape_mountinfo("/plain\\0"), "/plain\\0");
    }
}
