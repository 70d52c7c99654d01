//! systemd's service notifications, for `Type=notify` (`conf/systemd/berth.service`):
//! `READY=1` once berth can take traffic ([`ReadyNotifier`]), `RELOADING=1` then `READY=1`
//! around a SIGHUP reload, `STOPPING=1` when asked to stop (both from
//! [`super::signals`]). Each is one datagram to `$NOTIFY_SOCKET`; outside systemd that variable
//! is unset and nothing is sent.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use sd_notify::NotifyState;

use super::readiness::Readiness;
use crate::table::live::LiveTable;

/// Whether a service manager listens: only then is [`ReadyNotifier`] worth running.
pub fn expected() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends `states`; a failure is logged, never fatal (berth serves either way).
pub fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("could not notify systemd ($NOTIFY_SOCKET): {e}");
    }
}

/// `RELOADING=1` with the time systemd wants alongside it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Waits until berth is ready (as `/readyz` says), then sends `READY=1` once.
pub struct ReadyNotifier {
    readiness: Arc<Readiness>,
    live: Arc<LiveTable>,
}

impl ReadyNotifier {
    pub fn new(readiness: Arc<Readiness>, live: Arc<LiveTable>) -> Self {
        Self { readiness, live }
    }
}

#[async_trait]
impl BackgroundService for ReadyNotifier {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut told = String::new();
        loop {
            match self.readiness.check().await {
                Ok(()) => {
                    let services = self.live.load().upstreams().len();
                    notify(&[
                        NotifyState::Ready,
                        NotifyState::Status(&format!("serving {services} services")),
                    ]);
                    tracing::info!("told systemd berth is ready");
                    return;
                }
                Err(why) if why != told => {
                    notify(&[NotifyState::Status(&format!("starting: {why}"))]);
                    told = why;
                }
                Err(_) => {}
            }
            // A new table or a listener coming up are what change the answer.
            tokio::select! {
                _ = self.live.changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
