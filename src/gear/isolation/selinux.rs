//! selinux (todo)
