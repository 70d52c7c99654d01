//! The `/api/routes` document: every service of the live route table with its backends. One
//! definition serves both ends: the admin listener writes it and `berth routes` reads it back,
//! so the command cannot drift from the API.

use serde::{Deserialize, Serialize};

use crate::config::ListenerConfig;
use crate::table::upstream::{Standing, Upstream};
use crate::table::RouteTable;
use crate::tls::TlsLookup;

/// One service (upstream group) and the routes that reach it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub domains: Vec<String>,
    pub path_prefix: String,
    /// `public`, or `internal`: never served on an edge listener.
    pub visibility: String,
    /// The listeners that route at least one of its domains.
    pub listeners: Vec<String>,
    /// The largest request body it accepts; `None` is unlimited.
    pub max_body_size: Option<u64>,
    pub algorithm: String,
    pub hash_key: String,
    pub sticky_cookie: Option<String>,
    /// `file`, `swarm` or `docker`.
    pub source: String,
    pub retries: u32,
    pub health_check: HealthCheckView,
    /// Whether failing requests eject backends.
    pub passive_health: bool,
    /// Requests in flight per backend; `None` is unlimited.
    pub max_connections: Option<u32>,
    /// Requests waiting for a backend below `max_connections`.
    pub queue_depth: u32,
    pub slow_start_ms: u64,
    /// `h1` or `h2c`.
    #[serde(default)]
    pub backend_protocol: String,
    #[serde(default)]
    pub tls: TlsServiceView,
    pub backends: Vec<BackendView>,
}

