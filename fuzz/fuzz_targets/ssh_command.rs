//! `SSH_ORIGINAL_COMMAND` as a client sends it: the strict parser never panics, and whatever
//! argv it accepts survives quoting (as a client's shell quotes) and parsing again unchanged.
#![no_main]
use gearshift_fuzz::ssh::{command, words};
use libfuzzer_sys::fuzz_target;

/// Single quotes around every word, `'\''` for a quote inside: what `ssh HOST CMD` sends for an
/// argv quoted by a POSIX shell (words.rs's own quoter is test-only).
fn join(argv: &[String]) -> String {
    argv.iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let _ = command::parse(line);
    let _ = command::redacted(line);
    if let Ok(argv) = words::split(line) {
        let again = words::split(&join(&argv)).expect("a joined argv must split again");
        assert_eq!(again, argv, "join then split changed the argv of {line:?}");
    }
    // Any argv (ASCII without control characters, as the caller checks), quoted, splits back.
    let argv: Vec<String> = line.split('\0').map(String::from).collect();
    if argv.iter().any(|w| w.chars().any(|c| !c.is_ascii() || c.is_ascii_control())) {
        return;
    }
    let again = words::split(&join(&argv)).expect("a quoted argv must split");
    assert_eq!(again, argv, "join then split changed {argv:?}");
});
