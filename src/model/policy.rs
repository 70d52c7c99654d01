//! Service policy: how a service balances, pins, probes, retries and times out.
//!
//! This is the one definition of every policy rule that more than one source expresses. The
//! config file and container labels write the same knob in different syntax (`weight: 3`,
//! `berth.lb.weight=3`), but both hand the text to the same `parse_*` function here, so the same
//! value gets the same verdict and the same message wherever it was written. A source only says
//! what it sets ([`PolicyLayer`]); the control plane lays it over the file's `defaults:` and the
//! built-in values ([`PolicyLayer::resolve`]) each time it compiles, so a reload of the defaults
//! reaches every source's services without any source knowing about it.

use std::fmt;
use std::time::Duration;

use http::HeaderValue;
use serde::Deserialize;

/// The largest backend weight (HAProxy's limit too); keeps weighted tables small.
pub const MAX_WEIGHT: u16 = 256;

/// Upper bound of `retries`; Pingora's own retry loop is sized from it.
pub const MAX_RETRIES: u32 = 10;

/// How a service spreads requests over its routable backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Weighted round robin (Pingora's `Weighted<RoundRobin>`).
    #[default]
    RoundRobin,
    /// Weighted random (Pingora's `Weighted<Random>`).
    Random,
    /// Ketama consistent hashing on [`HashKey`]: a key keeps its backend while the set is stable.
    ConsistentHash,
    /// Fewest requests in flight per unit of weight (HAProxy's `leastconn`).
    LeastConn,
    /// The less loaded (in flight per weight) of two random backends (Envoy's
    /// `least_request`): O(1) per pick, and no herd on the one idle backend.
    P2c,
    /// Of two random backends, the lower peak-EWMA latency times load (linkerd, Finagle): a
    /// backend that turns slow loses traffic within a second and wins it back when it recovers.
    Ewma,
}

impl Algorithm {
    const ALL: [Algorithm; 6] = [
        Self::RoundRobin,
        Self::Random,
        Self::ConsistentHash,
        Self::LeastConn,
        Self::P2c,
        Self::Ewma,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Random => "random",
            Self::ConsistentHash => "consistent_hash",
            Self::LeastConn => "least_conn",
            Self::P2c => "p2c",
            Self::Ewma => "ewma",
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

/// The kind of active probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `GET path`; any 2xx or 3xx answer passes (HAProxy's `httpchk` rule).
    Http,
    /// A TCP connect passes.
    Tcp,
    /// No probe: backends are in rotation from the start.
    None,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
            Self::None => "none",
        }
    }
}

/// Active health checking of every backend of one service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthCheckSpec {
    pub kind: ProbeKind,
    /// The request path of HTTP probes.
    pub path: String,
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
            kind: ProbeKind::Http,
            path: "/health".into(),
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

/// Passive health (outlier ejection): real requests that fail take a backend out of rotation
/// before a probe would notice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PassiveHealthSpec {
    /// Failures in a row (connect errors, timeouts, `failure_statuses`) that eject a backend.
    pub consecutive_failures: u32,
    pub failure_statuses: Vec<u16>,
    /// The first ejection's length; each further one doubles it, up to `max_ejection`.
    pub ejection: Duration,
    pub max_ejection: Duration,
    /// Never eject more than this share of a service's backends (nor its last routable one).
    pub max_ejected_percent: u8,
}

impl Default for PassiveHealthSpec {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_statuses: vec![502, 503, 504],
            ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// When a failed attempt goes to another backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetryOn {
    /// The backend refused or did not accept the connection: the request never reached it,
    /// so any method is retried.
    pub connect_failure: bool,
    /// The connection was reset before any response byte: retried for idempotent methods, and
    /// for any method on a reused keep-alive connection (the backend closed it while idle,
    /// before reading the request).
    pub reset_before_response: bool,
    /// No response within `read_timeout` (idempotent methods only).
    pub timeout: bool,
    /// These statuses from the backend (idempotent methods only); the client sees the last
    /// backend's answer when no retry is left.
    pub statuses: Vec<u16>,
}

impl Default for RetryOn {
    fn default() -> Self {
        Self {
            connect_failure: true,
            reset_before_response: true,
            timeout: false,
            statuses: Vec::new(),
        }
    }
}

/// The share of a service's requests that may be retries, over [`RETRY_BUDGET_WINDOW`], with
/// at least [`RETRY_BUDGET_MIN_PER_SECOND`] a second: when it is spent a failure is answered at
/// once instead of multiplying the load on a struggling service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RetryBudget {
    pub percent: u16,
}

pub const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);
pub const RETRY_BUDGET_MIN_PER_SECOND: u32 = 3;

