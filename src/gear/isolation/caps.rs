//! Capabilities: the bounding and ambient sets are emptied and root is disarmed (securebits)
//! while still root; the switch to the gear uid then clears the rest.

use super::check::{errno_name, in_child, proc_status_field, Check};
use anyhow::{bail, Context, Result};

const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

fn last_cap() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Empties the bounding and ambient sets and locks securebits so that executing a setuid-root
/// file can never grant capabilities. Call as root, before changing uid.
pub fn disarm() -> Result<()> {
    for cap in 0..=last_cap() {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot drop capability {cap} from the bounding set"));
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot clear ambient capabilities");
    }
    let bits = SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_KEEP_CAPS_LOCKED
        | SECBIT_NO_CAP_AMBIENT_RAISE
        | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot lock securebits");
    }
    Ok(())
}

/// Sets no_new_privs: no exec can gain privileges (setuid bits, file capabilities).
pub fn no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set no_new_privs");
    }
    Ok(())
}

/// Fails unless the permitted, effective and ambient sets are empty.
pub fn verify_none() -> Result<()> {
    let status = std::fs::read_to_string("/proc/thread-self/status").context("cannot read own status")?;
    for key in ["CapPrm:", "CapEff:", "CapAmb:", "CapBnd:"] {
        let v = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or("?");
        if u64::from_str_radix(v, 16).ok() != Some(0) {
            bail!("{key} is {v} after dropping privileges; refusing to run the gear");
        }
    }
    Ok(())
}

/// The `no_new_privs` line: the prctl works (tried in a forked child).
pub fn check_no_new_privs() -> Check {
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
