//! One upstream group: its backends ([`Member`]s) with their health and metrics, the Pingora
//! load balancer that orders them, and sticky-session lookup.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use futures_util::FutureExt;
use http::HeaderValue;
use pingora_load_balancing::discovery;
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Consistent, Random, RoundRobin,
};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use rustc_hash::FxHashMap;

use crate::health::{HealthState, HealthStatus};
use crate::metrics::{InfoSeries, Metrics, ServerSeries, ServiceSeries};
use crate::model::{Admission, Algorithm, BackendIdentity, BackendSpec, ProbeKind, ServiceSpec};
use crate::probe::{Probe, ProbeCache};

/// One backend of one service. Shared by every route-table version that routes to it, so its
/// health, in-flight count and metrics survive reloads and discovery updates.
pub struct Member {
    pub service: Arc<str>,
    pub addr: SocketAddr,
    pub identity: BackendIdentity,
    /// The value of the sticky cookie that pins a client to this backend.
    pub cookie_id: Box<str>,
    pub backend: Backend,
    pub health: HealthState,
    admission: AtomicU8,
    pub series: Arc<ServerSeries>,
    _info: InfoSeries,
}

const OPEN: u8 = 0;
const DRAINING: u8 = 1;
const HELD: u8 = 2;

impl Member {
    fn new(spec: &ServiceSpec, backend: &BackendSpec, metrics: &Arc<Metrics>) -> Member {
        let server = backend.addr.to_string();
        let member = Member {
            service: Arc::from(spec.name.as_str()),
            addr: backend.addr,
            cookie_id: cookie_id(backend).into(),
            backend: Backend::new_with_weight(&server, 1).expect("a SocketAddr parses"),
            health: HealthState::joining(&spec.policy.health_check),
            admission: AtomicU8::new(admission_code(&backend.admission)),
            series: metrics.server(&spec.name, &server),
            _info: metrics.server_info(&spec.name, &server, &backend.identity),
            identity: backend.identity.clone(),
        };
        member.refresh_up_gauge();
        member
    }

    /// Whether new requests may go to this backend.
    pub fn routable(&self) -> bool {
        self.health.status() == HealthStatus::Up && self.admission.load(Relaxed) == OPEN
    }

    /// `container_name (ip:port)` or `ip:port`, for log lines.
    pub fn label(&self) -> String {
        match &self.identity.container_name {
            Some(name) => format!("{name} ({})", self.addr),
            None => self.addr.to_string(),
        }
    }

    /// Keeps `berth_server_up` equal to [`Self::routable`].
    pub fn refresh_up_gauge(&self) {
        self.series.up.set(i64::from(self.routable()));
    }

    fn set_admission(&self, admission: &Admission) {
        self.admission.store(admission_code(admission), Relaxed);
        self.refresh_up_gauge();
    }
}

fn admission_code(admission: &Admission) -> u8 {
    match admission {
        Admission::Open => OPEN,
        Admission::Draining => DRAINING,
        Admission::DockerHealth(_) => HELD,
    }
}

/// The container id for containers (acsrouting's `CONTAINERID` cookie); for static backends a
/// stable hash of the address, so cookies survive restarts without revealing the address.
fn cookie_id(backend: &BackendSpec) -> String {
    match &backend.identity.container_id {
        Some(id) => id.clone(),
        None => {
            use std::hash::Hasher;
            let mut hasher = fnv::FnvHasher::default();
            hasher.write(backend.addr.to_string().as_bytes());
            format!("{:016x}", hasher.finish())
        }
    }
}

/// Pingora's load balancer for the configured algorithm.
enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<Consistent>),
}

fn load_balancer<S>(backends: std::collections::BTreeSet<Backend>) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let lb = LoadBalancer::from_backends(Backends::new(discovery::Static::new(backends)));
    lb.update()
        .now_or_never()
        .expect("static discovery completes at once")
        .expect("static discovery cannot fail");
    lb
}

impl Balancer {
    fn new(algorithm: Algorithm, members: &[Arc<Member>], spec: &ServiceSpec) -> Balancer {
        let backends = members
            .iter()
            .zip(&spec.backends)
            .map(|(member, backend)| {
                let mut b = member.backend.clone();
                b.weight = usize::from(backend.weight);
                b
            })
            .collect();
        match algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin(load_balancer(backends)),
            Algorithm::Random => Balancer::Random(load_balancer(backends)),
            Algorithm::ConsistentHash => Balancer::Consistent(load_balancer(backends)),
        }
    }

    fn select_with(
        &self,
        key: &[u8],
        max_iterations: usize,
        accept: impl Fn(&Backend, bool) -> bool,
    ) -> Option<Backend> {
        match self {
            Balancer::RoundRobin(lb) => lb.select_with(key, max_iterations, accept),
            Balancer::Random(lb) => lb.select_with(key, max_iterations, accept),
            Balancer::Consistent(lb) => lb.select_with(key, max_iterations, accept),
        }
    }
}

