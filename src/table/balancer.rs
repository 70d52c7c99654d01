//! The adapter between berth's members and Pingora's load balancers: one Pingora
//! `LoadBalancer` per upstream, for the service's algorithm, over the members' addresses and
//! weights. Pingora orders the candidates; berth's member state decides who may take a request.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures_util::FutureExt;
use pingora_load_balancing::discovery;
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Consistent, Random, RoundRobin,
};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use super::member::Member;
use crate::spec::BackendSpec;

pub enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<Consistent>),
}

fn load_balancer<S>(backends: BTreeSet<Backend>) -> LoadBalancer<S>
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

/// The members' addresses with the spec's weights, as Pingora's balancers take them.
/// `members` and `backends` are aligned.
fn weighted(members: &[Arc<Member>], backends: &[BackendSpec]) -> BTreeSet<Backend> {
    members
        .iter()
        .zip(backends)
        .map(|(member, spec)| {
            let mut b = member.backend.clone();
            b.weight = usize::from(spec.weight);
            b
        })
        .collect()
}

impl Balancer {
    pub fn round_robin(members: &[Arc<Member>], backends: &[BackendSpec]) -> Self {
        Balancer::RoundRobin(load_balancer(weighted(members, backends)))
    }

    pub fn random(members: &[Arc<Member>], backends: &[BackendSpec]) -> Self {
        Balancer::Random(load_balancer(weighted(members, backends)))
    }

    pub fn consistent_hash(members: &[Arc<Member>], backends: &[BackendSpec]) -> Self {
        Balancer::Consistent(load_balancer(weighted(members, backends)))
    }

    /// Pingora's candidates in the algorithm's order, until `accept` takes one or
    /// `max_iterations` are seen.
    pub fn select_with(
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
