//! Docker discovery: watches the engine (through `bollard`) and turns labelled containers into
//! a route snapshot, live.
//!
//! On connect it subscribes to events, lists the running containers, and publishes; then each
//! event re-inspects only the container it names, and bursts are collected for `debounce` before
//! one publish. A `stop`/`kill` marks the container draining at once, before it dies. A full
//! re-list every `resync_interval` heals any missed event. When the engine goes away the last
//! published routes keep serving while berth reconnects with backoff.

pub mod labels;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{DockerConfig, PolicyLayer};
use crate::controller::Discovered;
use crate::metrics::Metrics;
use crate::model::Snapshot;
use labels::{build_snapshot, short_id, ContainerInfo};

const SOURCE: &str = "docker";
/// Longest wait for one list or inspect call; the events stream itself has no deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub struct DockerSource {
    config: DockerConfig,
    defaults: watch::Receiver<PolicyLayer>,
    metrics: Arc<Metrics>,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
}

impl DockerSource {
    /// The source, and the receiver the control plane reads its snapshots from. `defaults`
    /// carries the config file's service defaults, so a reload re-resolves Docker services.
    pub fn new(
        config: DockerConfig,
        defaults: watch::Receiver<PolicyLayer>,
        metrics: Arc<Metrics>,
    ) -> (DockerSource, Discovered) {
        let (tx, rx) = watch::channel(None);
        metrics.discovery_source(SOURCE);
        (
            DockerSource {
                config,
                defaults,
                metrics,
                tx,
            },
            rx,
        )
    }
}

/// Connects to `endpoint`, `DOCKER_HOST`, or the local socket.
fn connect(endpoint: Option<&str>) -> Result<Docker, bollard::errors::Error> {
    let host = endpoint
        .map(str::to_owned)
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    // The events stream lives for hours: bollard's per-request timeout must not end it.
    let timeout = 365 * 24 * 3600;
    if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(&host, timeout, API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_unix(&host, timeout, API_DEFAULT_VERSION)
    }
}

/// Why a session with the engine ended.
enum Ended {
    Shutdown,
    Lost(String),
}

/// The containers berth knows, and what changed since the last publish.
struct Watch<'a> {
    source: &'a DockerSource,
    docker: Docker,
    containers: BTreeMap<String, ContainerInfo>,
    /// Containers that got `stop`/`kill`, kept draining until they are gone or start again.
    draining: HashSet<String>,
    dirty: BTreeSet<String>,
    warned: HashSet<String>,
}

