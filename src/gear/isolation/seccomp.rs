//! seccomp: a deny-list of syscalls a gear never needs and attackers love (mounts, namespaces,
//! kernel modules, bpf, keyrings, io_uring ...), and an allow-list of socket families (what a
//! web app needs: unix, IPv4, IPv6, netlink route). Built once before fork, applied last
//! before exec.

use super::check::{errno_name, in_child, proc_status_field, Check};
use anyhow::{Context, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

const DENIED: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_lookup_dcookie,
];

const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The socket families a gear may open; anything else (vsock, packet, bluetooth, other
/// netlink protocols ...) fails with EAFNOSUPPORT, as on a kernel without them.
const SOCKET_FAMILIES: &[i32] = &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK];

fn arch() -> TargetArch {
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
    #[cfg(target_arch = "x86_64")]
    return TargetArch::x86_64;
}

/// The compiled filters: the deny-list (EPERM), clone3 (ENOSYS, so libc falls back to clone,
/// whose flags the first filter can inspect) and socket families (EAFNOSUPPORT).
pub struct Filters {
    deny: BpfProgram,
    clone3: BpfProgram,
    sockets: BpfProgram,
}

/// socket(2) fails for every family but SOCKET_FAMILIES, and netlink for every protocol but
/// NETLINK_ROUTE (addresses and routes, which getaddrinfo and `ip` read).
fn socket_filter() -> Result<BpfProgram> {
    let family = |op, f: i32| SeccompCondition::new(0, SeccompCmpArgLen::Dword, op, f as u64);
    let other_family = SOCKET_FAMILIES
        .iter()
        .map(|f| family(SeccompCmpOp::Ne, *f))
        .collect::<Result<Vec<_>, _>>()?;
    let other_netlink = vec![
        family(SeccompCmpOp::Eq, libc::AF_NETLINK)?,
        SeccompCondition::new(2, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, libc::NETLINK_ROUTE as u64)?,
    ];
    let rules = vec![SeccompRule::new(other_family)?, SeccompRule::new(other_netlink)?];
    SeccompFilter::new(
        [(libc::SYS_socket, rules)].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
        arch(),
    )
    .context("cannot build the socket family filter")?
    .try_into()
    .context("cannot compile the socket family filter")
}

/// Compiles the filters (allocates: call before fork).
pub fn build() -> Result<Filters> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|s| (*s, vec![])).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|f| {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*f),
                *f,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()
        .context("cannot build the clone rule")?;
    rules.insert(libc::SYS_clone, clone_rules);
    // btrfs ioctls (type 0x94): a gear could create a subvolume in its home, whose qgroup has
    // no limit, and escape its disk quota.
    rules.insert(
        libc::SYS_ioctl,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(0xff00),
            0x9400,
        )?])?],
    );
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch(),
    )
    .context("cannot build the seccomp filter")?
    .try_into()
    .context("cannot compile the seccomp filter")?;
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch(),
    )
    .context("cannot build the clone3 filter")?
    .try_into()
    .context("cannot compile the clone3 filter")?;
    Ok(Filters {
        deny,
        clone3,
        sockets: socket_filter()?,
    })
}

/// Installs the filters on the calling thread (needs no_new_privs or CAP_SYS_ADMIN).
pub fn apply(f: &Filters) -> Result<()> {
    seccompiler::apply_filter(&f.clone3).context("cannot install the clone3 seccomp filter")?;
    seccompiler::apply_filter(&f.deny).context("cannot install the seccomp filter")?;
    seccompiler::apply_filter(&f.sockets).context("cannot install the socket family filter")?;
    Ok(())
}

/// The `seccomp` line: a filter can be installed (tried in a forked child).
pub fn check() -> Check {
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

#[cfg(test)]
mod tests {
    #[test]
    fn denied_calls_fail_and_others_work_in_a_child() {
        let f = super::build().unwrap();
        // SAFETY: the child only makes raw syscalls and calls _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok = super::super::caps::no_new_privs().is_ok() && super::apply(&f).is_ok();
                // SAFETY: raw syscalls with integer arguments.
                let unshare = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
                let e1 = std::io::Error::last_os_error().raw_os_error();
                // SAFETY: getpid has no arguments.
                let pid = unsafe { libc::getpid() };
                let good = ok && unshare == -1 && e1 == Some(libc::EPERM) && pid > 0;
                // SAFETY: _exit in the forked child.
                unsafe { libc::_exit(if good { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
