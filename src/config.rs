//! The YAML config file: its schema, defaults, and validation into a [`Config`] whose static
//! services are already a [`Snapshot`].
//!
//! Errors name the file, the key path and (for syntax and type errors) the line and column, like
//! `nginx -t`. Unknown keys are errors: a typo must never silently fall back to a default.

use std::collections::HashSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::hostname::parse_domain_pattern;
use crate::model::{
    is_cookie_name, Algorithm, BackendSpec, HashKey, HealthCheckSpec, Policy, ProbeKind,
    ServiceSpec, Snapshot, Source, Timeouts,
};

/// A validated config file.
#[derive(Clone, Debug)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub admin: Option<AdminConfig>,
    pub server: ServerConfig,
    /// Service policy for every service that does not set its own (file and Docker alike).
    pub defaults: PolicyLayer,
    /// The file's own services.
    pub snapshot: Snapshot,
    pub docker: DockerConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    #[serde(deserialize_with = "socket_addr")]
    pub address: SocketAddr,
    /// Also accept HTTP/2 without TLS (prior knowledge) on this listener.
    #[serde(default)]
    pub h2c: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(deserialize_with = "socket_addr")]
    pub address: SocketAddr,
    /// Record and serve Prometheus metrics.
    #[serde(default = "yes")]
    pub metrics: bool,
}

/// Process-wide settings, read once at start.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Worker threads per listener; defaults to the number of CPUs.
    pub threads: Option<usize>,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[serde(deserialize_with = "duration")]
    pub grace_period: Duration,
    /// Idle upstream connections kept per proxy worker; should exceed upstream concurrency.
    pub upstream_keepalive_pool_size: usize,
    /// One log line per request (off by default: it costs throughput).
    pub access_log: bool,
    /// How often the config file is checked for changes (0s disables; SIGHUP always works).
    #[serde(deserialize_with = "duration")]
    pub watch_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: None,
            grace_period: Duration::from_secs(10),
            upstream_keepalive_pool_size: 128,
            access_log: false,
            watch_interval: Duration::from_secs(2),
        }
    }
}

impl ServerConfig {
    pub fn worker_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

/// The Docker discovery source.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    pub enabled: bool,
    /// `unix:///var/run/docker.sock`, `tcp://host:2375`; unset means `DOCKER_HOST` or the socket.
    pub endpoint: Option<String>,
    /// Label prefixes berth reads (`<prefix>.routing.port_80`, ...).
    pub label_prefixes: Vec<String>,
    /// Full re-list interval that heals any missed event.
    #[serde(deserialize_with = "duration")]
    pub resync_interval: Duration,
    /// Quiet time that collects a burst of events into one route update.
    #[serde(deserialize_with = "duration")]
    pub debounce: Duration,
    /// Preferred Docker network when a container is on several and has no `network` label.
    pub network: Option<String>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: None,
            label_prefixes: vec!["berth".into(), "aliyun".into()],
            resync_interval: Duration::from_secs(30),
            debounce: Duration::from_millis(50),
            network: None,
        }
    }
}

/// Service policy with every knob optional, so each layer (service, `defaults:`, built-in)
/// only says what it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyLayer {
    #[serde(default, deserialize_with = "opt_algorithm")]
    pub algorithm: Option<Algorithm>,
    #[serde(default, deserialize_with = "opt_hash_key")]
    pub hash_key: Option<HashKey>,
    /// Cookie name; the empty string turns stickiness off.
    #[serde(default)]
    pub sticky_cookie: Option<String>,
    #[serde(default)]
    pub health_check: HealthCheckLayer,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
}

