//! Instance labels -> route snapshot. Pure functions: no Docker API, no Pingora, so every
//! label rule is unit-tested and a bad label can only ever cost its own instance's routes.
//!
//! The grammar is acsrouting's (`aliyun.routing.port_80: restserver.local`), accepted under
//! every configured prefix (`berth.` and `aliyun.` by default); see the README's label
//! reference. Each value goes through the same `parse_*` rule as the config file's key for it
//! ([`crate::model::policy`]); only the grammar around the values is the labels' own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::model::hostname::parse_domain_pattern;
use crate::model::policy::{self, HealthCheckLayer, ProbeKind};
use crate::model::{
    Admission, BackendIdentity, BackendSpec, Placement, PlatformHealth, PolicyLayer, ServiceSpec,
    Snapshot, SourceKind,
};

/// The cookie acsrouting pins clients with; berth uses it unless told otherwise.
pub const DEFAULT_STICKY_COOKIE: &str = "CONTAINERID";

/// One running copy of a workload, as its platform describes it: a container, or a Swarm
/// task (its container's labels and the service's, its addresses on the overlays).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Stable and unique (a container id): the sticky cookie's value.
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// Where an orchestrator scheduled it (a Swarm task); `None` for a plain container.
    pub placement: Option<Placement>,
    pub labels: BTreeMap<String, String>,
    /// Network name -> the instance's address on it.
    pub networks: BTreeMap<String, IpAddr>,
    /// What the platform's own health check says, when it says "not ready".
    pub platform_health: Option<PlatformHealth>,
    /// The platform is stopping it: no new requests.
    pub draining: bool,
}

/// A label berth cannot use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelError {
    pub label: String,
    pub problem: String,
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "label {}: {}", self.label, self.problem)
    }
}

/// One `domain[/path]` an instance serves on one of its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTarget {
    pub domain: String,
    pub path_prefix: String,
    pub port: u16,
}

/// Everything an instance's labels ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRoutes {
    pub targets: Vec<RouteTarget>,
    /// Service-level settings (algorithm, stickiness, probe); instances of one route should
    /// agree on them.
    pub policy: PolicyLayer,
    pub weight: u16,
    pub ip: IpAddr,
}

/// The second-level keys berth owns. Under the `aliyun` prefix other Alibaba tools have their
/// own keys (`aliyun.logs.*`, `aliyun.depends`, ...): only these namespaces are validated there,
/// so berth can replace acsrouting without rejecting containers labelled for other tools.
const OWN_NAMESPACES: &[&str] = &[
    "routing",
    "probe",
    "lb",
    "network",
    "enable",
    "scale",
    "tls",
    "backend",
    "visibility",
    "max_body_size",
];

/// A label value with the full label name it came from.
struct Label<'a> {
    name: &'a str,
    value: &'a str,
}

impl Label<'_> {
    fn error(&self, problem: impl Into<String>) -> LabelError {
        LabelError {
            label: format!("{}={:?}", self.name, self.value),
            problem: problem.into(),
        }
    }

    /// The value through one of the shared policy rules.
    fn parse<T>(&self, rule: fn(&str) -> Result<T, String>) -> Result<T, LabelError> {
        rule(self.value).map_err(|problem| self.error(problem))
    }
}

/// The labels under berth's prefixes, by key after the prefix; an earlier prefix wins a key
/// both set.
fn own_labels<'a>(
    labels: &'a BTreeMap<String, String>,
    prefixes: &[String],
) -> BTreeMap<&'a str, Label<'a>> {
    let mut keys = BTreeMap::new();
    for prefix in prefixes.iter().rev() {
        for (name, value) in labels {
            let Some(key) = name
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
            else {
                continue;
            };
            let namespace = key.split('.').next().unwrap_or_default();
            if prefix != "berth" && !OWN_NAMESPACES.contains(&namespace) {
                continue;
            }
            keys.insert(key, Label { name, value });
        }
    }
    keys
}

/// What the labels of one instance set, gathered key by key.
struct Settings<'a> {
    targets: Vec<RouteTarget>,
    policy: PolicyLayer,
    probe: HealthCheckLayer,
    weight: u16,
    network: Option<&'a str>,
    sticky: bool,
    sticky_cookie: Option<String>,
}

