//! berth's connection layer in front of Pingora's HTTP loop, one per listener: what Pingora
//! 0.9 does not bound per connection, berth bounds here, before Pingora sees a byte.
//!
//! - **Connections**: at most `max_connections` open per listener; one more is closed at once
//!   and counted (`berth_listener_connections_refused_total`), as nginx does when it runs out
//!   of `worker_connections`.
//! - **Request heads** (`head::HeadGuard`): Pingora accepts up to 1 MiB of request head (a
//!   constant) and times out each read, not the whole head, so a client trickling a header line
//!   every few seconds holds a connection and its buffer for minutes. The guard reads each head
//!   into its own buffer and hands it to Pingora only once it is complete: more than
//!   `max_request_header_size` bytes is answered 431, a head not complete within
//!   `request_header_timeout` is answered 408, and an idle keep-alive connection is closed after
//!   `keepalive_timeout`. Pingora then closes without a word of its own, because it has read
//!   nothing of that request.
//! - **HTTP/1 loop**: berth runs the keep-alive loop itself (`Guarded::serve_h1`) because the
//!   guard must learn when one request ends, body drained, and the next head begins; Pingora's
//!   own loop offers no hook there. HTTP/2 connections go to Pingora's loop unchanged: h2 has
//!   its own header-list limit (set from `max_request_header_size`) and idle timeout.
//!
//! The layer takes whatever stream Pingora accepted, plain TCP or TLS after the handshake.

mod head;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;

use crate::metrics::{ListenerSeries, Metrics};
use head::HeadGuard;

/// The first bytes of every HTTP/2 connection (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What one listener allows a client connection.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_request_header_size: usize,
    pub request_header_timeout: Duration,
    /// Zero: every response closes its connection.
    pub keepalive_timeout: Duration,
    pub max_connections: usize,
}

/// What the listener's connections share: its limits, its count of open connections and where
/// refusals are reported.
struct Listener {
    limits: Limits,
    open: AtomicUsize,
    series: Option<ListenerSeries>,
    metrics: Option<Arc<Metrics>>,
}

impl Listener {
    /// A request the guard refused itself (408, 431): counted as unrouted.
    fn refused_request(&self, code: u16) {
        if let Some(metrics) = &self.metrics {
            metrics.unrouted(code);
        }
    }
}

/// A place among a listener's open connections, given back when the connection ends.
struct Slot<'a>(&'a Listener);

impl<'a> Slot<'a> {
    fn take(listener: &'a Listener) -> Option<Slot<'a>> {
        let taken = listener
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < listener.limits.max_connections).then_some(open + 1)
            })
            .is_ok();
        if let Some(series) = &listener.series {
            if taken {
                series.open.inc();
            } else {
                series.refused.inc();
            }
        }
        taken.then(|| Slot(listener))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(series) = &self.0.series {
            series.open.dec();
        }
    }
}

/// A listener's HTTP application (Pingora's proxy) behind berth's connection limits.
pub struct Guarded<A> {
    app: Arc<A>,
    listener: Arc<Listener>,
}

impl<A: HttpServerApp> Guarded<A> {
    /// `name` is the listener's, for its metrics; `metrics` is `None` when metrics are off.
    pub fn new(app: A, name: &str, limits: Limits, metrics: Option<Arc<Metrics>>) -> Guarded<A> {
        Guarded {
            app: Arc::new(app),
            listener: Arc::new(Listener {
                limits,
                open: AtomicUsize::new(0),
                series: metrics.as_ref().map(|m| m.listener(name)),
                metrics,
            }),
        }
    }
}

impl<A> Guarded<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Whether the client speaks HTTP/2: ALPN says so on TLS; on a plain `h2c` listener the
    /// connection starts with the preface. `None`: the client sent no request in time.
    async fn speaks_h2(&self, stream: &mut Stream) -> Option<bool> {
        if stream.get_ssl_digest().is_some() {
            return Some(stream.selected_alpn_proto() == Some(ALPN::H2));
        }
        if !self.app.server_options().is_some_and(|o| o.h2c) {
            return Some(false);
        }
        // Pingora peeks for the preface without a deadline: a client that connects and sends
        // nothing would hold the connection forever.
        let mut preface = [0u8; H2_PREFACE.len()];
        let timeout = self.listener.limits.request_header_timeout;
        match tokio::time::timeout(timeout, stream.try_peek(&mut preface)).await {
            Ok(Ok(true)) => Some(preface == H2_PREFACE),
            Ok(Ok(false)) => Some(false),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Pingora's HTTP/1 keep-alive loop, with the guard told where each request ends.
    async fn serve_h1(&self, stream: Stream, accepted: Instant, shutdown: &ShutdownWatch) {
        let mut guard = HeadGuard::new(stream, Arc::clone(&self.listener), accepted);
        let mut stopping = shutdown.clone();
        tokio::select! {
            complete = guard.first_head() => if !complete {
                return;
            },
            // Like Pingora's idle keep-alive connections, one still sending its first head
            // ends with the service.
            _ = stopping.changed() => return,
        }
        let mut session = ServerSession::new_http1(Box::new(guard));
        // The guard times idle connections and slow heads; Pingora's own keep-alive timer
        // (per read, 60 s for the first request, none after) would only interfere.
        let keepalive = !(self.listener.limits.keepalive_timeout.is_zero() || *shutdown.borrow());
        session.set_keepalive(keepalive.then_some(0));
        let mut reused = self.app.process_new_http(session, shutdown).await;
        while let Some(done) = reused {
            let (stream, settings) = done.consume();
            let Some(stream) = head::next_request(stream) else {
                return;
            };
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            reused = self.app.process_new_http(session, shutdown).await;
        }
    }
}

#[async_trait]
impl<A> ServerApp for Guarded<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Dropping the stream closes it.
        let _slot = Slot::take(&self.listener)?;
        let accepted = Instant::now();
        if self.speaks_h2(&mut stream).await? {
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        self.serve_h1(stream, accepted, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

/// Tells the guard of an HTTP/1 session that Pingora has parsed a request head, so the bytes
/// that follow are that request's body (or a tunnel after an upgrade), not the next head. The
/// proxy calls it first thing for every request: a head Pingora parsed from bytes it had
/// already read (a pipelined request) never passed the guard's own end-of-head check.
pub fn request_head_parsed(session: &ServerSession) {
    if let Some(guard) = session
        .stream()
        .and_then(|s| s.as_any().downcast_ref::<HeadGuard>())
    {
        guard.head_parsed();
    }
}
