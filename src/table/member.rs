//! One backend of one service: its address, identity, health and metric handles.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pingora_load_balancing::Backend;

use super::ewma::PeakEwma;
use crate::health::clock::{instant_at, nanos_since_epoch};
use crate::health::passive::PassiveState;
use crate::health::state::{HealthState, HealthStatus, ProbeOutcome};
use crate::metrics::label::LabelSet;
use crate::metrics::ServerSeries;
use crate::model::policy::{HealthCheckSpec, ProbeKind};
use crate::model::{Admission, BackendIdentity, BackendSpec};

/// Index of a backend within its upstream.
pub type MemberIndex = u32;

/// One backend of one service. Shared by every route-table version that routes to it, so its
/// health, in-flight count and metrics survive reloads and discovery updates. There is one per
/// backend (30,000 at scale), so what can be derived from `addr` and `identity` is derived on
/// use rather than stored.
pub struct Member {
    pub service: Arc<str>,
    pub addr: SocketAddr,
    pub identity: Identity,
    pub health: HealthState,
    pub passive: PassiveState,
    admission: AtomicU8,
    /// When probes last let it in, in [`crate::health::clock`] nanoseconds (slow start).
    routable_since: AtomicU64,
    pub latency: PeakEwma,
    /// Its `open` gauge is the in-flight count the load-aware selectors read.
    pub series: Arc<ServerSeries>,
    /// `berth_server_info`'s labels.
    pub info_labels: LabelSet,
}

const OPEN: u8 = 0;
const DRAINING: u8 = 1;
const HELD: u8 = 2;

fn admission_code(admission: &Admission) -> u8 {
    match admission {
        Admission::Open => OPEN,
        Admission::Draining => DRAINING,
        Admission::Held(_) => HELD,
    }
}

impl Member {
    /// A backend that just joined `service`. `series` continues the counters of a backend
    /// the service had at this address before (a replaced container), else starts new ones.
    pub fn new(
        service: &Arc<str>,
        backend: &BackendSpec,
        health_check: &HealthCheckSpec,
        series: Option<Arc<ServerSeries>>,
    ) -> Member {
        let server = backend.addr.to_string();
        let series = series.unwrap_or_else(|| ServerSeries::new(service, &server));
        let id = backend.identity.id.as_deref().unwrap_or_default();
        let name = backend.identity.name.as_deref().unwrap_or_default();
        let mut info = vec![("container_id", id), ("container_name", name)];
        let placement = backend.identity.placement.as_ref();
        let slot = placement.and_then(|t| t.slot).map(|s| s.to_string());
        if let Some(task) = placement {
            info.extend([
                ("node", task.node.as_str()),
                ("task_id", &task.task_id),
                ("task_service", &task.service),
                ("task_slot", slot.as_deref().unwrap_or_default()),
            ]);
        }
        info.extend([("server", server.as_str()), ("service", &**service)]);
        Member {
            service: Arc::clone(service),
            addr: backend.addr,
            health: HealthState::joining(health_check),
            passive: PassiveState::default(),
            admission: AtomicU8::new(admission_code(&backend.admission)),
            routable_since: AtomicU64::new(if health_check.kind == ProbeKind::None {
                nanos_since_epoch(Instant::now())
            } else {
                0
            }),
            latency: PeakEwma::default(),
            series,
            info_labels: LabelSet::new(&info),
            identity: Identity::of(&backend.identity),
        }
    }

    /// The probe target, in the form Pingora's balancers and health checks take.
    pub fn backend(&self) -> Backend {
        Backend {
            addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(self.addr),
            weight: 1,
            ext: Default::default(),
        }
    }

    /// The value of the sticky cookie that pins a client to this backend: the instance id
    /// for discovered backends (acsrouting's `CONTAINERID` cookie); for static backends a
    /// stable hash of the address, so cookies survive restarts without revealing the address.
    pub fn cookie_id(&self) -> String {
        match &self.identity.id {
            Some(id) => id.clone(),
            None => {
                use std::hash::Hasher;
                let mut hasher = fnv::FnvHasher::default();
                hasher.write(self.addr.to_string().as_bytes());
                format!("{:016x}", hasher.finish())
            }
        }
    }

