//! One upstream group: its members, how it picks among them, its sticky-cookie index, its
//! probe, and the service-wide state around requests (retry budget, wait queue, ejection
//! limits). Immutable once built; a change builds a new one that reuses the [`Member`]s of
//! unchanged backends and the service-wide state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use pingora_load_balancing::Backend;
use rustc_hash::FxHashMap;

use super::budget::RetryBudgetWindow;
use super::member::{Member, MemberIndex};
use super::queue::{Refused, WaitQueue};
use super::select::{Candidates, Selector};
use super::sticky::Sticky;
use crate::health::passive::Ejection;
use crate::health::probe::{Probe, ProbeCache};
use crate::health::state::HealthStatus;
use crate::metrics::ServiceSeries;
use crate::model::policy::{Policy, ProbeKind};
use crate::model::{Admission, BackendSpec, PlatformHealth, ServiceSpec};

/// How a backend stands, as operators see it (the admin API, the status page, `berth routes`):
/// what the platform says (stopping, its own health check) comes before berth's probes.
#[derive(Clone, Debug)]
pub enum Standing {
    /// berth's probes decide (without a probe the backend is always up).
    Probed(HealthStatus),
    /// Its container is stopping: in-flight requests finish, new ones go elsewhere.
    Draining,
    /// The platform's own health check (Docker's `HEALTHCHECK`) holds it back.
    Held(PlatformHealth),
    /// Passive health took it out after failing requests, until the ejection ends.
    Ejected(Ejection),
}

impl Standing {
    /// `healthy`, `unhealthy`, `starting`, `draining` or `ejected`: the `health` of
    /// `/api/routes`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Standing::Probed(status) => status.as_str(),
            Standing::Draining => "draining",
            Standing::Held(PlatformHealth::Starting) => "starting",
            Standing::Held(PlatformHealth::Unhealthy) => "unhealthy",
            Standing::Ejected(_) => "ejected",
        }
    }
}

pub struct Upstream {
    /// What the sources said (the merged snapshot's spec itself, not a copy).
    pub spec: Arc<ServiceSpec>,
    /// The spec's policy with the defaults applied: what requests and probes run with.
    /// Shared by the upstreams that resolve to the same policy (usually most of them).
    pub policy: Arc<Policy>,
    members: Box<[Arc<Member>]>,
    /// Aligned with `members`.
    weights: Box<[u16]>,
    by_addr: AddrIndex,
    sticky: Sticky,
    selector: Selector,
    probe: Option<Arc<Probe>>,
    pub series: Arc<ServiceSeries>,
    retry_budget: Arc<RetryBudgetWindow>,
    pub queue: Arc<WaitQueue>,
}

impl Upstream {
    /// Builds the upstream for `spec`, keeping the health and metrics of every backend that
    /// `previous` (the same service's last upstream) already had.
    pub fn build(
        spec: Arc<ServiceSpec>,
        policy: Arc<Policy>,
        previous: Option<&Upstream>,
        probes: &ProbeCache,
    ) -> Upstream {
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let members: Box<[Arc<Member>]> = spec
            .backends
            .iter()
            .map(|backend| member(&name, &policy, backend, previous))
            .collect();
        let by_addr = AddrIndex::new(&members);
        let probe_host = spec
            .domains
            .iter()
            .find(|d| !d.starts_with('*'))
            .map_or("localhost", String::as_str);
        Upstream {
            selector: Selector::new(policy.algorithm, &members, &spec.backends),
            sticky: Sticky::new(policy.sticky_cookie.as_deref(), &members),
            probe: Probe::new(
                &policy.health_check,
                probe_host,
                policy.backend_protocol,
                probes,
            ),
            series: previous
                .map_or_else(|| ServiceSeries::new(&spec.name), |p| Arc::clone(&p.series)),
            retry_budget: previous.map_or_else(Default::default, |p| Arc::clone(&p.retry_budget)),
            queue: previous.map_or_else(Default::default, |p| Arc::clone(&p.queue)),
            weights: spec.backends.iter().map(|b| b.weight).collect(),
            members,
            by_addr,
            spec,
            policy,
        }
    }

    fn member_at(&self, addr: SocketAddr) -> Option<&Arc<Member>> {
        Some(&self.members[self.by_addr.find(&self.members, addr)? as usize])
    }

    /// The member `previous` had for this backend: same address and same instance.
    fn member_for(&self, backend: &BackendSpec) -> Option<&Arc<Member>> {
        self.member_at(backend.addr)
            .filter(|m| m.identity.id == backend.identity.id)
    }

    pub fn members(&self) -> &[Arc<Member>] {
        &self.members
    }

    pub fn member(&self, index: MemberIndex) -> &Arc<Member> {
        &self.members[index as usize]
    }