impl<'a> Settings<'a> {
    fn new() -> Self {
        Settings {
            targets: Vec::new(),
            policy: PolicyLayer::default(),
            probe: HealthCheckLayer::default(),
            weight: 1,
            network: None,
            sticky: true,
            sticky_cookie: None,
        }
    }

    fn apply(&mut self, key: &str, label: &Label<'a>) -> Result<(), LabelError> {
        match key {
            "enable" | "scale" => {}
            "network" => self.network = Some(label.value.trim()),
            "visibility" => self.policy.visibility = Some(label.parse(policy::parse_visibility)?),
            "max_body_size" => {
                self.policy.max_body_size = Some(label.parse(policy::parse_max_body_size)?)
            }
            "probe.url" => parse_probe_url(label, &mut self.probe)?,
            "probe.initial_delay_seconds" => {
                self.probe.initial_delay = Some(label.parse(policy::parse_seconds)?)
            }
            "probe.timeout_seconds" => {
                self.probe.timeout = Some(label.parse(policy::parse_seconds)?)
            }
            "probe.interval_seconds" => {
                self.probe.interval = Some(label.parse(policy::parse_seconds)?)
            }
            "probe.healthy_threshold" => {
                self.probe.healthy_threshold = Some(label.parse(policy::parse_threshold)?)
            }
            "probe.unhealthy_threshold" => {
                self.probe.unhealthy_threshold = Some(label.parse(policy::parse_threshold)?)
            }
            "lb.weight" => self.weight = label.parse(policy::parse_weight)?,
            "lb.algorithm" => self.policy.algorithm = Some(label.parse(policy::parse_algorithm)?),
            "lb.hash_key" => self.policy.hash_key = Some(label.parse(policy::parse_hash_key)?),
            "lb.retries" => self.policy.retries = Some(label.parse(policy::parse_retries)?),
            "lb.retry_on" => self.policy.retry_on = Some(label.parse(policy::parse_retry_on)?),
            "lb.retry_budget" => {
                self.policy.retry_budget = Some(label.parse(policy::parse_retry_budget)?)
            }
            "lb.slow_start" => self.policy.slow_start = Some(label.parse(policy::parse_duration)?),
            "lb.max_connections" => {
                self.policy.max_connections = Some(label.parse(policy::parse_max_connections)?)
            }
            "lb.queue_timeout" => {
                self.policy.queue_timeout = Some(label.parse(policy::parse_duration)?)
            }
            "lb.max_queue" => self.policy.max_queue = Some(label.parse(policy::parse_max_queue)?),
            "lb.passive" => {
                self.policy.passive_health.enabled = Some(label.parse(policy::parse_bool)?)
            }
            "lb.passive.consecutive_failures" => {
                self.policy.passive_health.consecutive_failures =
                    Some(label.parse(policy::parse_threshold)?)
            }
            "lb.passive.failure_statuses" => {
                self.policy.passive_health.failure_statuses =
                    Some(label.parse(policy::parse_statuses)?)
            }
            "lb.passive.ejection" => {
                self.policy.passive_health.ejection = Some(label.parse(policy::parse_duration)?)
            }
            "lb.passive.max_ejection" => {
                self.policy.passive_health.max_ejection = Some(label.parse(policy::parse_duration)?)
            }
            "lb.passive.max_ejected_percent" => {
                self.policy.passive_health.max_ejected_percent =
                    Some(label.parse(policy::parse_percent)?)
            }
            "tls" => self.policy.tls.enabled = Some(label.parse(policy::parse_bool)?),
            "tls.acme" => self.policy.tls.acme = Some(label.parse(policy::parse_bool)?),
            "tls.hsts" => self.policy.tls.hsts = Some(label.parse(policy::parse_hsts)?),
            "backend.protocol" => {
                self.policy.backend_protocol = Some(label.parse(policy::parse_backend_protocol)?)
            }
            "lb.sticky" => self.sticky = label.parse(policy::parse_bool)?,
            "lb.sticky_cookie" => {
                let name = label.parse(policy::parse_sticky_cookie)?;
                if name.is_empty() {
                    return Err(label.error("names no cookie (use lb.sticky=false to turn it off)"));
                }
                self.sticky_cookie = Some(name);
            }
            _ => match key.strip_prefix("routing.port_") {
                Some(port) => {
                    let port = policy::parse_port(port).map_err(|e| label.error(e))?;
                    parse_routing(label, port, &mut self.targets)?;
                }
                None => return Err(label.error("unknown label")),
            },
        }
        Ok(())
    }

