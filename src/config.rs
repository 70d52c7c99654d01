//! The config file: its schema, and the sections bound at start (listeners, admin, process
//! settings, discovery settings).
//!
//! The file's `services:` and `defaults:` are parsed here as written ([`ServiceEntry`]) and
//! become routes in [`crate::sources::file`], the source that reloads them live. Errors name the
//! file, the key path and (for syntax and type errors) the line and column, like `nginx -t`.
//! Unknown keys are errors: a typo must never silently fall back to a default.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::spec::hostname::parse_domain_pattern;
use crate::spec::policy::{self, with_policy_knobs};
use crate::spec::PolicyLayer;

/// A config file whose restart-bound sections are valid; its services are checked by the file
/// source ([`crate::sources::file::FileServices::from_config`]).
#[derive(Clone, Debug)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub admin: Option<AdminConfig>,
    pub server: ServerConfig,
    /// Service policy for every service that does not set its own (file and Docker alike).
    pub defaults: PolicyLayer,
    /// The file's own services, as written; emptied once the file source has turned them
    /// into its snapshot.
    pub services: Vec<ServiceEntry>,
    pub docker: DockerConfig,
    pub swarm: SwarmConfig,
    /// Automatic certificates; `None` when the file has no `acme:` section.
    pub acme: Option<AcmeConfig>,
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
    /// Terminate TLS on this listener.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Answer every request with a redirect to the same URL over HTTPS (ACME HTTP-01
    /// challenges excepted); such a listener serves no service.
    #[serde(default)]
    pub redirect_https: bool,
}

impl ListenerConfig {
    /// The listener without what a reload may change (its certificates): the part that is
    /// bound at start.
    fn bound_at_start(&self) -> ListenerConfig {
        let mut listener = self.clone();
        if let Some(tls) = &mut listener.tls {
            tls.certificates.clear();
            tls.default_certificate = None;
        }
        listener
    }
}

/// A TLS listener's settings. Its certificates reload with the file; the rest is bound at start.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Chosen by SNI: exact name first, then a wildcard one label up.
    #[serde(default)]
    pub certificates: Vec<CertificateFiles>,
    /// A name of one of `certificates`: served to clients whose SNI matches none (or that send
    /// none). Without it such handshakes are refused.
    #[serde(default, deserialize_with = "certificate_name")]
    pub default_certificate: Option<String>,
    #[serde(default)]
    pub min_version: TlsVersion,
    #[serde(default)]
    pub alpn: Alpn,
}

/// One certificate chain and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, SEC1 or PKCS#1; ECDSA, RSA or Ed25519).
    pub key: PathBuf,
}

/// The lowest TLS version a listener accepts. rustls has no TLS 1.0 or 1.1 at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match policy::de::scalar(d)?.trim() {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            "1.0" | "1.1" => Err(de::Error::custom(
                "TLS 1.0 and 1.1 are not supported (rustls implements 1.2 and 1.3 only)",
            )),
            other => Err(de::Error::custom(format!(
                "unknown TLS version {other:?}, expected \"1.2\" or \"1.3\""
            ))),
        }
    }
}

/// The application protocols a TLS listener offers in ALPN, in its order of preference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Alpn {
    /// `[h2, http/1.1]`: HTTP/2 to clients that offer it, else HTTP/1.1.
    #[default]
    H2Http11,
    /// `[http/1.1]`: HTTP/1.1 only.
    Http11,
    /// `[h2]`: HTTP/2 only (clients that send no ALPN still get HTTP/1.1).
    H2,
}

impl<'de> Deserialize<'de> for Alpn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let protocols = Vec::<String>::deserialize(d)?;
        let protocols: Vec<&str> = protocols.iter().map(|p| p.trim()).collect();
        match protocols.as_slice() {
            ["h2", "http/1.1"] => Ok(Alpn::H2Http11),
            ["http/1.1"] => Ok(Alpn::Http11),
            ["h2"] => Ok(Alpn::H2),
            _ => Err(de::Error::custom(format!(
                "unsupported ALPN list {protocols:?}; use [h2, http/1.1], [http/1.1] or [h2] \
                 (Pingora cannot prefer HTTP/1.1 over h2)"
            ))),
        }
    }
}

