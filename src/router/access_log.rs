//! Where the router's per-request access-log lines go.

/// Receives one access-log line per request, for the daemon to write to the app's log.
pub trait AccessLog: Send + Sync {
    /// `app` is empty for unknown hosts.
    fn log(&self, app: &str, line: &str);
    /// False skips formatting lines altogether.
    fn enabled(&self) -> bool {
        true
    }
}