/// How many requests may wait for a backend with free capacity, and for how long.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueSpec {
    pub timeout: Duration,
    pub max_waiting: u32,
}

/// How berth speaks to a service's backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BackendProtocol {
    /// HTTP/1.1 over kept-alive, pooled connections.
    #[default]
    H1,
    /// HTTP/2 without TLS, by prior knowledge (gRPC servers speak it): streams multiplexed
    /// over few connections, trailers passed through.
    H2c,
}

impl BackendProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H2c => "h2c",
        }
    }
}

/// Which listeners may serve a service: an `edge` listener (the one facing the Internet) serves
/// only public services; an `internal` listener serves every service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Visibility {
    /// Served on every listener, unless its domain is one of `internal_domains`.
    #[default]
    Public,
    /// Never served on an edge listener, whatever its domain: there it answers as an unknown
    /// host does, so its existence does not leak.
    Internal,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
        }
    }
}

/// How a service meets TLS listeners.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TlsPolicy {
    /// TLS listeners serve the service (plain listeners always do).
    pub serve: bool,
    /// berth obtains and renews certificates for its domains over ACME.
    pub acme: bool,
    /// `Strict-Transport-Security` sent with its responses on TLS listeners.
    pub hsts: Option<HeaderValue>,
}

/// A service's policy with every knob decided: what the data path and the probes run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub algorithm: Algorithm,
    pub hash_key: HashKey,
    /// Name of the sticky-session cookie; `None` disables stickiness.
    pub sticky_cookie: Option<String>,
    pub health_check: HealthCheckSpec,
    /// Further backends tried after a failure before the client sees 502.
    pub retries: u32,
    pub retry_on: RetryOn,
    /// `None`: retries are limited by `retries` alone.
    pub retry_budget: Option<RetryBudget>,
    pub timeouts: Timeouts,
    /// `None`: failing requests do not eject backends (active probes still do).
    pub passive_health: Option<PassiveHealthSpec>,
    /// A backend that just became routable ramps from 10% of its weight to all of it over
    /// this long; zero turns it off.
    pub slow_start: Duration,
    /// Requests in flight per backend; `None` is unlimited. Beyond it requests wait in the
    /// service's queue.
    pub max_connections: Option<u32>,
    pub queue: QueueSpec,
    pub tls: TlsPolicy,
    pub backend_protocol: BackendProtocol,
    pub visibility: Visibility,
    /// Largest request body in bytes; larger ones are answered 413 and never reach a backend
    /// whole. `None` is unlimited (berth streams bodies, it does not buffer them).
    pub max_body_size: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        PolicyLayer::default().resolve()
    }
}

/// Declares a struct holding every service policy knob (plus the fields given), each optional,
/// with one serde schema: `defaults:` and every service of the file take exactly these keys,
/// so a new knob is added here once. Also generates `policy()`, the knobs as a [`PolicyLayer`].
macro_rules! with_policy_knobs {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $ty,)*
            #[serde(default, deserialize_with = "crate::model::policy::de::algorithm")]
            pub algorithm: Option<$crate::model::policy::Algorithm>,
            #[serde(default, deserialize_with = "crate::model::policy::de::hash_key")]
            pub hash_key: Option<$crate::model::policy::HashKey>,
            /// Cookie name; the empty string turns stickiness off.
            #[serde(default, deserialize_with = "crate::model::policy::de::sticky_cookie")]
            pub sticky_cookie: Option<String>,
            #[serde(default)]
            pub health_check: $crate::model::policy::HealthCheckLayer,
            #[serde(default, deserialize_with = "crate::model::policy::de::retries")]
            pub retries: Option<u32>,
            #[serde(default, deserialize_with = "crate::model::policy::de::retry_on")]
            pub retry_on: Option<$crate::model::policy::RetryOn>,
            /// `20%`; `none` removes the budget.
            #[serde(default, deserialize_with = "crate::model::policy::de::retry_budget")]
            pub retry_budget: Option<Option<$crate::model::policy::RetryBudget>>,
            #[serde(default)]
            pub passive_health: $crate::model::policy::PassiveHealthLayer,
            #[serde(default, deserialize_with = "crate::model::policy::de::duration")]
            pub slow_start: Option<std::time::Duration>,
            /// Zero is unlimited.
            #[serde(default, deserialize_with = "crate::model::policy::de::max_connections")]
            pub max_connections: Option<u32>,
            #[serde(default, deserialize_with = "crate::model::policy::de::duration")]
            pub queue_timeout: Option<std::time::Duration>,
            #[serde(default, deserialize_with = "crate::model::policy::de::max_queue")]
            pub max_queue: Option<u32>,
            #[serde(default, deserialize_with = "crate::model::policy::de::duration")]
            pub connect_timeout: Option<std::time::Duration>,
            #[serde(default, deserialize_with = "crate::model::policy::de::duration")]
            pub read_timeout: Option<std::time::Duration>,
            #[serde(default, deserialize_with = "crate::model::policy::de::duration")]
            pub idle_timeout: Option<std::time::Duration>,
            /// `true`, `false`, or `{enabled, acme, hsts}`.
            #[serde(default, deserialize_with = "crate::model::policy::de::tls")]
            pub tls: $crate::model::policy::TlsLayer,
            #[serde(default, deserialize_with = "crate::model::policy::de::backend_protocol")]
            pub backend_protocol: Option<$crate::model::policy::BackendProtocol>,
            #[serde(default, deserialize_with = "crate::model::policy::de::visibility")]
            pub visibility: Option<$crate::model::policy::Visibility>,
            /// A size (`1048576`, `10MiB`); `none` lifts a limit set below.
            #[serde(default, deserialize_with = "crate::model::policy::de::max_body_size")]
            pub max_body_size: Option<Option<u64>>,
        }

        impl $name {
            /// The policy knobs this entry sets.
            pub fn policy(&self) -> $crate::model::policy::PolicyLayer {
                $crate::model::policy::PolicyLayer {
                    algorithm: self.algorithm,
                    hash_key: self.hash_key.clone(),
                    sticky_cookie: self.sticky_cookie.clone(),
                    health_check: self.health_check.clone(),
                    retries: self.retries,
                    retry_on: self.retry_on.clone(),
                    retry_budget: self.retry_budget,
                    passive_health: self.passive_health.clone(),
                    slow_start: self.slow_start,
                    max_connections: self.max_connections,
                    queue_timeout: self.queue_timeout,
                    max_queue: self.max_queue,
                    connect_timeout: self.connect_timeout,
                    read_timeout: self.read_timeout,
                    idle_timeout: self.idle_timeout,
                    tls: self.tls.clone(),
                    backend_protocol: self.backend_protocol,
                    visibility: self.visibility,
                    max_body_size: self.max_body_size,
                }
            }
        }
    };
}
pub(crate) use with_policy_knobs;

