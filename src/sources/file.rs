//! The config file as a route source: its `services:` and `defaults:` become a [`Snapshot`],
//! reloaded live on SIGHUP or when the file changes.
//!
//! A file that fails to load is refused as a whole: the error is logged and counted
//! (`berth_config_reloads_total{result="failure"}`) and the last good publication keeps
//! serving. Backend host names are resolved here, asynchronously, before publishing, so a slow
//! resolver delays only this source's reload, never the control plane.
//!
//! The TLS listeners' certificates reload with the file: a reload reads and checks them all
//! (so one bad certificate refuses the reload and the old set keeps serving), and a change to
//! a certificate or key file reloads like a change to the config itself.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use tokio::sync::watch;

use super::{Feed, Source};
use crate::config::{Config, ConfigError, ListenerConfig, ServiceEntry};
use crate::metrics::Metrics;
use crate::model::hostname::parse_domain_pattern;
use crate::model::policy::default_service_name;
use crate::model::{BackendSpec, PolicyLayer, ServiceSpec, Snapshot, SourceKind};
use crate::tls::store::{load_listener_certificates, CertMap, CertStore};

/// Longest wait for one backend host name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The file's services, validated, with backend host names still to resolve.
pub struct FileServices {
    file: PathBuf,
    services: Vec<Draft>,
    defaults: PolicyLayer,
}

/// A service whose backends are still written as text.
struct Draft {
    spec: ServiceSpec,
    backends: Vec<DraftBackend>,
}

struct DraftBackend {
    /// Key path for errors, e.g. `services[0].backends[1]`.
    key: String,
    address: String,
    weight: u16,
}

type Invalid = (String, String);

impl FileServices {
    /// Checks the file's services against each other and against the listeners.
    pub fn from_config(config: &Config, file: &Path) -> Result<FileServices, ConfigError> {
        let listeners: HashMap<&str, &ListenerConfig> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l))
            .collect();
        let mut names = HashSet::new();
        let mut routes = HashSet::new();
        let mut services = Vec::with_capacity(config.services.len());
        for (i, entry) in config.services.iter().enumerate() {
            let at = format!("services[{i}]");
            let draft = draft(entry, &at, &listeners, &config.defaults)
                .and_then(|draft| claim(draft, &at, &mut names, &mut routes))
                .map_err(|(key, message)| ConfigError::at(file, key, message))?;
            services.push(draft);
        }
        Ok(FileServices {
            file: file.to_owned(),
            services,
            defaults: config.defaults.clone(),
        })
    }

    /// Resolves backend host names (`host:port` becomes one backend per address, as nginx
    /// does for an upstream `server` name) and returns the file's snapshot.
    pub async fn resolve(self) -> Result<Snapshot, ConfigError> {
        let mut services = Vec::with_capacity(self.services.len());
        for Draft { mut spec, backends } in self.services {
            // Exact when every address is an IP (a name may add more): the spec is kept for
            // as long as the service is routed, 10,000 of them at scale.
            spec.backends.reserve_exact(backends.len());
            for backend in backends {
                let fail = |message| ConfigError::at(&self.file, backend.key.clone(), message);
                for addr in resolve(&backend.address).await.map_err(fail)? {
                    let mut spec_backend = BackendSpec::new(addr);
                    spec_backend.weight = backend.weight;
                    spec.add_backend(spec_backend).map_err(fail)?;
                }
            }
            services.push(Arc::new(spec));
        }
        Ok(Snapshot {
            services,
            defaults: Some(self.defaults),
        })
    }
}

/// Everything the file says, checked: the config, its services and its TLS listeners'
/// certificates (one map per listener).
pub struct Loaded {
    pub config: Config,
    pub snapshot: Snapshot,
    pub certificates: Vec<CertMap>,
}