/// The `acme:` section: certificates obtained and renewed automatically (RFC 8555).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    #[serde(deserialize_with = "https_url")]
    pub directory: String,
    /// Contact address the CA may write to about expiring certificates and problems.
    #[serde(default, deserialize_with = "email")]
    pub email: Option<String>,
    /// Where the account key and the certificates are kept (created 0700, files 0600).
    #[serde(default = "default_acme_storage")]
    pub storage: PathBuf,
    #[serde(default)]
    pub challenge: AcmeChallenge,
    /// A certificate is renewed when it has less than this left.
    #[serde(
        default = "default_renew_before",
        deserialize_with = "positive_duration"
    )]
    pub renew_before: Duration,
    /// Trust this CA (PEM) for the directory's HTTPS instead of the system's roots: for a
    /// private ACME CA.
    #[serde(default)]
    pub ca_certificate: Option<PathBuf>,
}

/// How the CA checks that berth serves a domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    /// A token served at `http://<domain>/.well-known/acme-challenge/<token>` on port 80: it
    /// cannot prove wildcard names.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(deserialize_with = "socket_addr")]
    pub address: SocketAddr,
    /// Record and serve Prometheus metrics.
    #[serde(default = "yes")]
    pub metrics: bool,
    /// Which per-backend series `/metrics` carries.
    #[serde(default)]
    pub metrics_detail: MetricsDetail,
}

/// How much per-backend detail `/metrics` exposes: a large fleet's scrape is mostly
/// per-backend histograms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsDetail {
    /// Every series, per-backend latency and probe-duration histograms included.
    #[default]
    Full,
    /// Per-service series in full; per backend only whether it is up and who it is.
    Service,
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

/// The Swarm discovery source: services and tasks from a Swarm manager's API.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmConfig {
    pub enabled: bool,
    /// Manager endpoints, tried in turn when one is lost (one string or a list); empty means
    /// `DOCKER_HOST` or the local socket, as for Docker discovery.
    #[serde(deserialize_with = "one_or_many")]
    pub endpoint: Vec<String>,
    /// Label prefixes berth reads, on services and on their containers.
    pub label_prefixes: Vec<String>,
    /// Full re-list interval: heals anything events do not announce (a crashed task's
    /// replacement).
    #[serde(deserialize_with = "duration")]
    pub resync_interval: Duration,
    /// Quiet time after a service or node event before the re-list.
    #[serde(deserialize_with = "duration")]
    pub debounce: Duration,
    /// How often a converging service's tasks are re-listed (a rolling update's later steps
    /// emit no event).
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// Preferred overlay network when a task is on several that berth shares.
    pub network: Option<String>,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: Vec::new(),
            label_prefixes: vec!["berth".into(), "aliyun".into()],
            resync_interval: Duration::from_secs(5),
            debounce: Duration::from_millis(50),
            poll_interval: Duration::from_millis(500),
            network: None,
        }
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

