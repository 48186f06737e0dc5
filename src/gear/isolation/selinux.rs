//! SELinux labels per gear: the process label is written to /proc/thread-self/attr/exec before
//! exec (the gear's init, which never execs, switches with attr/current), files carry the same
//! MCS pair in `security.selinux`. Where SELinux is off, nothing is written.
//!
//! The policy (`selinux/gearshift.cil`) defines `gear_t`, an MCS-constrained domain, and
//! `gear_file_t`; refpolicy applies categories only to `mcs_constrained_type` domains, so a gear
//! must never run unconfined. Files a gear creates later inherit `gear_file_t` from their
//! directory and the pair from the process's level.

use super::check::Check;
use anyhow::{Context, Result};
use std::path::Path;

/// The gear process type from `selinux/gearshift.cil`.
pub const PROCESS_TYPE: &str = "gear_t";
/// The gear file context (user, role, type) from `selinux/gearshift.cil`.
pub const FILE_TYPE: &str = "system_u:object_r:gear_file_t";
/// Benchmark-only switch: `GEARSHIFT_BENCH_NO_SELINUX=1` writes no labels even where SELinux is
/// on (gears then run unconfined: never use it outside a measurement).
pub const BENCH_OFF_ENV: &str = "GEARSHIFT_BENCH_NO_SELINUX";

/// "enforcing", "permissive" or "disabled".
pub fn mode() -> &'static str {
    match std::fs::read_to_string("/sys/fs/selinux/enforce").map(|s| s.trim().to_string()) {
        Ok(s) if s == "1" => "enforcing",
        Ok(_) => "permissive",
        Err(_) => "disabled",
    }
}

/// Whether gearshift labels gears here (SELinux on, and not switched off for a benchmark).
///
/// Decided once per process: inside a gear's mount namespace /sys/fs/selinux does not exist and
/// the environment is cleared, so the spawn code asks before it enters the gear.
pub fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| mode() != "disabled" && std::env::var_os(BENCH_OFF_ENV).is_none_or(|v| v != "1"))
}

/// The full process label for a gear: the caller's SELinux user and role (so no identity
/// change is needed: `system_u:system_r` for a daemon, `unconfined_u:unconfined_r` for root's
/// shell), the gear type and the gear's pair.
pub fn process_label(current: &str, mcs: &str) -> String {
    let mut f = current.trim_end_matches(['\0', '\n']).splitn(3, ':');
    match (f.next(), f.next()) {
        (Some(u), Some(r)) if !u.is_empty() && !r.is_empty() && r != "object_r" => {
            format!("{u}:{r}:{PROCESS_TYPE}:{mcs}")
        }
        _ => format!("system_u:system_r:{PROCESS_TYPE}:{mcs}"),
    }
}

fn own_context() -> String {
    std::fs::read_to_string("/proc/thread-self/attr/current").unwrap_or_default()
}

fn write_attr(which: &str, mcs: &str) -> Result<()> {
    let label = process_label(&own_context(), mcs);
    let path = format!("/proc/thread-self/attr/{which}");
    std::fs::write(&path, label.as_bytes()).with_context(|| {
        format!("cannot set SELinux {which} label {label} (is the gearshift policy installed? run `gearshift doctor`)")
    })
}

/// Sets the label the next execve of this thread runs under.
pub fn set_exec_label(mcs: &str) -> Result<()> {
    if !enabled() {
        return Ok(());
    }
    write_attr("exec", mcs)
}

/// Switches this (single-threaded) process to the gear's label now, for the gear's init, which
/// keeps running gearshift code instead of exec'ing.
pub fn set_current_label(mcs: &str) -> Result<()> {
    if !enabled() {
        return Ok(());
    }
    write_attr("current", mcs)
}

/// Runs `f` (which creates sockets) with this thread's socket creation label at level `s0`
/// (its own user, role and type), so a gear at any pair may use them; the default label is
/// restored afterwards. Pipes and sockets otherwise carry the creator's level, and a gear may
/// not use one at root's login range `s0-s0:c0.c1023`; a unix socket connected to a gear's
/// listener gives the gear's end of it the client's level too. Plain `f()` where labelling is
/// off.
pub fn with_sockets_at_s0<T>(f: impl FnOnce() -> T) -> Result<T> {
    if !enabled() {
        return Ok(f());
    }
    let own = own_context();
    let own = own.trim_end_matches(['\0', '\n']);
    let utr: Vec<&str> = own.splitn(4, ':').take(3).collect();
    let ctx = format!("{}:s0", utr.join(":"));
    let attr = "/proc/thread-self/attr/sockcreate";
    std::fs::write(attr, format!("{ctx}\0"))
        .with_context(|| format!("cannot set the SELinux socket creation label to {ctx}"))?;
    let r = f();
    std::fs::write(attr, "\0").context("cannot reset the SELinux socket creation label")?;
    Ok(r)
}