with_policy_knobs! {
    /// Service policy with every knob optional, so each layer (service, `defaults:`, built-in)
    /// only says what it changes.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PolicyLayer {}
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
            retry_on: self.retry_on.clone().or_else(|| below.retry_on.clone()),
            retry_budget: self.retry_budget.or(below.retry_budget),
            passive_health: self.passive_health.over(&below.passive_health),
            slow_start: self.slow_start.or(below.slow_start),
            max_connections: self.max_connections.or(below.max_connections),
            queue_timeout: self.queue_timeout.or(below.queue_timeout),
            max_queue: self.max_queue.or(below.max_queue),
            connect_timeout: self.connect_timeout.or(below.connect_timeout),
            read_timeout: self.read_timeout.or(below.read_timeout),
            idle_timeout: self.idle_timeout.or(below.idle_timeout),
            tls: self.tls.over(&below.tls),
            backend_protocol: self.backend_protocol.or(below.backend_protocol),
            visibility: self.visibility.or(below.visibility),
            max_body_size: self.max_body_size.or(below.max_body_size),
        }
    }

    /// Fills what is still unset with the built-in defaults.
    pub fn resolve(&self) -> Policy {
        let timeouts = Timeouts::default();
        Policy {
            algorithm: self.algorithm.unwrap_or_default(),
            hash_key: self.hash_key.clone().unwrap_or_default(),
            sticky_cookie: self.sticky_cookie.clone().filter(|name| !name.is_empty()),
            health_check: self.health_check.resolve(),
            retries: self.retries.unwrap_or(2),
            retry_on: self.retry_on.clone().unwrap_or_default(),
            retry_budget: self
                .retry_budget
                .unwrap_or(Some(RetryBudget { percent: 20 })),
            timeouts: Timeouts {
                connect: self.connect_timeout.unwrap_or(timeouts.connect),
                read: self.read_timeout.unwrap_or(timeouts.read),
                idle: self.idle_timeout.unwrap_or(timeouts.idle),
            },
            passive_health: self.passive_health.resolve(),
            slow_start: self.slow_start.unwrap_or(Duration::ZERO),
            max_connections: self.max_connections.filter(|&n| n > 0),
            queue: QueueSpec {
                timeout: self.queue_timeout.unwrap_or(Duration::from_secs(1)),
                max_waiting: self.max_queue.unwrap_or(1024),
            },
            tls: self.tls.resolve(),
            backend_protocol: self.backend_protocol.unwrap_or_default(),
            visibility: self.visibility.unwrap_or_default(),
            max_body_size: self.max_body_size.flatten(),
        }
    }

    /// Checks the rules that span knobs (one knob's own rules are in its `parse_*`).
    /// `Err((key, problem))` names the key as the config file spells it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.health_check.validate()?;
        self.passive_health.validate()?;
        self.tls.validate()
    }
}

