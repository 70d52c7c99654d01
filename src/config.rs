//! The config file: its schema, and the sections bound at start (listeners, admin, process
//! settings, discovery settings).
//!
//! The file's `services:` and `defaults:` are parsed here as written ([`ServiceEntry`]) and
//! become routes in [`crate::sources::file`], the source that reloads them live. Errors name the
//! file, the key path and (for syntax and type errors) the line and column, like `nginx -t`.
//! Unknown keys are errors: a typo must never silently fall back to a default.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::model::hostname::{parse_domain_pattern, DomainSet};
use crate::model::policy::{self, with_policy_knobs};
use crate::model::PolicyLayer;

/// The most Pingora ever reads of a request head (its own fixed limit): a larger
/// `max_request_header_size` could never take effect.
pub const MAX_REQUEST_HEADER_SIZE: u64 = 1 << 20;

/// Where to reach a listener bound to `addr`: a wildcard address (`0.0.0.0`, `::`) is reached
/// on loopback.
pub fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

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
    /// Domains whose services are internal: never served on an edge listener.
    pub internal_domains: DomainSet,
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
    /// Whether the listener faces the Internet (`edge`: public services only) or a private
    /// network (`internal`: every service).
    #[serde(default)]
    pub role: ListenerRole,
    /// Only these peers may use the listener (others get 403); `None` lets everyone in.
    #[serde(default)]
    pub allow: Option<CidrList>,
    /// Peers whose `X-Forwarded-For/Proto/Host` berth keeps (and appends to); from anyone
    /// else those headers are replaced with what berth itself sees.
    #[serde(default)]
    pub trusted_proxies: CidrList,
    /// Open connections this listener holds at once; `None` takes `server.max_connections`.
    #[serde(default, deserialize_with = "some_connections")]
    pub max_connections: Option<u32>,
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

    /// A listener with every optional setting at its default.
    pub fn new(name: &str, address: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            address,
            h2c: false,
            role: ListenerRole::default(),
            allow: None,
            trusted_proxies: CidrList::default(),
            max_connections: None,
            tls: None,
            redirect_https: false,
        }
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

/// What a listener is for, which decides the services it serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    /// Faces the Internet: serves public services only; an internal one answers as an
    /// unknown host does.
    Edge,
    /// On a private network: serves every service (berth's behaviour before roles existed).
    #[default]
    Internal,
}

/// Networks, written `10.0.0.0/8`, `2001:db8::/32` or as single addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct CidrList(Vec<Cidr>);

impl CidrList {
    /// `127.0.0.0/8` and `::1`: the host berth runs on.
    pub fn loopback() -> CidrList {
        CidrList(vec![
            Cidr(IpNet::new(Ipv4Addr::LOCALHOST.into(), 8).expect("valid prefix")),
            Cidr(IpNet::from(IpAddr::from(Ipv6Addr::LOCALHOST))),
        ])
    }