/// The file label for a gear's pair.
pub fn file_label(mcs: &str) -> String {
    format!("{FILE_TYPE}:{mcs}")
}

/// Mount option labelling the root of a gear-private tmpfs with the gear's file label (empty
/// where labelling is off); files created in it then get the type from their directory and
/// the creator's user and level, as on disk. Starts with a comma, to append to other options.
pub fn mount_option(mcs: &str) -> String {
    if !enabled() {
        return String::new();
    }
    format!(",rootcontext=\"{}\"", file_label(mcs))
}

/// Mount option giving every file of a filesystem without xattrs (the gear's devpts) the
/// gear's file label. Empty where labelling is off.
pub fn mount_option_all(mcs: &str) -> String {
    if !enabled() {
        return String::new();
    }
    format!(",context=\"{}\"", file_label(mcs))
}

/// Gives `dir` its parent's label when it has none (`unlabeled_t`: the root of a freshly made
/// filesystem, like the btrfs-loop gears image), so host-side tools can traverse it.
pub fn label_like_parent(dir: &Path) -> Result<()> {
    if !enabled() {
        return Ok(());
    }
    if file_context(dir).is_some_and(|c| !c.contains(":unlabeled_t:")) {
        return Ok(());
    }
    let Some(parent) = dir.parent().and_then(file_context) else {
        return Ok(());
    };
    let p = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    let value = format!("{parent}\0");
    // SAFETY: valid NUL-terminated path and name; the value pointer and length match.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            c"security.selinux".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot label {}", dir.display()));
    }
    Ok(())
}

/// Labels a file or directory with the gear's file type and MCS pair.
pub fn label_file(path: &Path, mcs: &str) -> Result<()> {
    if !enabled() {
        return Ok(());
    }
    set_context(path, &file_label(mcs))
}

/// What every gear may read and run, and none may change: an add-on kind's kit (the link to
/// the service's binaries, the template data directory), made by root in the node's root,
/// where it would otherwise carry a label gears may not read (`var_lib_t`, `user_tmp_t`).
/// The host's read-only runtime type at the lowest level, as `/usr` itself.
pub const SHARED_RUNTIME: &str = "system_u:object_r:usr_t:s0";

/// Labels `path` and everything beneath it `SHARED_RUNTIME` (symlinks themselves), unless its
/// top already is; nothing where labelling is off.
pub fn label_tree_shared(path: &Path) -> Result<()> {
    if !enabled() || file_context(path).is_some_and(|c| c == SHARED_RUNTIME) {
        return Ok(());
    }
    walk(path, &mut |p| set_context(p, SHARED_RUNTIME))
}

fn set_context(path: &Path, context: &str) -> Result<()> {
    let label = format!("{context}\0");
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call; the value
    // length matches the buffer.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            c"security.selinux".as_ptr(),
            label.as_ptr().cast(),
            label.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot label {}", path.display()));
    }
    Ok(())
}

/// Labels `path` and everything beneath it (symlinks themselves, never their targets).
pub fn label_tree(path: &Path, mcs: &str) -> Result<()> {
    if !enabled() {
        return Ok(());
    }
    walk(path, &mut |p| label_file(p, mcs))
}

/// Calls `f` on `path` and everything beneath it, never following a symlink.
fn walk(path: &Path, f: &mut impl FnMut(&Path) -> Result<()>) -> Result<()> {
    f(path)?;
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))? {
            walk(&e?.path(), f)?;
        }
    }
    Ok(())
}

/// Whether `path` or an entry right beneath it lacks the gear's file type and pair (the tree
/// of a gear created before the policy was installed, or relabelled by hand). False where
/// labelling is off. Only the top two levels are looked at: cheap enough for every `node up`.
pub fn tree_mislabelled(path: &Path, mcs: &str) -> bool {
    if !enabled() {
        return false;
    }
    let want = format!(":gear_file_t:{mcs}");
    let wrong = |p: &Path| file_context(p).is_none_or(|c| !c.ends_with(&want));
    if !path.exists() {
        return false;
    }
    wrong(path)
        || std::fs::read_dir(path)
            .map(|d| d.flatten().any(|e| wrong(&e.path())))
            .unwrap_or(false)
}

/// The `security.selinux` label of a file, if it has one.
pub fn file_context(path: &Path) -> Option<String> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut buf = [0u8; 512];
    // SAFETY: valid NUL-terminated name and path; the buffer pointer and length match.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            c"security.selinux".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    Some(
        String::from_utf8_lossy(&buf[..n as usize])
            .trim_end_matches('\0')
            .to_string(),
    )
}

