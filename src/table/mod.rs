//! The compiled route table: host and path lookup per listener, pointing at live upstreams.
//!
//! A table is immutable. The control plane compiles a new one from the merged [`Snapshot`]
//! and publishes it with one atomic swap ([`live`]); a request reads the table once and keeps
//! that version to its end.

pub mod balancer;
pub mod budget;
pub mod ewma;
pub mod live;
pub mod member;
pub mod queue;
pub mod select;
pub mod sticky;
pub mod upstream;

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::config::{ListenerConfig, ListenerRole};
use crate::health::probe::ProbeCache;
use crate::model::hostname::DomainSet;
use crate::model::policy::{Policy, Visibility};
use crate::model::{PolicyLayer, Snapshot};
use upstream::Upstream;

/// Routes of one host: `(path prefix, upstream index)`, longest prefix first.
#[derive(Default)]
struct Routes(Vec<(Box<str>, u32)>);

impl Routes {
    fn insert(&mut self, prefix: &str, upstream: u32) {
        self.0.push((prefix.into(), upstream));
        self.0
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    }

    /// Gives back the spare capacity of growing: a host usually has a single route.
    fn shrink(&mut self) {
        self.0.shrink_to_fit();
    }

    fn find(&self, path: &[u8]) -> Option<u32> {
        self.0
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix.as_bytes(), path))
            .map(|(_, upstream)| *upstream)
    }
}

/// `/api` matches `/api` and `/api/...` but not `/apix`; a prefix ending in `/` matches any
/// path that starts with it.
fn prefix_matches(prefix: &[u8], path: &[u8]) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with(b"/") || path.len() == prefix.len() || path[prefix.len()] == b'/')
}

/// The hosts one listener serves.
#[derive(Default)]
struct HostRouter {
    exact: FxHashMap<Box<str>, Routes>,
    /// Keyed by the suffix after `*.`.
    wildcard: FxHashMap<Box<str>, Routes>,
    catch_all: Routes,
}

impl HostRouter {
    fn insert(&mut self, domain: &str, prefix: &str, upstream: u32) {
        let routes = if domain == "*" {
            &mut self.catch_all
        } else if let Some(suffix) = domain.strip_prefix("*.") {
            self.wildcard.entry(suffix.into()).or_default()
        } else {
            self.exact.entry(domain.into()).or_default()
        };
        routes.insert(prefix, upstream);
    }

    /// Called once every route is in.
    fn shrink(&mut self) {
        for routes in self.exact.values_mut().chain(self.wildcard.values_mut()) {
            routes.shrink();
        }
        self.catch_all.shrink();
    }

    /// Exact host first, then wildcards from the longest suffix, then the catch-all; the first
    /// of those with a matching path prefix wins.
    fn find(&self, host: &str, path: &[u8]) -> Option<u32> {
        if let Some(found) = self.exact.get(host).and_then(|r| r.find(path)) {
            return Some(found);
        }
        if !self.wildcard.is_empty() {
            let mut rest = host;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(found) = self.wildcard.get(rest).and_then(|r| r.find(path)) {
                    return Some(found);
                }
            }
        }
        self.catch_all.find(path)
    }
}

/// Whether `listener` serves the service: one it names (or any, when it names none), except
/// that a TLS listener serves only services with `tls` on, a redirecting listener none, and an
/// edge listener no internal service. (An edge listener also skips each domain in
/// `internal_domains`, which [`RouteTable::compile`] checks per domain.)
pub fn serves(
    listener: &ListenerConfig,
    spec: &crate::model::ServiceSpec,
    policy: &Policy,
) -> bool {
    let named = spec
        .listeners
        .as_ref()
        .is_none_or(|names| names.contains(&listener.name));
    let hidden = listener.role == ListenerRole::Edge && policy.visibility == Visibility::Internal;
    named && !hidden && !listener.redirect_https && (listener.tls.is_none() || policy.tls.serve)
}

/// Everything the data path needs to route a request, for every listener.
#[derive(Default)]
pub struct RouteTable {
    upstreams: Vec<Arc<Upstream>>,
    by_name: FxHashMap<String, u32>,
    listeners: Vec<HostRouter>,
    /// Aligned with `upstreams`: the indexes of the listeners that route at least one of the
    /// upstream's domains, for operators asking where a service is reachable.
    served_on: Vec<Box<[usize]>>,
}

