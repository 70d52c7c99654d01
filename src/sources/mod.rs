//! Route sources: each turns something outside berth (the config file, a Docker engine, a
//! Swarm manager) into [`Snapshot`]s, and nothing else. A source knows nothing of the control
//! plane: it runs as a background task and publishes through its [`Feed`]; the control plane
//! reads every feed, in precedence order, when any of them changes.

pub mod docker;
pub mod engine;
pub mod file;
pub mod swarm;

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::{watch, Notify};

use crate::metrics::Metrics;
use crate::model::{Snapshot, SourceKind};

/// A producer of routes.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    fn kind(&self) -> SourceKind;

    /// Runs until `shutdown`, publishing through `feed` whenever what the source says changes.
    /// A source that loses what it watches keeps its last publication serving (it publishes
    /// nothing rather than an empty snapshot) and reports the error.
    async fn run(&self, feed: Feed, shutdown: ShutdownWatch);
}

/// A source's side of its channel to the control plane.
pub struct Feed {
    kind: SourceKind,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

/// The control plane's side: the latest snapshot of one source, `None` until it has listed
/// once (readiness waits for every source).
pub struct FeedReader {
    pub kind: SourceKind,
    rx: watch::Receiver<Option<Arc<Snapshot>>>,
}

/// A channel for one source. `initial` is what the source already says (the file, read before
/// start), so the first route table can include it. `wake` is notified on every publication.
pub fn channel(
    kind: SourceKind,
    initial: Option<Snapshot>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
) -> (Feed, FeedReader) {
    let (tx, rx) = watch::channel(initial.map(Arc::new));
    metrics.discovery_source(kind.as_str());
    (
        Feed {
            kind,
            tx,
            wake,
            metrics,
        },
        FeedReader { kind, rx },
    )
}

impl Feed {
    /// Publishes `snapshot` if it differs from the last publication.
    pub fn publish(&self, snapshot: Snapshot) {
        let changed = self.tx.send_if_modified(|current| {
            let changed = current.as_deref() != Some(&snapshot);
            if changed {
                *current = Some(Arc::new(snapshot));
            }
            changed
        });
        if changed {
            self.wake.notify_one();
        }
    }

    /// Logs an error talking to what the source watches and counts it in
    /// `berth_discovery_errors_total`; the last publication keeps serving.
    pub fn report_error(&self, why: &str) {
        self.metrics.discovery_error(self.kind.as_str());
        tracing::warn!(
            "{}: {why}; the last known routes keep serving",
            self.kind.as_str()
        );
    }

    /// Counts an event received from what the source watches.
    pub fn count_event(&self, kind: &str) {
        self.metrics.discovery_event(self.kind.as_str(), kind);
    }
}

impl FeedReader {
    /// The source's latest snapshot; `None` until it has published once.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.rx.borrow().clone()
    }
}

/// Runs a [`Source`] as one of Pingora's background services.
pub struct SourceService {
    source: Box<dyn Source>,
    feed: std::sync::Mutex<Option<Feed>>,
}

impl SourceService {
    pub fn new(source: Box<dyn Source>, feed: Feed) -> Self {
        Self {
            source,
            feed: std::sync::Mutex::new(Some(feed)),
        }
    }
}

#[async_trait]
impl BackgroundService for SourceService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let feed = self.feed.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(feed) = feed {
            self.source.run(feed, shutdown).await;
        }
    }
}

#[cfg(test)]
mod same_rules;
