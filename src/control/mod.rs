//! The control plane: everything in the background that keeps the live route table true.
//! It reads every source's latest snapshot (in precedence order) whenever one of them
//! publishes, merges them, compiles a route table and publishes it ([`Controller`]); and it
//! probes every backend of the live table ([`prober`]).

pub mod merge;
pub mod prober;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::Notify;

use crate::config::ListenerConfig;
use crate::health::probe::ProbeCache;
use crate::model::hostname::DomainSet;
use crate::sources::FeedReader;
use crate::table::live::LiveTable;
use crate::table::RouteTable;
use merge::merge;

pub struct Controller {
    /// In precedence order: an earlier source wins a route a later one also claims.
    feeds: Vec<FeedReader>,
    /// Notified by every feed's publication.
    wake: Arc<Notify>,
    live: Arc<LiveTable>,
    listeners: Vec<ListenerConfig>,
    internal_domains: DomainSet,
    probes: ProbeCache,
    /// Merge warnings already logged, so an unrelated update does not repeat them.
    warned: Mutex<HashSet<String>>,
}

impl Controller {
    /// Builds the controller and publishes the first table from what the feeds hold now.
    pub fn start(
        feeds: Vec<FeedReader>,
        wake: Arc<Notify>,
        live: Arc<LiveTable>,
        listeners: Vec<ListenerConfig>,
        internal_domains: DomainSet,
    ) -> Controller {
        let controller = Controller {
            feeds,
            wake,
            live,
            listeners,
            internal_domains,
            probes: ProbeCache::default(),
            warned: Mutex::new(HashSet::new()),
        };
        controller.rebuild("start");
        controller
    }

    /// Merges every source's latest snapshot and publishes a new table.
    fn rebuild(&self, why: &str) {
        let started = Instant::now();
        let latest: Vec<_> = self.feeds.iter().map(FeedReader::latest).collect();
        // A source that has not listed yet leaves the table incomplete: the others' routes
        // serve, but readiness waits for it.
        let complete = latest.iter().all(Option::is_some);
        let snapshots: Vec<_> = latest.iter().flatten().map(Arc::as_ref).collect();
        let merged = merge(&snapshots);
        self.log_new_warnings(merged.warnings);
        let table = RouteTable::compile(
            &merged.snapshot,
            &merged.snapshot.defaults.clone().unwrap_or_default(),
            &self.listeners,
            &self.internal_domains,
            &self.live.load_full(),
            &self.probes,
        );
        let services = table.upstreams().len();
        self.live.publish(table, complete);
        tracing::debug!(why, services, elapsed = ?started.elapsed(), "route table published");
    }

    fn log_new_warnings(&self, warnings: Vec<String>) {
        let fresh: HashSet<String> = warnings.into_iter().collect();
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        for warning in fresh.difference(&warned) {
            tracing::warn!("{warning}");
        }
        *warned = fresh;
    }
}

#[async_trait]
impl BackgroundService for Controller {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => self.rebuild("source update"),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::model::{PolicyLayer, Snapshot, SourceKind};
    use crate::sources::channel;
    use crate::table::tests::service;

    fn listener() -> ListenerConfig {
        ListenerConfig::new("main", "127.0.0.1:0".parse().unwrap())
    }

    fn routed(live: &LiveTable, host: &str) -> Option<String> {
        live.load()
            .route(0, host, b"/")
            .map(|u| u.spec.name.clone())
    }

    #[test]
    fn every_source_is_merged_and_readiness_waits_for_all() {
        let metrics = Metrics::new();
        let wake = Arc::new(Notify::new());
        let live = Arc::new(LiveTable::default());
        let file = Snapshot::of(
            vec![service("a", &["a.test"], "/")],
            Some(PolicyLayer {
                retries: Some(4),
                ..PolicyLayer::default()
            }),
        );
        let (_file_feed, file_reader) =
            channel(SourceKind::File, Some(file), wake.clone(), metrics.clone());
        let (docker_feed, docker_reader) =
            channel(SourceKind::Docker, None, wake.clone(), metrics.clone());
        let controller = Controller::start(
            vec![file_reader, docker_reader],
            wake,
            live.clone(),
            vec![listener()],
            DomainSet::default(),
        );
        assert_eq!(routed(&live, "a.test").as_deref(), Some("a"));
        assert!(!live.is_complete(), "docker has not listed");

        let mut b = service("b", &["b.test", "a.test"], "/");
        b.source = SourceKind::Docker;
        docker_feed.publish(Snapshot::of(vec![b], None));
        controller.rebuild("test");
        assert!(live.is_complete());
        assert_eq!(routed(&live, "b.test").as_deref(), Some("b"));
        assert_eq!(routed(&live, "a.test").as_deref(), Some("a"));
        let table = live.load_full();
        let b = table.upstream("b").unwrap();
        assert_eq!(
            b.policy.retries, 4,
            "the file's defaults reach docker services"
        );
    }
}