impl ConfigError {
    /// An error found after parsing, so without a line and column.
    pub fn at(file: &Path, key_path: String, message: String) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            key_path,
            line_column: None,
            message,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::at(
                path,
                String::new(),
                format!("cannot read the config file: {e}"),
            )
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
        raw.validate()
            .map_err(|(key_path, message)| ConfigError::at(file, key_path, message))
    }

    /// Whether `other` needs a restart to take effect, and why (listeners, admin and process
    /// settings are bound at start; services and defaults reload live).
    pub fn restart_needed_for(&self, other: &Config) -> Option<&'static str> {
        let bound = |c: &Config| -> Vec<ListenerConfig> {
            c.listeners
                .iter()
                .map(ListenerConfig::bound_at_start)
                .collect()
        };
        if bound(self) != bound(other) {
            Some("listeners")
        } else if self.admin != other.admin {
            Some("admin")
        } else if self.server != other.server {
            Some("server")
        } else if self.docker != other.docker || self.swarm != other.swarm {
            Some("discovery")
        } else if self.acme != other.acme {
            Some("acme")
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
    services: Vec<ServiceEntry>,
    #[serde(default)]
    discovery: RawDiscovery,
    #[serde(default)]
    acme: Option<AcmeConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    #[serde(default)]
    docker: DockerConfig,
    #[serde(default)]
    swarm: SwarmConfig,
}

with_policy_knobs! {
    /// A service as written in the file.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ServiceEntry {
        #[serde(default)]
        pub name: Option<String>,
        pub domains: Vec<String>,
        #[serde(default, deserialize_with = "policy::de::path_prefix")]
        pub path_prefix: Option<String>,
        #[serde(default)]
        pub listeners: Option<Vec<String>>,
        #[serde(default)]
        pub backends: Vec<BackendEntry>,
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEntry {
    /// `ip:port`, or `host:port` resolved by the file source.
    pub address: String,
    #[serde(default, deserialize_with = "policy::de::weight")]
    pub weight: Option<u16>,
}

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
            self.validate_tls(i, listener)?;
        }
        self.defaults
            .validate()
            .map_err(|(key, message)| (format!("defaults.{key}"), message))?;
        let docker = &self.discovery.docker.label_prefixes;
        let swarm = &self.discovery.swarm.label_prefixes;
        for (source, prefixes) in [("docker", docker), ("swarm", swarm)] {
            for (i, prefix) in prefixes.iter().enumerate() {
                if prefix.is_empty() || prefix.contains(char::is_whitespace) {
                    return Err((
                        format!("discovery.{source}.label_prefixes[{i}]"),
                        format!("label prefix {prefix:?} is empty or has spaces"),
                    ));
                }
            }
        }
        let swarm = &self.discovery.swarm;
        for (key, value) in [
            ("resync_interval", swarm.resync_interval),
            ("poll_interval", swarm.poll_interval),
        ] {
            if value.is_zero() {
                return Err((
                    format!("discovery.swarm.{key}"),
                    "must be longer than 0s".into(),
                ));
            }
        }
        Ok(Config {
            listeners: self.listeners,
            admin: self.admin,
            server: self.server,
            defaults: self.defaults,
            services: self.services,
            docker: self.discovery.docker,
            swarm: self.discovery.swarm,
            acme: self.acme,
        })
    }

    fn validate_tls(&self, i: usize, listener: &ListenerConfig) -> Result<(), Invalid> {
        let at = |key: &str| format!("listeners[{i}].{key}");
        match &listener.tls {
            Some(_) if listener.redirect_https => Err((
                at("redirect_https"),
                "a TLS listener cannot redirect to HTTPS; redirect from a plain listener".into(),
            )),
            Some(_) if listener.h2c => Err((
                at("h2c"),
                "h2c is HTTP/2 without TLS; a TLS listener offers h2 through `alpn`".into(),
            )),
            Some(tls) if tls.certificates.is_empty() && self.acme.is_none() => Err((
                at("tls.certificates"),
                "a TLS listener needs certificates, or an `acme` section to obtain them".into(),
            )),
            None if listener.redirect_https && !self.listeners.iter().any(|l| l.tls.is_some()) => {
                Err((
                    at("redirect_https"),
                    "redirects to HTTPS need a listener with `tls`".into(),
                ))
            }
            _ => Ok(()),
        }
    }
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

