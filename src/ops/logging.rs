//! Operational logs (start, reloads, Docker events, backends going up and down, refused
//! configs): to stderr as they happen, filtered by `RUST_LOG`. The access log is separate
//! (see `access_log`): it goes to stdout and `RUST_LOG` does not filter it.

use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Used when `RUST_LOG` is unset: Pingora logs every failed upstream connection at error level,
/// which berth already reports as metrics and retries.
const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn";

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter)
        .with_filter(NoBenignPoolRace);
    tracing_subscriber::registry().with(stderr).init();
}

/// Pingora's connection pool logs this at ERROR when it takes a pooled upstream connection
/// while the task watching that idle connection still holds it: Pingora drops that connection
/// and opens another, and the request succeeds. Under ordinary keep-alive load it comes several
/// times a second, so an ERROR line would mean nothing; it is dropped, and only this exact
/// message (the same module's other errors are real).
const BENIGN_POOL_RACE: &str = "failed to acquire reusable stream";

struct NoBenignPoolRace;

impl<S> Filter<S> for NoBenignPoolRace {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR {
            return true;
        }
        let mut seen = Seen::default();
        event.record(&mut seen);
        // Pingora logs through the `log` crate: its events carry the real target in a
        // `log.target` field, under the bridge's own metadata.
        let target = seen.log_target.as_deref().unwrap_or(meta.target());
        !(seen.benign && target.starts_with("pingora_core"))
    }
}

/// What the filter needs of an event's fields.
#[derive(Default)]
struct Seen {
    /// The message is [`BENIGN_POOL_RACE`].
    benign: bool,
    log_target: Option<String>,
}

impl Visit for Seen {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.benign = value == BENIGN_POOL_RACE,
            "log.target" => self.log_target = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.benign = format!("{value:?}") == BENIGN_POOL_RACE,
            "log.target" => self.log_target = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Through the real `log` bridge, as Pingora's records arrive. The subscriber is the
    /// process-wide one: no other test here installs one.
    #[test]
    fn only_the_benign_pool_race_is_dropped() {
        let out = Captured::default();
        let writer = out.clone();
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || writer.clone())
                    .with_ansi(false)
                    .with_filter(NoBenignPoolRace),
            )
            .try_init()
            .unwrap();
        log::error!(target: "pingora_core::connectors", "failed to acquire reusable stream");
        log::error!(target: "pingora_core::connectors", "a real connector error");
        tracing::error!(target: "berth", "failed to acquire reusable stream");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("a real connector error"), "{text}");
        assert!(
            lines[1].contains("berth: failed to acquire reusable stream"),
            "{text}"
        );
    }
}