/// TLS as a layer. `acme: true` implies `enabled` unless the layer turns TLS off.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsLayer {
    #[serde(default, deserialize_with = "de::boolean")]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "de::boolean")]
    pub acme: Option<bool>,
    /// The empty string sends no header.
    #[serde(default, deserialize_with = "de::hsts")]
    pub hsts: Option<String>,
}

impl TlsLayer {
    fn over(&self, below: &TlsLayer) -> TlsLayer {
        TlsLayer {
            enabled: self.enabled.or(below.enabled),
            acme: self.acme.or(below.acme),
            hsts: self.hsts.clone().or_else(|| below.hsts.clone()),
        }
    }

    fn resolve(&self) -> TlsPolicy {
        let acme = self.acme.unwrap_or(false);
        let serve = self.enabled.unwrap_or(acme);
        TlsPolicy {
            serve,
            acme: serve && acme,
            hsts: self
                .hsts
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(|h| HeaderValue::from_str(h).expect("parse_hsts keeps header-safe text")),
        }
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.enabled == Some(false) && self.acme == Some(true) {
            return Err((
                "tls.acme",
                "ACME certificates are for services served over TLS, and `tls` is off".into(),
            ));
        }
        Ok(())
    }
}

/// Passive health as a layer: any key set (or `enabled: true`) turns it on with the
/// defaults of [`PassiveHealthSpec`] for the rest; `enabled: false` turns it off.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthLayer {
    #[serde(default, deserialize_with = "de::boolean")]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "de::threshold")]
    pub consecutive_failures: Option<u32>,
    #[serde(default, deserialize_with = "de::statuses")]
    pub failure_statuses: Option<Vec<u16>>,
    #[serde(default, deserialize_with = "de::duration")]
    pub ejection: Option<Duration>,
    #[serde(default, deserialize_with = "de::duration")]
    pub max_ejection: Option<Duration>,
    #[serde(default, deserialize_with = "de::percent")]
    pub max_ejected_percent: Option<u8>,
}

impl PassiveHealthLayer {
    fn is_empty(&self) -> bool {
        *self == PassiveHealthLayer::default()
    }

    fn over(&self, below: &PassiveHealthLayer) -> PassiveHealthLayer {
        PassiveHealthLayer {
            enabled: self.enabled.or(below.enabled),
            consecutive_failures: self.consecutive_failures.or(below.consecutive_failures),
            failure_statuses: self
                .failure_statuses
                .clone()
                .or_else(|| below.failure_statuses.clone()),
            ejection: self.ejection.or(below.ejection),
            max_ejection: self.max_ejection.or(below.max_ejection),
            max_ejected_percent: self.max_ejected_percent.or(below.max_ejected_percent),
        }
    }

    fn resolve(&self) -> Option<PassiveHealthSpec> {
        if self.enabled == Some(false) || self.is_empty() {
            return None;
        }
        let builtin = PassiveHealthSpec::default();
        Some(PassiveHealthSpec {
            consecutive_failures: self
                .consecutive_failures
                .unwrap_or(builtin.consecutive_failures),
            failure_statuses: self
                .failure_statuses
                .clone()
                .unwrap_or(builtin.failure_statuses),
            ejection: self.ejection.unwrap_or(builtin.ejection),
            max_ejection: self.max_ejection.unwrap_or(builtin.max_ejection),
            max_ejected_percent: self
                .max_ejected_percent
                .unwrap_or(builtin.max_ejected_percent),
        })
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.ejection == Some(Duration::ZERO) {
            return Err(("passive_health.ejection", "must be longer than 0s".into()));
        }
        if let (Some(ejection), Some(max)) = (self.ejection, self.max_ejection) {
            if max < ejection {
                return Err((
                    "passive_health.max_ejection",
                    "must not be shorter than ejection".into(),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckLayer {
    #[serde(default, rename = "type", deserialize_with = "de::probe_kind")]
    pub kind: Option<ProbeKind>,
    #[serde(default, deserialize_with = "de::probe_path")]
    pub path: Option<String>,
    #[serde(default, deserialize_with = "de::port")]
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "de::duration")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "de::duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de::threshold")]
    pub healthy_threshold: Option<u32>,
    #[serde(default, deserialize_with = "de::threshold")]
    pub unhealthy_threshold: Option<u32>,
    #[serde(default, deserialize_with = "de::duration")]
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
        HealthCheckSpec {
            kind: self.kind.unwrap_or(builtin.kind),
            path: self.path.clone().unwrap_or(builtin.path),
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

    fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, value) in [
            ("health_check.interval", self.interval),
            ("health_check.timeout", self.timeout),
        ] {
            if value == Some(Duration::ZERO) {
                return Err((key, "must be longer than 0s".into()));
            }
        }
        Ok(())
    }
}

// One parser per knob. Each takes the text as written (a YAML scalar or a label value) and
// returns the value or a problem phrased for either place.

pub fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    let text = text.trim();
    Algorithm::ALL
        .into_iter()
        .find(|a| a.as_str() == text)
        .ok_or_else(|| {
            let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
            format!(
                "unknown algorithm {text:?}, expected one of {}",
                names.join(", ")
            )
        })
}

/// `client_ip`, `path`, `header:<name>` or `cookie:<name>`.
pub fn parse_hash_key(text: &str) -> Result<HashKey, String> {
    let text = text.trim();
    match text.split_once(':') {
        None if text == "client_ip" => Ok(HashKey::ClientIp),
        None if text == "path" => Ok(HashKey::Path),
        Some(("header", name)) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
            Ok(HashKey::Header(name.to_ascii_lowercase()))
        }
        Some(("cookie", name)) if is_cookie_name(name) => Ok(HashKey::Cookie(name.to_owned())),
        _ => Err(format!(
            "invalid hash key {text:?}, expected client_ip, path, header:<name> or cookie:<name>"
        )),
    }
}

