//! The access log (`server.access_log: true`): one logfmt line per request on stdout.
//!
//! Like nginx's `access_log ... buffer= flush=`, a request only formats its line (in a
//! per-thread scratch buffer) and copies it into a shared in-memory buffer; a writer thread
//! empties that every [`FLUSH_INTERVAL`] with one large write.
//! A first version queued each line to a writer thread through a channel: the thread woke for
//! nearly every line, and the access log cost about a third of berth's CPU per request
//! (bench/RESULTS.md, "Levers"). If stdout falls so far behind that [`MAX_PENDING_BYTES`] are
//! waiting, new lines are dropped (and counted in a warning) rather than slowing traffic.

use std::cell::RefCell;
use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// How often buffered lines are written out, at most.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Unwritten bytes beyond which new lines are dropped (about 25,000 lines).
pub const MAX_PENDING_BYTES: usize = 4 << 20;

/// One request, as the `logging` phase knows it.
pub struct Entry<'a> {
    pub client: Option<&'a dyn Display>,
    pub method: &'a str,
    pub host: Option<&'a [u8]>,
    pub uri: &'a dyn Display,
    pub status: u16,
    /// The response started (the client has its status line) and then failed: `status` is
    /// what berth would have answered, and the client saw a truncated response.
    pub aborted: bool,
    pub service: Option<&'a str>,
    pub backend: Option<&'a dyn Display>,
    pub duration: Duration,
}

struct Buffer {
    pending: Mutex<Vec<u8>>,
    dropped: AtomicU64,
}

static BUFFER: OnceLock<Buffer> = OnceLock::new();

thread_local! {
    /// Each worker thread formats its line here, so the shared lock is held only for a copy.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Whether `server.access_log` turned the log on; the proxy asks before building an [`Entry`].
pub fn enabled() -> bool {
    BUFFER.get().is_some()
}

/// Starts the writer thread; until this is called, [`record`] does nothing.
pub fn enable() {
    let mut started = false;
    BUFFER.get_or_init(|| {
        started = true;
        Buffer {
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            dropped: AtomicU64::new(0),
        }
    });
    if started {
        std::thread::Builder::new()
            .name("berth-access-log".into())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flush();
            })
            .expect("spawn the access-log writer thread");
    }
}

/// Appends `entry` to the buffer.
pub fn record(entry: &Entry<'_>) {
    let Some(buffer) = BUFFER.get() else {
        return;
    };
    LINE.with_borrow_mut(|line| {
        line.clear();
        // Writing into a Vec cannot fail.
        let _ = write_line(line, entry, SystemTime::now());
        let mut pending = buffer.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING_BYTES {
            buffer.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.extend_from_slice(line);
        }
    });
}

/// Writes out everything buffered so far. The writer thread calls it periodically; exit paths
/// call it because `std::process::exit` would lose the last lines.
pub fn flush() {
    let Some(buffer) = BUFFER.get() else {
        return;
    };
    let lines = {
        let mut pending = buffer.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_empty() {
            return;
        }
        let capacity = pending.capacity().min(MAX_PENDING_BYTES);
        std::mem::replace(&mut *pending, Vec::with_capacity(capacity))
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(&lines).and_then(|()| stdout.flush()) {
        tracing::warn!("access log: writing to stdout failed: {e}");
    }
    let dropped = buffer.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        tracing::warn!("access log: dropped {dropped} lines, stdout is not keeping up");
    }
}

fn write_line(out: &mut Vec<u8>, e: &Entry<'_>, now: SystemTime) -> std::io::Result<()> {
    write!(out, "{} ", humantime::format_rfc3339_micros(now))?;
    if let Some(client) = e.client {
        write!(out, "client={client} ")?;
    }
    write!(out, "method=")?;
    write_value(out, e.method.as_bytes());
    write!(out, " host=")?;
    write_value(out, e.host.unwrap_or_default());
    write!(out, " uri=")?;
    let uri = out.len();
    write!(out, "{}", e.uri)?;
    if !is_plain(&out[uri..]) {
        let raw = out.split_off(uri);
        write_value(out, &raw);
    }
    write!(out, " status={}", e.status)?;
    if e.aborted {
        write!(out, " aborted=true")?;
    }
    if let Some(service) = e.service {
        write!(out, " service=")?;
        write_value(out, service.as_bytes());
    }
    if let Some(backend) = e.backend {
        write!(out, " backend={backend}")?;
    }
    writeln!(out, " duration_us={}", e.duration.as_micros())
}

/// Writes `value` bare when it is plain visible ASCII, else quoted with escapes, so that
/// client-controlled text (Host, URI) can neither split a line nor fake a field.
fn write_value(out: &mut Vec<u8>, value: &[u8]) {
    if is_plain(value) {
        out.extend_from_slice(value);
    } else {
        out.push(b'"');
        out.extend(value.escape_ascii());
        out.push(b'"');
    }
}

fn is_plain(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(entry: &Entry<'_>) -> String {
        let mut out = Vec::new();
        write_line(&mut out, entry, SystemTime::UNIX_EPOCH).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_routed_request_is_one_logfmt_line() {
        let client: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let backend: std::net::SocketAddr = "10.0.0.2:80".parse().unwrap();
        let uri = "/a?b=c";
        assert_eq!(
            line(&Entry {
                client: Some(&client),
                method: "GET",
                host: Some(b"api.test"),
                uri: &uri,
                status: 200,
                aborted: false,
                service: Some("api"),
                backend: Some(&backend),
                duration: Duration::from_micros(1234),
            }),
            "1970-01-01T00:00:00.000000Z client=127.0.0.1:5000 method=GET host=api.test \
             uri=/a?b=c status=200 service=api backend=10.0.0.2:80 duration_us=1234\n"
        );
    }

    #[test]
    fn an_aborted_response_says_so() {
        let uri = "/big";
        let text = line(&Entry {
            client: None,
            method: "GET",
            host: Some(b"api.test"),
            uri: &uri,
            status: 502,
            aborted: true,
            service: Some("api"),
            backend: None,
            duration: Duration::ZERO,
        });
        assert!(
            text.contains(" status=502 aborted=true service=api "),
            "{text}"
        );
    }

    fn unrouted<'a>(host: Option<&'a [u8]>, status: u16) -> Entry<'a> {
        Entry {
            client: None,
            method: "GET",
            host,
            uri: &"/",
            status,
            aborted: false,
            service: None,
            backend: None,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn client_text_cannot_break_the_line_or_fake_fields() {
        let text = line(&unrouted(Some(b"evil\" status=200\nx"), 404));
        assert_eq!(
            text,
            "1970-01-01T00:00:00.000000Z method=GET host=\"evil\\\" status=200\\nx\" uri=/ \
             status=404 duration_us=0\n"
        );
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn a_missing_host_is_an_empty_quoted_value() {
        let text = line(&unrouted(None, 400));
        assert!(text.contains(" host=\"\" "), "{text}");
    }
}
