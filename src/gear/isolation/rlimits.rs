//! rlimits (todo)