    /// The service-level policy the labels set: a TCP probe of the routed port when no probe
    /// label says otherwise, and acsrouting's sticky cookie unless turned off.
    fn policy(mut self) -> Result<(Vec<RouteTarget>, PolicyLayer, u16), LabelError> {
        if self.probe.kind.is_none() {
            self.probe.kind = Some(ProbeKind::Tcp);
        }
        self.policy.health_check = self.probe;
        self.policy.sticky_cookie = Some(match (self.sticky, self.sticky_cookie) {
            (false, _) => String::new(),
            (true, Some(name)) => name,
            (true, None) => DEFAULT_STICKY_COOKIE.into(),
        });
        self.policy
            .validate()
            .map_err(|(key, problem)| LabelError {
                label: format!("settings ({key})"),
                problem,
            })?;
        Ok((self.targets, self.policy, self.weight))
    }
}

/// Whether labels carry a `P.routing.*` key under one of `prefixes`: the cheap test that
/// decides whether an instance is worth a closer look.
pub fn asks_for_routes(labels: &BTreeMap<String, String>, prefixes: &[String]) -> bool {
    labels.keys().any(|key| {
        prefixes.iter().any(|prefix| {
            key.strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix(".routing."))
                .is_some()
        })
    })
}

/// Reads an instance's labels. `Ok(None)`: the instance asks for no route (no routing label,
/// or `enable=false`).
pub fn parse_instance(
    instance: &Instance,
    prefixes: &[String],
    preferred_network: Option<&str>,
) -> Result<Option<InstanceRoutes>, LabelError> {
    let keys = own_labels(&instance.labels, prefixes);
    if let Some(enable) = keys.get("enable") {
        if !enable.parse(policy::parse_bool)? {
            return Ok(None);
        }
    }
    let mut settings = Settings::new();
    for (key, label) in &keys {
        settings.apply(key, label)?;
    }
    if settings.targets.is_empty() {
        return Ok(None);
    }
    let ip = pick_address(instance, settings.network, preferred_network)?;
    let (targets, policy, weight) = settings.policy()?;
    Ok(Some(InstanceRoutes {
        targets,
        policy,
        weight,
        ip,
    }))
}