impl<'a> Watch<'a> {
    async fn list(&mut self) -> Result<(), String> {
        let options = ListContainersOptions {
            all: false,
            ..Default::default()
        };
        let summaries = call(self.docker.list_containers(Some(options))).await?;
        let prefixes = &self.source.config.label_prefixes;
        let mut fresh = BTreeMap::new();
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            let labelled = summary.labels.as_ref().is_some_and(|labels| {
                labels
                    .keys()
                    .any(|k| prefixes.iter().any(|p| routing_label(k, p)))
            });
            if !labelled {
                continue;
            }
            if let Some(info) = self.inspect(&id).await? {
                fresh.insert(id, info);
            }
        }
        self.draining.retain(|id| fresh.contains_key(id));
        for (id, info) in fresh.iter_mut() {
            info.draining = self.draining.contains(id);
        }
        self.containers = fresh;
        self.dirty.clear();
        Ok(())
    }

    /// The container as berth routes it, or `None` if it is gone or not running.
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, String> {
        match tokio::time::timeout(CALL_TIMEOUT, self.docker.inspect_container(id, None)).await {
            Err(_) => Err(format!("inspecting {} timed out", short_id(id))),
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => Ok(None),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(inspect)) => Ok(container_info(inspect)),
        }
    }

    /// Notes what an event changes; `true` when it must be published without waiting.
    fn on_event(&mut self, event: &EventMessage) -> bool {
        let action = event.action.as_deref().unwrap_or_default();
        let kind = action.split(':').next().unwrap_or_default();
        self.source.metrics.discovery_event(SOURCE, kind);
        let actor = event.actor.as_ref();
        let attributes = actor.and_then(|a| a.attributes.as_ref());
        let id = match event.typ {
            Some(EventMessageTypeEnum::NETWORK) => {
                attributes.and_then(|a| a.get("container")).cloned()
            }
            _ => actor.and_then(|a| a.id.clone()),
        };
        let Some(id) = id else { return false };
        match kind {
            "kill" if !stops(attributes.and_then(|a| a.get("signal"))) => false,
            "kill" | "stop" => {
                self.draining.insert(id.clone());
                match self.containers.get_mut(&id) {
                    Some(info) if !info.draining => {
                        info.draining = true;
                        true
                    }
                    _ => false,
                }
            }
            "start" | "unpause" | "restart" => {
                self.draining.remove(&id);
                self.dirty.insert(id);
                false
            }
            _ => {
                self.dirty.insert(id);
                false
            }
        }
    }

    /// Re-inspects the containers events named.
    async fn refresh_dirty(&mut self) -> Result<(), String> {
        for id in std::mem::take(&mut self.dirty) {
            match self.inspect(&id).await? {
                Some(mut info) if has_routing_labels(&info, &self.source.config.label_prefixes) => {
                    info.draining = self.draining.contains(&id);
                    self.containers.insert(id, info);
                }
                _ => {
                    self.containers.remove(&id);
                    self.draining.remove(&id);
                }
            }
        }
        Ok(())
    }

    fn publish(&mut self) {
        let config = &self.source.config;
        let containers: Vec<ContainerInfo> = self.containers.values().cloned().collect();
        let defaults = self.source.defaults.borrow().clone();
        let (snapshot, warnings) = build_snapshot(
            &containers,
            &config.label_prefixes,
            config.network.as_deref(),
            &defaults,
        );
        let warnings: HashSet<String> = warnings.into_iter().collect();
        for warning in warnings.difference(&self.warned) {
            tracing::warn!("docker: {warning}");
        }
        self.warned = warnings;
        self.source.tx.send_if_modified(|current| {
            let changed = current.as_deref() != Some(&snapshot);
            if changed {
                *current = Some(Arc::new(snapshot));
            }
            changed
        });
    }
}

/// Whether a `kill` with this signal ends the container (drain it) or only pokes it (`HUP`).
fn stops(signal: Option<&String>) -> bool {
    matches!(
        signal.map(String::as_str),
        None | Some(
            "15" | "9"
                | "2"
                | "3"
                | "SIGTERM"
                | "SIGKILL"
                | "SIGINT"
                | "SIGQUIT"
                | "TERM"
                | "KILL"
                | "INT"
                | "QUIT"
        )
    )
}

fn routing_label(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(".routing."))
        .is_some()
}

fn has_routing_labels(info: &ContainerInfo, prefixes: &[String]) -> bool {
    info.labels
        .keys()
        .any(|k| prefixes.iter().any(|p| routing_label(k, p)))
}

async fn call<T>(
    request: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

/// What berth needs from `docker inspect`; `None` for a container that is not running (or
/// is paused: it cannot answer).
fn container_info(inspect: ContainerInspectResponse) -> Option<ContainerInfo> {
    let state = inspect.state?;
    if state.running != Some(true) || state.paused == Some(true) {
        return None;
    }
    let docker_health = state
        .health
        .and_then(|h| h.status)
        .map(|status| status.to_string())
        .filter(|status| !status.is_empty() && status != "none");
    let networks = inspect
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, endpoint)| {
            let ip = endpoint.ip_address.filter(|ip| !ip.is_empty())?;
            Some((name, ip.parse::<IpAddr>().ok()?))
        })
        .collect();
    Some(ContainerInfo {
        id: inspect.id?,
        name: inspect
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        labels: inspect
            .config
            .and_then(|c| c.labels)
            .unwrap_or_default()
            .into_iter()
            .collect(),
        networks,
        docker_health,
        draining: false,
    })
}

