//! Everything about SSH: gearshift's own sshd, its login user, the keys of users, who a key
//! is (`auth`), sshd's key lookup (`authkeys`), the forced command (`entry`), the strict grammar
//! of what a client may ask (`command`), and the daemon's worker that runs one request.

pub mod auth;
pub mod authkeys;
pub mod command;
pub mod entry;
pub mod key;
pub mod login_user;
pub mod sshd;
pub mod user;
pub mod words;
pub mod worker;