    /// Whether `ip` is in one of the networks. An IPv4 peer on an IPv6 socket
    /// (`::ffff:10.1.2.3`) is matched as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.0.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One network of a [`CidrList`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cidr(IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        parse_cidr(&String::deserialize(d)?)
            .map(Cidr)
            .map_err(de::Error::custom)
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.0.2.7` is `192.0.2.7/32`). Host bits
/// of a network are dropped (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!(
                "{text:?} is not an address or network (e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32)"
            )
        })
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
    /// Peers that may use everything but `/healthz`, `/readyz` and `/metrics` (the route
    /// table names backend addresses and container ids, and a container id is a sticky-cookie
    /// value). Default: loopback only.
    #[serde(default = "CidrList::loopback")]
    pub allow: CidrList,
    /// A file holding a token that also grants that access, presented as
    /// `Authorization: Bearer <token>`; relative to the config file's directory.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The token read from `token_file` when the config was loaded.
    #[serde(skip)]
    pub token: Option<AdminToken>,
}

/// The admin API's bearer token. Never printed: `Debug` shows only that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Box<[u8]>);

impl AdminToken {
    /// The token itself, to present it (`berth routes` asking the admin API).
    pub fn expose(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// Compares in time independent of where the first difference is, so response timing
    /// does not reveal the token byte by byte.
    pub fn matches(&self, presented: &[u8]) -> bool {
        presented.len() == self.0.len()
            && presented
                .iter()
                .zip(self.0.iter())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
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
    /// Largest request head (request line and headers) in bytes; a larger one is answered
    /// 431 and never reaches Pingora's parser, so a connection costs at most this much.
    #[serde(deserialize_with = "header_size")]
    pub max_request_header_size: u64,
    /// Longest time a client may take to send a whole request head (from the connection's
    /// start for its first request, from the first byte for later ones): 408 after it.
    #[serde(deserialize_with = "positive_duration")]
    pub request_header_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request (0s: no keep-alive).
    #[serde(deserialize_with = "duration")]
    pub keepalive_timeout: Duration,
    /// Open connections per listener, unless the listener sets its own; more are closed at
    /// once and counted.
    #[serde(deserialize_with = "connections")]
    pub max_connections: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: None,
            grace_period: Duration::from_secs(10),
            upstream_keepalive_pool_size: 128,
            access_log: false,
            watch_interval: Duration::from_secs(2),
            max_request_header_size: 32 << 10,
            request_header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 10_000,
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
        raw.validate(file)
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
        } else if self.internal_domains != other.internal_domains {
            Some("internal_domains")
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
    internal_domains: Option<Vec<String>>,
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
    /// `file` is the config's path: `admin.token_file` is relative to its directory.
    fn validate(mut self, file: &Path) -> Result<Config, Invalid> {
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
            if listener.allow.as_ref().is_some_and(CidrList::is_empty) {
                return Err((
                    format!("listeners[{i}].allow"),
                    "an empty list lets nobody in; leave `allow` out to let everyone in".into(),
                ));
            }
        }
        let internal_domains = match &self.internal_domains {
            None => DomainSet::default(),
            Some(patterns) => DomainSet::parse(patterns.iter().map(String::as_str))
                .map_err(|(i, e)| (format!("internal_domains[{i}]"), e))?,
        };
        if let Some(admin) = &mut self.admin {
            if let Some(path) = &admin.token_file {
                admin.token = Some(read_token(
                    &file.parent().unwrap_or(Path::new("")).join(path),
                )?);
            }
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
            internal_domains,
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

/// The token in `path`, without surrounding whitespace (a trailing newline is usual).
fn read_token(path: &Path) -> Result<AdminToken, Invalid> {
    let key = || "admin.token_file".to_owned();
    let text =
        std::fs::read(path).map_err(|e| (key(), format!("cannot read {}: {e}", path.display())))?;
    let token = text.trim_ascii();
    if token.len() < 16 || !token.iter().all(u8::is_ascii_graphic) {
        return Err((
            key(),
            format!(
                "{} must hold a token of at least 16 visible ASCII characters",
                path.display()
            ),
        ));
    }
    Ok(AdminToken(token.into()))
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

fn header_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let size = policy::parse_size(&policy::de::scalar(d)?).map_err(de::Error::custom)?;
    if (1024..=MAX_REQUEST_HEADER_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(de::Error::custom(format!(
            "{size} bytes is outside 1KiB..=1MiB (Pingora never reads a longer head)"
        )))
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

fn connections<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let text = policy::de::scalar(d)?;
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(de::Error::custom(format!(
            "max_connections {:?} is not a whole number of at least 1",
            text.trim()
        ))),
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

fn some_connections<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    connections(d).map(Some)
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
    fn edge_settings_have_safe_defaults() {
        let config = parse(&format!("{MINIMAL}admin:\n  address: \"0.0.0.0:9900\"\n")).unwrap();
        let server = &config.server;
        assert_eq!(server.max_request_header_size, 32 * 1024);
        assert_eq!(server.request_header_timeout, Duration::from_secs(10));
        assert_eq!(server.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(server.max_connections, 10_000);
        let listener = &config.listeners[0];
        assert_eq!(listener.role, ListenerRole::Internal);
        assert_eq!(listener.allow, None);
        assert!(listener.trusted_proxies.is_empty());
        let admin = config.admin.unwrap();
        assert!(admin.allow.contains("127.0.0.1".parse().unwrap()));
        assert!(admin.allow.contains("::1".parse().unwrap()));
        assert!(!admin.allow.contains("10.0.0.1".parse().unwrap()));
        assert!(config.internal_domains.covers("restserver.local"));
    }

    #[test]
    fn edge_settings_are_read_and_checked_with_their_key_paths() {
        let text = format!(
            "{MINIMAL}    role: edge\n    allow: [\"10.1.2.3/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n    \
             max_connections: 5\nserver:\n  max_request_header_size: 16KiB\n  \
             request_header_timeout: 3s\n  keepalive_timeout: 0s\ninternal_domains: [\"*.corp\"]\n"
        );
        let config = parse(&text).unwrap();
        let listener = &config.listeners[0];
        assert_eq!(listener.role, ListenerRole::Edge);
        assert_eq!(listener.max_connections, Some(5));
        let allow = listener.allow.as_ref().unwrap();
        for inside in ["10.200.0.1", "192.0.2.7", "::ffff:10.0.0.9", "2001:db8::1"] {
            assert!(allow.contains(inside.parse().unwrap()), "{inside}");
        }
        assert!(!allow.contains("192.0.2.8".parse().unwrap()));
        assert_eq!(config.server.max_request_header_size, 16 * 1024);
        assert_eq!(config.server.keepalive_timeout, Duration::ZERO);
        assert!(config.internal_domains.covers("a.corp"));
        assert!(!config.internal_domains.covers("a.local"));

        for (yaml, key_path, problem) in [
            (
                "    allow: [\"10.0.0.0/33\"]\n",
                "listeners[0].allow[0]",
                "not an address",
            ),
            ("    allow: []\n", "listeners[0].allow", "nobody"),
            (
                "    trusted_proxies: [\"x\"]\n",
                "listeners[0].trusted_proxies[0]",
                "not an address",
            ),
            ("    role: public\n", "listeners[0].role", "unknown variant"),
            (
                "    max_connections: 0\n",
                "listeners[0].max_connections",
                "at least 1",
            ),
            (
                "server:\n  max_request_header_size: 100\n",
                "server.max_request_header_size",
                "outside",
            ),
            (
                "server:\n  max_request_header_size: 2MiB\n",
                "server.max_request_header_size",
                "outside",
            ),
            (
                "server:\n  request_header_timeout: 0s\n",
                "server.request_header_timeout",
                "longer than 0s",
            ),
            (
                "server:\n  max_connections: -3\n",
                "server.max_connections",
                "at least 1",
            ),
            (
                "internal_domains: [\"a.corp\", \"bad domain\"]\n",
                "internal_domains[1]",
                "contains",
            ),
            (
                "admin:\n  address: \"127.0.0.1:9900\"\n  allow: [\"::1/129\"]\n",
                "admin.allow[0]",
                "not an address",
            ),
            (
                "admin:\n  address: \"127.0.0.1:9900\"\n  token_file: /nonexistent/token\n",
                "admin.token_file",
                "cannot read",
            ),
        ] {
            let err = parse(&format!("{MINIMAL}{yaml}")).expect_err(yaml);
            assert_eq!(err.key_path, key_path, "{yaml}: {err}");
            assert!(err.message.contains(problem), "{yaml}: {err}");
        }
    }

    #[test]
    fn the_admin_token_is_read_next_to_the_config_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret-s3cret-s3cret\n").unwrap();
        let yaml = format!("{MINIMAL}admin:\n  address: \"127.0.0.1:9900\"\n  token_file: token\n");
        let config = Config::parse(&yaml, &dir.path().join("berth.yaml")).unwrap();
        let token = config.admin.unwrap().token.unwrap();
        assert!(token.matches(b"s3cret-s3cret-s3cret"));
        assert!(!token.matches(b"s3cret-s3cret-s3cres"));
        assert!(!token.matches(b"s3cret"));
        assert_eq!(format!("{token:?}"), "AdminToken(..)");
        std::fs::write(dir.path().join("token"), "short\n").unwrap();
        let err = Config::parse(&yaml, &dir.path().join("berth.yaml")).unwrap_err();
        assert!(err.message.contains("at least 16"), "{err}");
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

    mod properties {
        use proptest::prelude::*;
        use serde_yaml_ng::{Mapping, Value};

        use super::*;
        use crate::sources::file::FileServices;

        /// A valid file touching every section, which the property test then breaks in one
        /// place.
        const BASE: &str = r#"
listeners:
  - name: main
    address: "127.0.0.1:8080"
    role: edge
    allow: ["10.0.0.0/8"]
    trusted_proxies: ["192.0.2.1"]
admin:
  address: "127.0.0.1:9900"
server:
  max_request_header_size: 32KiB
internal_domains: ["*.local"]
defaults:
  visibility: public
services:
  - domains: [a.test]
    max_body_size: 1MiB
    backends:
      - address: "127.0.0.1:9000"
"#;

        /// Key paths of BASE, by segments (a number indexes a list).
        const KEYS: &[&[&str]] = &[
            &["listeners"],
            &["listeners", "0", "name"],
            &["listeners", "0", "address"],
            &["listeners", "0", "h2c"],
            &["listeners", "0", "role"],
            &["listeners", "0", "allow"],
            &["listeners", "0", "allow", "0"],
            &["listeners", "0", "trusted_proxies"],
            &["listeners", "0", "max_connections"],
            &["admin"],
            &["admin", "address"],
            &["admin", "allow"],
            &["admin", "metrics_detail"],
            &["server", "max_request_header_size"],
            &["server", "request_header_timeout"],
            &["server", "keepalive_timeout"],
            &["server", "max_connections"],
            &["server", "grace_period"],
            &["internal_domains"],
            &["internal_domains", "0"],
            &["defaults", "visibility"],
            &["defaults", "max_body_size"],
            &["defaults", "retry_on"],
            &["services", "0", "domains"],
            &["services", "0", "max_body_size"],
            &["services", "0", "visibility"],
            &["services", "0", "listeners"],
            &["services", "0", "backends", "0", "weight"],
        ];

        fn yaml_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                "\\PC{0,12}".prop_map(Value::String),
                prop::sample::select(vec![
                    "edge",
                    "internal",
                    "0",
                    "1",
                    "10.0.0.0/8",
                    "::1/128",
                    "10.0.0.0/33",
                    "x",
                    "*.local",
                    "a b",
                    "32KiB",
                    "2MiB",
                    "0s",
                    "10s",
                    "none",
                    "127.0.0.1:8080",
                    "main",
                    "",
                ])
                .prop_map(|s| Value::String(s.to_owned())),
                any::<i64>().prop_map(|n| Value::Number(n.into())),
                any::<bool>().prop_map(Value::Bool),
                Just(Value::Null),
            ];
            leaf.prop_recursive(2, 8, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
                    prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3).prop_map(|m| {
                        Value::Mapping(m.into_iter().map(|(k, v)| (Value::String(k), v)).collect())
                    }),
                ]
            })
        }

        /// Sets the value at `path` in `doc`, creating maps on the way.
        fn put(doc: &mut Value, path: &[&str], value: Value) {
            let Some((first, rest)) = path.split_first() else {
                *doc = value;
                return;
            };
            let child = match (first.parse::<usize>(), &mut *doc) {
                (Ok(i), Value::Sequence(items)) if i < items.len() => &mut items[i],
                _ => {
                    if !doc.is_mapping() {
                        *doc = Value::Mapping(Mapping::new());
                    }
                    let map = doc.as_mapping_mut().expect("a mapping");
                    map.entry(Value::String((*first).to_owned()))
                        .or_insert(Value::Null)
                }
            };
            put(child, rest, value);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Any text: an error or a config, never a panic.
            #[test]
            fn any_text_parses_without_panicking(text in "\\PC{0,200}") {
                let _ = Config::parse(&text, Path::new("any.yaml"));
            }

            /// A good file with one value replaced by anything: never a panic, and when it is
            /// refused, the problem's key path starts where the value was put (what
            /// `berth check` prints).
            #[test]
            fn one_bad_value_is_named_by_its_key_path(
                at in 0..KEYS.len(),
                value in yaml_value(),
            ) {
                let mut doc: Value = serde_yaml_ng::from_str(BASE).unwrap();
                put(&mut doc, KEYS[at], value);
                let text = serde_yaml_ng::to_string(&doc).unwrap();
                let file = Path::new("mutated.yaml");
                let outcome = Config::parse(&text, file)
                    .and_then(|config| FileServices::from_config(&config, file).map(|_| ()));
                if let Err(e) = outcome {
                    let top = KEYS[at][0];
                    prop_assert!(
                        e.key_path.starts_with(top)
                            || (top == "listeners" && e.key_path.starts_with("services"))
                            || (top == "admin" && e.key_path.starts_with("listeners")),
                        "{}: {e}", KEYS[at].join(".")
                    );
                }
            }
        }
    }
}
