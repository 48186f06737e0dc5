//! What Landlock and the seccomp filters add to a gear process's start, measured in one run
//! against the same fork+exec without them (`make bench` runs it: an ignored test, since it
//! times rather than asserts; issue 14 asks for the figure).

use super::{caps, landlock, seccomp};
use std::path::Path;
use std::time::Instant;

/// Forks, confines the child as `spawn.rs` does (no_new_privs, Landlock on `home`, the three
/// seccomp filters) when `confine`, execs /bin/true and waits: the wall time in microseconds.
fn one_start(home: &Path, confine: bool) -> f64 {
    let t = Instant::now();
    // Built in the parent, per start, as spawn.rs builds them (they allocate).
    let filters = confine.then(|| seccomp::build().expect("seccomp filters build"));
    let prog = c"/bin/true";
    let argv = [prog.as_ptr(), std::ptr::null()];
    // SAFETY: the child only confines itself and execs (or _exits); the test is its own process.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            if let Some(f) = &filters {
                let ok = caps::no_new_privs().is_ok() && landlock::apply(home).is_ok() && seccomp::apply(f).is_ok();
                if !ok {
                    // SAFETY: leave the forked child at once.
                    unsafe { libc::_exit(2) };
                }
            }
            // SAFETY: argv is a null-terminated array of C strings that outlive the call.
            unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
            // SAFETY: as above; the exec failed.
            unsafe { libc::_exit(3) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).expect("waitpid");
            assert!(
                matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)),
                "a confined /bin/true did not exit 0: {st:?}"
            );
        }
    }
    t.elapsed().as_secs_f64() * 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement for make bench: cargo test --release --bin gearshift confine_cost -- --ignored --nocapture"]
fn confine_cost() {
    let n: usize = std::env::var("N").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let home = Path::new("/var/tmp").join(format!("gearshift-confine-cost-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let (mut plain, mut confined) = (Vec::new(), Vec::new());
    // Alternated, so both see the same machine.
    for _ in 0..n {
        plain.push(one_start(&home, false));
        confined.push(one_start(&home, true));
    }
    let _ = std::fs::remove_dir_all(&home);
    let (p, c) = (median(plain), median(confined));
    println!(
        "fork+exec /bin/true, median of {n} each: plain {:.0} us, with no_new_privs + Landlock ({}) + seccomp (3 filters, built per start) {:.0} us: +{:.0} us",
        p,
        landlock::abi().map_or_else(|e| format!("unavailable: {e}"), |v| format!("ABI {v}")),
        c,
        c - p
    );
}
