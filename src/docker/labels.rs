//! Container labels -> route snapshot. Pure functions: no Docker API, no Pingora, so every
//! label rule is unit-tested and a bad label can only ever cost its own container's routes.
//!
//! The grammar is acsrouting's (`aliyun.routing.port_80: restserver.local`), accepted under
//! every configured prefix (`berth.` and `aliyun.` by default); see the README's label
//! reference.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{HealthCheckLayer, PolicyLayer, ProbeType, MAX_WEIGHT};
use crate::hostname::parse_domain_pattern;
use crate::model::{
    is_cookie_name, Admission, Algorithm, BackendIdentity, BackendSpec, ServiceSpec, Snapshot,
    Source,
};

/// The cookie acsrouting pins clients with; berth uses it unless told otherwise.
pub const DEFAULT_STICKY_COOKIE: &str = "CONTAINERID";

/// What berth knows about one running container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Network name -> the container's address on it.
    pub networks: BTreeMap<String, IpAddr>,
    /// Docker's `HEALTHCHECK` status, if the image has one: `starting`, `healthy`, `unhealthy`.
    pub docker_health: Option<String>,
    /// A `stop`/`kill` was seen: the container is on its way out.
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

/// One `domain[/path]` a container serves on one of its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTarget {
    pub domain: String,
    pub path_prefix: String,
    pub port: u16,
}

/// Everything a container's labels ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRoutes {
    pub targets: Vec<RouteTarget>,
    /// Service-level settings (algorithm, stickiness, probe); containers of one route should
    /// agree on them.
    pub policy: PolicyLayer,
    pub weight: u16,
    pub ip: IpAddr,
}

/// The second-level keys berth owns. Under the `aliyun` prefix other Alibaba tools have their
/// own keys (`aliyun.logs.*`, `aliyun.depends`, ...): only these namespaces are validated there,
/// so berth can replace acsrouting without rejecting containers labelled for other tools.
const OWN_NAMESPACES: &[&str] = &["routing", "probe", "lb", "network", "enable", "scale"];

/// A label value with the full label name it came from.
struct Label<'a> {
    name: &'a str,
    value: &'a str,
}

impl<'a> Label<'a> {
    fn error(&self, problem: impl Into<String>) -> LabelError {
        LabelError {
            label: format!("{}={:?}", self.name, self.value),
            problem: problem.into(),
        }
    }

    fn seconds(&self) -> Result<Duration, LabelError> {
        self.value
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| self.error("expected a whole number of seconds"))
    }

    fn count(&self) -> Result<u32, LabelError> {
        match self.value.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(self.error("expected a whole number of at least 1")),
        }
    }

    fn boolean(&self) -> Result<bool, LabelError> {
        match self.value.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" => Ok(false),
            _ => Err(self.error("expected true or false")),
        }
    }
}

