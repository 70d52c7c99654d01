//! The control plane: watches the sources (config file, Docker), merges their snapshots,
//! compiles a route table and publishes it.
//!
//! A config that fails to load is refused as a whole: the error is logged and counted, and the
//! table that was serving keeps serving.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::{watch, Mutex, Notify};

use crate::config::{Config, PolicyLayer};
use crate::merge::merge;
use crate::model::Snapshot;
use crate::router::RouteTable;
use crate::state::Shared;

/// What the discovery sources currently say; `None` until a source has listed once.
pub type Discovered = watch::Receiver<Option<Arc<Snapshot>>>;

pub struct Controller {
    shared: Arc<Shared>,
    path: PathBuf,
    reload: Arc<Notify>,
    discovered: Option<Discovered>,
    /// Tells discovery sources the file's service defaults after a reload.
    defaults: watch::Sender<PolicyLayer>,
    state: Mutex<ControlState>,
}

struct ControlState {
    /// The config that is serving (listener and process settings never change after start).
    config: Config,
    /// The file text last seen (valid or not), so one bad edit is reported once.
    file_text: Option<Vec<u8>>,
    /// Merge warnings already logged, so a discovery event does not repeat them.
    warned: HashSet<String>,
}

impl Controller {
    /// Builds the controller and publishes the first table from `config`.
    pub fn start(
        shared: Arc<Shared>,
        path: PathBuf,
        config: Config,
        reload: Arc<Notify>,
        discovered: Option<Discovered>,
        defaults: watch::Sender<PolicyLayer>,
    ) -> Controller {
        let file_text = std::fs::read(&path).ok();
        let controller = Controller {
            shared,
            path,
            reload,
            discovered,
            defaults,
            state: Mutex::new(ControlState {
                config,
                file_text,
                warned: HashSet::new(),
            }),
        };
        let mut state = controller.state.try_lock().expect("new mutex is free");
        controller.rebuild(&mut state, "start");
        controller.shared.metrics.config_reload(true);
        drop(state);
        controller
    }

    /// Merges file and discovered services and publishes a new table.
    fn rebuild(&self, state: &mut ControlState, why: &str) {
        let started = Instant::now();
        // A discovery source that has not listed yet leaves the table incomplete: the file's
        // routes serve, but readiness waits for the source.
        let discovered = match &self.discovered {
            Some(rx) => rx.borrow().clone(),
            None => Some(Arc::new(Snapshot::default())),
        };
        let complete = discovered.is_some();
        let discovered = discovered.unwrap_or_default();
        let merged = merge(&state.config.snapshot, &discovered);
        let fresh: HashSet<String> = merged.warnings.into_iter().collect();
        for warning in fresh.difference(&state.warned) {
            tracing::warn!("{warning}");
        }
        state.warned = fresh;
        let old = self.shared.table();
        let table = RouteTable::compile(
            &merged.snapshot,
            &state.config.listeners,
            &old,
            &self.shared.metrics,
            &self.shared.probes,
        );
        let services = table.upstreams().len();
        self.shared.publish(table, complete);
        tracing::debug!(why, services, elapsed = ?started.elapsed(), "route table published");
    }

    /// Re-reads the config file; `force` reloads even if the text did not change (SIGHUP).
    fn reload_file(&self, state: &mut ControlState, force: bool) {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) => {
                if force {
                    tracing::error!(path = %self.path.display(), "config reload refused: {e}");
                    self.shared.metrics.config_reload(false);
                }
                return;
            }
        };
        if !force && state.file_text.as_ref() == Some(&text) {
            return;
        }
        state.file_text = Some(text.clone());
        let parsed = std::str::from_utf8(&text)
            .map_err(|e| format!("{}: not UTF-8: {e}", self.path.display()))
            .and_then(|text| Config::parse(text, &self.path).map_err(|e| e.to_string()));
        let config = match parsed {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("config reload refused, the previous config keeps serving: {e}");
                self.shared.metrics.config_reload(false);
                return;
            }
        };
        if let Some(part) = state.config.restart_needed_for(&config) {
            tracing::warn!(
                "config reload: the `{part}` section changed; it takes effect at the next restart"
            );
        }
        // Keep what is bound at start; take the services and defaults.
        state.config.snapshot = config.snapshot;
        self.defaults.send_if_modified(|current| {
            let changed = *current != config.defaults;
            *current = config.defaults.clone();
            changed
        });
        state.config.defaults = config.defaults;
        self.rebuild(state, "config reload");
        self.shared.metrics.config_reload(true);
        tracing::info!(path = %self.path.display(), "config reloaded");
    }
}

#[async_trait]
impl BackgroundService for Controller {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let watch_interval = self.state.lock().await.config.server.watch_interval;
        let mut poll = (!watch_interval.is_zero()).then(|| {
            let mut interval = tokio::time::interval(watch_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        let mut discovered = self.discovered.clone();
        loop {
            tokio::select! {
                _ = self.reload.notified() => {
                    let mut state = self.state.lock().await;
                    self.reload_file(&mut state, true);
                }
                _ = tick(&mut poll) => {
                    let mut state = self.state.lock().await;
                    self.reload_file(&mut state, false);
                }
                changed = changed(&mut discovered) => {
                    if changed.is_err() {
                        discovered = None;
                        continue;
                    }
                    let mut state = self.state.lock().await;
                    self.rebuild(&mut state, "discovery");
                }
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

async fn changed(rx: &mut Option<Discovered>) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}