    /// How the backend at `index` (of [`Self::members`], the order of `spec.backends`) stands.
    pub fn standing(&self, index: usize) -> Standing {
        let member = &self.members[index];
        match &self.spec.backends[index].admission {
            Admission::Draining => Standing::Draining,
            Admission::Held(platform) => Standing::Held(*platform),
            Admission::Open => match (
                member.health.status(),
                member.passive.ejection(Instant::now()),
            ) {
                (HealthStatus::Up, Some(ejection)) => Standing::Ejected(ejection),
                (status, _) => Standing::Probed(status),
            },
        }
    }

    pub fn probe(&self) -> Option<&Arc<Probe>> {
        self.probe.as_ref()
    }

    fn candidates<'a>(&'a self, exclude: &'a [MemberIndex]) -> Candidates<'a> {
        Candidates {
            members: &self.members,
            weights: &self.weights,
            exclude,
            max_connections: self.policy.max_connections,
            slow_start: self.policy.slow_start,
            now: Instant::now(),
        }
    }

    /// The backend a sticky cookie names, if it is still routable, has capacity and is not
    /// in `exclude`; it is then counted in flight (give it back with [`Self::release`]).
    pub fn sticky_member(
        &self,
        cookie_value: &[u8],
        exclude: &[MemberIndex],
    ) -> Option<MemberIndex> {
        let index = self.sticky.lookup(cookie_value)?;
        let member = &self.members[index as usize];
        (!exclude.contains(&index)
            && member.routable()
            && member.try_acquire(self.policy.max_connections))
        .then_some(index)
    }

    /// The `Set-Cookie` value that pins a client to `index`; `None` if not sticky.
    pub fn set_cookie(&self, index: MemberIndex) -> Option<&HeaderValue> {
        self.sticky.set_cookie(index)
    }

    /// Picks a backend by the service's algorithm among the routable ones with capacity,
    /// skipping `exclude` (backends this request already failed on), and counts it in flight
    /// (give it back with [`Self::release`]). `None` when no backend can take the request now.
    pub fn select(&self, key: &[u8], exclude: &[MemberIndex]) -> Option<MemberIndex> {
        let candidates = self.candidates(exclude);
        // Another request may take the last slot of the chosen backend between the choice and
        // the count: choose again.
        for _ in 0..4 {
            let chosen = match &self.selector {
                Selector::Pingora(balancer) => {
                    candidates.pingora(balancer, key, |b| self.index_of(b).map(|i| i as usize))
                }
                Selector::LeastConn => candidates.least_conn(),
                Selector::P2c => candidates.two_choices(false),
                Selector::Ewma => candidates.two_choices(true),
            }?;
            if self.members[chosen].try_acquire(self.policy.max_connections) {
                return Some(chosen as MemberIndex);
            }
        }
        None
    }

    /// Like [`Self::select`], but when every routable backend is at `max_connections`, waits
    /// in the service's queue for one to free up.
    pub async fn select_or_wait(&self, key: &[u8]) -> Result<MemberIndex, Refused> {
        if let Some(index) = self.select(key, &[]) {
            return Ok(index);
        }
        if self.policy.max_connections.is_none() || !self.has_routable_besides(&[]) {
            return Err(Refused::TimedOut);
        }
        let queue = &self.policy.queue;
        let waited = self
            .queue
            .wait_for(queue.max_waiting, queue.timeout, || self.select(key, &[]))
            .await;
        if waited == Err(Refused::TimedOut) {
            self.series.queue_timeouts.inc();
        }
        waited
    }

    /// A request is done with `index`: its slot is free for the next one.
    pub fn release(&self, index: MemberIndex) {
        self.members[index as usize].release();
        if self.policy.max_connections.is_some() {
            self.queue.release_one();
        }
    }

    fn index_of(&self, backend: &Backend) -> Option<MemberIndex> {
        self.by_addr.find(&self.members, *backend.addr.as_inet()?)
    }

    /// Whether any backend could take a retry.
    pub fn has_routable_besides(&self, exclude: &[MemberIndex]) -> bool {
        (0..self.members.len() as MemberIndex)
            .any(|i| !exclude.contains(&i) && self.members[i as usize].routable())
    }

    /// Counts a request against the retry budget's window.
    pub fn record_request(&self) {
        if self.policy.retry_budget.is_some() {
            self.retry_budget.record_request(Instant::now());
        }
    }

    /// Spends a retry from the budget; `false` (counted) when it is exhausted.
    pub fn try_retry(&self) -> bool {
        let Some(budget) = &self.policy.retry_budget else {
            return true;
        };
        let granted = self.retry_budget.try_retry(budget, Instant::now());
        if !granted {
            self.series.retry_budget_exhausted.inc();
        }
        granted
    }