/// `domain`, `domain/path`, `http://domain[/path]`, several separated by `;` or `,`.
fn parse_routing(
    label: &Label,
    port: u16,
    targets: &mut Vec<RouteTarget>,
) -> Result<(), LabelError> {
    let entries: Vec<&str> = label
        .value
        .split([';', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err(label.error("names no domain"));
    }
    for entry in entries {
        let rest = match entry.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(label.error(format!(
                    "scheme {scheme:?} is not supported, use http or none"
                )))
            }
            None => entry,
        };
        let (domain, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let target = RouteTarget {
            domain: parse_domain_pattern(domain).map_err(|e| label.error(e))?,
            path_prefix: policy::parse_path_prefix(path).map_err(|e| label.error(e))?,
            port,
        };
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    Ok(())
}

/// `http://container:<port>[/path]` or `tcp://container:<port>`; `container` stands for the
/// instance's own address.
fn parse_probe_url(label: &Label, probe: &mut HealthCheckLayer) -> Result<(), LabelError> {
    let value = label.value.trim();
    let (kind, rest) = match value.split_once("://") {
        Some(("http", rest)) => (ProbeKind::Http, rest),
        Some(("tcp", rest)) => (ProbeKind::Tcp, rest),
        _ => {
            return Err(
                label.error("expected http://container:<port>[/path] or tcp://container:<port>")
            )
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| label.error("the probe URL needs a port"))?;
    if host != "container" {
        return Err(label.error("the probe host must be `container` (the container's own address)"));
    }
    let port = policy::parse_port(port).map_err(|e| label.error(e))?;
    if kind == ProbeKind::Tcp && path != "/" {
        return Err(label.error("a tcp probe has no path"));
    }
    probe.kind = Some(kind);
    probe.port = Some(port);
    probe.path = match kind {
        ProbeKind::Http => Some(policy::parse_probe_path(path).map_err(|e| label.error(e))?),
        _ => None,
    };
    Ok(())
}

/// The instance's address on the network the label names, else on the preferred network,
/// else on its only network, else on the first by name (deterministic).
fn pick_address(
    instance: &Instance,
    label_network: Option<&str>,
    preferred: Option<&str>,
) -> Result<IpAddr, LabelError> {
    if let Some(name) = label_network {
        return instance
            .networks
            .get(name)
            .copied()
            .ok_or_else(|| LabelError {
                label: format!("network={name:?}"),
                problem: format!(
                    "the container is not on that network (it is on: {})",
                    instance
                        .networks
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
    }
    if let Some(ip) = preferred.and_then(|name| instance.networks.get(name)) {
        return Ok(*ip);
    }
    instance
        .networks
        .values()
        .next()
        .copied()
        .ok_or_else(|| LabelError {
            label: "(networks)".into(),
            problem: "the container has no IP address (host network mode is not supported)".into(),
        })
}

/// One instance's claim on one route.
struct Member<'a> {
    instance: &'a Instance,
    routes: InstanceRoutes,
    port: u16,
}

/// The route (`domain`, `path prefix`) -> the instances that serve it, sorted by name.
type Groups<'a> = BTreeMap<(String, String), Vec<Member<'a>>>;

/// The services all routed instances form: instances that route the same `domain[/path]` are
/// one upstream group. Returns warnings (bad labels, disagreements) for the log.
pub fn build_snapshot(
    instances: &[&Instance],
    prefixes: &[String],
    preferred_network: Option<&str>,
    source: SourceKind,
) -> (Snapshot, Vec<String>) {
    let mut warnings = Vec::new();
    let groups = group_by_route(instances, prefixes, preferred_network, &mut warnings);
    let services = groups
        .into_iter()
        .map(|((domain, path_prefix), members)| {
            Arc::new(service(
                domain,
                path_prefix,
                &members,
                source,
                &mut warnings,
            ))
        })
        .collect();
    (
        Snapshot {
            services,
            defaults: None,
        },
        warnings,
    )
}

fn group_by_route<'a>(
    instances: &[&'a Instance],
    prefixes: &[String],
    preferred_network: Option<&str>,
    warnings: &mut Vec<String>,
) -> Groups<'a> {
    let mut sorted = instances.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    let mut groups: Groups = BTreeMap::new();
    for instance in sorted {
        let routes = match parse_instance(instance, prefixes, preferred_network) {
            Ok(Some(routes)) => routes,
            Ok(None) => continue,
            Err(e) => {
                warnings.push(format!(
                    "container {} ({}): {e}; its routes are skipped",
                    instance.name,
                    short_id(&instance.id)
                ));
                continue;
            }
        };
        for target in &routes.targets {
            groups
                .entry((target.domain.clone(), target.path_prefix.clone()))
                .or_default()
                .push(Member {
                    instance,
                    routes: routes.clone(),
                    port: target.port,
                });
        }
    }
    groups
}

/// One route's service: the first instance by name decides the service settings.
fn service(
    domain: String,
    path_prefix: String,
    members: &[Member],
    source: SourceKind,
    warnings: &mut Vec<String>,
) -> ServiceSpec {
    let winner = &members[0];
    let dissenters: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.routes.policy != winner.routes.policy)
        .map(|m| m.instance.name.as_str())
        .collect();
    if !dissenters.is_empty() {
        warnings.push(format!(
            "containers {} disagree with {} on the settings (algorithm, stickiness, probe) of \
             {domain}{path_prefix}; using {}'s",
            dissenters.into_iter().collect::<Vec<_>>().join(", "),
            winner.instance.name,
            winner.instance.name
        ));
    }
    let mut spec = ServiceSpec {
        name: policy::default_service_name(&domain, &path_prefix),
        domains: vec![domain],
        path_prefix,
        listeners: None,
        policy: winner.routes.policy.clone(),
        backends: Vec::with_capacity(members.len()),
        source,
    };
    for member in members {
        let backend = BackendSpec {
            addr: SocketAddr::new(member.routes.ip, member.port),
            weight: member.routes.weight,
            identity: BackendIdentity {
                id: Some(member.instance.id.clone()),
                name: Some(member.instance.name.clone()),
                placement: member.instance.placement.clone(),
            },
            admission: admission(member.instance),
        };
        if let Err(e) = spec.add_backend(backend) {
            warnings.push(format!(
                "container {} is skipped: {e}",
                member.instance.name
            ));
        }
    }
    spec
}

fn admission(instance: &Instance) -> Admission {
    if instance.draining {
        return Admission::Draining;
    }
    match instance.platform_health {
        Some(health) => Admission::Held(health),
        None => Admission::Open,
    }
}

pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::model::policy::Algorithm;

    fn prefixes() -> Vec<String> {
        vec!["berth".into(), "aliyun".into()]
    }

    fn container(name: &str, labels: &[(&str, &str)]) -> Instance {
        Instance {
            id: format!("{name:0>64}"),
            name: name.into(),
            placement: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            networks: [("bridge".to_string(), "172.17.0.2".parse().unwrap())].into(),
            platform_health: None,
            draining: false,
        }
    }

    fn parse(c: &Instance) -> Result<Option<InstanceRoutes>, LabelError> {
        parse_instance(c, &prefixes(), None)
    }

    #[test]
    fn routing_labels_are_recognised_under_any_prefix() {
        let asks =
            |key: &str| asks_for_routes(&[(key.to_string(), "x".into())].into(), &prefixes());
        assert!(asks("aliyun.routing.port_80"));
        assert!(asks("berth.routing.port_80"));
        assert!(!asks("aliyun.probe.url"));
        assert!(!asks("berthx.routing.port_80"));
    }

    #[test]
    fn the_acsrouting_example() {
        let c = container(
            "restserver_1",
            &[
                ("aliyun.routing.port_80", "restserver.local"),
                ("aliyun.scale", "2"),
                ("aliyun.probe.url", "http://container:80"),
                ("aliyun.probe.initial_delay_seconds", "2"),
                ("aliyun.probe.timeout_seconds", "2"),
            ],
        );
        let routes = parse(&c).unwrap().unwrap();
        assert_eq!(
            routes.targets,
            [RouteTarget {
                domain: "restserver.local".into(),
                path_prefix: "/".into(),
                port: 80
            }]
        );
        let hc = routes
            .policy
            .over(&PolicyLayer::default())
            .resolve()
            .health_check;
        assert_eq!(hc.kind, ProbeKind::Http);
        assert_eq!(hc.path, "/");
        assert_eq!(hc.port, Some(80));
        assert_eq!(hc.initial_delay, Duration::from_secs(2));
        assert_eq!(hc.timeout, Duration::from_secs(2));
        assert_eq!(routes.policy.sticky_cookie.as_deref(), Some("CONTAINERID"));
        assert_eq!(routes.ip, "172.17.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn routing_entries_take_every_form() {
        let c = container(
            "web",
            &[
                (
                    "berth.routing.port_8080",
                    "a.local; b.local/api, http://c.local/v1",
                ),
                ("berth.routing.port_9000", "admin.local"),
            ],
        );
        let targets = parse(&c).unwrap().unwrap().targets;
        let got: Vec<(String, String, u16)> = targets
            .into_iter()
            .map(|t| (t.domain, t.path_prefix, t.port))
            .collect();
        assert_eq!(
            got,
            [
                ("a.local".into(), "/".into(), 8080),
                ("b.local".into(), "/api".into(), 8080),
                ("c.local".into(), "/v1".into(), 8080),
                ("admin.local".into(), "/".into(), 9000),
            ]
        );
    }

    #[test]
    fn no_probe_label_means_tcp_on_the_routed_port() {
        let c = container("web", &[("berth.routing.port_80", "a.local")]);
        let hc = parse(&c).unwrap().unwrap().policy.health_check;
        assert_eq!(hc.kind, Some(ProbeKind::Tcp));
        assert_eq!(hc.port, None);
    }

    #[test]
    fn unrouted_and_disabled_containers_ask_for_nothing() {
        assert_eq!(
            parse(&container(
                "db",
                &[("aliyun.probe.url", "tcp://container:5432")]
            )),
            Ok(None)
        );
        assert_eq!(
            parse(&container(
                "off",
                &[
                    ("berth.routing.port_80", "a.local"),
                    ("berth.enable", "false")
                ]
            )),
            Ok(None)
        );
    }

    #[test]
    fn other_alibaba_labels_are_left_alone_but_unknown_berth_ones_are_errors() {
        let c = container(
            "web",
            &[
                ("berth.routing.port_80", "a.local"),
                ("aliyun.logs.app", "stdout"),
                ("aliyun.depends", "db"),
            ],
        );
        assert!(parse(&c).unwrap().is_some());
        let c = container(
            "web",
            &[
                ("berth.routing.port_80", "a.local"),
                ("berth.lb.wieght", "2"),
            ],
        );
        let err = parse(&c).unwrap_err();
        assert_eq!(err.problem, "unknown label");
        assert!(err.label.contains("berth.lb.wieght"));
        let c = container(
            "web",
            &[
                ("aliyun.routing.port_80", "a.local"),
                ("aliyun.probe.uri", "x"),
            ],
        );
        assert_eq!(parse(&c).unwrap_err().problem, "unknown label");
    }

    #[test]
    fn bad_labels_are_named_with_their_problem() {
        let cases = [
            ("berth.routing.port_http", "a.local", "port"),
            ("berth.routing.port_0", "a.local", "port"),
            ("berth.routing.port_80", "bad domain!", "contains"),
            ("berth.routing.port_80", "https://a.local", "scheme"),
            ("berth.routing.port_80", " ; ", "names no domain"),
            ("berth.probe.url", "http://localhost:80", "container"),
            ("berth.probe.url", "ftp://container:21", "expected http"),
            ("berth.probe.url", "http://container", "port"),
            // Would have reached the probe's request line (and panicked building it).
            (
                "berth.probe.url",
                "http://container:80/<b>",
                "not a valid URL path",
            ),
            ("berth.probe.timeout_seconds", "two", "seconds"),
            ("berth.probe.healthy_threshold", "0", "at least 1"),
            ("berth.lb.weight", "0", "weight"),
            ("berth.lb.algorithm", "fastest", "unknown algorithm"),
            ("berth.lb.sticky", "maybe", "true or false"),
            ("berth.lb.sticky_cookie", "a b", "cookie"),
            ("berth.network", "nowhere", "not on that network"),
        ];
        for (label, value, problem) in cases {
            let mut labels = vec![(label, value)];
            if !label.starts_with("berth.routing") {
                labels.push(("berth.routing.port_80", "a.local"));
            }
            let err = parse(&container("web", &labels)).expect_err(label);
            assert!(
                err.problem.contains(problem) || err.label.contains(problem),
                "{label}={value}: {err}"
            );
        }
    }

    #[test]
    fn stickiness_and_weight() {
        let c = container(
            "web",
            &[
                ("berth.routing.port_80", "a.local"),
                ("berth.lb.sticky", "false"),
                ("berth.lb.weight", "5"),
            ],
        );
        let routes = parse(&c).unwrap().unwrap();
        assert_eq!(routes.weight, 5);
        assert_eq!(
            routes
                .policy
                .over(&PolicyLayer::default())
                .resolve()
                .sticky_cookie,
            None
        );
        let c = container(
            "web",
            &[
                ("berth.routing.port_80", "a.local"),
                ("berth.lb.sticky_cookie", "SRV"),
            ],
        );
        assert_eq!(
            parse(&c).unwrap().unwrap().policy.sticky_cookie.as_deref(),
            Some("SRV")
        );
    }

    #[test]
    fn berth_labels_win_over_aliyun_ones() {
        let c = container(
            "web",
            &[
                ("aliyun.routing.port_80", "a.local"),
                ("aliyun.lb.weight", "2"),
                ("berth.lb.weight", "7"),
            ],
        );
        assert_eq!(parse(&c).unwrap().unwrap().weight, 7);
    }

    #[test]
    fn the_network_label_picks_the_address() {
        let mut c = container(
            "web",
            &[
                ("berth.routing.port_80", "a.local"),
                ("berth.network", "backend"),
            ],
        );
        c.networks
            .insert("backend".into(), "10.9.0.5".parse().unwrap());
        assert_eq!(
            parse(&c).unwrap().unwrap().ip,
            "10.9.0.5".parse::<IpAddr>().unwrap()
        );
        c.labels.remove("berth.network");
        assert_eq!(
            parse_instance(&c, &prefixes(), Some("backend"))
                .unwrap()
                .unwrap()
                .ip,
            "10.9.0.5".parse::<IpAddr>().unwrap(),
            "the configured network is preferred"
        );
        c.networks.clear();
        assert!(parse(&c).is_err());
    }

    #[test]
    fn containers_of_one_domain_form_one_group_and_bad_ones_are_skipped() {
        let mut a = container("rest_1", &[("aliyun.routing.port_80", "restserver.local")]);
        let mut b = container("rest_2", &[("aliyun.routing.port_80", "restserver.local")]);
        b.networks
            .insert("bridge".into(), "172.17.0.3".parse().unwrap());
        let bad = container(
            "broken",
            &[
                ("aliyun.routing.port_80", "restserver.local"),
                ("berth.lb.weight", "x"),
            ],
        );
        let other = container("web", &[("berth.routing.port_80", "web.local")]);
        a.platform_health = Some(PlatformHealth::Starting);
        b.draining = true;
        let (snapshot, warnings) = build_snapshot(
            &[&b, &bad, &a, &other],
            &prefixes(),
            None,
            SourceKind::Docker,
        );
        assert_eq!(snapshot.services.len(), 2);
        let rest = &snapshot.services[0];
        assert_eq!(rest.name, "restserver.local");
        assert_eq!(rest.source, SourceKind::Docker);
        let names: Vec<_> = rest
            .backends
            .iter()
            .map(|b| b.identity.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["rest_1", "rest_2"]);
        assert_eq!(
            rest.backends[0].admission,
            Admission::Held(PlatformHealth::Starting)
        );
        assert_eq!(rest.backends[1].admission, Admission::Draining);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("container broken ("),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("berth.lb.weight"), "{}", warnings[0]);
    }

    #[test]
    fn disagreeing_containers_get_a_warning_and_the_first_by_name_wins() {
        let a = container(
            "a",
            &[
                ("berth.routing.port_80", "x.local"),
                ("berth.lb.algorithm", "random"),
            ],
        );
        let mut b = container("b", &[("berth.routing.port_80", "x.local")]);
        b.networks
            .insert("bridge".into(), "172.17.0.9".parse().unwrap());
        let (snapshot, warnings) = build_snapshot(&[&b, &a], &prefixes(), None, SourceKind::Docker);
        assert_eq!(
            snapshot.services[0].policy.algorithm,
            Some(Algorithm::Random)
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("containers b disagree with a"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn file_defaults_fill_what_labels_leave() {
        let c = container("web", &[("berth.routing.port_80", "a.local")]);
        let defaults = PolicyLayer {
            retries: Some(4),
            health_check: HealthCheckLayer {
                interval: Some(Duration::from_millis(300)),
                ..HealthCheckLayer::default()
            },
            ..PolicyLayer::default()
        };
        let (snapshot, _) = build_snapshot(&[&c], &prefixes(), None, SourceKind::Docker);
        let policy = snapshot.services[0].policy.over(&defaults).resolve();
        assert_eq!(policy.retries, 4);
        assert_eq!(policy.health_check.interval, Duration::from_millis(300));
        assert_eq!(policy.health_check.kind, ProbeKind::Tcp);
    }
}
