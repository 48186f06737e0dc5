//! A pushed Procfile: parsed without a panic, and every command split into an argv.
#![no_main]
use gearshift_fuzz::ingear::procfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(procs) = procfile::parse(text) {
        for p in procs {
            let _ = procfile::shell_argv(&p.command);
        }
    }
    let _ = procfile::shell_argv(text);
});