/// Reads a container's labels. `Ok(None)`: the container asks for no route (no routing label,
/// or `enable=false`).
pub fn parse_container(
    container: &ContainerInfo,
    prefixes: &[String],
    preferred_network: Option<&str>,
) -> Result<Option<ContainerRoutes>, LabelError> {
    // key (after the prefix) -> label; an earlier prefix wins a key both prefixes set.
    let mut keys: BTreeMap<&str, Label> = BTreeMap::new();
    for prefix in prefixes.iter().rev() {
        for (name, value) in &container.labels {
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

    if let Some(enable) = keys.get("enable") {
        if !enable.boolean()? {
            return Ok(None);
        }
    }

    let mut targets = Vec::new();
    let mut policy = PolicyLayer::default();
    let mut probe = HealthCheckLayer::default();
    let mut weight = 1;
    let mut network = None;
    let mut sticky = true;
    let mut sticky_cookie = None;
    for (key, label) in &keys {
        match *key {
            "enable" | "scale" => {}
            "network" => network = Some(label.value.trim()),
            "probe.url" => parse_probe_url(label, &mut probe)?,
            "probe.initial_delay_seconds" => probe.initial_delay = Some(label.seconds()?),
            "probe.timeout_seconds" => probe.timeout = Some(label.seconds()?),
            "probe.interval_seconds" => probe.interval = Some(label.seconds()?),
            "probe.healthy_threshold" => probe.healthy_threshold = Some(label.count()?),
            "probe.unhealthy_threshold" => probe.unhealthy_threshold = Some(label.count()?),
            "lb.weight" => {
                weight = match label.value.trim().parse::<u16>() {
                    Ok(w) if (1..=MAX_WEIGHT).contains(&w) => w,
                    _ => {
                        return Err(label.error(format!("expected a weight from 1 to {MAX_WEIGHT}")))
                    }
                }
            }
            "lb.algorithm" => {
                policy.algorithm = Some(Algorithm::parse(label.value.trim()).ok_or_else(|| {
                    label.error(format!(
                        "unknown algorithm, expected one of {}",
                        Algorithm::NAMES
                    ))
                })?)
            }
            "lb.sticky" => sticky = label.boolean()?,
            "lb.sticky_cookie" => {
                let name = label.value.trim();
                if !is_cookie_name(name) {
                    return Err(label.error("not a valid cookie name"));
                }
                sticky_cookie = Some(name.to_owned());
            }
            _ => match key.strip_prefix("routing.port_") {
                Some(port) => {
                    let port =
                        port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                            label.error("the port must be a number from 1 to 65535")
                        })?;
                    parse_routing(label, port, &mut targets)?;
                }
                None => return Err(label.error("unknown label")),
            },
        }
    }
    if targets.is_empty() {
        return Ok(None);
    }
    if probe.kind.is_none() {
        // No probe label: a TCP connect to the routed port.
        probe.kind = Some(ProbeType::Tcp);
    }
    probe.validate().map_err(|(key, problem)| LabelError {
        label: format!("probe ({key})"),
        problem,
    })?;
    policy.health_check = probe;
    policy.sticky_cookie = Some(match (sticky, sticky_cookie) {
        (false, _) => String::new(),
        (true, Some(name)) => name,
        (true, None) => DEFAULT_STICKY_COOKIE.into(),
    });

    let ip = pick_address(container, network, preferred_network)?;
    Ok(Some(ContainerRoutes {
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
        let domain = parse_domain_pattern(domain).map_err(|e| label.error(e))?;
        if path.contains(char::is_whitespace) || path.contains(['?', '#']) {
            return Err(label.error(format!("path {path:?} must be a plain path prefix")));
        }
        let target = RouteTarget {
            domain,
            path_prefix: path.to_owned(),
            port,
        };
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    Ok(())
}

/// `http://container:<port>[/path]` or `tcp://container:<port>`; `container` stands for the
/// container's own address.
fn parse_probe_url(label: &Label, probe: &mut HealthCheckLayer) -> Result<(), LabelError> {
    let value = label.value.trim();
    let (kind, rest) = match value.split_once("://") {
        Some(("http", rest)) => (ProbeType::Http, rest),
        Some(("tcp", rest)) => (ProbeType::Tcp, rest),
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
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| label.error("the probe port must be a number from 1 to 65535"))?;
    if kind == ProbeType::Tcp && path != "/" {
        return Err(label.error("a tcp probe has no path"));
    }
    if path.contains(char::is_whitespace) {
        return Err(label.error("the probe path has spaces"));
    }
    probe.kind = Some(kind);
    probe.port = Some(port);
    probe.path = (kind == ProbeType::Http).then(|| path.to_owned());
    Ok(())
}

/// The container's address on the network the label names, else on the preferred network,
/// else on its only network, else on the first by name (deterministic).
fn pick_address(
    container: &ContainerInfo,
    label_network: Option<&str>,
    preferred: Option<&str>,
) -> Result<IpAddr, LabelError> {
    if let Some(name) = label_network {
        return container
            .networks
            .get(name)
            .copied()
            .ok_or_else(|| LabelError {
                label: format!("network={name:?}"),
                problem: format!(
                    "the container is not on that network (it is on: {})",
                    container
                        .networks
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
    }
    if let Some(ip) = preferred.and_then(|name| container.networks.get(name)) {
        return Ok(*ip);
    }
    container
        .networks
        .values()
        .next()
        .copied()
        .ok_or_else(|| LabelError {
            label: "(networks)".into(),
            problem: "the container has no IP address (host network mode is not supported)".into(),
        })
}

/// The services all routed containers form: containers that route the same `domain[/path]`
/// are one upstream group. Returns warnings (bad labels, disagreements) for the log.
pub fn build_snapshot(
    containers: &[ContainerInfo],
    prefixes: &[String],
    preferred_network: Option<&str>,
    defaults: &PolicyLayer,
) -> (Snapshot, Vec<String>) {
    let mut warnings = Vec::new();
    let mut sorted: Vec<&ContainerInfo> = containers.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));

    struct Member<'a> {
        container: &'a ContainerInfo,
        routes: ContainerRoutes,
        port: u16,
    }
    let mut groups: BTreeMap<(String, String), Vec<Member>> = BTreeMap::new();
    for container in sorted {
        let routes = match parse_container(container, prefixes, preferred_network) {
            Ok(Some(routes)) => routes,
            Ok(None) => continue,
            Err(e) => {
                warnings.push(format!(
                    "container {} ({}): {e}; its routes are skipped",
                    container.name,
                    short_id(&container.id)
                ));
                continue;
            }
        };
        for target in &routes.targets {
            groups
                .entry((target.domain.clone(), target.path_prefix.clone()))
                .or_default()
                .push(Member {
                    container,
                    routes: routes.clone(),
                    port: target.port,
                });
        }
    }

    let mut services = Vec::with_capacity(groups.len());
    for ((domain, path_prefix), members) in groups {
        let winner = &members[0];
        let dissenters: BTreeSet<&str> = members
            .iter()
            .filter(|m| m.routes.policy != winner.routes.policy)
            .map(|m| m.container.name.as_str())
            .collect();
        if !dissenters.is_empty() {
            warnings.push(format!(
                "containers {} disagree with {} on the settings (algorithm, stickiness, probe) of \
                 {domain}{path_prefix}; using {}'s",
                dissenters.into_iter().collect::<Vec<_>>().join(", "),
                winner.container.name,
                winner.container.name
            ));
        }
        let policy = winner.routes.policy.over(defaults).resolve();
        let mut backends: Vec<BackendSpec> = Vec::with_capacity(members.len());
        for member in &members {
            let addr = SocketAddr::new(member.routes.ip, member.port);
            if backends.iter().any(|b| b.addr == addr) {
                warnings.push(format!(
                    "container {} has the address {addr} of another container of {domain}; skipped",
                    member.container.name
                ));
                continue;
            }
            backends.push(BackendSpec {
                addr,
                weight: member.routes.weight,
                identity: BackendIdentity {
                    container_id: Some(member.container.id.clone()),
                    container_name: Some(member.container.name.clone()),
                },
                admission: admission(member.container),
            });
        }
        let name = if path_prefix == "/" {
            domain.clone()
        } else {
            format!("{domain}{path_prefix}")
        };
        services.push(ServiceSpec {
            name,
            domains: vec![domain],
            path_prefix,
            listeners: None,
            policy,
            backends,
            source: Source::Docker,
        });
    }
    (Snapshot { services }, warnings)
}

fn admission(container: &ContainerInfo) -> Admission {
    if container.draining {
        return Admission::Draining;
    }
    match container.docker_health.as_deref() {
        Some(status @ ("starting" | "unhealthy")) => Admission::DockerHealth(status.to_owned()),
        _ => Admission::Open,
    }
}

pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProbeKind;

    fn prefixes() -> Vec<String> {
        vec!["berth".into(), "aliyun".into()]
    }

    fn container(name: &str, labels: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: format!("{name:0>64}"),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            networks: [("bridge".to_string(), "172.17.0.2".parse().unwrap())].into(),
            docker_health: None,
            draining: false,
        }
    }

    fn parse(c: &ContainerInfo) -> Result<Option<ContainerRoutes>, LabelError> {
        parse_container(c, &prefixes(), None)
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
        assert_eq!(hc.kind, ProbeKind::Http { path: "/".into() });
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
        assert_eq!(hc.kind, Some(ProbeType::Tcp));
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
            parse_container(&c, &prefixes(), Some("backend"))
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
        a.docker_health = Some("starting".into());
        b.draining = true;
        let (snapshot, warnings) = build_snapshot(
            &[b.clone(), bad, a.clone(), other],
            &prefixes(),
            None,
            &PolicyLayer::default(),
        );
        assert_eq!(snapshot.services.len(), 2);
        let rest = &snapshot.services[0];
        assert_eq!(rest.name, "restserver.local");
        assert_eq!(rest.source, Source::Docker);
        let names: Vec<_> = rest
            .backends
            .iter()
            .map(|b| b.identity.container_name.clone().unwrap())
            .collect();
        assert_eq!(names, ["rest_1", "rest_2"]);
        assert_eq!(
            rest.backends[0].admission,
            Admission::DockerHealth("starting".into())
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
        let (snapshot, warnings) =
            build_snapshot(&[b, a], &prefixes(), None, &PolicyLayer::default());
        assert_eq!(snapshot.services[0].policy.algorithm, Algorithm::Random);
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
        let (snapshot, _) = build_snapshot(&[c], &prefixes(), None, &defaults);
        let svc = &snapshot.services[0];
        assert_eq!(svc.policy.retries, 4);
        assert_eq!(svc.policy.health_check.interval, Duration::from_millis(300));
        assert_eq!(svc.policy.health_check.kind, ProbeKind::Tcp);
    }
}