/// A cookie name is an RFC 6265 token: visible ASCII without separators.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// A sticky-cookie name; the empty string turns stickiness off.
pub fn parse_sticky_cookie(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() || is_cookie_name(name) {
        Ok(name.to_owned())
    } else {
        Err(format!("{name:?} is not a valid cookie name"))
    }
}

pub fn parse_weight(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u64>() {
        Ok(w) if (1..=u64::from(MAX_WEIGHT)).contains(&w) => Ok(w as u16),
        Ok(w) => Err(format!(
            "weight {w} is out of range 1..={MAX_WEIGHT} (remove a backend to take it out)"
        )),
        Err(_) => Err(format!(
            "weight {:?} is not a whole number from 1 to {MAX_WEIGHT}",
            text.trim()
        )),
    }
}

pub fn parse_retries(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if n <= MAX_RETRIES => Ok(n),
        Ok(n) => Err(format!("{n} is more than the maximum of {MAX_RETRIES}")),
        Err(_) => Err(format!(
            "retries {:?} is not a whole number from 0 to {MAX_RETRIES}",
            text.trim()
        )),
    }
}

/// A count of consecutive probe results.
pub fn parse_threshold(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{:?} is not a whole number of at least 1",
            text.trim()
        )),
    }
}

pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!(
            "port {:?} is not a number from 1 to 65535",
            text.trim()
        )),
    }
}

/// `500ms`, `2s`, `1m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); write e.g. 500ms, 2s, 1m"))
}

/// A whole number of seconds (the label grammar's `*_seconds` keys).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{:?} is not a whole number of seconds", text.trim()))
}

pub fn parse_probe_kind(text: &str) -> Result<ProbeKind, String> {
    match text.trim() {
        "http" => Ok(ProbeKind::Http),
        "tcp" => Ok(ProbeKind::Tcp),
        "none" => Ok(ProbeKind::None),
        other => Err(format!(
            "unknown probe type {other:?}, expected http, tcp or none"
        )),
    }
}

/// The path an HTTP probe requests: it goes into a request line as it is.
pub fn parse_probe_path(text: &str) -> Result<String, String> {
    let path = text.trim();
    if !path.starts_with('/') {
        return Err(format!("probe path {path:?} must start with '/'"));
    }
    if path.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "probe path {path:?} must be visible ASCII without spaces"
        ));
    }
    // The probe's request line is built from it: what the URI grammar refuses (`<`, `"`, ...)
    // must be refused here, where it costs one container or one reload, not later.
    if http::uri::PathAndQuery::try_from(path).is_err() {
        return Err(format!(
            "probe path {path:?} is not a valid URL path (percent-encode other characters)"
        ));
    }
    Ok(path.to_owned())
}

/// A route's path prefix: a plain path, matched on whole segments.
pub fn parse_path_prefix(text: &str) -> Result<String, String> {
    let path = text.trim();
    if !path.starts_with('/') {
        return Err(format!("path prefix {path:?} must start with '/'"));
    }
    if path
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#')
    {
        return Err(format!(
            "path prefix {path:?} must be a plain path (visible ASCII, no spaces, '?' or '#')"
        ));
    }
    Ok(path.to_owned())
}

/// `true`/`false` (and `yes`/`no`, `on`/`off`, `1`/`0`).
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

