//! Talking to a Docker engine, for every source that watches one: connecting with API version
//! negotiation, calls with a deadline, the events stream, and a session loop that keeps the
//! last routes serving and reconnects with backoff when the engine goes away.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::Stream;
use pingora_core::server::ShutdownWatch;

use super::Feed;

/// Longest wait for one list or inspect call; the events stream itself has no deadline.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Connects to `endpoint`, `DOCKER_HOST`, or the local socket, and agrees on an API version
/// with the engine (Debian's engine speaks 1.41, older than bollard's default).
pub async fn connect(endpoint: Option<&str>) -> Result<Docker, String> {
    let host = endpoint
        .map(str::to_owned)
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    // The events stream lives for hours: bollard's per-request timeout must not end it.
    let timeout = 365 * 24 * 3600;
    let docker = if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(&host, timeout, API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_unix(&host, timeout, API_DEFAULT_VERSION)
    }
    .map_err(|e| format!("cannot connect to {host}: {e}"))?;
    match tokio::time::timeout(CALL_TIMEOUT, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(format!("cannot reach the engine at {host}: {e}")),
        Err(_) => Err(format!("the engine at {host} did not answer")),
    }
}

/// One engine call with [`CALL_TIMEOUT`].
pub async fn call<T>(
    request: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

/// The engine's events of these object types, from a second before now on, so that a list
/// made right after subscribing misses nothing.
pub fn events(
    docker: &Docker,
    types: &[&str],
) -> impl Stream<Item = Result<EventMessage, bollard::errors::Error>> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .saturating_sub(1);
    let filters: HashMap<String, Vec<String>> = [(
        "type".to_string(),
        types.iter().map(|t| t.to_string()).collect(),
    )]
    .into();
    docker.events(Some(EventsOptions {
        since: Some(since.to_string()),
        filters: Some(filters),
        ..Default::default()
    }))
}

/// Why a session with the engine ended.
pub enum Ended {
    Shutdown,
    Lost(String),
}

/// One connection's worth of watching an engine.
#[async_trait]
pub trait EngineSession: Sync {
    /// Connects, lists, publishes, then follows events until the engine is lost or berth
    /// stops. Sets `listed` once it has published a full list (the backoff starts over then).
    async fn session(&self, feed: &Feed, shutdown: &mut ShutdownWatch, listed: &mut bool) -> Ended;
}

/// Runs sessions until shutdown: when one is lost, the last routes keep serving while this
/// reconnects with backoff (250 ms doubling to 10 s, reset by every session that listed).
pub async fn keep_connected(source: &impl EngineSession, feed: &Feed, mut shutdown: ShutdownWatch) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut listed = false;
        match source.session(feed, &mut shutdown, &mut listed).await {
            Ended::Shutdown => return,
            Ended::Lost(why) => {
                if listed {
                    backoff = FIRST_BACKOFF;
                }
                feed.report_error(&format!("{why}; reconnecting in {backoff:?}"));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