impl PolicyLayer {
    /// This layer over `below`: every knob this layer leaves unset comes from `below`.
    pub fn over(&self, below: &PolicyLayer) -> PolicyLayer {
        PolicyLayer {
            algorithm: self.algorithm.or(below.algorithm),
            hash_key: self.hash_key.clone().or_else(|| below.hash_key.clone()),
            sticky_cookie: self
                .sticky_cookie
                .clone()
                .or_else(|| below.sticky_cookie.clone()),
            health_check: self.health_check.over(&below.health_check),
            retries: self.retries.or(below.retries),
            connect_timeout: self.connect_timeout.or(below.connect_timeout),
            read_timeout: self.read_timeout.or(below.read_timeout),
            idle_timeout: self.idle_timeout.or(below.idle_timeout),
        }
    }

    /// Fills what is still unset with the built-in defaults.
    pub fn resolve(&self) -> Policy {
        let builtin = Policy::default();
        Policy {
            algorithm: self.algorithm.unwrap_or(builtin.algorithm),
            hash_key: self.hash_key.clone().unwrap_or(builtin.hash_key),
            sticky_cookie: self.sticky_cookie.clone().filter(|name| !name.is_empty()),
            health_check: self.health_check.resolve(),
            retries: self.retries.unwrap_or(builtin.retries),
            timeouts: Timeouts {
                connect: self.connect_timeout.unwrap_or(builtin.timeouts.connect),
                read: self.read_timeout.unwrap_or(builtin.timeouts.read),
                idle: self.idle_timeout.unwrap_or(builtin.timeouts.idle),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeType {
    Http,
    Tcp,
    None,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckLayer {
    #[serde(default, rename = "type")]
    pub kind: Option<ProbeType>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub initial_delay: Option<Duration>,
}

impl HealthCheckLayer {
    fn over(&self, below: &HealthCheckLayer) -> HealthCheckLayer {
        HealthCheckLayer {
            kind: self.kind.or(below.kind),
            path: self.path.clone().or_else(|| below.path.clone()),
            port: self.port.or(below.port),
            interval: self.interval.or(below.interval),
            timeout: self.timeout.or(below.timeout),
            healthy_threshold: self.healthy_threshold.or(below.healthy_threshold),
            unhealthy_threshold: self.unhealthy_threshold.or(below.unhealthy_threshold),
            initial_delay: self.initial_delay.or(below.initial_delay),
        }
    }

    fn resolve(&self) -> HealthCheckSpec {
        let builtin = HealthCheckSpec::default();
        let path = self.path.clone().unwrap_or_else(|| "/health".into());
        HealthCheckSpec {
            kind: match self.kind.unwrap_or(ProbeType::Http) {
                ProbeType::Http => ProbeKind::Http { path },
                ProbeType::Tcp => ProbeKind::Tcp,
                ProbeType::None => ProbeKind::None,
            },
            port: self.port,
            interval: self.interval.unwrap_or(builtin.interval),
            timeout: self.timeout.unwrap_or(builtin.timeout),
            healthy_threshold: self.healthy_threshold.unwrap_or(builtin.healthy_threshold),
            unhealthy_threshold: self
                .unhealthy_threshold
                .unwrap_or(builtin.unhealthy_threshold),
            initial_delay: self.initial_delay.unwrap_or(builtin.initial_delay),
        }
    }

    /// Checks the values a layer sets, wherever the layer came from.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(path) = &self.path {
            if !path.starts_with('/') {
                return Err(("path", format!("{path:?} must start with '/'")));
            }
        }
        for (key, value) in [
            ("healthy_threshold", self.healthy_threshold),
            ("unhealthy_threshold", self.unhealthy_threshold),
        ] {
            if value == Some(0) {
                return Err((key, "must be at least 1".into()));
            }
        }
        for (key, value) in [("interval", self.interval), ("timeout", self.timeout)] {
            if value == Some(Duration::ZERO) {
                return Err((key, "must be longer than 0s".into()));
            }
        }
        Ok(())
    }
}

/// Where in which file a config error is.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Key path such as `services[1].health_check.interval`; empty for the whole document.
    pub key_path: String,
    pub line_column: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.line_column {
            write!(f, ":{line}:{column}")?;
        }
        if !self.key_path.is_empty() && self.key_path != "." {
            write!(f, ": {}", self.key_path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates a config file, resolving backend host names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            key_path: String::new(),
            line_column: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `file` only names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key_path = e.path().to_string();
            let inner = e.into_inner();
            let line_column = inner.location().map(|l| (l.line(), l.column()));
            let message = strip_path(&strip_location(&inner.to_string()), &key_path);
            ConfigError {
                file: file.to_owned(),
                key_path,
                line_column,
                message,
            }
        })?;
        raw.validate().map_err(|(key_path, message)| ConfigError {
            file: file.to_owned(),
            key_path,
            line_column: None,
            message,
        })
    }

    /// Whether `other` needs a restart to take effect, and why (listeners, admin and process
    /// settings are bound at start; services and defaults reload live).
    pub fn restart_needed_for(&self, other: &Config) -> Option<&'static str> {
        if self.listeners != other.listeners {
            Some("listeners")
        } else if self.admin != other.admin {
            Some("admin")
        } else if self.server != other.server {
            Some("server")
        } else if self.docker != other.docker {
            Some("discovery")
        } else {
            None
        }
    }
}