/// One string, or a list of them.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde_yaml_ng::Value;
    let expected = || de::Error::custom("expected an endpoint or a list of endpoints");
    match Value::deserialize(d)? {
        Value::String(one) => Ok(vec![one]),
        Value::Sequence(many) => many
            .into_iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(expected))
            .collect(),
        _ => Err(expected()),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    policy::parse_duration(&policy::de::scalar(d)?).map_err(de::Error::custom)
}

fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match duration(d)? {
        Duration::ZERO => Err(de::Error::custom("must be longer than 0s")),
        positive => Ok(positive),
    }
}

/// A certificate's DNS name (`example.com` or `*.example.com`), lowercase.
fn certificate_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = parse_domain_pattern(&policy::de::scalar(d)?).map_err(de::Error::custom)?;
    if name == "*" {
        return Err(de::Error::custom(
            "name one of the certificate's DNS names, e.g. example.com",
        ));
    }
    Ok(Some(name))
}

fn https_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = policy::de::scalar(d)?.trim().to_owned();
    let valid = url
        .strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
    if valid {
        Ok(url)
    } else {
        Err(de::Error::custom(format!(
            "{url:?} is not an https:// URL (the ACME directory, e.g. \
             https://acme-v02.api.letsencrypt.org/directory)"
        )))
    }
}

fn email<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let email = policy::de::scalar(d)?.trim().to_owned();
    match email.split_once('@') {
        Some((user, domain))
            if !user.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace) =>
        {
            Ok(Some(email))
        }
        _ => Err(de::Error::custom(format!(
            "{email:?} is not an e-mail address"
        ))),
    }
}

fn default_acme_storage() -> PathBuf {
    PathBuf::from("/var/lib/berth/acme")
}

