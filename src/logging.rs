//! Where log lines go. Operational logs (target anything but `berth::access`) go to stderr as
//! they happen, filtered by `RUST_LOG`. The access log (`server.access_log: true`, one line per
//! request) goes to stdout through a writer thread that batches lines into large writes: the
//! proxy only queues a line, so a slow terminal or log pipe never stalls a request, and at high
//! request rates the log costs one `write` per batch instead of one per request. The queue is
//! bounded; when stdout cannot keep up, lines are dropped rather than slowing traffic.

use std::io::{BufWriter, IsTerminal};
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The tracing target of access-log events; `RUST_LOG` does not filter it.
pub const ACCESS_TARGET: &str = "berth::access";

/// Used when `RUST_LOG` is unset: Pingora logs every failed upstream connection at error level,
/// which berth already reports as metrics and retries.
const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn";

/// Bytes the writer thread gathers before it writes; it also writes whenever the queue empties.
const ACCESS_BUFFER_BYTES: usize = 64 * 1024;

/// Keeps the access-log writer thread alive; taken by [`flush`] before the process exits.
static ACCESS_WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let operational = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter.and(filter_fn(|meta| meta.target() != ACCESS_TARGET)));

    let (writer, guard) = NonBlockingBuilder::default()
        .thread_name("berth-access-log")
        .finish(BufWriter::with_capacity(
            ACCESS_BUFFER_BYTES,
            std::io::stdout(),
        ));
    let access = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .with_filter(Targets::new().with_target(ACCESS_TARGET, LevelFilter::INFO));
    *ACCESS_WRITER.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);

    tracing_subscriber::registry()
        .with(operational)
        .with(access)
        .init();
}

/// Writes out queued access-log lines. `std::process::exit` runs no destructors, so every exit
/// path calls this first; later access-log lines are dropped.
pub fn flush() {
    drop(
        ACCESS_WRITER
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(),
    );
}