    /// A real request on `index` got an answer that is not a failure.
    pub fn observe_success(&self, index: MemberIndex) {
        if self.policy.passive_health.is_some() {
            self.members[index as usize].passive.record_success();
        }
    }

    /// A real request on `index` failed (`why`: a status, a timeout, a reset). With passive
    /// health on, enough failures eject it, unless that would eject more than
    /// `max_ejected_percent` of the service or its last routable backend: a service whose
    /// every backend fails keeps trying rather than going dark on a false positive.
    pub fn observe_failure(&self, index: MemberIndex, why: &str) {
        let Some(spec) = &self.policy.passive_health else {
            return;
        };
        let now = Instant::now();
        let member = &self.members[index as usize];
        if !member.passive.record_failure(spec, now) {
            return;
        }
        let ejected = self
            .members
            .iter()
            .filter(|m| m.passive.is_ejected(now))
            .count();
        let others_routable = self
            .members
            .iter()
            .enumerate()
            .any(|(i, m)| i != index as usize && m.routable());
        let within_share =
            (ejected + 1) * 100 <= usize::from(spec.max_ejected_percent) * self.members.len();
        if !others_routable || !within_share {
            return;
        }
        let length = member.passive.eject(spec, why.to_owned(), now);
        member.series.ejections.inc();
        tracing::warn!(
            service = %self.spec.name,
            backend = %member.label(),
            "backend ejected for {length:?}: {why}"
        );
    }
}

/// Up to this many members, finding one by address scans them: faster than hashing, and no
/// map per service (most have a few backends).
const SCAN_UP_TO: usize = 8;

/// Finds a member's index by its address.
enum AddrIndex {
    Scan,
    Map(FxHashMap<SocketAddr, MemberIndex>),
}

impl AddrIndex {
    fn new(members: &[Arc<Member>]) -> AddrIndex {
        if members.len() <= SCAN_UP_TO {
            return AddrIndex::Scan;
        }
        AddrIndex::Map(
            members
                .iter()
                .enumerate()
                .map(|(i, m)| (m.addr, i as MemberIndex))
                .collect(),
        )
    }

    fn find(&self, members: &[Arc<Member>], addr: SocketAddr) -> Option<MemberIndex> {
        match self {
            AddrIndex::Scan => members
                .iter()
                .position(|m| m.addr == addr)
                .map(|i| i as MemberIndex),
            AddrIndex::Map(map) => map.get(&addr).copied(),
        }
    }
}

