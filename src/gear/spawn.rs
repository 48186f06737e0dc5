//! spawn (todo)
