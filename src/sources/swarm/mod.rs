//! Swarm discovery: watches a Swarm manager and routes the tasks of labelled services, with the
//! Docker source's label grammar and parser ([`crate::sources::docker::labels`]).
//!
//! What the engine tells berth, and when (API 1.41, measured on a 3-node swarm): there are no
//! task events, only `service` and `node` ones, and the manager never sees other nodes'
//! container events. A change of a task's desired state (scale down, rolling update, `service
//! rm`, node drain) is visible in `GET /tasks` 0.05-0.1 s after the command and its container
//! gets SIGTERM ~3.1 s later. So berth:
//! - lists services, the tasks meant to run and nodes (3 calls) on connect, 50 ms after any
//!   service or node event, and every `resync_interval` (5 s);
//! - re-lists the tasks of every converging service every `poll_interval` (500 ms): a rolling
//!   update's later steps and new tasks starting emit no event (`cluster::Cluster::converging`);
//! - routes a task while it runs and is meant to run, and drains it the moment it is no longer
//!   meant to: 2.5 s or more before its SIGTERM.
//!
//! When the manager goes away or hangs (calls hang 17-25 s while a new leader is elected),
//! every call gives up after 5 s, the last routes keep serving, and berth reconnects with
//! backoff, to the next configured manager first ([`engine::Endpoints`]).

mod api;
mod cluster;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use futures_util::StreamExt;
use pingora_core::server::ShutdownWatch;
use tokio::time::{Instant, MissedTickBehavior};

use super::docker::labels::build_snapshot;
use super::engine::{self, Connected, Ended, Endpoints, EngineSession};
use super::{Feed, Source};
use crate::config::SwarmConfig;
use crate::model::SourceKind;
use api::{Info, Node, Service, Task};
use cluster::Cluster;

/// Longest wait for one call: a manager without a leader hangs every call until an election
/// ends; 5 s gives up early enough to try another manager.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// More converging services than this are polled with one list of every task instead of
/// one call each.
const POLL_ONE_BY_ONE: usize = 4;

pub struct SwarmSource {
    config: SwarmConfig,
    endpoints: Endpoints,
    /// berth's own container, to find the networks it shares with tasks.
    own_container: Option<String>,
}

impl SwarmSource {
    pub fn new(config: SwarmConfig) -> Self {
        Self {
            endpoints: Endpoints::new(&config.endpoint),
            own_container: own_container_id(),
            config,
        }
    }

    async fn follow(
        &self,
        engine: &Connected,
        feed: &Feed,
        shutdown: &mut ShutdownWatch,
        listed: &mut bool,
    ) -> Ended {
        // Subscribed before the list, so nothing falls between the two.
        let mut events = engine::events(&engine.docker, &["service", "node"]);
        let mut watch = Watch {
            source: self,
            feed,
            engine,
            cluster: Cluster::new(
                self.config.label_prefixes.clone(),
                self.own_container.clone(),
            ),
            warned: HashSet::new(),
        };
        if let Err(e) = watch.list().await {
            return Ended::Lost(format!("cannot list the swarm at {}: {e}", engine.host));
        }
        if let Err(e) = watch.find_own_networks().await {
            return Ended::Lost(e);
        }
        let routed = watch.publish();
        *listed = true;
        tracing::info!(
            endpoint = %engine.host,
            routed,
            "swarm: connected and listed"
        );

        let config = &self.config;
        let mut resync = tokio::time::interval_at(
            Instant::now() + config.resync_interval,
            config.resync_interval,
        );
        let mut poll = tokio::time::interval(config.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut relist_at: Option<Instant> = None;
        loop {
            let converging = watch.cluster.converging(std::time::Instant::now());
            let handover = watch.cluster.next_handover().map(Instant::from_std);
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        watch.on_event(&event);
                        if relist_at.is_none() {
                            relist_at = Some(Instant::now() + config.debounce);
                        }
                    }
                    Some(Err(e)) => return Ended::Lost(format!("event stream failed: {e}")),
                    None => return Ended::Lost("event stream ended".into()),
                },
                _ = sleep_until(relist_at) => {
                    relist_at = None;
                    if let Err(e) = watch.list().await {
                        return Ended::Lost(format!("re-list failed: {e}"));
                    }
                    resync.reset();
                    poll.reset();
                    watch.publish();
                }
                _ = poll.tick(), if !converging.is_empty() => {
                    if let Err(e) = watch.poll(&converging).await {
                        return Ended::Lost(format!("polling tasks failed: {e}"));
                    }
                    watch.publish();
                }
                _ = sleep_until(handover) => {
                    watch.publish();
                }
                _ = resync.tick() => {
                    if let Err(e) = watch.list().await {
                        return Ended::Lost(format!("resync failed: {e}"));
                    }
                    poll.reset();
                    watch.publish();
                }
                _ = shutdown.changed() => return Ended::Shutdown,
            }
        }
    }
}

#[async_trait]
impl Source for SwarmSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Swarm
    }

    async fn run(&self, feed: Feed, shutdown: ShutdownWatch) {
        engine::keep_connected(self, &feed, shutdown).await;
    }
}

