//! The `/api/routes` document: every service of the live route table with its backends. One
//! definition serves both ends: the admin listener writes it and `berth routes` reads it back,
//! so the command cannot drift from the API.

use serde::{Deserialize, Serialize};

use crate::table::upstream::{Standing, Upstream};
use crate::table::RouteTable;

/// One service (upstream group) and the routes that reach it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub domains: Vec<String>,
    pub path_prefix: String,
    /// The listeners that serve it; `["*"]` for all of them.
    pub visibility: Vec<String>,
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
    pub backends: Vec<BackendView>,
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

/// Where the orchestrator placed a backend ([`crate::spec::Placement`]).
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

/// The document for `table`.
pub fn routes(table: &RouteTable) -> Vec<ServiceView> {
    table.upstreams().iter().map(|u| service(u)).collect()
}

fn service(upstream: &Upstream) -> ServiceView {
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
        visibility: spec.listeners.clone().unwrap_or_else(|| vec!["*".into()]),
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
        backends,
    }
}
