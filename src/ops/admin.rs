//! The admin listener: liveness, readiness, Prometheus metrics and the live route table.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

use super::exposition;
use super::lifecycle::Lifecycle;
use crate::config::MetricsDetail;
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
    /// The proxy listeners' addresses, for readiness.
    listeners: Vec<std::net::SocketAddr>,
}

impl Admin {
    pub fn new(
        live: Arc<LiveTable>,
        lifecycle: Arc<Lifecycle>,
        metrics: Option<Arc<Metrics>>,
        metrics_detail: MetricsDetail,
        listeners: Vec<std::net::SocketAddr>,
    ) -> Self {
        Self {
            live,
            lifecycle,
            metrics,
            metrics_detail,
            listeners,
        }
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
            if accepts(*listener).await {
                return Ok(());
            }
        }
        Err("no listener accepts connections".into())
    }

    fn routes(&self) -> Value {
        let table = self.live.load_full();
        Value::Array(table.upstreams().iter().map(|u| upstream_json(u)).collect())
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

fn upstream_json(upstream: &Upstream) -> Value {
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
            let task = member.identity.placement.as_ref().map(|p| {
                json!({
                    "service": p.service,
                    "id": p.task_id,
                    "slot": p.slot,
                    "node": p.node,
                })
            });
            json!({
                "address": member.addr.to_string(),
                "weight": backend.weight,
                "container_id": member.identity.id,
                "container_name": member.identity.name,
                "task": task,
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
        "visibility": spec.listeners.clone().unwrap_or_else(|| vec!["*".into()]),
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
        match req.uri.path() {
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
