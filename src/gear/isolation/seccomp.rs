//! seccomp: a deny-list of syscalls a gear never needs and attackers love (mounts, namespaces,
//! kernel modules, bpf, keyrings, io_uring ...). Built once before fork, applied last before exec.

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

fn arch() -> TargetArch {
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
    #[cfg(target_arch = "x86_64")]
    return TargetArch::x86_64;
}

/// The compiled filters: the deny-list (EPERM) and clone3 (ENOSYS, so libc falls back to clone,
/// whose flags the first filter can inspect).
pub struct Filters {
    deny: BpfProgram,
    clone3: BpfProgram,
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
    Ok(Filters { deny, clone3 })
}

/// Installs the filters on the calling thread (needs no_new_privs or CAP_SYS_ADMIN).
pub fn apply(f: &Filters) -> Result<()> {
    seccompiler::apply_filter(&f.clone3).context("cannot install the clone3 seccomp filter")?;
    seccompiler::apply_filter(&f.deny).context("cannot install the seccomp filter")?;
    Ok(())
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