/// An HTTP status code a backend can answer with.
pub fn parse_status(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err(format!(
            "{:?} is not an HTTP status code (100..599)",
            text.trim()
        )),
    }
}

/// Comma-separated items (a label value, or a YAML list joined by the file's reader).
fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|i| !i.is_empty())
}

/// `502, 503, 504`.
pub fn parse_statuses(text: &str) -> Result<Vec<u16>, String> {
    items(text).map(parse_status).collect()
}

/// `connect_failure, reset_before_response, timeout, 502, ...`: exactly the conditions listed.
pub fn parse_retry_on(text: &str) -> Result<RetryOn, String> {
    let mut on = RetryOn {
        connect_failure: false,
        reset_before_response: false,
        timeout: false,
        statuses: Vec::new(),
    };
    for item in items(text) {
        match item {
            "connect_failure" => on.connect_failure = true,
            "reset_before_response" => on.reset_before_response = true,
            "timeout" => on.timeout = true,
            status => match parse_status(status) {
                Ok(code) => on.statuses.push(code),
                Err(_) => {
                    return Err(format!(
                        "unknown retry condition {status:?}, expected connect_failure, \
                         reset_before_response, timeout or a status code"
                    ))
                }
            },
        }
    }
    Ok(on)
}

/// A whole percentage, `50%` or `50`, from 0 to 100.
pub fn parse_percent(text: &str) -> Result<u8, String> {
    let number = text.trim().trim_end_matches('%').trim();
    match number.parse::<u8>() {
        Ok(p) if p <= 100 => Ok(p),
        _ => Err(format!(
            "{:?} is not a percentage from 0% to 100%",
            text.trim()
        )),
    }
}

/// `20%` of a service's requests may be retries; `none` lifts the budget.
pub fn parse_retry_budget(text: &str) -> Result<Option<RetryBudget>, String> {
    if text.trim() == "none" {
        return Ok(None);
    }
    let number = text.trim().trim_end_matches('%').trim();
    match number.parse::<u16>() {
        Ok(percent) if percent <= 1000 => Ok(Some(RetryBudget { percent })),
        _ => Err(format!(
            "retry budget {:?} is not a percentage (e.g. 20%) or none",
            text.trim()
        )),
    }
}

/// Requests in flight per backend; 0 is unlimited.
pub fn parse_max_connections(text: &str) -> Result<u32, String> {
    text.trim().parse::<u32>().map_err(|_| {
        format!(
            "max_connections {:?} is not a whole number (0 for unlimited)",
            text.trim()
        )
    })
}

/// Requests that may wait for a backend at once.
pub fn parse_max_queue(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "max_queue {:?} is not a whole number of at least 1",
            text.trim()
        )),
    }
}

/// `h1` or `h2c`.
pub fn parse_backend_protocol(text: &str) -> Result<BackendProtocol, String> {
    match text.trim() {
        "h1" => Ok(BackendProtocol::H1),
        "h2c" => Ok(BackendProtocol::H2c),
        other => Err(format!(
            "unknown backend protocol {other:?}, expected h1 or h2c"
        )),
    }
}

/// `public` or `internal`.
pub fn parse_visibility(text: &str) -> Result<Visibility, String> {
    match text.trim() {
        "public" => Ok(Visibility::Public),
        "internal" => Ok(Visibility::Internal),
        other => Err(format!(
            "unknown visibility {other:?}, expected public or internal"
        )),
    }
}

/// A `Strict-Transport-Security` value: `max-age=<seconds>`, optionally with
/// `includeSubDomains` and `preload`, separated by `;` (RFC 6797). Returned in canonical
/// form; the empty string (no header) is accepted.
pub fn parse_hsts(text: &str) -> Result<String, String> {
    let mut max_age = None;
    let mut directives = Vec::new();
    for directive in text.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let lower = directive.to_ascii_lowercase();
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            match seconds.trim_matches('"').parse::<u64>() {
                Ok(seconds) if max_age.is_none() => max_age = Some(seconds),
                _ => {
                    return Err(format!(
                        "HSTS {text:?}: max-age must be given once, as whole seconds"
                    ))
                }
            }
        } else if lower == "includesubdomains" {
            directives.push("includeSubDomains");
        } else if lower == "preload" {
            directives.push("preload");
        } else {
            return Err(format!(
                "HSTS {text:?}: unknown directive {directive:?}, expected max-age=<seconds>, \
                 includeSubDomains or preload"
            ));
        }
    }
    match max_age {
        None if directives.is_empty() => Ok(String::new()),
        None => Err(format!("HSTS {text:?} needs max-age=<seconds>")),
        Some(seconds) => {
            let mut value = format!("max-age={seconds}");
            for directive in directives {
                value.push_str("; ");
                value.push_str(directive);
            }
            Ok(value)
        }
    }
}

