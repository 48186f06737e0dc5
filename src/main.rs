//! gearshift: a PaaS-in-a-box for one Linux VM, as one static binary.

mod app;
mod auth;
mod cartridge;
mod cli;
mod clock;
mod config;
mod deploy;
mod doctor;
mod env_cmd;
mod gear;
mod git;
mod ingear;
mod init;
mod names;
mod node;
mod router;
mod sshkey;
mod state;
mod static_server;
mod supervisor;
mod table;
mod user;

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
