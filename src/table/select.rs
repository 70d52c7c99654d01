//! How an upstream picks a backend: Pingora's balancers for round robin, random and consistent
//! hashing ([`super::balancer`]), and berth's own load-aware selectors (least connections,
//! power of two choices, peak EWMA) over the same members. The algorithm is matched once, when
//! the upstream is built, into a [`Selector`]; a request only runs the one it got.
//!
//! Every selector sees the same rules: a backend is a candidate when it is routable, not
//! excluded (it failed this request already) and below `max_connections`; a backend in slow
//! start counts with a fraction of its weight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_load_balancing::Backend;

use super::balancer::Balancer;
use super::member::{Member, MemberIndex};
use crate::model::policy::Algorithm;
use crate::model::BackendSpec;

pub enum Selector {
    Pingora(Balancer),
    LeastConn,
    P2c,
    Ewma,
}

impl Selector {
    pub fn new(algorithm: Algorithm, members: &[Arc<Member>], backends: &[BackendSpec]) -> Self {
        match algorithm {
            Algorithm::RoundRobin => Selector::Pingora(Balancer::round_robin(members, backends)),
            Algorithm::Random => Selector::Pingora(Balancer::random(members, backends)),
            Algorithm::ConsistentHash => {
                Selector::Pingora(Balancer::consistent_hash(members, backends))
            }
            Algorithm::LeastConn => Selector::LeastConn,
            Algorithm::P2c => Selector::P2c,
            Algorithm::Ewma => Selector::Ewma,
        }
    }
}

/// Who may take this request, and with what weight.
pub struct Candidates<'a> {
    pub members: &'a [Arc<Member>],
    pub weights: &'a [u16],
    pub exclude: &'a [MemberIndex],
    pub max_connections: Option<u32>,
    pub slow_start: Duration,
    pub now: Instant,
}

impl Candidates<'_> {
    pub fn eligible(&self, i: usize) -> bool {
        let member = &self.members[i];
        !self.exclude.contains(&(i as MemberIndex))
            && member.routable()
            && self
                .max_connections
                .is_none_or(|max| member.in_flight() < i64::from(max))
    }

    /// The member's weight, scaled down while it is in slow start.
    pub fn weight(&self, i: usize) -> f64 {
        f64::from(self.weights[i]) * self.slow_start_factor(i)
    }

    /// From 0.1 just after the backend became routable to 1 after `slow_start`.
    pub fn slow_start_factor(&self, i: usize) -> f64 {
        if self.slow_start.is_zero() {
            return 1.0;
        }
        let up_for = self.members[i].routable_for(self.now);
        (up_for.as_secs_f64() / self.slow_start.as_secs_f64()).clamp(0.1, 1.0)
    }

    /// Requests in flight per unit of weight, counting this one.
    fn load(&self, i: usize) -> f64 {
        (self.members[i].in_flight().max(0) as f64 + 1.0) / self.weight(i)
    }

    /// Expected latency times load.
    fn ewma_cost(&self, i: usize) -> f64 {
        self.members[i].latency.estimate(self.now) * self.load(i)
    }

    /// The first eligible member in order: the fallback that never misses a routable one.
    pub fn first(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| self.eligible(i))
    }

    /// Pingora orders the candidates. A member in slow start is skipped with the probability
    /// its weight is reduced by, relative to the least reduced candidate (when every member
    /// just joined, none is thinned).
    pub fn pingora(
        &self,
        balancer: &Balancer,
        key: &[u8],
        index_of: impl Fn(&Backend) -> Option<usize>,
    ) -> Option<usize> {
        let ramping = !self.slow_start.is_zero();
        let full = if ramping {
            (0..self.members.len())
                .filter(|&i| self.eligible(i))
                .map(|i| self.slow_start_factor(i))
                .fold(0.0, f64::max)
        } else {
            1.0
        };
        let chosen = std::cell::Cell::new(None);
        let accept = |backend: &Backend| match index_of(backend) {
            Some(i) if self.eligible(i) => {
                let take = !ramping || fastrand::f64() * full < self.slow_start_factor(i);
                if take {
                    chosen.set(Some(i));
                }
                take
            }
            _ => false,
        };
        // Round robin walks every backend within len steps; random needs a few more draws
        // to find a lone survivor. Past that bound, fall back to the first eligible.
        let bound = self.members.len() * 4 + 4;
        balancer.select_with(key, bound, accept);
        chosen.get().or_else(|| self.first())
    }

    /// The eligible member with the fewest requests in flight per weight; ties go to whichever
    /// comes first from a random starting point, so no member is favoured.
    pub fn least_conn(&self) -> Option<usize> {
        let n = self.members.len();
        let start = fastrand::usize(..n.max(1));
        let mut best: Option<(usize, f64)> = None;
        for i in (start..n).chain(0..start) {
            if !self.eligible(i) {
                continue;
            }
            let load = self.load(i);
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Of two distinct random eligible members, the cheaper. A few draws find candidates in
    /// O(1); when most members are ineligible, the full scan of least connections decides.
    pub fn two_choices(&self, ewma: bool) -> Option<usize> {
        let n = self.members.len();
        let cost = |i| {
            if ewma {
                self.ewma_cost(i)
            } else {
                self.load(i)
            }
        };
        let mut picked: Option<usize> = None;
        for _ in 0..8 {
            let i = fastrand::usize(..n.max(1));
            if !self.eligible(i) || picked == Some(i) {
                continue;
            }
            match picked {
                None => picked = Some(i),
                Some(first) => return Some(if cost(i) < cost(first) { i } else { first }),
            }
        }
        match picked {
            Some(only) if n == 1 => Some(only),
            _ if ewma => (0..n)
                .filter(|&i| self.eligible(i))
                .min_by(|&a, &b| cost(a).total_cmp(&cost(b))),
            _ => self.least_conn(),
        }
    }
}
