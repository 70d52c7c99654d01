//! The Pingora `ProxyHttp` phases: check the client (`allow`) and the request ([`hygiene`]),
//! route, pick a backend (sticky cookie, then the algorithm), retry another backend on
//! connection failure, add forwarding headers ([`forwarding`]), record metrics. In front of
//! these phases, [`guard`] bounds every connection and request head.
//!
//! A listener's TLS shows here as plain facts about the listener: whether it terminates TLS
//! (`X-Forwarded-Proto`, HSTS), whether it requires TLS 1.3, whether it only redirects to
//! HTTPS, and the ACME challenges a plain listener answers. A redirecting listener is this
//! same proxy, so its requests get the access log, the metrics and the request parsing of
//! every other listener.
//!
//! Everything here runs per request, so it reads the route table once, lock-free, and does
//! no allocation, locking or logging that a benchmark would notice.
//!
//! Once a response has started (its status line is out), a failure can no longer become an
//! error page: the connection is cut instead (HTTP/1: closed before the body's end; HTTP/2:
//! the stream reset), so the client sees a truncated response, and the request is recorded
//! with the status berth would have answered and `aborted=true` in the access log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

pub mod cookie;
pub mod forwarding;
pub mod guard;
pub mod hygiene;
mod route;

use crate::config::{CidrList, ListenerConfig, TlsVersion};
use crate::metrics::Metrics;
use crate::model::hostname::{normalize_request_host, MAX_HOST_LEN};
use crate::model::policy::{BackendProtocol, HashKey};
use crate::runtime::access_log;
use crate::runtime::lifecycle::{InflightGuard, Lifecycle};
use crate::table::live::LiveTable;
use crate::table::queue::Refused;
use crate::tls::challenge::{Challenges, CHALLENGE_PATH};
use cookie::find_cookie;
use forwarding::{Forwarding, Scheme};
use route::{Failure, Route};

/// Marks the error that turns a backend's answer (a status in `retry_on`) into a retry.
const RETRY_STATUS: &str = "retryable status";

/// Concurrent streams per HTTP/2 connection to an h2c backend (Pingora's default is 1, which
/// would open a connection per request in flight).
const H2C_STREAMS_PER_CONNECTION: usize = 100;

/// The proxy of one listener.
pub struct Proxy {
    /// Index of the listener in the config, which is its index in every route table.
    listener: usize,
    /// Who may use the listener; `None` is everyone.
    allow: Option<CidrList>,
    forwarding: Forwarding,
    live: Arc<LiveTable>,
    lifecycle: Arc<Lifecycle>,
    /// `None` when metrics are off: nothing is recorded per request.
    metrics: Option<Arc<Metrics>>,
    /// The listener terminates TLS.
    tls: bool,
    /// `min_version: "1.3"`: the backstop for the version check the certificate resolver
    /// cannot make (see `crate::tls::store::SniResolver`).
    require_tls13: bool,
    /// A redirecting listener: what follows the host in its `Location` (`:8443`, or nothing
    /// for 443).
    redirect_port: Option<String>,
    /// ACME HTTP-01 challenges in flight, answered on plain listeners.
    challenges: Option<Arc<Challenges>>,
}