/// serde_yaml_ng appends " at line L column C"; we print the location in front instead.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// serde_yaml_ng starts some messages with its own, shorter, key path; ours is printed already.
fn strip_path(message: &str, key_path: &str) -> String {
    match message.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && key_path.starts_with(path) => rest.to_owned(),
        _ => message.to_owned(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listeners: Vec<ListenerConfig>,
    #[serde(default)]
    admin: Option<AdminConfig>,
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    defaults: PolicyLayer,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    discovery: RawDiscovery,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    #[serde(default)]
    docker: DockerConfig,
}

/// A service as written. Policy keys repeat [`PolicyLayer`]'s because serde cannot combine
/// `flatten` with `deny_unknown_fields`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    name: Option<String>,
    domains: Vec<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    listeners: Option<Vec<String>>,
    #[serde(default, deserialize_with = "opt_algorithm")]
    algorithm: Option<Algorithm>,
    #[serde(default, deserialize_with = "opt_hash_key")]
    hash_key: Option<HashKey>,
    #[serde(default)]
    sticky_cookie: Option<String>,
    #[serde(default)]
    health_check: HealthCheckLayer,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    idle_timeout: Option<Duration>,
    #[serde(default)]
    backends: Vec<RawBackend>,
}

impl RawService {
    fn policy(&self) -> PolicyLayer {
        PolicyLayer {
            algorithm: self.algorithm,
            hash_key: self.hash_key.clone(),
            sticky_cookie: self.sticky_cookie.clone(),
            health_check: self.health_check.clone(),
            retries: self.retries,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            idle_timeout: self.idle_timeout,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: String,
    #[serde(default)]
    weight: Option<u16>,
}

/// The largest backend weight (HAProxy's limit too); keeps weighted tables small.
pub const MAX_WEIGHT: u16 = 256;

type Invalid = (String, String);

impl RawConfig {
    fn validate(self) -> Result<Config, Invalid> {
        if self.listeners.is_empty() {
            return Err((
                "listeners".into(),
                "at least one listener is required".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            if listener.name.is_empty() || !names.insert(listener.name.as_str()) {
                return Err((
                    format!("listeners[{i}].name"),
                    format!("listener name {:?} is empty or used twice", listener.name),
                ));
            }
            if !addresses.insert(listener.address)
                || self.admin.as_ref().map(|a| a.address) == Some(listener.address)
            {
                return Err((
                    format!("listeners[{i}].address"),
                    format!("address {} is used twice", listener.address),
                ));
            }
        }
        validate_policy("defaults", &self.defaults)?;
        for (i, prefix) in self.discovery.docker.label_prefixes.iter().enumerate() {
            if prefix.is_empty() || prefix.contains(char::is_whitespace) {
                return Err((
                    format!("discovery.docker.label_prefixes[{i}]"),
                    format!("label prefix {prefix:?} is empty or has spaces"),
                ));
            }
        }

        let mut services = Vec::with_capacity(self.services.len());
        let mut service_names = HashSet::new();
        let mut routes = HashSet::new();
        for (i, raw) in self.services.iter().enumerate() {
            let at = format!("services[{i}]");
            let spec = raw.to_spec(&at, &self.defaults, &names)?;
            if !service_names.insert(spec.name.clone()) {
                return Err((
                    format!("{at}.name"),
                    format!(
                        "service name {:?} is used twice; give each service a distinct `name`",
                        spec.name
                    ),
                ));
            }
            for domain in &spec.domains {
                if !routes.insert((domain.clone(), spec.path_prefix.clone())) {
                    return Err((
                        format!("{at}.domains"),
                        format!(
                            "{domain}{} is already routed by an earlier service",
                            spec.path_prefix
                        ),
                    ));
                }
            }
            services.push(spec);
        }

        Ok(Config {
            listeners: self.listeners,
            admin: self.admin,
            server: self.server,
            defaults: self.defaults,
            snapshot: Snapshot { services },
            docker: self.discovery.docker,
        })
    }
}

impl RawService {
    fn to_spec(
        &self,
        at: &str,
        defaults: &PolicyLayer,
        listener_names: &HashSet<&str>,
    ) -> Result<ServiceSpec, Invalid> {
        if self.domains.is_empty() {
            return Err((
                format!("{at}.domains"),
                "at least one domain is required".into(),
            ));
        }
        let mut domains = Vec::with_capacity(self.domains.len());
        for (d, raw) in self.domains.iter().enumerate() {
            let domain =
                parse_domain_pattern(raw).map_err(|e| (format!("{at}.domains[{d}]"), e))?;
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        let path_prefix = self.path_prefix.clone().unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/') || path_prefix.contains(char::is_whitespace) {
            return Err((
                format!("{at}.path_prefix"),
                format!("{path_prefix:?} must start with '/' and contain no spaces"),
            ));
        }
        if let Some(listeners) = &self.listeners {
            for (l, name) in listeners.iter().enumerate() {
                if !listener_names.contains(name.as_str()) {
                    return Err((
                        format!("{at}.listeners[{l}]"),
                        format!("no listener is named {name:?}"),
                    ));
                }
            }
        }
        let own = self.policy();
        validate_policy(at, &own)?;
        let policy = own.over(defaults).resolve();

        let mut backends: Vec<BackendSpec> = Vec::with_capacity(self.backends.len());
        for (b, raw) in self.backends.iter().enumerate() {
            let key = format!("{at}.backends[{b}]");
            let weight = raw.weight.unwrap_or(1);
            if weight == 0 || weight > MAX_WEIGHT {
                return Err((
                    format!("{key}.weight"),
                    format!(
                        "weight {weight} is out of range 1..={MAX_WEIGHT} \
                         (remove a backend to take it out)"
                    ),
                ));
            }
            for addr in resolve_backend(&raw.address).map_err(|e| (format!("{key}.address"), e))? {
                if backends.iter().any(|existing| existing.addr == addr) {
                    return Err((
                        format!("{key}.address"),
                        format!("{addr} is listed twice in this service"),
                    ));
                }
                let mut backend = BackendSpec::new(addr);
                backend.weight = weight;
                backends.push(backend);
            }
        }

        let name = match &self.name {
            Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
            Some(_) => return Err((format!("{at}.name"), "name is empty".into())),
            None => domains[0].clone(),
        };
        Ok(ServiceSpec {
            name,
            domains,
            path_prefix,
            listeners: self.listeners.clone(),
            policy,
            backends,
            source: Source::File,
        })
    }
}

fn validate_policy(at: &str, layer: &PolicyLayer) -> Result<(), Invalid> {
    if let Some(cookie) = &layer.sticky_cookie {
        if !cookie.is_empty() && !is_cookie_name(cookie) {
            return Err((
                format!("{at}.sticky_cookie"),
                format!("{cookie:?} is not a valid cookie name"),
            ));
        }
    }
    if let Some(retries) = layer.retries {
        if retries > MAX_RETRIES {
            return Err((
                format!("{at}.retries"),
                format!("{retries} is more than the maximum of {MAX_RETRIES}"),
            ));
        }
    }
    layer
        .health_check
        .validate()
        .map_err(|(key, message)| (format!("{at}.health_check.{key}"), message))
}

/// Upper bound of `retries`; Pingora's own retry loop is sized from it.
pub const MAX_RETRIES: u32 = 10;

/// `ip:port` is used as is; `host:port` is resolved now, and every address it has becomes a
/// backend (as nginx does for an upstream `server` name).
fn resolve_backend(address: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if address
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(format!("{address:?} is not host:port"));
    }
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{address:?} resolves to no address"));
    }
    Ok(addrs)
}

fn yes() -> bool {
    true
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        de::Error::custom(format!(
            "{text:?} is not an ip:port address (e.g. \"0.0.0.0:8080\" or \"[::]:8080\")"
        ))
    })
}