/// Reads, checks and resolves the whole file at once: for start and `berth check`, before any
/// runtime exists.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let mut config = Config::load(path)?;
    let services = FileServices::from_config(&config, path)?;
    let certificates = load_listener_certificates(&config, &config.listeners, path)?;
    // The snapshot holds the services now; at 10,000 services a second copy is megabytes.
    config.services = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ConfigError::at(path, String::new(), format!("no runtime: {e}")))?;
    let snapshot = runtime.block_on(services.resolve())?;
    Ok(Loaded {
        config,
        snapshot,
        certificates,
    })
}

/// One service entry as a spec, its backends still text.
fn draft(
    entry: &ServiceEntry,
    at: &str,
    listeners: &HashMap<&str, &ListenerConfig>,
    defaults: &PolicyLayer,
) -> Result<Draft, Invalid> {
    if entry.domains.is_empty() {
        return Err((
            format!("{at}.domains"),
            "at least one domain is required".into(),
        ));
    }
    let mut domains: Vec<String> = Vec::with_capacity(entry.domains.len());
    for (d, raw) in entry.domains.iter().enumerate() {
        let domain = parse_domain_pattern(raw).map_err(|e| (format!("{at}.domains[{d}]"), e))?;
        if !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    let path_prefix = entry.path_prefix.clone().unwrap_or_else(|| "/".into());
    let policy = entry.policy();
    policy
        .validate()
        .map_err(|(key, message)| (format!("{at}.{key}"), message))?;
    let serves_tls = policy.over(defaults).resolve().tls.serve;
    for (l, name) in entry.listeners.iter().flatten().enumerate() {
        let problem = match listeners.get(name.as_str()) {
            None => format!("no listener is named {name:?}"),
            Some(listener) if listener.redirect_https => {
                format!("listener {name:?} only redirects to HTTPS; it serves no service")
            }
            Some(listener) if listener.tls.is_some() && !serves_tls => format!(
                "listener {name:?} terminates TLS, which serves only services with `tls: true` \
                 (set it here or in `defaults`)"
            ),
            Some(_) => continue,
        };
        return Err((format!("{at}.listeners[{l}]"), problem));
    }
    let name = match &entry.name {
        Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
        Some(_) => return Err((format!("{at}.name"), "name is empty".into())),
        None => default_service_name(&domains[0], &path_prefix),
    };
    let backends = entry
        .backends
        .iter()
        .enumerate()
        .map(|(b, backend)| DraftBackend {
            key: format!("{at}.backends[{b}].address"),
            address: backend.address.clone(),
            weight: backend.weight.unwrap_or(1),
        })
        .collect();
    Ok(Draft {
        spec: ServiceSpec {
            name,
            domains,
            path_prefix,
            listeners: entry.listeners.clone(),
            policy,
            backends: Vec::new(),
            source: SourceKind::File,
        },
        backends,
    })
}

/// Records the draft's name and routes, refusing one an earlier service already has.
fn claim(
    draft: Draft,
    at: &str,
    names: &mut HashSet<String>,
    routes: &mut HashSet<(String, String)>,
) -> Result<Draft, Invalid> {
    let spec = &draft.spec;
    if !names.insert(spec.name.clone()) {
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
    Ok(draft)
}

/// `ip:port` as it is; `host:port` through the system resolver.
async fn resolve(address: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if address
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(format!("{address:?} is not host:port"));
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(address)).await {
        Ok(Ok(found)) => {
            for addr in found {
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
        }
        Ok(Err(e)) => return Err(format!("cannot resolve {address:?}: {e}")),
        Err(_) => {
            return Err(format!(
                "{address:?} did not resolve within {RESOLVE_TIMEOUT:?}"
            ))
        }
    }
    if addrs.is_empty() {
        return Err(format!("{address:?} resolves to no address"));
    }
    Ok(addrs)
}

/// Watches the config file: reloads when asked (SIGHUP) and when its text, or one of the
/// certificate files it names, changes.
pub struct FileSource {
    path: PathBuf,
    /// The config berth started with: its restart-bound sections stay in force.
    running: Config,
    /// Reload requests, counted (each SIGHUP adds one).
    requests: watch::Receiver<u64>,
    /// The last request handled, for whoever asked (systemd hears `READY=1` after a reload).
    handled: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    certificates: Arc<CertStore>,
}

/// What the file source last read, so that only a change reloads (and one bad edit is
/// reported once).
#[derive(Default)]
struct Seen {
    text: Option<Vec<u8>>,
    /// The certificate and key files of the config last loaded, with their modification
    /// time and size when last read.
    certificate_files: Vec<(PathBuf, Option<(SystemTime, u64)>)>,
}

impl Seen {
    fn certificate_files(config: &Config) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
        let paths = config
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|tls| &tls.certificates)
            .flat_map(|files| [files.cert.clone(), files.key.clone()]);
        paths
            .map(|path| (stamp(&path), path))
            .map(|(s, p)| (p, s))
            .collect()
    }

    fn certificates_changed(&self) -> bool {
        self.certificate_files
            .iter()
            .any(|(path, stamp_then)| stamp(path) != *stamp_then)
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl FileSource {
    pub fn new(
        path: PathBuf,
        running: Config,
        requests: watch::Receiver<u64>,
        handled: watch::Sender<u64>,
        metrics: Arc<Metrics>,
        certificates: Arc<CertStore>,
    ) -> Self {
        Self {
            path,
            running,
            requests,
            handled,
            metrics,
            certificates,
        }
    }

    /// Re-reads the file; `force` reloads even if nothing changed (SIGHUP).
    async fn reload(&self, feed: &Feed, seen: &mut Seen, force: bool) {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) => {
                if force {
                    tracing::error!(path = %self.path.display(), "config reload refused: {e}");
                    self.metrics.config_reload(false);
                }
                return;
            }
        };
        if !force && seen.text.as_ref() == Some(&text) && !seen.certificates_changed() {
            return;
        }
        seen.text = Some(text.clone());
        match self.parse(&text).await {
            Ok(Loaded {
                config,
                snapshot,
                certificates,
            }) => {
                if let Some(part) = self.running.restart_needed_for(&config) {
                    tracing::warn!(
                        "config reload: the `{part}` section changed; it takes effect at the next restart"
                    );
                }
                seen.certificate_files = Seen::certificate_files(&config);
                feed.publish(snapshot);
                self.certificates.set_files(certificates);
                self.metrics.config_reload(true);
                tracing::info!(path = %self.path.display(), "config reloaded");
            }
            Err(e) => {
                // The files as they are now were tried: a later change is what retries them.
                for (path, stamp_then) in &mut seen.certificate_files {
                    *stamp_then = stamp(path);
                }
                tracing::error!("config reload refused, the previous config keeps serving: {e}");
                self.metrics.config_reload(false);
            }
        }
        // Parsing a large file leaves tens of megabytes freed; an idle berth would keep them.
        crate::runtime::memory::release_freed();
    }

    async fn parse(&self, text: &[u8]) -> Result<Loaded, String> {
        let text = std::str::from_utf8(text)
            .map_err(|e| format!("{}: not UTF-8: {e}", self.path.display()))?;
        let mut config = Config::parse(text, &self.path).map_err(|e| e.to_string())?;
        let services = FileServices::from_config(&config, &self.path).map_err(|e| e.to_string())?;
        // For the listeners this process runs, even if the file now has others.
        let certificates = load_listener_certificates(&config, &self.running.listeners, &self.path)
            .map_err(|e| e.to_string())?;
        let snapshot = services.resolve().await.map_err(|e| e.to_string())?;
        config.services = Vec::new();
        Ok(Loaded {
            config,
            snapshot,
            certificates,
        })
    }
}