impl Proxy {
    /// The proxy of `config.listeners[index]`, whose clients reach it over `scheme`.
    pub fn new(
        index: usize,
        listener: &ListenerConfig,
        scheme: Scheme,
        live: Arc<LiveTable>,
        lifecycle: Arc<Lifecycle>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            listener: index,
            allow: listener.allow.clone(),
            forwarding: Forwarding::new(listener.trusted_proxies.clone(), scheme),
            live,
            lifecycle,
            metrics,
            tls: false,
            require_tls13: false,
            redirect_port: None,
            challenges: None,
        }
    }

    /// The listener terminates TLS, accepting `min_version` and above.
    pub fn tls(mut self, min_version: TlsVersion) -> Self {
        self.tls = true;
        self.require_tls13 = min_version == TlsVersion::Tls13;
        self
    }

    /// The listener answers every request with a redirect to HTTPS on `https_port`.
    pub fn redirect_https(mut self, https_port: u16) -> Self {
        self.redirect_port = Some(match https_port {
            443 => String::new(),
            port => format!(":{port}"),
        });
        self
    }

    /// The listener answers the ACME HTTP-01 challenges in `challenges`.
    pub fn acme_challenges(mut self, challenges: Arc<Challenges>) -> Self {
        self.challenges = Some(challenges);
        self
    }
}

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
    _inflight: InflightGuard,
    route: Option<Route>,
    /// Request body bytes read so far, against the service's `max_body_size`.
    body_bytes: u64,
    /// The body outgrew `max_body_size`: the 413 is the client's doing, not the backend's.
    body_too_large: bool,
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            _inflight: self.lifecycle.request_started(),
            route: None,
            body_bytes: 0,
            body_too_large: false,
        }
    }

    /// Berth serves no HTTP modules (compression etc.); skipping Pingora's default saves work
    /// on every request.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let downstream = session.as_downstream_mut();
        guard::request_head_parsed(downstream);
        // Pingora drops pipelined requests unless told to answer them, in order.
        downstream.set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(allow) = &self.allow {
            let peer = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            if !peer.is_some_and(|ip| allow.contains(ip)) {
                let body = "berth: this listener does not serve your address\n";
                return self.reply(session, 403, body.into()).await;
            }
        }
        if let Err(refusal) = hygiene::check(session.req_header_mut()) {
            return self
                .reply(session, refusal.status, refusal.body.into())
                .await;
        }
        if let Some(challenges) = &self.challenges {
            let path = session.req_header().uri.path();
            if path.starts_with(CHALLENGE_PATH) {
                match challenges.answer(path) {
                    Some(answer) => return self.reply(session, 200, answer.into()).await,
                    None if self.redirect_port.is_some() => {
                        let body = "berth: no such ACME challenge\n";
                        return self.reply(session, 404, body.into()).await;
                    }
                    None => {}
                }
            }
        }
        if self.require_tls13 && !negotiated_tls13(session) {
            let body = "berth: this listener requires TLS 1.3\n";
            return self.reply(session, 403, body.into()).await;
        }
        let req = session.req_header();
        let Some(raw_host) = hygiene::request_host(req) else {
            return self
                .reply(
                    session,
                    400,
                    "berth: the request has no Host header\n".into(),
                )
                .await;
        };
        let mut buf = [0u8; MAX_HOST_LEN];
        let Some(host) = normalize_request_host(raw_host, &mut buf) else {
            return self
                .reply(
                    session,
                    400,
                    "berth: the Host header is not a valid host name\n".into(),
                )
                .await;
        };
        if let Some(port) = &self.redirect_port {
            let path = req
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .filter(|p| p.starts_with('/'))
                .unwrap_or("/");
            let location = format!("https://{host}{port}{path}");
            return self.redirect(session, location).await;
        }
        let upstream = {
            let table = self.live.load();
            table
                .route(self.listener, host, req.uri.path().as_bytes())
                .map(Arc::clone)
        };
        let Some(upstream) = upstream else {
            let body = format!("berth: no route matches host \"{host}\"\n");
            return self.reply(session, 404, body.into()).await;
        };

        let mut route = Route::new(upstream);
        let upstream = Arc::clone(&route.upstream);
        if let Some(max) = upstream.policy.max_body_size {
            let declared = req
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|len| len > max) {
                ctx.route = Some(route);
                let body = format!("berth: the request body is larger than {max} bytes\n");
                write_text(session, 413, body.into()).await?;
                return Ok(true);
            }
        }
        let sticky = upstream.policy.sticky_cookie.as_deref().and_then(|name| {
            let value = find_cookie(req.headers.get_all(header::COOKIE), name)?;
            upstream.sticky_member(value, &[])
        });
        let chosen = match sticky {
            Some(index) => {
                route.sticky_hit = true;
                Ok(index)
            }
            None => {
                let mut ip_buf = [0u8; 16];
                let key = hash_input(session, &upstream.policy.hash_key, &mut ip_buf);
                upstream.select_or_wait(key).await
            }
        };
        let index = match chosen {
            Ok(index) => index,
            Err(refused) => {
                let name = &upstream.spec.name;
                let body = match refused {
                    Refused::Full => {
                        format!("berth: too many requests are waiting for service \"{name}\"\n")
                    }
                    Refused::TimedOut if upstream.policy.max_connections.is_some() => format!(
                        "berth: no backend of service \"{name}\" could take the request in time\n"
                    ),
                    Refused::TimedOut => {
                        format!("berth: no healthy backend for service \"{name}\"\n")
                    }
                };
                ctx.route = Some(route);
                write_text(session, 503, body.into()).await?;
                return Ok(true);
            }
        };
        route.assign(index);
        ctx.route = Some(route);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .as_mut()
            .expect("request_filter routes every request it lets through");
        let index = match route.member() {
            Some(index) => index,
            // A retry: any routable backend this request has not failed on yet.
            None => match route.upstream.select(b"", &route.tried) {
                Some(index) => {
                    route.assign(index);
                    route.sticky_hit = false;
                    index
                }
                None => {
                    return Error::e_explain(
                        ErrorType::HTTPStatus(502),
                        "every backend failed to connect",
                    )
                }
            },
        };
        let member = route.upstream.member(index);
        let timeouts = &route.upstream.policy.timeouts;
        let mut peer = HttpPeer::new(member.addr, false, String::new());
        if route.upstream.policy.backend_protocol == BackendProtocol::H2c {
            // HTTP/2 only: on a plaintext peer Pingora then speaks h2 by prior knowledge.
            peer.options.set_http_version(2, 2);
            peer.options.max_h2_streams = H2C_STREAMS_PER_CONNECTION;
        }
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.read_timeout = Some(timeouts.read);
        peer.options.idle_timeout = Some(timeouts.idle);
        route.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let max = ctx
            .route
            .as_ref()
            .and_then(|r| r.upstream.policy.max_body_size);
        if let (Some(max), Some(chunk)) = (max, body.as_ref()) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > max {
                // A chunked body has no length to check up front: it is cut off here, and the
                // backend, which has its head, never gets a complete request.
                ctx.body_too_large = true;
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    format!("the request body grew past max_body_size ({max} bytes)"),
                );
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(route) = ctx.route.as_mut() {
            if let Some(failed) = route.member() {
                route.upstream.member(failed).series.connection_errors.inc();
            }
            route.observe_failure("connect error");
            // The request never reached the backend: any method may go elsewhere.
            let failure = match e.etype() {
                ErrorType::ConnectRefused => Failure::Refused,
                _ => Failure::Other,
            };
            let retry =
                route.upstream.policy.retry_on.connect_failure && route.fail_current(failure);
            e.set_retry(retry);
        }
        e
    }

    /// A backend failed before answering, or answered with a status in `retry_on`. Like
    /// nginx's `proxy_next_upstream`: the request goes to another backend when the policy's
    /// `retry_on` names the failure, the method allows it and the body can be replayed. A
    /// stale pooled connection is retried on the same backend with a fresh connection, as
    /// Pingora does by default.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if matches!(e.etype(), ErrorType::CustomCode(RETRY_STATUS, _)) {
            // upstream_response_filter decided, and counted, this retry.
            e.set_retry(true);
            return e;
        }
        let Some(route) = ctx.route.as_mut().filter(|_| !ctx.body_too_large) else {
            e.set_retry(false);
            return e;
        };
        let timed_out = matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        route.observe_failure(if timed_out {
            "timeout"
        } else {
            "reset before response"
        });
        let idempotent = session.req_header().method.is_idempotent();
        let retry_on = &route.upstream.policy.retry_on;
        let allowed = if timed_out {
            retry_on.timeout && idempotent
        } else {
            retry_on.reset_before_response && (idempotent || client_reused)
        };
        let replayable =
            !session.as_ref().retry_buffer_truncated() && session.response_written().is_none();
        if !(allowed && replayable) {
            e.set_retry(false);
            return e;
        }
        e.retry.decide_reuse(client_reused);
        if !e.retry() {
            e.set_retry(route.fail_current(Failure::Other));
        }
        e
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.as_mut() else {
            return Ok(());
        };
        route.upstream_responded = true;
        let Some(index) = route.member() else {
            return Ok(());
        };
        let upstream = Arc::clone(&route.upstream);
        let member = upstream.member(index);
        if let Some(started) = route.upstream_started {
            let now = Instant::now();
            member.latency.observe(now - started, now);
        }
        let code = upstream_response.status.as_u16();
        let policy = &upstream.policy;
        let failed = policy
            .passive_health
            .as_ref()
            .is_some_and(|p| p.failure_statuses.contains(&code));
        if failed {
            upstream.observe_failure(index, upstream_response.status.as_str());
        } else {
            upstream.observe_success(index);
        }
        let retry = policy.retry_on.statuses.contains(&code)
            && session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && route.fail_current(Failure::Other);
        if retry {
            route.upstream_responded = false;
            return Error::e_explain(
                ErrorType::CustomCode(RETRY_STATUS, code),
                format!("the backend answered {code}"),
            );
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        hygiene::to_origin_form(upstream_request);
        let req = session.req_header();
        let host = match req.headers.get(header::HOST) {
            Some(host) => Some(host.clone()),
            // HTTP/2 carries the host as `:authority`; an HTTP/1.1 backend needs `Host`.
            None => match req.uri.authority() {
                Some(authority) => {
                    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| {
                        Error::because(ErrorType::InvalidHTTPHeader, "authority", e)
                    })?;
                    upstream_request.insert_header(header::HOST, host.clone())?;
                    Some(host)
                }
                None => None,
            },
        };
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        self.forwarding.apply(upstream_request, peer, host)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = &ctx.route {
            if let (false, Some(index)) = (route.sticky_hit, route.member()) {
                if let Some(cookie) = route.upstream.set_cookie(index) {
                    upstream_response.append_header(header::SET_COOKIE, cookie.clone())?;
                }
            }
            if let (true, Some(hsts)) = (self.tls, &route.upstream.policy.tls.hsts) {
                upstream_response.insert_header(header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if session.response_written().is_some() {
            // The client has the status line and part of the body: an error page now would
            // become the rest of that body. Cut the connection (or reset the h2 stream).
            session.as_downstream_mut().shutdown().await;
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let code = error_status(e);
        // Nothing after this answer is read: say so, rather than `keep-alive` and a close.
        session.set_keepalive(None);
        if code > 0 {
            let body = match code {
                502 => "berth: the backend failed to answer\n",
                504 => "berth: the backend did not answer in time\n",
                400 => "berth: bad request\n",
                _ => "berth: the request failed\n",
            };
            let _ = write_text(session, code, Bytes::from_static(body.as_bytes())).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _e: &Error) -> bool {
        // Failures are counted per backend in metrics; logging each one would let a dead
        // backend flood the log at the request rate. Unrouted errors stay logged.
        ctx.route.is_some()
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
        _error: &Error,
        _context: pingora_proxy::ProxyWarnLogContext,
    ) -> bool {
        // Retries are counted (berth_service_retries_total, connection errors per backend);
        // a log line each would flood the log at the request rate while a backend dies.
        ctx.route.is_some()
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let written = session.response_written().map(|r| r.status.as_u16());
        // A response that started and then failed on berth's side (not the client's) counts
        // as the failure it is, under the status berth would have answered.
        let aborted = written.and(e).map(error_status).filter(|&code| code != 0);
        let code = aborted
            .or(written)
            .unwrap_or_else(|| e.map_or(0, client_closed_or_status));
        // One clock read for every duration below.
        let now = Instant::now();
        let duration = now - ctx.started;
        if access_log::enabled() {
            let req = session.req_header();
            let route = ctx.route.as_ref();
            let backend = route.and_then(|r| r.member().map(|m| &r.upstream.member(m).addr));
            access_log::record(&access_log::Entry {
                client: session.client_addr().map(|a| a as &dyn std::fmt::Display),
                method: req.method.as_str(),
                host: req.headers.get(header::HOST).map(|h| h.as_bytes()),
                uri: &req.uri,
                status: code,
                aborted: aborted.is_some(),
                service: route.map(|r| r.upstream.spec.name.as_str()),
                backend: backend.map(|a| a as &dyn std::fmt::Display),
                duration,
            });
        }
        if self.metrics.is_none() {
            return;
        }
        let Some(route) = &ctx.route else {
            return;
        };
        route
            .upstream
            .series
            .record_request(code, &session.req_header().method, duration);
        if let Some(index) = route.member().filter(|_| !ctx.body_too_large) {
            // Without a backend response, the body the client got is berth's error page.
            let received = if route.upstream_responded {
                session.body_bytes_sent()
            } else {
                0
            };
            route.upstream.member(index).series.record_response(
                code,
                route.upstream_started.map_or(Duration::ZERO, |at| now - at),
                received,
                session.body_bytes_read(),
            );
        }
    }
}

impl Proxy {
    /// Answers a request berth could not route (and counts it as unrouted).
    async fn reply(&self, session: &mut Session, code: u16, body: Bytes) -> Result<bool> {
        if let Some(metrics) = &self.metrics {
            metrics.unrouted(code);
        }
        write_text(session, code, body).await?;
        Ok(true)
    }

    /// 308 (the method and body are kept, unlike 301) to `location`; counted as unrouted.
    async fn redirect(&self, session: &mut Session, location: String) -> Result<bool> {
        if let Some(metrics) = &self.metrics {
            metrics.unrouted(308);
        }
        let mut resp = ResponseHeader::build(308, Some(3))?;
        resp.insert_header(header::LOCATION, location)?;
        resp.insert_header(header::CONTENT_LENGTH, 0)?;
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }
}

/// Whether the request's connection negotiated TLS 1.3.
fn negotiated_tls13(session: &Session) -> bool {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .is_some_and(|tls| tls.version == "TLSv1_3")
}

/// Writes berth's own plain-text answer. A refusal of the request itself closes the
/// connection (and says so): what the client sends next cannot be trusted to be a request.
async fn write_text(session: &mut Session, code: u16, body: Bytes) -> Result<()> {
    if matches!(code, 400 | 403 | 408 | 413 | 431 | 501) {
        session.set_keepalive(None);
    }
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// The status berth answers a failed proxy attempt with.
fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if *e.esource() == ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// For a request that ended without a response: 499 (nginx's "client closed request") when
/// the client went away, else the status berth would have answered.
fn client_closed_or_status(e: &Error) -> u16 {
    match error_status(e) {
        0 => 499,
        code => code,
    }
}

/// The bytes `consistent_hash` hashes for this request; `ip_buf` holds a client address so
/// hashing never allocates.
fn hash_input<'a>(session: &'a Session, key: &HashKey, ip_buf: &'a mut [u8; 16]) -> &'a [u8] {
    let req = session.req_header();
    match key {
        HashKey::ClientIp => match session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            Some(IpAddr::V4(v4)) => {
                ip_buf[..4].copy_from_slice(&v4.octets());
                &ip_buf[..4]
            }
            Some(IpAddr::V6(v6)) => {
                *ip_buf = v6.octets();
                &ip_buf[..]
            }
            None => b"",
        },
        HashKey::Path => req.uri.path().as_bytes(),
        HashKey::Header(name) => req
            .headers
            .get(name.as_str())
            .map_or(&b""[..], |v| v.as_bytes()),
        HashKey::Cookie(name) => {
            find_cookie(req.headers.get_all(header::COOKIE), name).unwrap_or(b"")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_timeouts_are_504_and_other_upstream_errors_502() {
        let mut e = Error::new(ErrorType::ReadTimedout);
        e.as_up();
        assert_eq!(error_status(&e), 504);
        let mut e = Error::new(ErrorType::ConnectRefused);
        e.as_up();
        assert_eq!(error_status(&e), 502);
        let mut e = Error::new(ErrorType::ConnectionClosed);
        e.as_down();
        assert_eq!(client_closed_or_status(&e), 499);
    }
}
