//! Docker discovery: watches the engine (through `bollard`) and turns labelled containers into
//! a route snapshot, live.
//!
//! On connect it subscribes to events, lists the running containers, and publishes; then each
//! event re-inspects only the container it names, and bursts are collected for `debounce` before
//! one publish. A `stop`/`kill` marks the container draining at once, before it dies. A full
//! re-list every `resync_interval` heals any missed event. When the engine goes away the last
//! published routes keep serving while berth reconnects with backoff ([`super::engine`]).

pub mod labels;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use async_trait::async_trait;
use bollard::models::{
    ContainerInspectResponse, EventMessage, EventMessageTypeEnum, HealthStatusEnum,
};
use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use futures_util::StreamExt;
use pingora_core::server::ShutdownWatch;
use tokio::time::Instant;

use super::engine::{self, Ended, EngineSession};
use super::{Feed, Source};
use crate::config::DockerConfig;
use crate::model::{PlatformHealth, SourceKind};
use labels::{asks_for_routes, build_snapshot, short_id, Instance};

/// The label Docker puts on the container of every Swarm task.
const SWARM_TASK_LABEL: &str = "com.docker.swarm.task.id";

pub struct DockerSource {
    config: DockerConfig,
    /// Whether containers of Swarm tasks are left to the Swarm source.
    skip_swarm_tasks: bool,
}

impl DockerSource {
    pub fn new(config: DockerConfig) -> Self {
        Self {
            config,
            skip_swarm_tasks: false,
        }
    }

    /// Leaves the containers of Swarm tasks to the Swarm source: a task is routed once, with
    /// its service's labels and its overlay address, never a second time as a container.
    pub fn without_swarm_tasks(mut self) -> Self {
        self.skip_swarm_tasks = true;
        self
    }

    fn routed(&self, labels: &BTreeMap<String, String>) -> bool {
        if self.skip_swarm_tasks && labels.contains_key(SWARM_TASK_LABEL) {
            return false;
        }
        asks_for_routes(labels, &self.config.label_prefixes)
    }
}

#[async_trait]
impl Source for DockerSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Docker
    }

    async fn run(&self, feed: Feed, shutdown: ShutdownWatch) {
        engine::keep_connected(self, &feed, shutdown).await;
    }
}

#[async_trait]
impl EngineSession for DockerSource {
    async fn session(&self, feed: &Feed, shutdown: &mut ShutdownWatch, listed: &mut bool) -> Ended {
        let docker =
            match engine::connect(self.config.endpoint.as_deref(), engine::CALL_TIMEOUT).await {
                Ok(docker) => docker,
                Err(e) => return Ended::Lost(e),
            };
        // Subscribed before the list, so nothing falls between the two.
        let mut events = engine::events(&docker, &["container", "network"]);
        let mut watch = Watch::new(self, feed, docker);
        if let Err(e) = watch.list().await {
            return Ended::Lost(format!("cannot list containers: {e}"));
        }
        watch.publish();
        *listed = true;
        tracing::info!(
            containers = watch.containers.len(),
            "docker: connected and listed"
        );

        let mut resync = tokio::time::interval_at(
            Instant::now() + self.config.resync_interval,
            self.config.resync_interval,
        );
        let mut flush_at: Option<Instant> = None;
        loop {
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
                _ = sleep_until(flush_at) => {
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
                _ = shutdown.changed() => return Ended::Shutdown,
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The containers one session knows, and what changed since the last publish.
struct Watch<'a> {
    source: &'a DockerSource,
    feed: &'a Feed,
    docker: Docker,
    containers: BTreeMap<String, Instance>,
    /// Containers that got `stop`/`kill`, kept draining until they are gone or start again.
    draining: HashSet<String>,
    dirty: BTreeSet<String>,
    warned: HashSet<String>,
}

impl<'a> Watch<'a> {
    fn new(source: &'a DockerSource, feed: &'a Feed, docker: Docker) -> Self {
        Watch {
            source,
            feed,
            docker,
            containers: BTreeMap::new(),
            draining: HashSet::new(),
            dirty: BTreeSet::new(),
            warned: HashSet::new(),
        }
    }

    async fn list(&mut self) -> Result<(), String> {
        let options = ListContainersOptions {
            all: false,
            ..Default::default()
        };
        let summaries = engine::call(self.docker.list_containers(Some(options))).await?;
        let mut fresh = BTreeMap::new();
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            let labels: BTreeMap<String, String> =
                summary.labels.unwrap_or_default().into_iter().collect();
            if !self.source.routed(&labels) {
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
    async fn inspect(&self, id: &str) -> Result<Option<Instance>, String> {
        match tokio::time::timeout(
            engine::CALL_TIMEOUT,
            self.docker.inspect_container(id, None),
        )
        .await
        {
            Err(_) => Err(format!("inspecting {} timed out", short_id(id))),
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => Ok(None),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(inspect)) => Ok(instance(inspect)),
        }
    }

    /// Notes what an event changes; `true` when it must be published without waiting.
    fn on_event(&mut self, event: &EventMessage) -> bool {
        let action = event.action.as_deref().unwrap_or_default();
        let kind = action.split(':').next().unwrap_or_default();
        self.feed.count_event(kind);
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
            "kill" | "stop" => self.drain(id),
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

    /// Takes a container out of rotation at once; `true` if that changed a route.
    fn drain(&mut self, id: String) -> bool {
        let changed = match self.containers.get_mut(&id) {
            Some(info) if !info.draining => {
                info.draining = true;
                true
            }
            _ => false,
        };
        self.draining.insert(id);
        changed
    }

    /// Re-inspects the containers events named.
    async fn refresh_dirty(&mut self) -> Result<(), String> {
        for id in std::mem::take(&mut self.dirty) {
            match self.inspect(&id).await? {
                Some(mut info) if self.source.routed(&info.labels) => {
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
        let instances: Vec<&Instance> = self.containers.values().collect();
        let (snapshot, warnings) = build_snapshot(
            &instances,
            &config.label_prefixes,
            config.network.as_deref(),
            SourceKind::Docker,
        );
        let warnings: HashSet<String> = warnings.into_iter().collect();
        for warning in warnings.difference(&self.warned) {
            tracing::warn!("docker: {warning}");
        }
        self.warned = warnings;
        self.feed.publish(snapshot);
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

/// What berth needs from `docker inspect`; `None` for a container that is not running (or
/// is paused: it cannot answer).
fn instance(inspect: ContainerInspectResponse) -> Option<Instance> {
    let state = inspect.state?;
    if state.running != Some(true) || state.paused == Some(true) {
        return None;
    }
    let platform_health = match state.health.and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Some(PlatformHealth::Starting),
        Some(HealthStatusEnum::UNHEALTHY) => Some(PlatformHealth::Unhealthy),
        _ => None,
    };
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
    Some(Instance {
        id: inspect.id?,
        name: inspect
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        placement: None,
        labels: inspect
            .config
            .and_then(|c| c.labels)
            .unwrap_or_default()
            .into_iter()
            .collect(),
        networks,
        platform_health,
        draining: false,
    })
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
}
