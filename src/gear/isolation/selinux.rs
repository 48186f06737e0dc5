//! SELinux labels per gear: the process label is written to /proc/thread-self/attr/exec before
//! exec, files carry the same MCS pair in `security.selinux`. Where SELinux is off, nothing is
//! written. (The policy module and its proof live with the SELinux issue.)

use anyhow::{Context, Result};
use std::path::Path;

/// The gear process domain and file type from `selinux/gearshift.cil`.
pub const PROCESS_TYPE: &str = "system_u:system_r:gear_t";
pub const FILE_TYPE: &str = "system_u:object_r:gear_file_t";

/// "enforcing", "permissive" or "disabled".
pub fn mode() -> &'static str {
    match std::fs::read_to_string("/sys/fs/selinux/enforce").map(|s| s.trim().to_string()) {
        Ok(s) if s == "1" => "enforcing",
        Ok(_) => "permissive",
        Err(_) => "disabled",
    }
}

pub fn enabled() -> bool {
    mode() != "disabled"
}

/// Sets the label the next execve of this thread runs under.
pub fn set_exec_label(mcs: &str) -> Result<()> {
    if !enabled() {
        return Ok(());
    }
    let label = format!("{PROCESS_TYPE}:{mcs}");
    std::fs::write("/proc/thread-self/attr/exec", label.as_bytes())
        .with_context(|| format!("cannot set SELinux exec label {label} (is the gearshift policy installed?)"))
}

/// Labels a file or directory with the gear's file type and MCS pair.
pub fn label_file(path: &Path, mcs: &str) -> Result<()> {
    if !enabled() {
        return Ok(());
    }
    let label = format!("{FILE_TYPE}:{mcs}\0");
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
