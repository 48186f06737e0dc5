//! Running the host's network tools (ip, bridge, tc, nft) with errors that say what failed
//! and what to install, and the pieces of doctor's probe of them that `network` and `tc`
//! share (the probe script's step helper, its results, their details and fixes).

use super::check::is_root;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
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

/// One probe result per name: (exit code, first line of output).
pub type ProbeResults = BTreeMap<String, (i32, String)>;

/// The probe script's helper: each step prints `NAME<TAB>RC<TAB>OUTPUT` on one line.
pub const PROBE_STEP: &str = r#"
p() { n=$1; shift; o=$("$@" 2>&1 </dev/null); r=$?; printf '%s\t%s\t%s\n' "$n" "$r" "$(printf '%s\n' "$o" | head -n 1 | tr '\t' ' ')"; }
"#;

/// Parses the probe script's output into name -> (rc, output).
pub fn parse_probe_output(text: &str) -> ProbeResults {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let name = f.next()?.to_string();
            let rc = f.next()?.trim().parse().ok()?;
            Some((name, (rc, f.next().unwrap_or("").trim().to_string())))
        })
        .collect()
}

/// Turns one probe result into a short detail (for failures: the tool's own message).
pub fn probe_detail(res: Option<&(i32, String)>, what: &str) -> std::result::Result<String, String> {
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
pub fn probe_fix(err: &str, (kernel_option, package): (&str, &str)) -> String {
    if err == "tool not installed" {
        package.to_string()
    } else if err.contains("not permitted") && !is_root() {
        "run `gearshift doctor` as root".to_string()
    } else {
        format!("use a kernel with {kernel_option}")
    }
}
