//! caps (todo)
