//! Operational logs (start, reloads, Docker events, backends going up and down, refused
//! configs): to stderr as they happen, filtered by `RUST_LOG`. The access log is separate
//! (see `access_log`): it goes to stdout and `RUST_LOG` does not filter it.

use std::io::IsTerminal;

/// Used when `RUST_LOG` is unset: Pingora logs every failed upstream connection at error level,
/// which berth already reports as metrics and retries.
const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn";

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
