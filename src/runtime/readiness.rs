//! Whether berth can take traffic: `/readyz` answers with it, and systemd is told `READY=1`
//! by it ([`super::systemd`]), so both mean the same thing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::lifecycle::Lifecycle;
use crate::table::live::LiveTable;

pub struct Readiness {
    live: Arc<LiveTable>,
    lifecycle: Arc<Lifecycle>,
    /// The proxy listeners' addresses.
    listeners: Vec<SocketAddr>,
}

impl Readiness {
    pub fn new(
        live: Arc<LiveTable>,
        lifecycle: Arc<Lifecycle>,
        listeners: Vec<SocketAddr>,
    ) -> Self {
        Self {
            live,
            lifecycle,
            listeners,
        }
    }

    /// Ready when every source's routes are loaded, berth is not shutting down, and every
    /// listener accepts (Pingora binds each on its own thread: one bound says nothing of the
    /// next); otherwise why not.
    pub async fn check(&self) -> Result<(), String> {
        if self.lifecycle.is_shutting_down() {
            return Err("shutting down".into());
        }
        if !self.live.is_complete() {
            return Err("routes are not loaded yet".into());
        }
        for listener in &self.listeners {
            if !accepts(*listener).await {
                return Err(format!(
                    "the listener on {listener} does not accept connections yet"
                ));
            }
        }
        Ok(())
    }
}

/// Connects to our own listener: the only proof that Pingora bound it.
async fn accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(crate::config::reachable(addr))
        )
        .await,
        Ok(Ok(_))
    )
}
