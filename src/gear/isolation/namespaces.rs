//! Namespaces: `gear::spawn` gives every gear its own mount, pid, net, ipc and uts namespaces
//! (cgroup and user namespaces where the kernel has them). This module probes that the kernel
//! lets us unshare each one.

use super::check::{errno_name, in_child, is_root, Check};
use std::path::Path;

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

/// One `ns.<kind>` line per namespace: its /proc handle exists and unshare works.
pub fn check() -> Vec<Check> {
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