/// Parses `500ms`, `2s`, `1m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); write e.g. 500ms, 2s, 1m"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_duration(&String::deserialize(d)?).map_err(de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn opt_algorithm<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Algorithm>, D::Error> {
    let name = String::deserialize(d)?;
    Algorithm::parse(&name).map(Some).ok_or_else(|| {
        de::Error::custom(format!(
            "unknown algorithm {name:?}, expected one of {}",
            Algorithm::NAMES
        ))
    })
}

fn opt_hash_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HashKey>, D::Error> {
    let text = String::deserialize(d)?;
    HashKey::parse(&text).map(Some).ok_or_else(|| {
        de::Error::custom(format!(
            "invalid hash_key {text:?}, expected client_ip, path, header:<name> or cookie:<name>"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.yaml"))
    }

    const MINIMAL: &str = "listeners:\n  - name: main\n    address: \"127.0.0.1:8080\"\n";

    #[test]
    fn the_issue_example_parses_with_its_defaults() {
        let config = parse(
            r#"
listeners:
  - name: main
    address: "127.0.0.1:8080"
admin:
  address: "127.0.0.1:9900"
services:
  - name: api
    domains: ["api.example.com", "*.api.example.com"]
    path_prefix: "/"
    algorithm: round_robin
    health_check:
      type: http
      path: "/health"
      interval: 2s
      timeout: 2s
      healthy_threshold: 1
      unhealthy_threshold: 2
      initial_delay: 0s
    backends:
      - address: "127.0.0.1:9001"
        weight: 1
"#,
        )
        .unwrap();
        let api = &config.snapshot.services[0];
        assert_eq!(api.name, "api");
        assert_eq!(api.domains, ["api.example.com", "*.api.example.com"]);
        assert_eq!(api.policy, Policy::default());
        assert_eq!(api.backends[0].addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(config.server.grace_period, Duration::from_secs(10));
        assert!(config.admin.unwrap().metrics);
    }

    #[test]
    fn defaults_fill_what_a_service_leaves_unset() {
        let config = parse(&format!(
            "{MINIMAL}defaults:\n  retries: 5\n  health_check:\n    interval: 500ms\n    path: /ping\n\
             services:\n  - domains: [A.example.com]\n    health_check:\n      path: /ready\n    \
             backends: [{{address: \"127.0.0.1:1\"}}]\n"
        ))
        .unwrap();
        let svc = &config.snapshot.services[0];
        assert_eq!(
            svc.name, "a.example.com",
            "name defaults to the first domain"
        );
        assert_eq!(svc.policy.retries, 5);
        assert_eq!(svc.policy.health_check.interval, Duration::from_millis(500));
        assert_eq!(
            svc.policy.health_check.kind,
            ProbeKind::Http {
                path: "/ready".into()
            }
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_path_and_position() {
        let err = parse(&format!(
            "{MINIMAL}services:\n  - domains: [a.com]\n    helth_check: {{}}\n"
        ))
        .unwrap_err();
        assert_eq!(err.key_path, "services[0].helth_check");
        assert_eq!(err.line_column.map(|(l, _)| l), Some(6));
        let text = err.to_string();
        assert!(text.starts_with("test.yaml:6:"), "{text}");
        assert!(text.contains("unknown field `helth_check`"), "{text}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "    health_check: {interval: 2x}\n",
                "services[0].health_check.interval",
            ),
            ("    algorithm: fastest\n", "services[0].algorithm"),
            (
                "    health_check: {unhealthy_threshold: 0}\n",
                "services[0].health_check.unhealthy_threshold",
            ),
            (
                "    backends: [{address: nowhere}]\n",
                "services[0].backends[0].address",
            ),
            (
                "    backends: [{address: \"1.2.3.4:80\", weight: 0}]\n",
                "services[0].backends[0].weight",
            ),
            ("    listeners: [public]\n", "services[0].listeners[0]"),
            ("    path_prefix: api\n", "services[0].path_prefix"),
            ("    sticky_cookie: \"a b\"\n", "services[0].sticky_cookie"),
        ];
        for (line, key_path) in cases {
            let err = parse(&format!("{MINIMAL}services:\n  - domains: [a.com]\n{line}"))
                .expect_err(line);
            assert_eq!(err.key_path, key_path, "{line}: {err}");
        }
        let err = parse(&format!("{MINIMAL}services:\n  - domains: [\"a b.com\"]\n")).unwrap_err();
        assert_eq!(err.key_path, "services[0].domains[0]");
    }

    #[test]
    fn duplicate_routes_and_names_are_refused() {
        let err = parse(&format!(
            "{MINIMAL}services:\n  - domains: [a.com]\n  - name: b\n    domains: [A.com]\n"
        ))
        .unwrap_err();
        assert!(err.message.contains("already routed"), "{err}");
        let err = parse(&format!(
            "{MINIMAL}services:\n  - {{name: x, domains: [a.com]}}\n  - {{name: x, domains: [b.com]}}\n"
        ))
        .unwrap_err();
        assert_eq!(err.key_path, "services[1].name");
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = parse("listeners:\n  - name: main\n    address: [unclosed\n").unwrap_err();
        assert!(err.line_column.is_some(), "{err}");
    }

    #[test]
    fn listeners_are_required_and_distinct() {
        assert!(parse("listeners: []\n").is_err());
        let err = parse(&format!(
            "{MINIMAL}  - name: main\n    address: \"127.0.0.1:8081\"\n"
        ))
        .unwrap_err();
        assert_eq!(err.key_path, "listeners[1].name");
    }

    #[test]
    fn hostnames_resolve_to_every_address() {
        let config = parse(&format!(
            "{MINIMAL}services:\n  - domains: [a.com]\n    backends: [{{address: \"localhost:9\"}}]\n"
        ))
        .unwrap();
        let backends = &config.snapshot.services[0].backends;
        assert!(!backends.is_empty());
        assert!(backends
            .iter()
            .all(|b| b.addr.ip().is_loopback() && b.addr.port() == 9));
    }

    #[test]
    fn changes_that_need_a_restart_are_named() {
        let a = parse(MINIMAL).unwrap();
        let b = parse(&MINIMAL.replace("8080", "8081")).unwrap();
        assert_eq!(a.restart_needed_for(&a), None);
        assert_eq!(a.restart_needed_for(&b), Some("listeners"));
    }
}