/// The SELinux context of a running process, if SELinux is on.
pub fn process_context(pid: i32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/attr/current")).ok()?;
    let s = s.trim_end_matches(['\0', '\n']).to_string();
    (!s.is_empty() && mode() != "disabled").then_some(s)
}

/// The policy module, embedded so `gearshift init` can install it.
pub const POLICY_CIL: &str = include_str!("../../../selinux/gearshift.cil");

/// Whether the loaded policy knows the gear types (a cheap probe: the kernel validates a context
/// written to /sys/fs/selinux/context).
pub fn policy_loaded() -> bool {
    std::fs::write("/sys/fs/selinux/context", format!("{}:s0\0", FILE_TYPE)).is_ok()
}

/// What `install_policy` did.
#[derive(Debug, PartialEq, Eq)]
pub enum PolicyInstall {
    /// SELinux is off: nothing to install.
    Skipped,
    /// The same module was already installed.
    Current,
    /// `semodule -i` installed (or replaced) it.
    Installed,
}

/// Where `install_policy` keeps a copy of the module it installed, to skip reinstalling it.
pub const INSTALLED_COPY: &str = "/var/lib/gearshift-selinux/gearshift.cil";

/// Installs `selinux/gearshift.cil` with `semodule -i` where SELinux is on, unless this exact
/// module is installed already (a copy kept at `INSTALLED_COPY`, and the loaded policy knows
/// the gear types): a policy rebuild takes seconds to minutes.
pub fn install_policy() -> Result<PolicyInstall> {
    if mode() == "disabled" {
        return Ok(PolicyInstall::Skipped);
    }
    let copy = Path::new(INSTALLED_COPY);
    let current = || std::fs::read_to_string(copy).is_ok_and(|c| c == POLICY_CIL) && policy_loaded();
    if current() {
        return Ok(PolicyInstall::Current);
    }
    // One install at a time (semodule refuses to wait for another's transaction lock); whoever
    // waited finds the module installed.
    let _lock = crate::state::Lock::exclusive(&copy.with_extension("lock"))?;
    if current() {
        return Ok(PolicyInstall::Current);
    }
    // semodule (semanage_t) may read a temporary file but not /var/lib; it names the module
    // after the file, so the file is called gearshift.cil.
    let tmp = std::env::temp_dir().join(format!("gearshift-policy-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let file = tmp.join("gearshift.cil");
    let out = std::fs::write(&file, POLICY_CIL)
        .with_context(|| format!("cannot write {}", file.display()))
        .and_then(|()| {
            std::process::Command::new("semodule")
                .arg("-i")
                .arg(&file)
                .output()
                .context("cannot run semodule (install policycoreutils)")
        });
    let _ = std::fs::remove_dir_all(&tmp);
    let out = out?;
    if !out.status.success() {
        anyhow::bail!(
            "semodule -i {} failed: {} (the policy needs Debian trixie's refpolicy or newer: container_domain)",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dir = copy.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(copy, POLICY_CIL).with_context(|| format!("cannot write {}", copy.display()))?;
    Ok(PolicyInstall::Installed)
}

/// The `selinux` line: enforcing with the gearshift policy loaded, permissive, or disabled.
pub fn check() -> Check {
    if mode() != "disabled" && !policy_loaded() {
        return Check::absent(
            "selinux",
            true,
            format!(
                "{}, but the gearshift policy (gear_t, gear_file_t) is not loaded",
                mode()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_label_keeps_user_and_role() {
        assert_eq!(
            process_label("unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023\0", "s0:c1,c2"),
            "unconfined_u:unconfined_r:gear_t:s0:c1,c2"
        );
        assert_eq!(
            process_label("system_u:system_r:initrc_t:s0", "s0:c0,c5"),
            "system_u:system_r:gear_t:s0:c0,c5"
        );
        assert_eq!(process_label("", "s0:c0,c5"), "system_u:system_r:gear_t:s0:c0,c5");
        assert_eq!(
            process_label("kernel\n", "s0:c0,c5"),
            "system_u:system_r:gear_t:s0:c0,c5"
        );
    }

    #[test]
    fn file_label_and_mount_option() {
        assert_eq!(file_label("s0:c3,c9"), "system_u:object_r:gear_file_t:s0:c3,c9");
        if enabled() {
            assert_eq!(
                mount_option("s0:c3,c9"),
                ",rootcontext=\"system_u:object_r:gear_file_t:s0:c3,c9\""
            );
        } else {
            assert_eq!(mount_option("s0:c3,c9"), "");
        }
    }
}