    /// Whether new requests may go to this backend.
    pub fn routable(&self) -> bool {
        self.health.status() == HealthStatus::Up
            && self.admission.load(Relaxed) == OPEN
            && !self.passive.is_ejected_now()
    }

    /// Requests in flight to this backend.
    pub fn in_flight(&self) -> i64 {
        self.series.open.get()
    }

    /// Counts a request as in flight unless `max` are already; `true` if it was counted.
    pub fn try_acquire(&self, max: Option<u32>) -> bool {
        match max {
            None => {
                self.series.open.inc();
                true
            }
            Some(max) => self.series.open.inc_below(i64::from(max)),
        }
    }

    pub fn release(&self) {
        self.series.open.dec();
    }

    #[cfg(test)]
    pub fn routable_since_for_test(&self, since: Instant) {
        self.routable_since.store(nanos_since_epoch(since), Relaxed);
    }

    /// How long the backend has been in rotation since probes last let it in.
    pub fn routable_for(&self, now: Instant) -> Duration {
        match self.routable_since.load(Relaxed) {
            0 => Duration::ZERO,
            since => now.saturating_duration_since(instant_at(since)),
        }
    }

    /// `name (ip:port)` or `ip:port`, for log lines.
    pub fn label(&self) -> String {
        match &self.identity.name {
            Some(name) => format!("{name} ({})", self.addr),
            None => self.addr.to_string(),
        }
    }

    /// Takes what a newer spec of the same backend says about admission (a reused member).
    pub fn set_admission(&self, admission: &Admission) {
        self.admission.store(admission_code(admission), Relaxed);
    }

    /// The service stopped probing: the backend is up without a verdict.
    pub fn stop_probing(&self) {
        self.health.force_up();
    }

    /// Applies one probe's result: health state, metrics, a log line on change, and when the
    /// next probe is due.
    pub fn apply_probe(&self, result: Result<(), String>, took: Duration, spec: &HealthCheckSpec) {
        let passed = result.is_ok();
        let before = self.health.status();
        let flipped = self.health.observe(passed, spec);
        // A first verdict is not a flap: only count changes between healthy and unhealthy.
        let up_down = flipped.is_some() && before != HealthStatus::Starting;
        self.series.record_check(passed, took, up_down);
        if let Some(status) = flipped {
            if status == HealthStatus::Up {
                self.routable_since
                    .store(nanos_since_epoch(Instant::now()), Relaxed);
            }
            match &result {
                Ok(()) => {
                    tracing::info!(service = %self.service, backend = %self.label(), "backend is {}", status.as_str())
                }
                Err(reason) => {
                    tracing::warn!(service = %self.service, backend = %self.label(), "backend is {}: {reason}", status.as_str())
                }
            }
        }
        self.health.record(ProbeOutcome {
            at: SystemTime::now(),
            passed,
            detail: result.err().unwrap_or_else(|| "ok".into()),
            duration: took,
        });
        self.health
            .release(Instant::now() + self.health.next_probe_in(spec));
    }
}

/// Who a backend is, as its source said. Static backends have no identity: they hold no
/// allocation for one and read as [`BackendIdentity::default`].
pub struct Identity(Option<Box<BackendIdentity>>);

static ANONYMOUS: BackendIdentity = BackendIdentity {
    id: None,
    name: None,
    placement: None,
};

impl Identity {
    fn of(identity: &BackendIdentity) -> Identity {
        Identity((*identity != ANONYMOUS).then(|| Box::new(identity.clone())))
    }
}

impl Deref for Identity {
    type Target = BackendIdentity;

    fn deref(&self) -> &BackendIdentity {
        self.0.as_deref().unwrap_or(&ANONYMOUS)
    }
}
