//! mounts (todo)
