//! The adapter between berth's members and Pingora's selection algorithms: weighted round
//! robin, weighted random and Ketama consistent hashing, built over the members' addresses
//! and weights. Pingora orders the candidates; berth's member state decides who may take a
//! request.
//!
//! berth uses Pingora's `BackendSelection` implementations directly rather than its
//! `LoadBalancer`: the load balancer wraps them with service discovery and health state that
//! berth keeps itself (see `health::state`), costs several allocations per service (felt at
//! 10,000 services), and its `select_with` allocates a set and clones a `Backend` per request.

use std::collections::BTreeSet;
use std::sync::Arc;

use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Consistent, Random, RoundRobin,
};
use pingora_load_balancing::Backend;

use super::member::Member;
use crate::model::BackendSpec;

pub enum Balancer {
    RoundRobin(Arc<RoundRobin>),
    Random(Arc<Random>),
    Consistent(Arc<Consistent>),
}

/// The members' addresses with the spec's weights, as Pingora's selections take them.
/// `members` and `backends` are aligned.
fn weighted(members: &[Arc<Member>], backends: &[BackendSpec]) -> BTreeSet<Backend> {
    members
        .iter()
        .zip(backends)
        .map(|(member, spec)| {
            let mut b = member.backend();
            b.weight = usize::from(spec.weight);
            b
        })
        .collect()
}

/// Offers `selection`'s candidates for `key` to `accept` until it takes one, at most
/// `max_iterations` times.
fn first_accepted<S>(
    selection: &Arc<S>,
    key: &[u8],
    max_iterations: usize,
    mut accept: impl FnMut(&Backend) -> bool,
) -> bool
where
    S: BackendSelection,
    S::Iter: BackendIter,
{
    let mut candidates = selection.iter(key);
    for _ in 0..max_iterations {
        match candidates.next() {
            Some(backend) if accept(backend) => return true,
            Some(_) => {}
            None => return false,
        }
    }
    false
}

impl Balancer {
    pub fn round_robin(members: &[Arc<Member>], backends: &[BackendSpec]) -> Self {
        Balancer::RoundRobin(Arc::new(RoundRobin::build(&weighted(members, backends))))
    }

    pub fn random(members: &[Arc<Member>], backends: &[BackendSpec]) -> Self {
        Balancer::Random(Arc::new(Random::build(&weighted(members, backends))))
    }

    pub fn consistent_hash(members: &[Arc<Member>], backends: &[BackendSpec]) -> Self {
        Balancer::Consistent(Arc::new(Consistent::build(&weighted(members, backends))))
    }

    /// Pingora's candidates in the algorithm's order, until `accept` takes one (`true`) or
    /// `max_iterations` are seen.
    pub fn select_with(
        &self,
        key: &[u8],
        max_iterations: usize,
        accept: impl FnMut(&Backend) -> bool,
    ) -> bool {
        match self {
            Balancer::RoundRobin(s) => first_accepted(s, key, max_iterations, accept),
            Balancer::Random(s) => first_accepted(s, key, max_iterations, accept),
            Balancer::Consistent(s) => first_accepted(s, key, max_iterations, accept),
        }
    }
}