#[async_trait]
impl EngineSession for SwarmSource {
    async fn session(&self, feed: &Feed, shutdown: &mut ShutdownWatch, listed: &mut bool) -> Ended {
        let manager =
            async |raw: &engine::RawGet| raw.json::<Info>("/info", CALL_TIMEOUT).await?.manager();
        let engine = match self.endpoints.connect(CALL_TIMEOUT, manager).await {
            Ok(engine) => engine,
            Err(e) => return Ended::Lost(e),
        };
        let ended = self.follow(&engine, feed, shutdown, listed).await;
        if let Ended::Lost(_) = ended {
            self.endpoints.lost(&engine);
        }
        ended
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One session's view of the swarm.
struct Watch<'a> {
    source: &'a SwarmSource,
    feed: &'a Feed,
    engine: &'a Connected,
    cluster: Cluster,
    warned: HashSet<String>,
}

impl Watch<'_> {
    /// Services, the tasks meant to run, and nodes.
    async fn list(&mut self) -> Result<(), String> {
        let raw = &self.engine.raw;
        let services: Vec<Service> = raw.json("/services", CALL_TIMEOUT).await?;
        let tasks: Vec<Task> = raw.json(&api::tasks_path(), CALL_TIMEOUT).await?;
        let nodes: Vec<Node> = raw.json("/nodes", CALL_TIMEOUT).await?;
        self.cluster
            .listed(services, tasks, nodes, std::time::Instant::now());
        Ok(())
    }

    /// Re-lists the tasks of the converging services.
    async fn poll(&mut self, services: &[String]) -> Result<(), String> {
        let raw = &self.engine.raw;
        if services.len() > POLL_ONE_BY_ONE {
            let tasks: Vec<Task> = raw.json(&api::tasks_path(), CALL_TIMEOUT).await?;
            self.cluster
                .listed_tasks(|_| true, tasks, std::time::Instant::now());
            return Ok(());
        }
        for service in services {
            let tasks: Vec<Task> = raw
                .json(&api::service_tasks_path(service), CALL_TIMEOUT)
                .await?;
            self.cluster.listed_tasks(
                |t| &t.service_id == service,
                tasks,
                std::time::Instant::now(),
            );
        }
        Ok(())
    }

    /// For a berth that runs as a plain container (not a task): its networks, from the engine
    /// it runs on. Unknown when that is not the engine berth talks to; then every network but
    /// the ingress gives task addresses.
    async fn find_own_networks(&mut self) -> Result<(), String> {
        let Some(own) = self.cluster.own_container() else {
            return Ok(());
        };
        if self.cluster.own_task_listed() {
            return Ok(());
        }
        let inspect = self.engine.docker.inspect_container(own, None);
        let inspect = match tokio::time::timeout(CALL_TIMEOUT, inspect).await {
            Ok(Ok(inspect)) => inspect,
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => return Ok(()),
            Ok(Err(e)) => return Err(format!("cannot inspect berth's own container: {e}")),
            Err(_) => return Err("inspecting berth's own container timed out".into()),
        };
        let networks: BTreeSet<String> = inspect
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_values()
            .filter_map(|endpoint| endpoint.network_id)
            .collect();
        self.cluster.set_inspected_networks(networks);
        Ok(())
    }

    fn on_event(&mut self, event: &EventMessage) {
        let action = event.action.as_deref().unwrap_or_default();
        self.feed.count_event(action);
        let now = std::time::Instant::now();
        match event.typ {
            Some(EventMessageTypeEnum::SERVICE) => {
                let name = event
                    .actor
                    .as_ref()
                    .and_then(|a| a.attributes.as_ref())
                    .and_then(|a| a.get("name"));
                if let Some(name) = name {
                    self.cluster.touch(Some(name), now);
                }
            }
            _ => self.cluster.touch(None, now),
        }
    }

    /// Publishes what the cluster routes now; returns the number of routes.
    fn publish(&mut self) -> usize {
        let config = &self.source.config;
        let (instances, mut warnings) = self.cluster.route(std::time::Instant::now());
        let instances: Vec<_> = instances.iter().collect();
        let (snapshot, label_warnings) = build_snapshot(
            &instances,
            &config.label_prefixes,
            config.network.as_deref(),
            SourceKind::Swarm,
        );
        warnings.extend(label_warnings);
        let warnings: HashSet<String> = warnings.into_iter().collect();
        for warning in warnings.difference(&self.warned) {
            tracing::warn!("swarm: {warning}");
        }
        self.warned = warnings;
        let routes = snapshot.services.len();
        self.feed.publish(snapshot);
        routes
    }
}

/// The id of the container berth runs in, if any: Docker bind-mounts
/// `<data-root>/containers/<id>/hostname` (and `hosts`, `resolv.conf`) into every container,
/// whatever the cgroup layout.
fn own_container_id() -> Option<String> {
    container_id_in(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

fn container_id_in(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let (_, rest) = line.split_once("/containers/")?;
        let id = rest.get(..64)?;
        (id.bytes().all(|b| b.is_ascii_hexdigit()) && rest[64..].starts_with('/'))
            .then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berths_container_is_found_in_its_mounts() {
        let id = "35936a63d320d1697a1281c4c053c361ae17e06b64040b617a636ad3a0a700d1";
        let mountinfo = format!(
            "118 100 0:50 / / rw,relatime - overlay overlay rw\n\
             136 118 0:41 /containers/{id}/resolv.conf /etc/resolv.conf rw,relatime - tmpfs data rw\n"
        );
        assert_eq!(container_id_in(&mountinfo).as_deref(), Some(id));
        assert_eq!(
            container_id_in("22 1 0:21 / /sys rw - sysfs sysfs rw\n"),
            None,
            "not in a container"
        );
        assert_eq!(
            container_id_in("1 1 0:1 /containers/abc/x /y - t t\n"),
            None
        );
    }
}