impl RouteTable {
    /// Compiles `snapshot` for `listeners`, laying each service's policy over `defaults`.
    /// Upstreams of `previous` whose spec and policy are unchanged are reused as they are;
    /// changed ones are rebuilt keeping their backends' state.
    ///
    /// An edge listener gets no route for an internal service (`visibility: internal`) nor
    /// for a domain in `internal_domains`: a request for one finds what an unknown host finds.
    pub fn compile(
        snapshot: &Snapshot,
        defaults: &PolicyLayer,
        listeners: &[ListenerConfig],
        internal_domains: &DomainSet,
        previous: &RouteTable,
        probes: &ProbeCache,
    ) -> RouteTable {
        let mut table = RouteTable {
            upstreams: Vec::with_capacity(snapshot.services.len()),
            by_name: FxHashMap::default(),
            listeners: listeners.iter().map(|_| HostRouter::default()).collect(),
            served_on: Vec::with_capacity(snapshot.services.len()),
        };
        // Services mostly resolve to the same policy as the one before them: they share it.
        let mut last_policy: Option<Arc<Policy>> = None;
        for spec in &snapshot.services {
            let resolved = spec.policy.over(defaults).resolve();
            let policy = match last_policy {
                Some(last) if *last == resolved => last,
                _ => Arc::new(resolved),
            };
            last_policy = Some(Arc::clone(&policy));
            let old = previous.upstream(&spec.name);
            let upstream = match old {
                Some(old) if old.spec == *spec && old.policy == policy => Arc::clone(old),
                _ => Arc::new(Upstream::build(
                    Arc::clone(spec),
                    policy,
                    old.map(Arc::as_ref),
                    probes,
                )),
            };
            let index = table.upstreams.len() as u32;
            let mut served_on = Vec::new();
            for (at, (listener, router)) in listeners.iter().zip(&mut table.listeners).enumerate() {
                if !serves(listener, spec, &upstream.policy) {
                    continue;
                }
                let edge = listener.role == ListenerRole::Edge;
                for domain in &spec.domains {
                    if !(edge && internal_domains.covers(domain)) {
                        router.insert(domain, &spec.path_prefix, index);
                        if served_on.last() != Some(&at) {
                            served_on.push(at);
                        }
                    }
                }
            }
            table.by_name.insert(spec.name.clone(), index);
            table.upstreams.push(upstream);
            table.served_on.push(served_on.into());
        }
        table.listeners.iter_mut().for_each(HostRouter::shrink);
        table
    }

