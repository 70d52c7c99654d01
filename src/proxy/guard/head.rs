//! [`HeadGuard`]: the stream Pingora reads an HTTP/1 connection through. It holds each request
//! head back until it is complete, within the listener's size and time limits, and answers
//! 431 or 408 itself when it is not.
//!
//! The guard knows where a head starts from its owner: the keep-alive loop calls
//! [`next_request`] once the previous request is over (body drained), and the proxy calls
//! [`HeadGuard::head_parsed`] once Pingora parsed a head (everything after it is body). Between
//! those two, bytes pass straight through.
//!
//! Pingora may hold bytes of the next request that it read with the previous one's body
//! (pipelining). The guard then sees the rest of that head, not its start: those bytes count
//! towards the limits, the ones Pingora holds (at most one read) do not, and empty lines the
//! guard sees before anything else are handed over at once, since they may end a head whose
//! start Pingora holds.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BufMut, BytesMut};
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant as TimerInstant, Sleep};

use super::Listener;
use crate::runtime::access_log;

/// Largest single read from the client while a head is held back.
const READ_CHUNK: usize = 16 * 1024;

/// Room made in the head buffer before a read: most heads fit, and an idle connection keeps
/// no more than this.
const READ_RESERVE: usize = 4 * 1024;

/// After a refusal, how long the guard keeps reading (and discarding) what the client still
/// sends before closing: closing with unread data would reset the connection, and the client
/// could lose the answer before reading it (nginx's `lingering_close`).
const LINGER: Duration = Duration::from_secs(2);

const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 40\r\nConnection: close\r\n\r\n\
berth: the request head is too large\r\n\r\n";

const TOO_SLOW: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 43\r\nConnection: close\r\n\r\n\
berth: the request head did not come in time\n";

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Holding back a request head until it is complete.
    Head,
    /// Between a parsed head and the end of its request: bytes pass through.
    Body,
    /// Answering a refused head, then lingering; `written` bytes of the answer are out.
    Refusing {
        answer: &'static [u8],
        written: usize,
        shut: bool,
    },
    /// Nothing more is read: Pingora sees the end of the stream.
    Closed,
}

/// What the timer is running for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    None,
    /// The whole head must arrive before it.
    Head,
    /// A kept-alive connection must start its next request before it.
    Idle,
    /// The end of the linger after a refusal.
    Linger,
}

pub(super) struct HeadGuard {
    inner: Stream,
    listener: Arc<Listener>,
    mode: Mode,
    /// Read from the client, not yet handed to Pingora.
    pending: BytesMut,
    /// How many bytes at the front of `pending` Pingora may have now.
    deliverable: usize,
    /// Bytes of the current head read from the client so far.
    seen: usize,
    /// The search for the end of the head resumes here in `pending`, so a head trickled in
    /// line by line is not searched from its start on every read.
    scanned: usize,
    /// Something other than an empty line has arrived for this head.
    started: bool,
    /// Pingora holds no byte of this head (it is a connection's first): empty lines before it
    /// stay with the head, rather than being handed over early.
    fresh: bool,
    head_started: Instant,
    /// What `due` is for.
    deadline: Deadline,
    /// When the current deadline passes. The timer is moved only when it would otherwise fire
    /// after `due`; one that fires early is moved on to `due` then. A keep-alive connection
    /// thus touches the timer once per `keepalive_timeout`, not twice per request.
    due: TimerInstant,
    timer: Pin<Box<Sleep>>,
    /// Set (through a shared reference) once Pingora parsed the head.
    parsed: AtomicBool,
}

impl std::fmt::Debug for HeadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadGuard")
            .field("inner", &self.inner)
            .field("mode", &self.mode)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

/// Where the head in `buf` ends (just past its empty line), searching from `from`. httparse
/// also ends lines with a bare LF, so `\n\n` ends a head as `\n\r\n` does.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(at) = buf[i..].iter().position(|&b| b == b'\n') {
        let lf = i + at;
        match buf.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r') if buf.get(lf + 2) == Some(&b'\n') => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

impl HeadGuard {
    /// `accepted`: when the connection was accepted, which the first head's deadline counts
    /// from.
    pub(super) fn new(inner: Stream, listener: Arc<Listener>, accepted: Instant) -> HeadGuard {
        let due = TimerInstant::from_std(accepted + listener.limits.request_header_timeout);
        HeadGuard {
            inner,
            listener,
            mode: Mode::Head,
            pending: BytesMut::new(),
            deliverable: 0,
            seen: 0,
            scanned: 0,
            started: false,
            fresh: true,
            head_started: accepted,
            // A new connection's first head is timed from the connection's start, as nginx
            // times `client_header_timeout`: connecting and sending nothing is not free.
            deadline: Deadline::Head,
            due,
            timer: Box::pin(tokio::time::sleep_until(due)),
            parsed: AtomicBool::new(false),
        }
    }

