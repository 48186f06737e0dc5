//! landlock (todo)