/// The member for `backend`: `previous`'s if it had this very backend, else a new one.
fn member(
    service: &Arc<str>,
    policy: &Policy,
    backend: &BackendSpec,
    previous: Option<&Upstream>,
) -> Arc<Member> {
    match previous.and_then(|p| p.member_for(backend)) {
        Some(member) => {
            if policy.health_check.kind == ProbeKind::None {
                member.stop_probing();
            }
            member.set_admission(&backend.admission);
            Arc::clone(member)
        }
        None => Arc::new(Member::new(
            service,
            backend,
            &policy.health_check,
            previous
                .and_then(|p| p.member_at(backend.addr))
                .map(|m| Arc::clone(&m.series)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::policy::{Algorithm, HealthCheckSpec, PassiveHealthSpec};
    use crate::table::tests::service;

    /// Backends with these weights, in rotation from the start (no probe).
    fn upstream(weights: &[u16], tune: impl FnOnce(&mut Policy)) -> Upstream {
        let mut spec = service("svc", &["svc.test"], "/");
        spec.backends = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let mut b = BackendSpec::new(format!("10.0.0.{}:80", i + 1).parse().unwrap());
                b.weight = weight;
                b
            })
            .collect();
        let mut policy = Policy {
            health_check: HealthCheckSpec {
                kind: ProbeKind::None,
                ..HealthCheckSpec::default()
            },
            ..Policy::default()
        };
        tune(&mut policy);
        Upstream::build(
            Arc::new(spec),
            Arc::new(policy),
            None,
            &ProbeCache::default(),
        )
    }

    /// Picks `n` times; `hold` keeps every pick in flight (a loaded service), else each is
    /// released at once.
    fn shares(u: &Upstream, n: usize, hold: bool) -> Vec<usize> {
        let mut counts = vec![0; u.members().len()];
        for i in 0..n {
            let key = (i as u32).to_be_bytes();
            let picked = u.select(&key, &[]).expect("a backend is routable");
            counts[picked as usize] += 1;
            if !hold {
                u.release(picked);
            }
        }
        counts
    }

    fn assert_near(counts: &[usize], expected: &[f64], tolerance: f64) {
        let total: usize = counts.iter().sum();
        for (count, share) in counts.iter().zip(expected) {
            let got = *count as f64 / total as f64;
            assert!(
                (got - share).abs() <= tolerance,
                "{counts:?} is not within {tolerance} of {expected:?}"
            );
        }
    }

    const ONE_TWO_THREE: [f64; 3] = [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0];

    #[test]
    fn every_algorithm_honours_the_weights() {
        let rr = upstream(&[1, 2, 3], |p| p.algorithm = Algorithm::RoundRobin);
        assert_eq!(
            shares(&rr, 600, false),
            [100, 200, 300],
            "round robin is exact"
        );
        let random = upstream(&[1, 2, 3], |p| p.algorithm = Algorithm::Random);
        assert_near(&shares(&random, 6000, false), &ONE_TWO_THREE, 0.03);
        // The load-aware ones spread requests in flight by weight.
        let least = upstream(&[1, 2, 3], |p| p.algorithm = Algorithm::LeastConn);
        let held = shares(&least, 60, true);
        assert!(
            held.iter()
                .zip([10, 20, 30])
                .all(|(h, e)| h.abs_diff(e) <= 1),
            "{held:?}"
        );
        for algorithm in [Algorithm::P2c, Algorithm::Ewma] {
            let u = upstream(&[1, 2, 3], |p| p.algorithm = algorithm);
            assert_near(&shares(&u, 600, true), &ONE_TWO_THREE, 0.05);
        }
    }

    #[test]
    fn members_are_found_by_address_with_few_or_many_backends() {
        for n in [3, SCAN_UP_TO + 4] {
            let u = upstream(&vec![1; n], |p| p.algorithm = Algorithm::RoundRobin);
            assert_eq!(shares(&u, n * 10, false), vec![10; n], "{n} backends");
            let last = BackendSpec::new(u.member(n as MemberIndex - 1).addr);
            assert!(u.member_for(&last).is_some(), "{n} backends");
        }
    }

    #[test]
    fn least_conn_breaks_ties_without_bias() {
        let u = upstream(&[1, 1, 1, 1], |p| p.algorithm = Algorithm::LeastConn);
        assert_near(&shares(&u, 4000, false), &[0.25; 4], 0.03);
    }

    #[test]
    fn ewma_sends_less_to_a_slow_backend() {
        let u = upstream(&[1, 1], |p| p.algorithm = Algorithm::Ewma);
        let now = Instant::now();
        u.member(0).latency.observe(Duration::from_millis(200), now);
        u.member(1).latency.observe(Duration::from_millis(2), now);
        let counts = shares(&u, 200, true);
        assert!(counts[0] * 10 < counts[1], "{counts:?}");
    }

    #[test]
    fn slow_start_ramps_a_new_backend_from_a_tenth() {
        let u = upstream(&[1, 1], |p| {
            p.algorithm = Algorithm::RoundRobin;
            p.slow_start = Duration::from_secs(2);
        });
        // Both joined now: both at 10%, so the same share as each other.
        assert_near(&shares(&u, 4000, false), &[0.5, 0.5], 0.04);
        let candidates = u.candidates(&[]);
        assert!((candidates.slow_start_factor(0) - 0.1).abs() < 1e-6);
        // One in rotation for half the ramp, one just joined: 0.5 against 0.1.
        std::thread::sleep(Duration::from_secs(1));
        u.member(1).routable_since_for_test(Instant::now());
        assert_near(&shares(&u, 6000, false), &[5.0 / 6.0, 1.0 / 6.0], 0.05);
    }

    #[test]
    fn max_connections_caps_each_backend() {
        let u = upstream(&[1, 1, 1], |p| p.max_connections = Some(2));
        let held: Vec<MemberIndex> = (0..6).map(|_| u.select(b"", &[]).unwrap()).collect();
        assert!(u.select(b"", &[]).is_none(), "every backend is full");
        u.release(held[0]);
        assert_eq!(u.select(b"", &[]), Some(held[0]));
    }

    #[test]
    fn passive_health_ejects_within_limits_and_never_the_last_backend() {
        let passive = PassiveHealthSpec {
            consecutive_failures: 2,
            max_ejected_percent: 50,
            ..PassiveHealthSpec::default()
        };
        let u = upstream(&[1, 1, 1, 1], |p| p.passive_health = Some(passive.clone()));
        for index in 0..4 {
            u.observe_failure(index, "503");
            u.observe_failure(index, "503");
        }
        let routable = u.members().iter().filter(|m| m.routable()).count();
        assert_eq!(routable, 2, "at most half are ejected");
        assert_eq!(u.members()[0].series.ejections.get(), 1);

        let alone = upstream(&[1], |p| p.passive_health = Some(passive.clone()));
        for _ in 0..10 {
            alone.observe_failure(0, "503");
        }
        assert!(
            alone.member(0).routable(),
            "the last routable backend stays"
        );
    }
}
