//! One module per kernel mechanism; `gear::spawn` applies them in order.

pub mod caps;
pub mod cgroup;
pub mod landlock;
pub mod mounts;
pub mod netcmd;
pub mod network;
pub mod quota;
pub mod rlimits;
pub mod seccomp;
pub mod selinux;
pub mod tc;
