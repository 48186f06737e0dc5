//! Running the host's network tools (ip, bridge, tc, nft) with errors that say what failed
//! and what to install.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::process::{Command, Stdio};

/// Renders a command the way a shell user would type it, for error messages.
fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd`; a failure to start it or a non-zero exit becomes an error
/// "cannot {what}: `cmd` failed: stderr". Returns the command's stdout.
pub fn run(what: &str, cmd: &mut Command) -> Result<String> {
    run_with_input(what, cmd, None)
}

/// Like [`run`], feeding `input` to the command's stdin.
pub fn run_stdin(what: &str, cmd: &mut Command, input: &str) -> Result<String> {
    run_with_input(what, cmd, Some(input))
}

fn run_with_input(what: &str, cmd: &mut Command, input: Option<&str>) -> Result<String> {
    let shown = show(cmd);
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| {
        format!("cannot {what}: cannot start `{shown}` (is it installed and on PATH? iproute2 provides ip/bridge/tc, nftables provides nft)")
    })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .with_context(|| format!("cannot {what}: cannot write to `{shown}`"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("cannot {what}: waiting for `{shown}` failed"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("cannot {what}: `{shown}` failed ({}): {}", out.status, err.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