impl DockerSource {
    /// One connection to the engine: list, then follow events until it fails or we stop.
    async fn session(&self, shutdown: &mut ShutdownWatch, connected: &mut bool) -> Ended {
        let docker = match connect(self.config.endpoint.as_deref()) {
            Ok(docker) => docker,
            Err(e) => return Ended::Lost(format!("cannot connect: {e}")),
        };
        let docker = match tokio::time::timeout(CALL_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Ended::Lost(format!("cannot reach the engine: {e}")),
            Err(_) => return Ended::Lost("the engine did not answer".into()),
        };
        // Events from the moment before the list on, so nothing falls between the two.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .saturating_sub(1);
        let filters: HashMap<String, Vec<String>> = [(
            "type".to_string(),
            vec!["container".to_string(), "network".to_string()],
        )]
        .into();
        let mut events = docker.events(Some(EventsOptions {
            since: Some(since.to_string()),
            filters: Some(filters),
            ..Default::default()
        }));
        let mut watch = Watch {
            source: self,
            docker,
            containers: BTreeMap::new(),
            draining: HashSet::new(),
            dirty: BTreeSet::new(),
            warned: HashSet::new(),
        };
        if let Err(e) = watch.list().await {
            return Ended::Lost(format!("cannot list containers: {e}"));
        }
        watch.publish();
        *connected = true;
        tracing::info!(
            containers = watch.containers.len(),
            "docker: connected and listed"
        );

        let mut defaults = self.defaults.clone();
        let mut resync = tokio::time::interval_at(
            Instant::now() + self.config.resync_interval,
            self.config.resync_interval,
        );
        let mut flush_at: Option<Instant> = None;
        loop {
            let flush = async move {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        if watch.on_event(&event) {
                            watch.publish();
                        }
                        if !watch.dirty.is_empty() && flush_at.is_none() {
                            flush_at = Some(Instant::now() + self.config.debounce);
                        }
                    }
                    Some(Err(e)) => return Ended::Lost(format!("event stream failed: {e}")),
                    None => return Ended::Lost("event stream ended".into()),
                },
                _ = flush => {
                    flush_at = None;
                    if let Err(e) = watch.refresh_dirty().await {
                        return Ended::Lost(e);
                    }
                    watch.publish();
                }
                _ = resync.tick() => {
                    if let Err(e) = watch.list().await {
                        return Ended::Lost(format!("resync failed: {e}"));
                    }
                    watch.publish();
                }
                changed = defaults.changed() => {
                    if changed.is_ok() {
                        watch.publish();
                    }
                }
                _ = shutdown.changed() => return Ended::Shutdown,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for DockerSource {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let mut connected = false;
            match self.session(&mut shutdown, &mut connected).await {
                Ended::Shutdown => return,
                Ended::Lost(why) => {
                    self.metrics.discovery_error(SOURCE);
                    if connected {
                        backoff = Duration::from_millis(250);
                    }
                    tracing::warn!(
                        "docker: {why}; the last known routes keep serving, reconnecting in {backoff:?}"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ending_signals_drain() {
        for signal in ["15", "SIGTERM", "9", "SIGKILL"] {
            assert!(stops(Some(&signal.to_string())), "{signal}");
        }
        for signal in ["1", "SIGHUP", "SIGUSR1", "10"] {
            assert!(!stops(Some(&signal.to_string())), "{signal}");
        }
        assert!(stops(None));
    }

    #[test]
    fn routing_labels_are_recognised_under_any_prefix() {
        assert!(routing_label("aliyun.routing.port_80", "aliyun"));
        assert!(routing_label("berth.routing.port_80", "berth"));
        assert!(!routing_label("aliyun.probe.url", "aliyun"));
        assert!(!routing_label("berthx.routing.port_80", "berth"));
    }
}
