//! Operational logs (start, reloads, Docker events, backends going up and down, refused
//! configs): to stderr as they happen, filtered by `RUST_LOG`. The access log is separate
//! (see `access_log`): it goes to stdout and `RUST_LOG` does not filter it.
//!
//! Pingora logs every failed client handshake at ERROR, once per connection. On a TLS listener
//! facing the Internet that is every scanner, every client without SNI and every browser that
//! closes a speculative connection, so the operator's real errors would drown. Those lines
//! are taken out of the log and counted instead (`berth_tls_handshake_failures_total{reason}`,
//! `berth_h2_handshake_failures_total`), whatever `RUST_LOG` says; every other Pingora error
//! stays. An upstream fix would be a hook on Pingora's listener for failed handshakes.
//!
//! Pingora's connection pool also logs, at ERROR, a race it recovers from by itself (see
//! [`BENIGN_POOL_RACE`]); that one message is dropped too.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::metrics::{self, HandshakeFailure};

/// Used when `RUST_LOG` is unset: Pingora logs every failed upstream connection at error level,
/// which berth already reports as metrics and retries.
const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn";

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // One filter, so its level hint is `RUST_LOG`'s (the noise filters have none of
        // their own): Pingora's `log::debug!`/`trace!` calls then stop at the `log` crate's
        // level check instead of crossing the bridge into tracing on every request.
        .with_filter(filter.and(WithoutHandshakeNoise).and(NoBenignPoolRace));
    tracing_subscriber::registry()
        .with(CountHandshakeFailures.with_filter(PingoraErrors))
        .with(log)
        .init();
}

/// A failed client handshake that Pingora logged.
#[derive(Debug, PartialEq, Eq)]
enum Noise {
    Tls(HandshakeFailure),
    H2,
}

/// Recognises Pingora's handshake failure lines (`pingora-core` 0.9.1,
/// `services/listening.rs` and `apps/mod.rs`).
fn handshake_noise(target: &str, message: &str) -> Option<Noise> {
    match target {
        "pingora_core::services::listening" => {
            if message == "Downstream handshake timeout" {
                Some(Noise::Tls(HandshakeFailure::Timeout))
            } else if message.starts_with("Downstream handshake error") {
                Some(Noise::Tls(failure_reason(message)))
            } else {
                None
            }
        }
        "pingora_core::apps" if message.starts_with("H2 handshake error") => Some(Noise::H2),
        _ => None,
    }
}

/// The reason in a handshake error's text (rustls' and the OS's words).
fn failure_reason(message: &str) -> HandshakeFailure {
    let has = |words: &[&str]| words.iter().any(|w| message.contains(w));
    if has(&["no server certificate chain resolved"]) {
        HandshakeFailure::NoCertificate
    } else if has(&["received fatal alert"]) {
        HandshakeFailure::ClientAlert
    } else if has(&[
        "peer is incompatible",
        "peer misbehaved",
        "invalid message",
        "corrupt message",
    ]) {
        HandshakeFailure::Protocol
    } else if has(&["reset by peer", "Broken pipe", "eof", "EOF", "closed"]) {
        HandshakeFailure::Closed
    } else {
        HandshakeFailure::Other
    }
}

/// Handshake noise, if `event` is.
fn noise(event: &Event<'_>) -> Option<Noise> {
    let meta = event.metadata();
    if *meta.level() != Level::ERROR {
        return None;
    }
    let (target, message) = target_and_message(event);
    handshake_noise(target.as_deref().unwrap_or(meta.target()), &message)
}

/// An event's formatted `message`, and the target of the `log` record it came from (Pingora
/// logs through `log`: its records arrive as events of target `log`, with the record's own
/// target in a `log.target` field).
fn target_and_message(event: &Event<'_>) -> (Option<String>, String) {
    #[derive(Default)]
    struct Fields {
        target: Option<String>,
        message: String,
    }
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.message = format!("{value:?}");
            }
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "message" => self.message = value.to_owned(),
                "log.target" => self.target = Some(value.to_owned()),
                _ => {}
            }
        }
    }
    let mut fields = Fields::default();
    event.record(&mut fields);
    (fields.target, fields.message)
}

/// Pingora's errors: the only events that can be handshake noise. (`enabled` sees the `log`
/// record's own target.)
struct PingoraErrors;

impl<S> Filter<S> for PingoraErrors {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        *meta.level() == Level::ERROR && meta.target().starts_with("pingora_core::")
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::ERROR)
    }
}

/// Counts the handshake failures among Pingora's errors.
struct CountHandshakeFailures;

impl<S: Subscriber> Layer<S> for CountHandshakeFailures {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        match noise(event) {
            Some(Noise::Tls(reason)) => metrics::tls_handshake_failed(reason),
            Some(Noise::H2) => metrics::h2_handshake_failed(),
            None => {}
        }
    }
}

/// Lets every event through except handshake noise.
struct WithoutHandshakeNoise;

impl<S> Filter<S> for WithoutHandshakeNoise {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        noise(event).is_none()
    }

    /// No limit of its own, so the `RUST_LOG` filter's level stays the process's maximum
    /// (and `log` macros below it cost nothing).
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
}

/// Pingora's connection pool logs this at ERROR when it takes a pooled upstream connection
/// while the task watching that idle connection still holds it: Pingora drops that connection
/// and opens another, and the request succeeds. Under ordinary keep-alive load it comes several
/// times a second, so an ERROR line would mean nothing; it is dropped, and only this exact
/// message (the same module's other errors are real).
const BENIGN_POOL_RACE: &str = "failed to acquire reusable stream";

/// Lets every event through except Pingora's [`BENIGN_POOL_RACE`].
struct NoBenignPoolRace;

impl<S> Filter<S> for NoBenignPoolRace {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR {
            return true;
        }
        let (target, message) = target_and_message(event);
        let target = target.as_deref().unwrap_or(meta.target());
        !(message == BENIGN_POOL_RACE && target.starts_with("pingora_core"))
    }

    /// No limit of its own, like [`WithoutHandshakeNoise`].
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
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

    #[test]
    fn handshake_failures_are_recognised_and_other_errors_are_not() {
        let listening = "pingora_core::services::listening";
        let tls = |message: &str| handshake_noise(listening, message);
        assert_eq!(
            tls(
                "Downstream handshake error from 127.0.0.1:52588:  TLSHandshakeFailure context: \
                 tls connect error: unexpected error: no server certificate chain resolved"
            ),
            Some(Noise::Tls(HandshakeFailure::NoCertificate))
        );
        assert_eq!(
            tls(
                "Downstream handshake error from 127.0.0.1:1:  TLSHandshakeFailure context: tls \
                 connect error: peer is incompatible: SignatureAlgorithmsExtensionRequired"
            ),
            Some(Noise::Tls(HandshakeFailure::Protocol))
        );
        assert_eq!(
            tls(
                "Downstream handshake error from 127.0.0.1:1:  TLSHandshakeFailure context: tls \
                 connect error: received fatal alert: UnknownCA"
            ),
            Some(Noise::Tls(HandshakeFailure::ClientAlert))
        );
        assert_eq!(
            tls("Downstream handshake timeout"),
            Some(Noise::Tls(HandshakeFailure::Timeout))
        );
        assert_eq!(
            handshake_noise(
                "pingora_core::apps",
                "H2 handshake error  HandshakeError context: while h2 handshaking with client \
                 cause: Broken pipe (os error 32)"
            ),
            Some(Noise::H2)
        );
        assert_eq!(tls("Accept() failed Too many open files"), None);
        assert_eq!(
            handshake_noise("pingora_proxy", "Downstream handshake error"),
            None
        );
    }
}
