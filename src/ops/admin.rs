//! The admin listener: liveness, readiness, Prometheus metrics and the live route table.
//!
//! `/healthz`, `/readyz` and `/metrics` answer anyone who reaches the listener (the image's
//! health check and Prometheus need them). Everything else, the route table above all (backend
//! addresses, container ids, which are sticky-cookie values), answers only peers in
//! `admin.allow` (loopback by default) or requests with the `admin.token_file` bearer token.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

use super::exposition;
use super::lifecycle::Lifecycle;
use crate::config::{AdminConfig, AdminToken, CidrList, ListenerConfig, MetricsDetail};
use crate::health::state::HealthStatus;
use crate::metrics::Metrics;
use crate::spec::{Admission, PlatformHealth};
use crate::table::live::LiveTable;
use crate::table::upstream::Upstream;

pub struct Admin {
    live: Arc<LiveTable>,
    lifecycle: Arc<Lifecycle>,
    /// `None` when metrics are off (`admin.metrics: false`).
    metrics: Option<Arc<Metrics>>,
    metrics_detail: MetricsDetail,
    allow: CidrList,
    token: Option<AdminToken>,
    /// The proxy listeners, for readiness and for where each service is served.
    listeners: Vec<ListenerConfig>,
}

impl Admin {
    pub fn new(
        live: Arc<LiveTable>,
        lifecycle: Arc<Lifecycle>,
        metrics: Option<Arc<Metrics>>,
        config: &AdminConfig,
        listeners: Vec<ListenerConfig>,
    ) -> Self {
        Self {
            live,
            lifecycle,
            metrics,
            metrics_detail: config.metrics_detail,
            allow: config.allow.clone(),
            token: config.token.clone(),
            listeners,
        }
    }

    /// `None` when the request may use the protected paths, else the refusal: 401 asking for
    /// the token when there is one, else 403.
    fn refusal(&self, session: &ServerSession) -> Option<Response<Vec<u8>>> {
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

    /// Ready when every source's routes are loaded, berth is not shutting down, and a
    /// listener accepts.
    async fn readiness(&self) -> Result<(), String> {
        if self.lifecycle.is_shutting_down() {
            return Err("shutting down".into());
        }
        if !self.live.is_complete() {
            return Err("routes are not loaded yet".into());
        }
        for listener in &self.listeners {
            if accepts(listener.address).await {
                return Ok(());
            }
        }
        Err("no listener accepts connections".into())
    }

    fn routes(&self) -> Value {
        let table = self.live.load_full();
        let routes = table.upstreams().iter().enumerate().map(|(i, upstream)| {
            let served_on = table
                .served_on(i)
                .iter()
                .map(|&l| self.listeners[l].name.as_str())
                .collect();
            upstream_json(upstream, served_on)
        });
        Value::Array(routes.collect())
    }
}

/// Connects to our own listener: the only proof that Pingora bound it.
async fn accepts(mut addr: std::net::SocketAddr) -> bool {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// One service; `served_on` names the listeners that route at least one of its domains.
fn upstream_json(upstream: &Upstream, served_on: Vec<&str>) -> Value {
    let spec = &upstream.spec;
    let policy = &upstream.policy;
    let backends: Vec<Value> = upstream
        .members()
        .iter()
        .zip(&spec.backends)
        .map(|(member, backend)| {
            let ejection = member.passive.ejection(std::time::Instant::now());
            let health = match (&backend.admission, &ejection) {
                (Admission::Draining, _) => "draining",
                (Admission::Held(PlatformHealth::Starting), _) => "starting",
                (Admission::Held(PlatformHealth::Unhealthy), _) => "unhealthy",
                (Admission::Open, Some(_)) if member.health.status() == HealthStatus::Up => {
                    "ejected"
                }
                (Admission::Open, _) => member.health.status().as_str(),
            };
            let ejection = ejection.map(|e| {
                json!({
                    "reason": e.reason,
                    "until": humantime::format_rfc3339_millis(e.until).to_string(),
                })
            });
            let last_probe = member.health.last_probe().map(|p| {
                json!({
                    "passed": p.passed,
                    "detail": p.detail,
                    "time": humantime::format_rfc3339_millis(p.at).to_string(),
                    "duration_ms": p.duration.as_secs_f64() * 1000.0,
                })
            });
            json!({
                "address": member.addr.to_string(),
                "weight": backend.weight,
                "container_id": member.identity.id,
                "container_name": member.identity.name,
                "health": health,
                "routable": member.routable(),
                "in_flight": member.in_flight(),
                "ejection": ejection,
                "last_probe": last_probe,
            })
        })
        .collect();
    json!({
        "name": spec.name,
        "domains": spec.domains,
        "path_prefix": spec.path_prefix,
        "visibility": policy.visibility.as_str(),
        "listeners": served_on,
        "max_body_size": policy.max_body_size,
        "algorithm": policy.algorithm.as_str(),
        "hash_key": policy.hash_key.to_string(),
        "sticky_cookie": policy.sticky_cookie,
        "source": spec.source.as_str(),
        "retries": policy.retries,
        "health_check": {
            "type": policy.health_check.kind.as_str(),
            "interval_ms": policy.health_check.interval.as_millis() as u64,
        },
        "passive_health": policy.passive_health.is_some(),
        "max_connections": policy.max_connections,
        "queue_depth": upstream.queue.depth(),
        "slow_start_ms": policy.slow_start.as_millis() as u64,
        "backends": backends,
    })
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .expect("static response parts are valid")
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Vec<u8>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.into().into_bytes(),
    )
}

fn not_found() -> Response<Vec<u8>> {
    text(
        StatusCode::NOT_FOUND,
        "berth admin: /healthz /readyz /metrics /api/routes\n",
    )
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
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
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.readiness().await {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            "/metrics" => match &self.metrics {
                Some(metrics) => respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    exposition::render(&self.live.load_full(), metrics, self.metrics_detail),
                ),
                None => not_found(),
            },
            "/api/routes" => respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&self.routes()).expect("JSON values serialize"),
            ),
            _ => not_found(),
        }
    }
}
