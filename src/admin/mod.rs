//! The admin listener: the status page, liveness, readiness, Prometheus metrics and the live
//! route table. A router: each answer is written by its own module.
//!
//! `/healthz`, `/readyz` and `/metrics` answer anyone who reaches the listener (the image's
//! health check and Prometheus need them). Everything else, the route table above all (backend
//! addresses, container ids, which are sticky-cookie values), answers only peers in
//! `admin.allow` (loopback by default) or requests with the `admin.token_file` bearer token.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;

pub mod exposition;
pub mod present;
pub mod routes_api;
pub mod status_page;
pub mod traffic;

use crate::config::{AdminConfig, AdminToken, CidrList, ListenerConfig, MetricsDetail};
use crate::metrics::buffers::Buffers;
use crate::metrics::format::Format;
use crate::metrics::Metrics;
use crate::runtime::readiness::Readiness;
use crate::table::live::LiveTable;
use crate::tls::TlsLookup;
use status_page::StatusPage;
use traffic::Traffic;

/// The admin listener's HTTP service.
pub struct Admin {
    live: Arc<LiveTable>,
    readiness: Arc<Readiness>,
    /// `None` when metrics are off (`admin.metrics: false`).
    metrics: Option<Arc<Metrics>>,
    metrics_detail: MetricsDetail,
    /// What scrapes write the exposition into, kept between them.
    scrape_buffers: Buffers,
    status_page: StatusPage,
    /// Last-minute traffic for the status page; `None` when metrics are off.
    traffic: Option<Arc<Traffic>>,
    /// What certificates the services' domains get, for `/api/routes`.
    tls: TlsLookup,
    allow: CidrList,
    token: Option<AdminToken>,
    /// The proxy listeners, for where each service is served.
    listeners: Vec<ListenerConfig>,
}

impl Admin {
    pub fn new(
        live: Arc<LiveTable>,
        readiness: Arc<Readiness>,
        metrics: Option<Arc<Metrics>>,
        config: &AdminConfig,
        traffic: Option<Arc<Traffic>>,
        tls: TlsLookup,
        listeners: Vec<ListenerConfig>,
    ) -> Self {
        Self {
            live,
            readiness,
            metrics,
            metrics_detail: config.metrics_detail,
            scrape_buffers: Buffers::default(),
            status_page: StatusPage::new(
                SystemTime::now(),
                listeners.iter().map(|l| l.name.clone()).collect(),
            ),
            traffic,
            tls,
            allow: config.allow.clone(),
            token: config.token.clone(),
            listeners,
        }
    }

    /// `None` when the request may use the protected paths, else the refusal: 401 asking for
    /// the token when there is one, else 403.
    fn refusal(&self, session: &ServerSession) -> Option<Response<Body>> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if peer.is_some_and(|ip| self.allow.contains(ip)) {
            return None;
        }
        let Some(token) = &self.token else {
            return Some(text(
                StatusCode::FORBIDDEN,
                "berth admin: this path is not open to your address (see admin.allow)\n",
            ));
        };
        let presented = session
            .req_header()
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if presented.is_some_and(|t| token.matches(t.trim_ascii())) {
            return None;
        }
        let mut answer = text(
            StatusCode::UNAUTHORIZED,
            "berth admin: this path needs `Authorization: Bearer <admin token>`\n",
        );
        answer.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"berth admin\""),
        );
        Some(answer)
    }
}

/// A response body as the buffers it is written in, one after another: the metrics exposition
/// is one per family, so a scrape never joins them into one copy.
type Body = Vec<Bytes>;

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    respond_in_parts(status, content_type, vec![body.into()])
}

fn respond_in_parts(status: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(
            http::header::CONTENT_LENGTH,
            body.iter().map(Bytes::len).sum::<usize>(),
        )
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .expect("static response parts are valid")
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.into().into_bytes(),
    )
}

fn not_found() -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        "berth admin: / /healthz /readyz /metrics /api/routes\n",
    )
}

/// Pingora's `ServeHttp` wants the whole body as one buffer; this writes the head, then each
/// part of the body as it is, then hands the connection back for keep-alive.
#[async_trait]
impl HttpServerApp for Admin {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!("admin: reading a request failed: {e}");
                return None;
            }
        }
        session.set_keepalive((!*shutdown.borrow()).then_some(60));
        let (head, body) = self.answer(&session).await.into_parts();
        let written = async {
            session.write_response_header(Box::new(head.into())).await?;
            let last = body.len().saturating_sub(1);
            for (i, part) in body.into_iter().enumerate() {
                session.write_response_body(part, i == last).await?;
            }
            Ok::<_, Box<pingora_error::Error>>(())
        };
        if let Err(e) = written.await {
            tracing::debug!("admin: writing a response failed: {e}");
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(e) => {
                tracing::debug!("admin: finishing a response failed: {e}");
                None
            }
        }
    }
}

impl Admin {
    async fn answer(&self, session: &ServerSession) -> Response<Body> {
        let req = session.req_header();
        if req.method != Method::GET && req.method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        let path = req.uri.path();
        if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
            if let Some(refusal) = self.refusal(session) {
                return refusal;
            }
        }
        match path {
            "/" => {
                let html = self
                    .status_page
                    .render(&self.live.load_full(), self.traffic.as_deref());
                let mut response = respond(StatusCode::OK, "text/html; charset=utf-8", html.into());
                for (name, value) in self.status_page.headers() {
                    response.headers_mut().insert(
                        name,
                        http::HeaderValue::from_str(value).expect("the page's headers are ASCII"),
                    );
                }
                response
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.readiness.check().await {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            "/metrics" => match &self.metrics {
                Some(metrics) => {
                    let format = Format::negotiate(req.headers.get(http::header::ACCEPT));
                    let mut response = respond_in_parts(
                        StatusCode::OK,
                        format.content_type(),
                        exposition::render(
                            &self.live.load_full(),
                            metrics,
                            self.metrics_detail,
                            format,
                            &self.scrape_buffers,
                        ),
                    );
                    response
                        .headers_mut()
                        .insert(http::header::VARY, http::HeaderValue::from_static("Accept"));
                    response
                }
                None => not_found(),
            },
            "/api/routes" => respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&routes_api::routes(
                    &self.live.load_full(),
                    &self.listeners,
                    &self.tls,
                ))
                .expect("the routes document serializes"),
            ),
            _ => not_found(),
        }
    }
}