/// A size in bytes: a whole number of bytes, or one with a binary unit, `32KiB` (also `32k`),
/// `10MiB` (`10m`), `1GiB` (`1g`), as nginx reads `k` and `m`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let scale: u64 = match unit.trim() {
        "" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "m" | "M" | "MiB" => 1 << 20,
        "g" | "G" | "GiB" => 1 << 30,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| scale > 0)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| {
            format!("{text:?} is not a size; write bytes (e.g. 1048576) or 32KiB, 10MiB, 1GiB")
        })
}

/// The largest request body a service accepts: a size of at least one byte, or `none`.
pub fn parse_max_body_size(text: &str) -> Result<Option<u64>, String> {
    if text.trim() == "none" {
        return Ok(None);
    }
    match parse_size(text)? {
        0 => Err("max_body_size must be at least 1 byte (none lifts the limit)".into()),
        n => Ok(Some(n)),
    }
}

/// The name a service gets when its source does not name it: its domain, plus the path
/// prefix when that is not `/`. It is the `service` label of every metric.
pub fn default_service_name(domain: &str, path_prefix: &str) -> String {
    if path_prefix == "/" {
        domain.to_owned()
    } else {
        format!("{domain}{path_prefix}")
    }
}

/// serde glue for the config file: each knob is read as the text of a YAML scalar (so `3` and
/// `"3"` are the same) and handed to its `parse_*` function.
pub mod de {
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};

    use super::*;

    /// The text of a YAML scalar, or of a list of scalars joined by commas (the label form).
    fn list<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            Many(Vec<serde_yaml_ng::Value>),
            One(serde_yaml_ng::Value),
        }
        let text = |value: serde_yaml_ng::Value| -> Result<String, D::Error> {
            match value {
                serde_yaml_ng::Value::String(s) => Ok(s),
                serde_yaml_ng::Value::Number(n) => Ok(n.to_string()),
                serde_yaml_ng::Value::Bool(b) => Ok(b.to_string()),
                _ => Err(de::Error::custom("expected a value or a list of values")),
            }
        };
        match OneOrMany::deserialize(d)? {
            OneOrMany::Many(values) => Ok(values
                .into_iter()
                .map(text)
                .collect::<Result<Vec<_>, _>>()?
                .join(",")),
            OneOrMany::One(value) => text(value),
        }
    }

    /// The text of a YAML scalar (string, number or boolean).
    pub fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a single value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        d.deserialize_any(Text)
    }

    fn with<'de, D: Deserializer<'de>, T>(
        d: D,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, D::Error> {
        parse(&scalar(d)?).map(Some).map_err(de::Error::custom)
    }

    pub fn algorithm<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Algorithm>, D::Error> {
        with(d, parse_algorithm)
    }

    pub fn hash_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HashKey>, D::Error> {
        with(d, parse_hash_key)
    }

    pub fn sticky_cookie<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        with(d, parse_sticky_cookie)
    }

    pub fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        with(d, parse_weight)
    }

    pub fn retries<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        with(d, parse_retries)
    }

    pub fn threshold<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        with(d, parse_threshold)
    }

    pub fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        with(d, parse_port)
    }

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        with(d, parse_duration)
    }

    pub fn probe_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ProbeKind>, D::Error> {
        with(d, parse_probe_kind)
    }

    pub fn probe_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        with(d, parse_probe_path)
    }

    pub fn path_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        with(d, parse_path_prefix)
    }

    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        with(d, parse_bool)
    }

    pub fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
        with(d, parse_percent)
    }

    pub fn retry_budget<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<RetryBudget>>, D::Error> {
        with(d, parse_retry_budget)
    }

    pub fn max_connections<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        with(d, parse_max_connections)
    }

    pub fn max_queue<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        with(d, parse_max_queue)
    }

    pub fn visibility<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Visibility>, D::Error> {
        with(d, parse_visibility)
    }

    pub fn max_body_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
        with(d, parse_max_body_size)
    }

    pub fn statuses<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u16>>, D::Error> {
        parse_statuses(&list(d)?)
            .map(Some)
            .map_err(de::Error::custom)
    }

    pub fn retry_on<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RetryOn>, D::Error> {
        parse_retry_on(&list(d)?)
            .map(Some)
            .map_err(de::Error::custom)
    }

    pub fn hsts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        with(d, parse_hsts)
    }

    pub fn backend_protocol<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BackendProtocol>, D::Error> {
        with(d, parse_backend_protocol)
    }

    /// `tls: true` (or `false`) is short for `tls: {enabled: true}`.
    pub fn tls<'de, D: Deserializer<'de>>(d: D) -> Result<TlsLayer, D::Error> {
        struct Tls;
        impl<'de> Visitor<'de> for Tls {
            type Value = TlsLayer;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or a map of enabled, acme and hsts")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TlsLayer, E> {
                Ok(TlsLayer {
                    enabled: Some(v),
                    ..TlsLayer::default()
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TlsLayer, E> {
                self.visit_bool(parse_bool(v).map_err(E::custom)?)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<TlsLayer, A::Error> {
                TlsLayer::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(Tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_resolve_top_down_then_builtin() {
        let service = PolicyLayer {
            retries: Some(5),
            ..PolicyLayer::default()
        };
        let defaults = PolicyLayer {
            retries: Some(1),
            algorithm: Some(Algorithm::Random),
            sticky_cookie: Some("SRV".into()),
            ..PolicyLayer::default()
        };
        let policy = service.over(&defaults).resolve();
        assert_eq!(policy.retries, 5);
        assert_eq!(policy.algorithm, Algorithm::Random);
        assert_eq!(policy.sticky_cookie.as_deref(), Some("SRV"));
        assert_eq!(policy.health_check, HealthCheckSpec::default());
        let off = PolicyLayer {
            sticky_cookie: Some(String::new()),
            ..PolicyLayer::default()
        };
        assert_eq!(off.over(&defaults).resolve().sticky_cookie, None);
    }

    #[test]
    fn acme_implies_tls_unless_tls_is_off() {
        let layer = |enabled, acme| TlsLayer {
            enabled,
            acme,
            hsts: None,
        };
        let resolved = |l: TlsLayer| {
            let tls = l.resolve();
            (tls.serve, tls.acme)
        };
        assert_eq!(resolved(layer(None, None)), (false, false));
        assert_eq!(resolved(layer(None, Some(true))), (true, true));
        assert_eq!(resolved(layer(Some(true), None)), (true, false));
        let off_over_acme = layer(Some(false), None).over(&layer(None, Some(true)));
        assert_eq!(resolved(off_over_acme), (false, false));
        assert!(layer(Some(false), Some(true)).validate().is_err());
    }

    #[test]
    fn knob_parsers_accept_and_refuse() {
        assert_eq!(parse_weight(" 256 "), Ok(256));
        assert!(parse_weight("0").unwrap_err().contains("out of range"));
        assert!(parse_weight("x").unwrap_err().contains("whole number"));
        assert_eq!(parse_retries("10"), Ok(10));
        assert!(parse_retries("11").is_err());
        assert_eq!(parse_algorithm("random"), Ok(Algorithm::Random));
        assert!(parse_algorithm("fastest")
            .unwrap_err()
            .contains("round_robin, random, consistent_hash"));
        assert_eq!(
            parse_hash_key("header:X-User"),
            Ok(HashKey::Header("x-user".into()))
        );
        assert!(parse_hash_key("header:a b").is_err());
        assert_eq!(parse_sticky_cookie(""), Ok(String::new()));
        assert!(parse_sticky_cookie("a b").is_err());
        assert!(parse_path_prefix("/api?x").is_err());
        assert!(parse_path_prefix("api").is_err());
        assert!(parse_probe_path("/h ealth").is_err());
        assert!(parse_probe_path("/<b>")
            .unwrap_err()
            .contains("not a valid URL path"));
        assert_eq!(
            parse_probe_path("/health?full=1"),
            Ok("/health?full=1".into())
        );
        assert_eq!(parse_seconds("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_port("0").is_err());
        assert_eq!(
            parse_hsts("Max-Age=600 ;preload; includesubdomains"),
            Ok("max-age=600; preload; includeSubDomains".into())
        );
        assert_eq!(parse_hsts(""), Ok(String::new()));
        assert!(parse_hsts("preload").unwrap_err().contains("needs max-age"));
        assert!(parse_hsts("max-age=1y").is_err());
        assert!(parse_hsts("max-age=1; always")
            .unwrap_err()
            .contains("unknown directive"));
        assert_eq!(parse_backend_protocol("h2c"), Ok(BackendProtocol::H2c));
        assert!(parse_backend_protocol("grpc").is_err());
        assert_eq!(default_service_name("a.com", "/"), "a.com");
        assert_eq!(default_service_name("a.com", "/api"), "a.com/api");
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("32KiB"), Ok(32 << 10));
        assert_eq!(parse_size(" 10m "), Ok(10 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        for bad in ["", "KiB", "10 MB", "-1", "1.5m", "99999999999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_max_body_size("none"), Ok(None));
        assert!(parse_max_body_size("0").is_err());
        assert_eq!(parse_visibility("internal"), Ok(Visibility::Internal));
        assert!(parse_visibility("private").is_err());
    }
}
