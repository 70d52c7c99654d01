//! The declarative language every route source speaks.
//!
//! A source (the config file, Docker labels) produces a [`Snapshot`]: plain data with no Pingora
//! types in it, so sources stay pure and testable and the compiler in [`crate::router`] is the
//! only place that turns intent into live upstreams.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Where a service came from; the file wins when two sources claim one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    File,
    Docker,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Docker => "docker",
        }
    }
}

/// How a service spreads requests over its healthy backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Weighted round robin (Pingora's `Weighted<RoundRobin>`).
    #[default]
    RoundRobin,
    /// Weighted random (Pingora's `Weighted<Random>`).
    Random,
    /// Ketama consistent hashing on [`HashKey`]: a key keeps its backend while the set is stable.
    ConsistentHash,
}

impl Algorithm {
    pub const NAMES: &'static str = "round_robin, random, consistent_hash";

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "round_robin" => Some(Self::RoundRobin),
            "random" => Some(Self::Random),
            "consistent_hash" => Some(Self::ConsistentHash),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Random => "random",
            Self::ConsistentHash => "consistent_hash",
        }
    }
}

/// What `consistent_hash` hashes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HashKey {
    #[default]
    ClientIp,
    Path,
    /// A request header, by lowercase name.
    Header(String),
    /// A request cookie, by name.
    Cookie(String),
}

impl HashKey {
    /// Parses `client_ip`, `path`, `header:<name>` or `cookie:<name>`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            None if text == "client_ip" => Some(Self::ClientIp),
            None if text == "path" => Some(Self::Path),
            Some(("header", name)) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                Some(Self::Header(name.to_ascii_lowercase()))
            }
            Some(("cookie", name)) if is_cookie_name(name) => Some(Self::Cookie(name.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientIp => f.write_str("client_ip"),
            Self::Path => f.write_str("path"),
            Self::Header(name) => write!(f, "header:{name}"),
            Self::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

/// A cookie name is an RFC 6265 token: visible ASCII without separators.
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// The kind of active probe.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `GET path`; any 2xx or 3xx answer passes (HAProxy's `httpchk` rule).
    Http { path: String },
    /// A TCP connect passes.
    Tcp,
    /// No probe: backends are in rotation from the start.
    None,
}

/// Active health checking of every backend of one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub kind: ProbeKind,
    /// Probe this port instead of the routed one (acsrouting's `probe.url` may name another port).
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Time after a backend joins before its first probe.
    pub initial_delay: Duration,
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        Self {
            kind: ProbeKind::Http {
                path: "/health".into(),
            },
            port: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            healthy_threshold: 1,
            unhealthy_threshold: 2,
            initial_delay: Duration::ZERO,
        }
    }
}

/// Upstream connection behaviour of one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest wait for the next bytes of a response.
    pub read: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// Whether a backend may take new requests, apart from what its probes say.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Admission {
    #[default]
    Open,
    /// Leaving (a container got `stop`/`kill`): in-flight requests finish, new ones go elsewhere.
    Draining,
    /// Docker's own `HEALTHCHECK` reports this status (`starting` or `unhealthy`).
    DockerHealth(String),
}

/// Who a backend is, for operators: shown in `/api/routes` and `berth_server_info`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct BackendIdentity {
    pub container_id: Option<String>,
    pub container_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    pub weight: u16,
    pub identity: BackendIdentity,
    pub admission: Admission,
}

impl BackendSpec {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            weight: 1,
            identity: BackendIdentity::default(),
            admission: Admission::Open,
        }
    }
}

/// How a service balances, pins, probes and retries: everything `defaults:` can set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub algorithm: Algorithm,
    pub hash_key: HashKey,
    /// Name of the sticky-session cookie; `None` disables stickiness.
    pub sticky_cookie: Option<String>,
    pub health_check: HealthCheckSpec,
    /// Further backends tried after a failure before the client sees 502.
    pub retries: u32,
    pub timeouts: Timeouts,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::default(),
            hash_key: HashKey::default(),
            sticky_cookie: None,
            health_check: HealthCheckSpec::default(),
            retries: 2,
            timeouts: Timeouts::default(),
        }
    }
}

/// One upstream group and the routes that reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Unique across the snapshot; the `service` label of every metric.
    pub name: String,
    /// Lowercase; `*.suffix` for wildcards, `*` for the catch-all.
    pub domains: Vec<String>,
    pub path_prefix: String,
    /// Names of the listeners that serve this service; `None` means all of them.
    pub listeners: Option<Vec<String>>,
    pub policy: Policy,
    pub backends: Vec<BackendSpec>,
    pub source: Source,
}

/// Everything one source (or the merge of all sources) says should be routed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub services: Vec<ServiceSpec>,
}
