//! seccomp (todo)
