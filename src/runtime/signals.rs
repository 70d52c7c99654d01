//! Process signals: SIGHUP reloads, SIGTERM drains and exits. systemd hears of both
//! ([`super::systemd`]): `RELOADING=1` on SIGHUP and `READY=1` once the file source has re-read
//! the file, `STOPPING=1` when a stop begins.
//!
//! Pingora's graceful shutdown stops the listeners and then sleeps for the *whole* grace period
//! before exiting, even when nothing is in flight, so every `docker stop` would take the full
//! 10 s (and one more second would get berth SIGKILLed). berth counts in-flight requests and
//! exits as soon as the last one finishes, or when the grace period ends. An upstream fix would
//! end Pingora's grace period when all sessions have finished.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, watch};

use super::lifecycle::Lifecycle;
use super::systemd;

/// A bound on waiting for a reload to finish before telling systemd berth is ready again: the
/// old config keeps serving meanwhile, so berth is ready either way.
const RELOAD_WAIT: Duration = Duration::from_secs(30);

/// Pingora's shutdown signal watch, with berth's reload and drain behaviour.
pub struct Signals {
    lifecycle: Arc<Lifecycle>,
    /// Reload requests, counted: SIGHUP adds one; the file source re-reads the file.
    reload: watch::Sender<u64>,
    /// The last request the file source has finished (applied or refused).
    reloaded: watch::Receiver<u64>,
    grace: Duration,
    phases: std::sync::Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl Signals {
    pub fn new(
        lifecycle: Arc<Lifecycle>,
        reload: watch::Sender<u64>,
        reloaded: watch::Receiver<u64>,
        grace: Duration,
        phases: broadcast::Receiver<ExecutionPhase>,
    ) -> Self {
        Self {
            lifecycle,
            reload,
            reloaded,
            grace,
            phases: std::sync::Mutex::new(Some(phases)),
        }
    }

    /// Asks the file source to reload, and tells systemd when it has.
    fn reload(&self) {
        systemd::reloading();
        self.reload.send_modify(|requests| *requests += 1);
        let request = *self.reload.borrow();
        let mut reloaded = self.reloaded.clone();
        tokio::spawn(async move {
            let done = reloaded.wait_for(|done| *done >= request);
            let status = match tokio::time::timeout(RELOAD_WAIT, done).await {
                Ok(Ok(_)) => "config re-read",
                _ => "config reload did not finish; the previous config serves",
            };
            systemd::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
        });
    }

    /// Exits the process once Pingora has stopped accepting and no request is in flight.
    fn exit_when_drained(&self) {
        systemd::notify(&[NotifyState::Stopping]);
        self.lifecycle.begin_shutdown();
        let lifecycle = Arc::clone(&self.lifecycle);
        let deadline = Instant::now() + self.grace;
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner()).take();
        std::thread::spawn(move || {
            if let Some(mut phases) = phases {
                // Pingora has broadcast the shutdown to its listeners once it reports this phase.
                while !matches!(
                    phases.blocking_recv(),
                    Ok(ExecutionPhase::GracefulTerminate)
                        | Err(broadcast::error::RecvError::Closed)
                ) {}
            }
            // Let each accept loop observe the shutdown before trusting a zero count.
            std::thread::sleep(Duration::from_millis(50));
            while lifecycle.inflight() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let left = lifecycle.inflight();
            if left > 0 {
                tracing::warn!("grace period over with {left} requests in flight; exiting");
            } else {
                tracing::info!("all requests finished; exiting");
            }
            super::access_log::flush();
            std::process::exit(0);
        });
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut hangup = signal(SignalKind::hangup()).expect("install SIGHUP handler");
        let mut terminate = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        let mut quit = signal(SignalKind::quit()).expect("install SIGQUIT handler");
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    self.reload();
                }
                _ = terminate.recv() => {
                    tracing::info!(grace = ?self.grace, "SIGTERM: draining in-flight requests");
                    self.exit_when_drained();
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = quit.recv() => {
                    tracing::info!(grace = ?self.grace, "SIGQUIT: draining in-flight requests");
                    self.exit_when_drained();
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT: exiting now");
                    systemd::notify(&[NotifyState::Stopping]);
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}