/// A service's live upstream group. Immutable once built; a change builds a new one that
/// reuses the [`Member`]s of unchanged backends.
pub struct Upstream {
    pub spec: ServiceSpec,
    members: Box<[Arc<Member>]>,
    by_addr: FxHashMap<SocketAddr, u32>,
    by_cookie: FxHashMap<Box<[u8]>, u32>,
    /// `Set-Cookie` values, aligned with `members`; empty when the service is not sticky.
    set_cookies: Box<[HeaderValue]>,
    balancer: Balancer,
    probe: Option<Arc<Probe>>,
    pub series: Arc<ServiceSeries>,
}

/// Index of a backend within its [`Upstream`].
pub type MemberIndex = u32;

impl Upstream {
    /// Builds the upstream for `spec`, keeping the health and metrics of every backend that
    /// `previous` (the same service's last upstream) already had.
    pub fn build(
        spec: ServiceSpec,
        previous: Option<&Upstream>,
        metrics: &Arc<Metrics>,
        probes: &ProbeCache,
    ) -> Upstream {
        let members: Box<[Arc<Member>]> = spec
            .backends
            .iter()
            .map(|backend| {
                let reused = previous.and_then(|p| p.member_for(backend));
                match reused {
                    Some(member) => {
                        if spec.policy.health_check.kind == ProbeKind::None {
                            member.health.force_up();
                        }
                        member.set_admission(&backend.admission);
                        Arc::clone(member)
                    }
                    None => Arc::new(Member::new(&spec, backend, metrics)),
                }
            })
            .collect();
        let by_addr = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.addr, i as MemberIndex))
            .collect();
        let (by_cookie, set_cookies) = match &spec.policy.sticky_cookie {
            None => (FxHashMap::default(), Box::default()),
            Some(name) => (
                members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.cookie_id.as_bytes().into(), i as MemberIndex))
                    .collect(),
                members
                    .iter()
                    .map(|m| {
                        HeaderValue::from_str(&format!("{name}={}; path=/", m.cookie_id))
                            .expect("cookie names and ids are validated tokens")
                    })
                    .collect(),
            ),
        };
        let probe_host = spec
            .domains
            .iter()
            .find(|d| !d.starts_with('*'))
            .map_or("localhost", String::as_str);
        let probe = Probe::new(&spec.policy.health_check, probe_host, probes);
        Upstream {
            balancer: Balancer::new(spec.policy.algorithm, &members, &spec),
            series: metrics.service(&spec.name),
            members,
            by_addr,
            by_cookie,
            set_cookies,
            probe,
            spec,
        }
    }

    fn member_for(&self, backend: &BackendSpec) -> Option<&Arc<Member>> {
        let member = &self.members[*self.by_addr.get(&backend.addr)? as usize];
        (member.identity.container_id == backend.identity.container_id).then_some(member)
    }

    pub fn members(&self) -> &[Arc<Member>] {
        &self.members
    }

    pub fn member(&self, index: MemberIndex) -> &Arc<Member> {
        &self.members[index as usize]
    }

    pub fn probe(&self) -> Option<&Arc<Probe>> {
        self.probe.as_ref()
    }

    /// The backend a sticky cookie names, if it is still routable and not in `exclude`.
    pub fn sticky_member(
        &self,
        cookie_value: &[u8],
        exclude: &[MemberIndex],
    ) -> Option<MemberIndex> {
        let index = *self.by_cookie.get(cookie_value)?;
        (!exclude.contains(&index) && self.members[index as usize].routable()).then_some(index)
    }

    /// The `Set-Cookie` value that pins a client to `index`; `None` if not sticky.
    pub fn set_cookie(&self, index: MemberIndex) -> Option<&HeaderValue> {
        self.set_cookies.get(index as usize)
    }

    /// Picks a routable backend by the service's algorithm, skipping `exclude` (backends this
    /// request already failed on). `None` only when no routable backend is left.
    pub fn select(&self, key: &[u8], exclude: &[MemberIndex]) -> Option<MemberIndex> {
        let chosen = std::cell::Cell::new(None);
        let accept = |backend: &Backend, _pingora_healthy: bool| {
            // Pingora's own health is unused (see `health`): berth's member state decides.
            let Some(inet) = backend.addr.as_inet() else {
                return false;
            };
            match self.by_addr.get(inet) {
                Some(&i) if !exclude.contains(&i) && self.members[i as usize].routable() => {
                    chosen.set(Some(i));
                    true
                }
                _ => false,
            }
        };
        // Round robin walks every backend within len steps; random needs a few more draws
        // to find a lone survivor. Past that bound, scan in order so a routable backend is
        // never missed.
        let bound = self.members.len() * 4 + 4;
        if self.balancer.select_with(key, bound, accept).is_some() {
            return chosen.get();
        }
        (0..self.members.len() as MemberIndex)
            .find(|i| !exclude.contains(i) && self.members[*i as usize].routable())
    }

    /// Whether any backend could take a retry.
    pub fn has_routable_besides(&self, exclude: &[MemberIndex]) -> bool {
        (0..self.members.len() as MemberIndex)
            .any(|i| !exclude.contains(&i) && self.members[i as usize].routable())
    }
}