/// A service's TLS: its settings and, where a TLS listener serves it, what each domain gets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsServiceView {
    /// Served on TLS listeners.
    pub enabled: bool,
    /// Certificates over ACME.
    pub acme: bool,
    pub hsts: Option<String>,
    /// `None` when no TLS listener serves the service.
    pub domains: Option<Vec<DomainTlsView>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainTlsView {
    pub domain: String,
    /// What the first TLS listener serving the service presents for the domain.
    pub certificate: Option<CertificateView>,
    /// With `tls.acme`: the domain's ACME state.
    pub acme: Option<AcmeView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertificateView {
    /// The DNS names of its leaf.
    pub names: Vec<String>,
    /// RFC 3339, UTC.
    pub expires: String,
    /// `file` or `acme`.
    pub source: String,
    /// The chain's file.
    pub file: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AcmeView {
    /// The last order's error; `None` once an order succeeds.
    pub last_error: Option<String>,
    /// RFC 3339, UTC.
    pub last_attempt: Option<String>,
    /// When berth next orders (a renewal, or a retry after a failure); RFC 3339, UTC.
    pub next_order: Option<String>,
    /// Why berth never orders for this domain (a wildcard, a private name, ...).
    pub not_ordered: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCheckView {
    /// `http`, `tcp` or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    pub interval_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub address: String,
    pub weight: u16,
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    /// The Swarm task behind it; `None` for other backends (and from a berth without Swarm
    /// discovery, which does not send it).
    #[serde(default)]
    pub task: Option<TaskView>,
    /// `healthy`, `unhealthy`, `starting`, `draining` or `ejected` (see
    /// [`crate::table::upstream::Standing`]).
    pub health: String,
    /// Whether new requests may go to it.
    pub routable: bool,
    pub in_flight: i64,
    /// While passive health has it out: why and until when.
    pub ejection: Option<EjectionView>,
    pub last_probe: Option<ProbeView>,
}

/// Where the orchestrator placed a backend ([`crate::model::Placement`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The Swarm service.
    pub service: String,
    pub id: String,
    /// `None` for a global service's task.
    pub slot: Option<u64>,
    /// The node's hostname.
    pub node: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EjectionView {
    /// The failure that ejected it: a status code, `timeout`, `connect error`, ...
    pub reason: String,
    /// RFC 3339, UTC.
    pub until: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeView {
    pub passed: bool,
    /// `ok`, or why the probe failed.
    pub detail: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub duration_ms: f64,
}

impl ServiceView {
    /// How many of its backends take new requests.
    pub fn routable_backends(&self) -> usize {
        self.backends.iter().filter(|b| b.routable).count()
    }
}

/// The document for `table`, compiled for `listeners`; `tls` tells what certificates the
/// services' domains get.
pub fn routes(
    table: &RouteTable,
    listeners: &[ListenerConfig],
    tls: &TlsLookup,
) -> Vec<ServiceView> {
    table
        .upstreams()
        .iter()
        .enumerate()
        .map(|(i, upstream)| {
            let served_on = table
                .served_on(i)
                .iter()
                .map(|&l| listeners[l].name.clone())
                .collect();
            service(upstream, served_on, tls)
        })
        .collect()
}

fn tls_view(upstream: &Upstream, tls: &TlsLookup) -> TlsServiceView {
    let time = |t| humantime::format_rfc3339_seconds(t).to_string();
    let domains = tls.domains(upstream).map(|domains| {
        domains
            .into_iter()
            .map(|d| DomainTlsView {
                domain: d.domain.to_owned(),
                certificate: d.certificate.map(|c| CertificateView {
                    names: c.names.clone(),
                    expires: time(c.not_after),
                    source: c.source.as_str().into(),
                    file: c.path.display().to_string(),
                }),
                acme: d.acme.map(|state| match state {
                    Ok(status) => AcmeView {
                        last_error: status.last_error,
                        last_attempt: status.last_attempt.map(time),
                        next_order: status.next_order.map(time),
                        not_ordered: None,
                    },
                    Err(why) => AcmeView {
                        last_error: None,
                        last_attempt: None,
                        next_order: None,
                        not_ordered: Some(why.into()),
                    },
                }),
            })
            .collect()
    });
    let policy = &upstream.policy.tls;
    TlsServiceView {
        enabled: policy.serve,
        acme: policy.acme,
        hsts: policy
            .hsts
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
        domains,
    }
}

fn service(upstream: &Upstream, listeners: Vec<String>, tls: &TlsLookup) -> ServiceView {
    let spec = &upstream.spec;
    let policy = &upstream.policy;
    let backends = upstream
        .members()
        .iter()
        .zip(&spec.backends)
        .enumerate()
        .map(|(index, (member, backend))| {
            let standing = upstream.standing(index);
            BackendView {
                address: member.addr.to_string(),
                weight: backend.weight,
                container_id: member.identity.id.clone(),
                container_name: member.identity.name.clone(),
                task: member.identity.placement.as_ref().map(|p| TaskView {
                    service: p.service.clone(),
                    id: p.task_id.clone(),
                    slot: p.slot,
                    node: p.node.clone(),
                }),
                health: standing.as_str().into(),
                routable: member.routable(),
                in_flight: member.in_flight(),
                ejection: match standing {
                    Standing::Ejected(e) => Some(EjectionView {
                        reason: e.reason,
                        until: humantime::format_rfc3339_millis(e.until).to_string(),
                    }),
                    _ => None,
                },
                last_probe: member.health.last_probe().map(|p| ProbeView {
                    passed: p.passed,
                    detail: p.detail,
                    time: humantime::format_rfc3339_millis(p.at).to_string(),
                    duration_ms: p.duration.as_secs_f64() * 1000.0,
                }),
            }
        })
        .collect();
    ServiceView {
        name: spec.name.clone(),
        domains: spec.domains.clone(),
        path_prefix: spec.path_prefix.clone(),
        visibility: policy.visibility.as_str().into(),
        listeners,
        max_body_size: policy.max_body_size,
        algorithm: policy.algorithm.as_str().into(),
        hash_key: policy.hash_key.to_string(),
        sticky_cookie: policy.sticky_cookie.clone(),
        source: spec.source.as_str().into(),
        retries: policy.retries,
        health_check: HealthCheckView {
            kind: policy.health_check.kind.as_str().into(),
            interval_ms: policy.health_check.interval.as_millis() as u64,
        },
        passive_health: policy.passive_health.is_some(),
        max_connections: policy.max_connections,
        queue_depth: upstream.queue.depth(),
        slow_start_ms: policy.slow_start.as_millis() as u64,
        backend_protocol: policy.backend_protocol.as_str().into(),
        tls: tls_view(upstream, tls),
        backends,
    }
}