    /// Pingora has parsed a request head: until [`next_request`], bytes pass through.
    pub(super) fn head_parsed(&self) {
        self.parsed.store(true, Ordering::Relaxed);
    }

    fn arm(&mut self, deadline: Deadline, due: TimerInstant) {
        self.deadline = deadline;
        self.due = due;
    }

    /// Whether `due` has passed; if not, the task is woken when it does.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.due < self.timer.deadline() {
            self.timer.as_mut().reset(self.due);
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.timer.deadline() >= self.due {
                return true;
            }
            self.timer.as_mut().reset(self.due);
        }
    }

    /// The previous request is over: what follows is the next head. Bytes already read past
    /// the previous request are its start.
    fn start_next_head(&mut self) {
        self.parsed.store(false, Ordering::Relaxed);
        if self.mode != Mode::Body && self.mode != Mode::Head {
            return;
        }
        self.mode = Mode::Head;
        self.deliverable = 0;
        self.seen = self.pending.len();
        self.scanned = 0;
        self.started = false;
        self.fresh = false;
        if self.seen > 0 {
            self.head_begins();
        } else {
            let idle = self.listener.limits.keepalive_timeout;
            self.arm(Deadline::Idle, TimerInstant::now() + idle);
        }
    }

    /// The first bytes of a head are here: it must be complete within the header timeout.
    fn head_begins(&mut self) {
        let now = TimerInstant::now();
        self.head_started = now.into_std();
        let timeout = self.listener.limits.request_header_timeout;
        self.arm(Deadline::Head, now + timeout);
    }

    fn refuse(&mut self, code: u16, answer: &'static [u8]) {
        let peer = self
            .inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        let (method, target) = request_line(&self.pending);
        access_log::record(&access_log::Entry {
            client: peer.as_ref().map(|p| p as &dyn std::fmt::Display),
            method,
            host: None,
            uri: &target,
            status: code,
            aborted: false,
            service: None,
            backend: None,
            duration: self.head_started.elapsed(),
        });
        self.listener.refused_request(code);
        self.pending = BytesMut::new();
        self.deliverable = 0;
        self.mode = Mode::Refusing {
            answer,
            written: 0,
            shut: false,
        };
        self.arm(Deadline::Linger, TimerInstant::now() + LINGER);
    }

    /// Writes the refusal, closes the write side, and reads what the client still sends until
    /// it closes too or the linger ends; then reports the end of the stream.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.expired(cx) {
                self.mode = Mode::Closed;
                return Poll::Ready(Ok(()));
            }
            let Mode::Refusing {
                answer,
                written,
                shut,
            } = &mut self.mode
            else {
                return Poll::Ready(Ok(()));
            };
            if *written < answer.len() {
                match Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => *written += n,
                    Poll::Ready(_) => self.mode = Mode::Closed,
                    Poll::Pending => return Poll::Pending,
                }
            } else if !*shut {
                match Pin::new(&mut self.inner).poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => *shut = true,
                    Poll::Ready(Err(_)) => self.mode = Mode::Closed,
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                let mut sink = [0u8; 4096];
                let mut buf = ReadBuf::new(&mut sink);
                match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                    Poll::Ready(_) => self.mode = Mode::Closed,
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
    }

    /// Head mode: decides what of `pending` Pingora may have, or reads more, or refuses.
    /// `Ready` means: look at `deliverable` and `mode` again.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let max = self.listener.limits.max_request_header_size;
        let blank = if self.started {
            0
        } else {
            self.pending
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count()
        };
        if blank > 0 && !self.fresh {
            self.deliverable = blank;
            return Poll::Ready(Ok(()));
        }
        self.started |= blank < self.pending.len();
        if self.started {
            let from = self.scanned.max(blank).min(self.pending.len());
            if let Some(end) = head_end(&self.pending, from) {
                self.deliverable = end;
                return Poll::Ready(Ok(()));
            }
            self.scanned = self.pending.len().saturating_sub(2);
        }
        if self.seen > max {
            self.refuse(431, TOO_LARGE);
            return Poll::Ready(Ok(()));
        }
        let room = (max + 1 - self.seen).clamp(1, READ_CHUNK);
        // Read straight into the head buffer's spare room: no zeroed scratch chunk, no copy.
        self.pending.reserve(room.min(READ_RESERVE));
        let read = tokio_util::io::poll_read_buf(
            Pin::new(&mut self.inner),
            cx,
            &mut (&mut self.pending).limit(room),
        );
        match read {
            Poll::Ready(Ok(0)) => {
                // The client closed. Whatever it sent of a head is no request: Pingora gets
                // nothing and closes quietly.
                self.pending.clear();
                self.mode = Mode::Closed;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(n)) => {
                if self.seen == 0 && self.deadline == Deadline::Idle {
                    self.head_begins();
                }
                self.seen += n;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.deadline == Deadline::None || !self.expired(cx) {
                    return Poll::Pending;
                }
                if self.seen == 0 {
                    // Idle, or connected and silent: close without an answer, as nginx does.
                    self.mode = Mode::Closed;
                } else {
                    self.refuse(408, TOO_SLOW);
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl HeadGuard {
    /// Waits until the connection's first request head is complete (`true`), or the
    /// connection is over (`false`: the client closed or sent nothing in time, or the head was
    /// refused and answered). Until then Pingora has no session for the connection, which
    /// costs it far more memory than the guard's buffer.
    pub(super) async fn first_head(&mut self) -> bool {
        std::future::poll_fn(|cx| loop {
            match self.mode {
                Mode::Head if self.deliverable > 0 => return Poll::Ready(true),
                Mode::Head => match self.poll_head(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Pending => return Poll::Pending,
                },
                Mode::Refusing { .. } => {
                    return self.poll_refusal(cx).map(|_| false);
                }
                Mode::Body => return Poll::Ready(true),
                Mode::Closed => return Poll::Ready(false),
            }
        })
        .await
    }
}

/// The stream back from Pingora after a finished request, its guard told that the next
/// request starts now. `None` if it is not a guard (it always is).
pub(super) fn next_request(stream: Stream) -> Option<Stream> {
    let mut guard = stream.into_any().downcast::<HeadGuard>().ok()?;
    guard.start_next_head();
    Some(guard)
}

/// The method and target of a head's request line, as far as they arrived (`-` otherwise),
/// for the access log.
fn request_line(head: &[u8]) -> (&str, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_ascii());
    let method = words
        .next()
        .and_then(|w| std::str::from_utf8(w).ok())
        .filter(|m| m.bytes().all(|b| b.is_ascii_alphabetic()))
        .unwrap_or("-");
    let target = words
        .next()
        .map_or_else(|| "-".into(), |t| String::from_utf8_lossy(t).into_owned());
    (method, target)
}

impl AsyncRead for HeadGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parsed.swap(false, Ordering::Relaxed) && this.mode == Mode::Head {
            this.mode = Mode::Body;
            this.deadline = Deadline::None;
        }
        loop {
            if this.deliverable > 0 {
                let n = this.deliverable.min(out.remaining());
                out.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                this.deliverable -= n;
                this.scanned = this.scanned.saturating_sub(n);
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                Mode::Head => match this.poll_head(cx) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                },
                Mode::Body if !this.pending.is_empty() => this.deliverable = this.pending.len(),
                Mode::Body => return Pin::new(&mut this.inner).poll_read(cx, out),
                Mode::Refusing { .. } => return this.poll_refusal(cx),
                Mode::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// Everything else Pingora asks of a stream is the wrapped stream's.

#[async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadGuard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadGuard {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadGuard {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadGuard {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadGuard {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

/// No peeking: the keep-alive loop decided HTTP/1 before wrapping the stream, so nothing
/// should look for an HTTP/2 preface through the guard.
impl Peek for HeadGuard {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_first_empty_line() {
        assert_eq!(
            head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 0),
            Some(27)
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nbody", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), None);
        // Resuming just before the end still finds it.
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(head_end(head, head.len() - 3), Some(head.len()));
    }

    #[test]
    fn the_access_log_gets_what_arrived_of_the_request_line() {
        assert_eq!(
            request_line(b"GET /x?y HTTP/1.1\r\nX-A: b"),
            ("GET", "/x?y".to_owned())
        );
        assert_eq!(request_line(b"GE"), ("GE", "-".to_owned()));
        assert_eq!(request_line(b"\x01\x02 /"), ("-", "/".to_owned()));
        assert_eq!(request_line(b""), ("-", "-".to_owned()));
    }
}