fn default_renew_before() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.yaml"))
    }

    const MINIMAL: &str = "listeners:\n  - name: main\n    address: \"127.0.0.1:8080\"\n";

    #[test]
    fn process_defaults() {
        let config = parse(&format!("{MINIMAL}admin:\n  address: \"127.0.0.1:9900\"\n")).unwrap();
        assert_eq!(config.server.grace_period, Duration::from_secs(10));
        assert!(config.admin.unwrap().metrics);
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
    fn swarm_endpoints_are_one_or_a_list() {
        let config = parse(MINIMAL).unwrap();
        assert!(!config.swarm.enabled);
        assert!(config.swarm.endpoint.is_empty());
        assert_eq!(config.swarm.resync_interval, Duration::from_secs(5));
        let one = parse(&format!(
            "{MINIMAL}discovery:\n  swarm:\n    enabled: true\n    endpoint: unix:///a.sock\n"
        ))
        .unwrap();
        assert_eq!(one.swarm.endpoint, ["unix:///a.sock"]);
        let many = parse(&format!(
            "{MINIMAL}discovery:\n  swarm:\n    endpoint: [unix:///a.sock, \"tcp://m2:2375\"]\n    network: apps\n"
        ))
        .unwrap();
        assert_eq!(many.swarm.endpoint, ["unix:///a.sock", "tcp://m2:2375"]);
        assert_eq!(many.swarm.network.as_deref(), Some("apps"));
        let err = parse(&format!(
            "{MINIMAL}discovery:\n  swarm:\n    poll_interval: 0s\n"
        ))
        .unwrap_err();
        assert_eq!(err.key_path, "discovery.swarm.poll_interval");
        let err = parse(&format!("{MINIMAL}discovery:\n  swarm:\n    endpoint: 3\n")).unwrap_err();
        assert!(err.to_string().contains("list of endpoints"), "{err}");
        assert_eq!(
            one.restart_needed_for(&parse(MINIMAL).unwrap()),
            Some("discovery")
        );
    }

    #[test]
    fn changes_that_need_a_restart_are_named() {
        let a = parse(MINIMAL).unwrap();
        let b = parse(&MINIMAL.replace("8080", "8081")).unwrap();
        assert_eq!(a.restart_needed_for(&a), None);
        assert_eq!(a.restart_needed_for(&b), Some("listeners"));
    }

    const TLS: &str =
        "listeners:\n  - name: public\n    address: \"127.0.0.1:8443\"\n    tls:\n      \
                       certificates:\n        - {cert: a.pem, key: a.key}\n      \
                       default_certificate: A.example.com\n";

    #[test]
    fn tls_listeners_parse_with_their_defaults() {
        let config = parse(TLS).unwrap();
        let tls = config.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.certificates[0].cert, Path::new("a.pem"));
        assert_eq!(tls.default_certificate.as_deref(), Some("a.example.com"));
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert_eq!(tls.alpn, Alpn::H2Http11);
        let strict = parse(&format!(
            "{TLS}      min_version: 1.3\n      alpn: [http/1.1]\n"
        ))
        .unwrap();
        let tls = strict.listeners[0].tls.as_ref().unwrap();
        assert_eq!(
            (tls.min_version, tls.alpn),
            (TlsVersion::Tls13, Alpn::Http11)
        );
    }

    #[test]
    fn certificates_reload_but_the_rest_of_a_tls_listener_needs_a_restart() {
        let a = parse(TLS).unwrap();
        let new_certificates = parse(
            &TLS.replace("a.pem", "b.pem")
                .replace("A.example", "b.example"),
        )
        .unwrap();
        assert_eq!(a.restart_needed_for(&new_certificates), None);
        let strict = parse(&format!("{TLS}      min_version: \"1.3\"\n")).unwrap();
        assert_eq!(a.restart_needed_for(&strict), Some("listeners"));
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused() {
        let cases = [
            (
                format!("{TLS}      min_version: 1.1\n"),
                "listeners[0].tls.min_version",
                "not supported",
            ),
            (
                format!("{TLS}      alpn: [http/1.1, h2]\n"),
                "listeners[0].tls.alpn",
                "unsupported ALPN",
            ),
            (
                format!("{TLS}    redirect_https: true\n"),
                "listeners[0].redirect_https",
                "cannot redirect",
            ),
            (format!("{TLS}    h2c: true\n"), "listeners[0].h2c", "h2c"),
            (
                TLS.replace(
                    "certificates:\n        - {cert: a.pem, key: a.key}\n      ",
                    "",
                ),
                "listeners[0].tls.certificates",
                "needs certificates",
            ),
            (
                format!("{MINIMAL}    redirect_https: true\n"),
                "listeners[0].redirect_https",
                "need a listener with `tls`",
            ),
            (
                format!("{TLS}acme:\n  directory: http://ca.test/dir\n"),
                "acme.directory",
                "https://",
            ),
            (
                format!("{TLS}acme:\n  directory: https://ca.test/dir\n  renew_before: 0s\n"),
                "acme.renew_before",
                "longer than 0s",
            ),
            (
                format!("{TLS}acme:\n  directory: https://ca.test/dir\n  challenge: dns-01\n"),
                "acme.challenge",
                "unknown variant",
            ),
        ];
        for (text, key_path, problem) in cases {
            let err = parse(&text).expect_err(&text);
            assert_eq!(err.key_path, key_path, "{text}: {err}");
            assert!(err.message.contains(problem), "{text}: {err}");
        }
    }

    #[test]
    fn acme_alone_can_supply_a_tls_listener() {
        let text = "listeners:\n  - {name: public, address: \"127.0.0.1:8443\", tls: {}}\n  \
                    - {name: redirect, address: \"127.0.0.1:8080\", redirect_https: true}\n\
                    acme:\n  directory: https://ca.test/dir\n  email: ops@example.com\n";
        let config = parse(text).unwrap();
        let acme = config.acme.unwrap();
        assert_eq!(acme.storage, Path::new("/var/lib/berth/acme"));
        assert_eq!(acme.renew_before, Duration::from_secs(30 * 24 * 3600));
        assert!(config.listeners[1].redirect_https);
    }
}
