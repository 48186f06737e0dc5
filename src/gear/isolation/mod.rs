//! One module per kernel mechanism; `gear::spawn` applies them in order. Each mechanism also
//! owns its `check()` for `gearshift doctor` (the shared report type is in `check`).

pub mod caps;
pub mod cgroup;
pub mod check;
#[cfg(test)]
mod confine_cost;
pub mod landlock;
pub mod mountinfo;
pub mod mounts;
pub mod namespaces;
pub mod netcmd;
pub mod network;
pub mod quota;
pub mod rlimits;
pub mod seccomp;
pub mod selinux;
pub mod tc;
