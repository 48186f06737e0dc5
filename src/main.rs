//! gearshift: a PaaS-in-a-box for one Linux VM, as one static binary.

mod app;
mod auth;
mod authkeys;
mod cartridge;
mod cli;
mod clock;
mod config;
mod daemon;
mod daemon_proto;
mod deploy;
mod doctor;
mod domain;
mod env_cmd;
mod frontend;
mod gear;
mod git;
mod ingear;
mod init;
mod login_user;
mod names;
mod node;
mod router;
mod ssh_command;
mod ssh_entry;
mod ssh_worker;
mod sshd;
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
