//! One upstream group: its members, the balancer that orders them, its sticky-cookie index and
//! its probe. Immutable once built; a change builds a new one that reuses the [`Member`]s of
//! unchanged backends.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use pingora_load_balancing::Backend;
use rustc_hash::FxHashMap;

use super::balancer::Balancer;
use super::member::{Member, MemberIndex};
use super::sticky::Sticky;
use crate::health::probe::{Probe, ProbeCache};
use crate::health::state::HealthStatus;
use crate::metrics::ServiceSeries;
use crate::spec::policy::{Policy, ProbeKind};
use crate::spec::{Admission, BackendSpec, PlatformHealth, ServiceSpec};

/// How a backend stands, as operators see it (the admin API, the status page, `berth routes`):
/// what the platform says (stopping, its own health check) comes before berth's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// berth's probes decide (without a probe the backend is always up).
    Probed(HealthStatus),
    /// Its container is stopping: in-flight requests finish, new ones go elsewhere.
    Draining,
    /// The platform's own health check (Docker's `HEALTHCHECK`) holds it back.
    Held(PlatformHealth),
}

impl Standing {
    /// `healthy`, `unhealthy`, `starting` or `draining`: the `health` of `/api/routes`.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Probed(status) => status.as_str(),
            Standing::Draining => "draining",
            Standing::Held(PlatformHealth::Starting) => "starting",
            Standing::Held(PlatformHealth::Unhealthy) => "unhealthy",
        }
    }
}

pub struct Upstream {
    /// What the sources said.
    pub spec: ServiceSpec,
    /// The spec's policy with the defaults applied: what requests and probes run with.
    pub policy: Policy,
    members: Box<[Arc<Member>]>,
    by_addr: FxHashMap<SocketAddr, MemberIndex>,
    sticky: Sticky,
    balancer: Balancer,
    probe: Option<Arc<Probe>>,
    pub series: Arc<ServiceSeries>,
}

impl Upstream {
    /// Builds the upstream for `spec`, keeping the health and metrics of every backend that
    /// `previous` (the same service's last upstream) already had.
    pub fn build(
        spec: ServiceSpec,
        policy: Policy,
        previous: Option<&Upstream>,
        probes: &ProbeCache,
    ) -> Upstream {
        let members: Box<[Arc<Member>]> = spec
            .backends
            .iter()
            .map(
                |backend| match previous.and_then(|p| p.member_for(backend)) {
                    Some(member) => {
                        if policy.health_check.kind == ProbeKind::None {
                            member.stop_probing();
                        }
                        member.set_admission(&backend.admission);
                        Arc::clone(member)
                    }
                    None => Arc::new(Member::new(
                        &spec.name,
                        backend,
                        &policy.health_check,
                        previous
                            .and_then(|p| p.member_at(backend.addr))
                            .map(|m| Arc::clone(&m.series)),
                    )),
                },
            )
            .collect();
        let by_addr = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.addr, i as MemberIndex))
            .collect();
        let probe_host = spec
            .domains
            .iter()
            .find(|d| !d.starts_with('*'))
            .map_or("localhost", String::as_str);
        Upstream {
            balancer: Balancer::new(policy.algorithm, &members, &spec.backends),
            sticky: Sticky::new(policy.sticky_cookie.as_deref(), &members),
            probe: Probe::new(&policy.health_check, probe_host, probes),
            series: previous
                .map_or_else(|| ServiceSeries::new(&spec.name), |p| Arc::clone(&p.series)),
            members,
            by_addr,
            spec,
            policy,
        }
    }

    fn member_at(&self, addr: SocketAddr) -> Option<&Arc<Member>> {
        Some(&self.members[*self.by_addr.get(&addr)? as usize])
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
        match &self.spec.backends[index].admission {
            Admission::Draining => Standing::Draining,
            Admission::Held(platform) => Standing::Held(*platform),
            Admission::Open => Standing::Probed(self.members[index].health.status()),
        }
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
        let index = self.sticky.lookup(cookie_value)?;
        (!exclude.contains(&index) && self.members[index as usize].routable()).then_some(index)
    }

    /// The `Set-Cookie` value that pins a client to `index`; `None` if not sticky.
    pub fn set_cookie(&self, index: MemberIndex) -> Option<&HeaderValue> {
        self.sticky.set_cookie(index)
    }

    /// Picks a routable backend by the service's algorithm, skipping `exclude` (backends this
    /// request already failed on). `None` only when no routable backend is left.
    pub fn select(&self, key: &[u8], exclude: &[MemberIndex]) -> Option<MemberIndex> {
        let chosen = std::cell::Cell::new(None);
        let accept = |backend: &Backend, _pingora_healthy: bool| {
            // Pingora's own health is unused (see `health::state`): berth's member state decides.
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