#[async_trait]
impl Source for FileSource {
    fn kind(&self) -> SourceKind {
        SourceKind::File
    }

    async fn run(&self, feed: Feed, mut shutdown: ShutdownWatch) {
        let mut seen = Seen {
            text: std::fs::read(&self.path).ok(),
            certificate_files: Seen::certificate_files(&self.running),
        };
        let watch_interval = self.running.server.watch_interval;
        let mut poll = (!watch_interval.is_zero()).then(|| {
            let mut interval = tokio::time::interval(watch_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        let mut requests = self.requests.clone();
        loop {
            tokio::select! {
                Ok(()) = requests.changed() => {
                    let request = *requests.borrow_and_update();
                    self.reload(&feed, &mut seen, true).await;
                    self.handled.send_replace(request);
                }
                _ = tick(&mut poll) => self.reload(&feed, &mut seen, false).await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn tick(poll: &mut Option<tokio::time::Interval>) {
    match poll {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::policy::{HealthCheckSpec, Policy, ProbeKind};

    fn parse(text: &str) -> Result<Snapshot, ConfigError> {
        let path = Path::new("test.yaml");
        let config = Config::parse(text, path)?;
        let services = FileServices::from_config(&config, path)?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(services.resolve())
    }

    const MINIMAL: &str = "listeners:\n  - name: main\n    address: \"127.0.0.1:8080\"\n";

    #[test]
    fn the_issue_example_parses_with_its_defaults() {
        let snapshot = parse(
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
        let api = &snapshot.services[0];
        assert_eq!(api.name, "api");
        assert_eq!(api.domains, ["api.example.com", "*.api.example.com"]);
        assert_eq!(api.policy.resolve(), Policy::default());
        assert_eq!(api.backends[0].addr, "127.0.0.1:9001".parse().unwrap());
    }

    #[test]
    fn defaults_fill_what_a_service_leaves_unset() {
        let snapshot = parse(&format!(
            "{MINIMAL}defaults:\n  retries: 5\n  health_check:\n    interval: 500ms\n    path: /ping\n\
             services:\n  - domains: [A.example.com]\n    health_check:\n      path: /ready\n    \
             backends: [{{address: \"127.0.0.1:1\"}}]\n"
        ))
        .unwrap();
        let svc = &snapshot.services[0];
        assert_eq!(
            svc.name, "a.example.com",
            "name defaults to the first domain"
        );
        let policy = svc
            .policy
            .over(snapshot.defaults.as_ref().unwrap())
            .resolve();
        assert_eq!(policy.retries, 5);
        assert_eq!(policy.health_check.interval, Duration::from_millis(500));
        assert_eq!(
            policy.health_check,
            HealthCheckSpec {
                kind: ProbeKind::Http,
                path: "/ready".into(),
                interval: Duration::from_millis(500),
                ..HealthCheckSpec::default()
            }
        );
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
                "    health_check: {timeout: 0s}\n",
                "services[0].health_check.timeout",
            ),
            (
                "    backends: [{address: nowhere}]\n",
                "services[0].backends[0].address",
            ),
            (
                "    backends: [{address: \"1.2.3.4:80\", weight: 0}]\n",
                "services[0].backends[0].weight",
            ),
            (
                "    backends: [{address: \"1.2.3.4:80\"}, {address: \"1.2.3.4:80\"}]\n",
                "services[0].backends[1].address",
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
    fn unnamed_services_on_one_domain_are_told_apart_by_path() {
        let snapshot = parse(&format!(
            "{MINIMAL}services:\n  - domains: [a.com]\n  - domains: [a.com]\n    path_prefix: /api\n"
        ))
        .unwrap();
        let names: Vec<&str> = snapshot.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a.com", "a.com/api"]);
    }

    #[test]
    fn hostnames_resolve_to_every_address() {
        let snapshot = parse(&format!(
            "{MINIMAL}services:\n  - domains: [a.com]\n    backends: [{{address: \"localhost:9\"}}]\n"
        ))
        .unwrap();
        let backends = &snapshot.services[0].backends;
        assert!(!backends.is_empty());
        assert!(backends
            .iter()
            .all(|b| b.addr.ip().is_loopback() && b.addr.port() == 9));
    }
}
