//! gearshift: a PaaS-in-a-box for one Linux VM, as one static binary.
//!
//! ARCHITECTURE.md is the map: which part runs as root, which runs inside a gear, and the
//! path of a `git push` and of an HTTP request through them.

mod acme;
mod addon;
mod app;
mod cli;
mod clock;
mod daemon;
mod fault;
mod gear;
mod ingear;
mod names;
mod node;
mod router;
mod snapshot;
mod ssh;
mod state;
mod table;

fn main() {
    let code = match cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gearshift: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
