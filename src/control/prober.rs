//! The probe driver: probes every backend of every upstream in the live route table when its
//! interval is due, with at most [`MAX_CONCURRENT_PROBES`] at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::Semaphore;

use crate::health::state::STARTING_INTERVAL;
use crate::table::live::LiveTable;

/// More concurrent probes than this wait their turn: a table of 30,000 backends must not open
/// 30,000 sockets at once.
const MAX_CONCURRENT_PROBES: usize = 512;

/// The driver re-reads the table at least this often.
const MAX_IDLE: Duration = Duration::from_secs(1);

pub struct Prober {
    live: Arc<LiveTable>,
}

impl Prober {
    pub fn new(live: Arc<LiveTable>) -> Self {
        Self { live }
    }
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
        loop {
            // Registered before the scan so a table published during it still wakes us.
            let table_changed = self.live.changed.notified();
            let now = Instant::now();
            let mut wake = now + MAX_IDLE;
            let table = self.live.load_full();
            for upstream in table.upstreams() {
                let Some(probe) = upstream.probe() else {
                    continue;
                };
                for member in upstream.members() {
                    match member.health.claim_if_due(now) {
                        Err(due) => wake = wake.min(due),
                        Ok(()) => {
                            // Look again when this probe's successor is due at the earliest.
                            wake = wake.min(now + probe.spec.interval.min(STARTING_INTERVAL));
                            let probe = Arc::clone(probe);
                            let member = Arc::clone(member);
                            let permits = Arc::clone(&permits);
                            tokio::spawn(async move {
                                let _permit = permits.acquire_owned().await;
                                let started = Instant::now();
                                let result = probe.run(&member.backend()).await;
                                member.apply_probe(result, started.elapsed(), &probe.spec);
                            });
                        }
                    }
                }
            }
            drop(table);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = table_changed => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
