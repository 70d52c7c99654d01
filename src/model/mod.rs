//! The declarative language every route source speaks.
//!
//! A source (the config file, Docker labels) produces a [`Snapshot`]: plain data with no Pingora
//! types in it, so sources stay pure and testable and the compiler in [`crate::table`] is the
//! only place that turns intent into live upstreams. Nothing here knows which source said what
//! beyond [`SourceKind`], which the merge uses for precedence and operators see.

pub mod hostname;
pub mod policy;

use std::net::SocketAddr;
use std::sync::Arc;

pub use policy::PolicyLayer;

/// Which kind of source declared a service. The order of the sources in the control plane,
/// not this enum, decides who wins a contested route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    File,
    Docker,
    Swarm,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Docker => "docker",
            SourceKind::Swarm => "swarm",
        }
    }
}

/// What the platform running a backend says about its readiness, apart from berth's probes
/// (Docker's `HEALTHCHECK`, for example).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformHealth {
    Starting,
    Unhealthy,
}

/// Whether a backend may take new requests, apart from what berth's probes say.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Admission {
    #[default]
    Open,
    /// Leaving (its container got `stop`/`kill`): in-flight requests finish, new ones go
    /// elsewhere.
    Draining,
    /// The platform says the backend is not ready.
    Held(PlatformHealth),
}

/// Who a backend is, for operators and sticky sessions: shown in `/api/routes` and
/// `berth_server_info`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct BackendIdentity {
    /// A stable id of the instance behind the address (a container id). It is the sticky
    /// cookie's value, so a client stays with the instance, not with an address a successor
    /// may reuse.
    pub id: Option<String>,
    /// A readable name (a container name).
    pub name: Option<String>,
    /// Where an orchestrator scheduled the instance; `None` for plain containers and static
    /// backends.
    pub placement: Option<Placement>,
}

/// The orchestrator's view of a backend (a Swarm task), so an operator can go from a backend
/// in berth to the object to inspect: `docker service ps`, `docker node ps`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Placement {
    /// The orchestrator's service (workload) the instance is a copy of.
    pub service: String,
    /// The scheduled copy (a Swarm task id); a replacement is a new task.
    pub task_id: String,
    /// Which replica it is (Swarm's slot); `None` for services with one copy per node.
    pub slot: Option<u64>,
    /// The node it runs on: its hostname, else the orchestrator's node id.
    pub node: String,
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
    /// What the source says about the policy; `defaults:` fill the rest at compile time.
    pub policy: PolicyLayer,
    pub backends: Vec<BackendSpec>,
    pub source: SourceKind,
}

impl ServiceSpec {
    /// Adds a backend unless the service already has one at that address: an address is one
    /// backend. Each source reports the refusal its own way (the file is refused as a whole, a
    /// container is skipped with a warning), but the rule is this one.
    pub fn add_backend(&mut self, backend: BackendSpec) -> Result<(), String> {
        if self.backends.iter().any(|b| b.addr == backend.addr) {
            return Err(format!(
                "{} is already a backend of service {:?}",
                backend.addr, self.name
            ));
        }
        self.backends.push(backend);
        Ok(())
    }
}

/// Everything one source (or the merge of all sources) says should be routed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Shared: a source's snapshot, the merge of all of them and the compiled upstreams hold
    /// the same specs, so a reload of 10,000 services copies none it does not change.
    pub services: Vec<Arc<ServiceSpec>>,
    /// Policy for every service, of any source, that leaves a knob unset: the config file's
    /// `defaults:`. Other sources leave it `None`; the control plane uses the first it finds.
    pub defaults: Option<PolicyLayer>,
}

impl Snapshot {
    pub fn of(
        services: impl IntoIterator<Item = ServiceSpec>,
        defaults: Option<PolicyLayer>,
    ) -> Self {
        Snapshot {
            services: services.into_iter().map(Arc::new).collect(),
            defaults,
        }
    }
}