    /// The upstream for a normalised host and a path on one listener.
    pub fn route(&self, listener: usize, host: &str, path: &[u8]) -> Option<&Arc<Upstream>> {
        let index = self.listeners.get(listener)?.find(host, path)?;
        Some(&self.upstreams[index as usize])
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name
            .get(name)
            .map(|&index| &self.upstreams[index as usize])
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The indexes of the listeners that route the `i`th upstream of [`Self::upstreams`].
    pub fn served_on(&self, i: usize) -> &[usize] {
        &self.served_on[i]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{BackendSpec, ServiceSpec, SourceKind};

    pub(crate) fn service(name: &str, domains: &[&str], prefix: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            path_prefix: prefix.into(),
            listeners: None,
            policy: PolicyLayer::default(),
            backends: vec![BackendSpec::new("127.0.0.1:1".parse().unwrap())],
            source: SourceKind::File,
        }
    }

    fn snapshot(services: Vec<ServiceSpec>) -> Snapshot {
        Snapshot::of(services, None)
    }

    fn listener(name: &str) -> ListenerConfig {
        ListenerConfig::new(name, "127.0.0.1:0".parse().unwrap())
    }

    fn compile(services: Vec<ServiceSpec>) -> RouteTable {
        RouteTable::compile(
            &snapshot(services),
            &PolicyLayer::default(),
            &[listener("main")],
            &DomainSet::default(),
            &RouteTable::default(),
            &ProbeCache::default(),
        )
    }

    fn routed(table: &RouteTable, host: &str, path: &str) -> Option<String> {
        table
            .route(0, host, path.as_bytes())
            .map(|u| u.spec.name.clone())
    }

    #[test]
    fn exact_beats_wildcard_and_longest_suffix_wins() {
        let t = compile(vec![
            service("exact", &["api.example.com"], "/"),
            service("wild", &["*.example.com"], "/"),
            service("deeper", &["*.eu.example.com"], "/"),
        ]);
        assert_eq!(routed(&t, "api.example.com", "/").as_deref(), Some("exact"));
        assert_eq!(routed(&t, "www.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(routed(&t, "a.b.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(
            routed(&t, "x.eu.example.com", "/").as_deref(),
            Some("deeper")
        );
        assert_eq!(
            routed(&t, "example.com", "/"),
            None,
            "*.x does not match x itself"
        );
        assert_eq!(routed(&t, "other.org", "/"), None);
    }

    #[test]
    fn longest_path_prefix_wins_on_segment_boundaries() {
        let t = compile(vec![
            service("root", &["a.com"], "/"),
            service("api", &["a.com"], "/api"),
            service("v2", &["a.com"], "/api/v2/"),
        ]);
        assert_eq!(routed(&t, "a.com", "/api").as_deref(), Some("api"));
        assert_eq!(routed(&t, "a.com", "/api/users").as_deref(), Some("api"));
        assert_eq!(routed(&t, "a.com", "/apix").as_deref(), Some("root"));
        assert_eq!(routed(&t, "a.com", "/api/v2/x").as_deref(), Some("v2"));
        assert_eq!(routed(&t, "a.com", "/").as_deref(), Some("root"));
    }

    #[test]
    fn a_host_without_a_matching_path_falls_through_to_wildcards_then_catch_all() {
        let t = compile(vec![
            service("v2", &["api.example.com"], "/v2"),
            service("wild", &["*.example.com"], "/"),
            service("default", &["*"], "/"),
        ]);
        assert_eq!(
            routed(&t, "api.example.com", "/v2/x").as_deref(),
            Some("v2")
        );
        assert_eq!(
            routed(&t, "api.example.com", "/v1").as_deref(),
            Some("wild")
        );
        assert_eq!(routed(&t, "elsewhere.org", "/").as_deref(), Some("default"));
    }

    #[test]
    fn services_are_only_visible_on_their_listeners() {
        let mut internal = service("internal", &["a.com"], "/");
        internal.listeners = Some(vec!["private".into()]);
        let t = RouteTable::compile(
            &snapshot(vec![internal]),
            &PolicyLayer::default(),
            &[listener("public"), listener("private")],
            &DomainSet::default(),
            &RouteTable::default(),
            &ProbeCache::default(),
        );
        assert!(t.route(0, "a.com", b"/").is_none());
        assert!(t.route(1, "a.com", b"/").is_some());
        assert_eq!(t.served_on(0), [1]);
    }

    #[test]
    fn edge_listeners_route_public_domains_only() {
        let mut edge = listener("edge");
        edge.role = ListenerRole::Edge;
        let mut private = service("private", &["private.test"], "/");
        private.policy.visibility = Some(Visibility::Internal);
        let services = vec![
            service("mixed", &["www.test", "mixed.local"], "/"),
            private,
            service("wild", &["*.local"], "/"),
            service("public", &["*.test"], "/"),
        ];
        let t = RouteTable::compile(
            &snapshot(services),
            &PolicyLayer::default(),
            &[edge, listener("lan")],
            &DomainSet::default(),
            &RouteTable::default(),
            &ProbeCache::default(),
        );
        let on = |listener: usize, host: &str| {
            t.route(listener, host, b"/").map(|u| u.spec.name.as_str())
        };
        assert_eq!(on(0, "www.test"), Some("mixed"));
        assert_eq!(on(0, "mixed.local"), None);
        assert_eq!(on(0, "x.local"), None);
        assert_eq!(
            on(0, "private.test"),
            Some("public"),
            "a hidden service's host falls through like an unknown one"
        );
        assert_eq!(on(1, "mixed.local"), Some("mixed"));
        assert_eq!(on(1, "private.test"), Some("private"));
        assert_eq!(on(1, "x.local"), Some("wild"));
        assert_eq!(t.served_on(1), [1]);
        assert_eq!(t.served_on(2), [1]);
        assert_eq!(t.served_on(0), [0, 1]);
    }

    #[test]
    fn tls_listeners_serve_tls_services_and_redirecting_ones_none() {
        let mut tls = listener("public");
        tls.tls = Some(crate::config::ListenerTls {
            certificates: Vec::new(),
            default_certificate: None,
            min_version: crate::config::TlsVersion::Tls12,
            alpn: crate::config::Alpn::H2Http11,
        });
        let mut redirect = listener("redirect");
        redirect.redirect_https = true;
        let mut secure = service("secure", &["s.com"], "/");
        secure.policy.tls.enabled = Some(true);
        let plain = service("plain", &["p.com"], "/");
        let t = RouteTable::compile(
            &snapshot(vec![secure, plain]),
            &PolicyLayer::default(),
            &[tls, redirect, listener("main")],
            &DomainSet::default(),
            &RouteTable::default(),
            &ProbeCache::default(),
        );
        assert!(t.route(0, "s.com", b"/").is_some());
        assert!(t.route(0, "p.com", b"/").is_none(), "tls is off for plain");
        assert!(t.route(1, "s.com", b"/").is_none());
        assert!(t.route(2, "s.com", b"/").is_some());
        assert!(t.route(2, "p.com", b"/").is_some());
    }

    #[test]
    fn unchanged_upstreams_are_reused_and_changed_ones_keep_members() {
        let listeners = [listener("main")];
        let a = service("a", &["a.com"], "/");
        let b = service("b", &["b.com"], "/");
        let first = RouteTable::compile(
            &snapshot(vec![a.clone(), b.clone()]),
            &PolicyLayer::default(),
            &listeners,
            &DomainSet::default(),
            &RouteTable::default(),
            &ProbeCache::default(),
        );
        let mut b2 = b.clone();
        b2.backends
            .push(BackendSpec::new("127.0.0.1:2".parse().unwrap()));
        let second = RouteTable::compile(
            &snapshot(vec![a, b2]),
            &PolicyLayer::default(),
            &listeners,
            &DomainSet::default(),
            &first,
            &ProbeCache::default(),
        );
        assert!(Arc::ptr_eq(
            first.upstream("a").unwrap(),
            second.upstream("a").unwrap()
        ));
        let (old_b, new_b) = (first.upstream("b").unwrap(), second.upstream("b").unwrap());
        assert!(!Arc::ptr_eq(old_b, new_b));
        assert!(Arc::ptr_eq(&old_b.members()[0], &new_b.members()[0]));
        assert_eq!(new_b.members().len(), 2);
    }
}
