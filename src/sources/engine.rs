//! Talking to a Docker engine, for every source that watches one: connecting with API version
//! negotiation (to one engine, or to the first of several that answers), calls with a
//! deadline, plain JSON GETs for what bollard's models leave out, the events stream, and a
//! session loop that keeps the last routes serving and reconnects with backoff when the
//! engine goes away.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::Stream;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;
use pingora_core::server::ShutdownWatch;
use serde::de::DeserializeOwned;

use super::Feed;

/// Longest wait for one list or inspect call; the events stream itself has no deadline.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The endpoint to talk to: the configured one, else `DOCKER_HOST`, else the local socket.
fn endpoint_or_default(endpoint: Option<&str>) -> String {
    endpoint
        .map(str::to_owned)
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

fn is_tcp(host: &str) -> bool {
    host.starts_with("tcp://") || host.starts_with("http://")
}

/// Connects to `endpoint` (else `DOCKER_HOST`, else the local socket) and agrees on an API
/// version with the engine (Debian's engine speaks 1.41, older than bollard's default) within
/// `limit`.
pub async fn connect(endpoint: Option<&str>, limit: Duration) -> Result<Docker, String> {
    let host = endpoint_or_default(endpoint);
    // The events stream lives for hours: bollard's per-request timeout must not end it.
    let timeout = 365 * 24 * 3600;
    let docker = if is_tcp(&host) {
        Docker::connect_with_http(&host, timeout, API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_unix(&host, timeout, API_DEFAULT_VERSION)
    }
    .map_err(|e| format!("cannot connect to {host}: {e}"))?;
    match tokio::time::timeout(limit, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(format!("cannot reach the engine at {host}: {e}")),
        Err(_) => Err(format!("the engine at {host} did not answer")),
    }
}

/// Engines that answer for the same thing (a Swarm's managers), tried in turn: a session that
/// loses one starts with the next, so an engine that hangs or has lost its quorum cannot hold
/// berth while another one answers.
pub struct Endpoints {
    hosts: Vec<String>,
    /// Where the next connection attempt starts.
    next: AtomicUsize,
}

/// A connection made through [`Endpoints::connect`].
pub struct Connected {
    pub docker: Docker,
    pub raw: RawGet,
    pub host: String,
    index: usize,
}

impl Endpoints {
    /// `hosts` in order of preference; none means `DOCKER_HOST`, else the local socket.
    pub fn new(hosts: &[String]) -> Endpoints {
        let hosts = if hosts.is_empty() {
            vec![endpoint_or_default(None)]
        } else {
            hosts.to_vec()
        };
        Endpoints {
            hosts,
            next: AtomicUsize::new(0),
        }
    }

    /// Connects to the first engine, from where the last lost one left off, that answers
    /// within `limit` and that `accept` takes; the errors of all of them otherwise.
    pub async fn connect(
        &self,
        limit: Duration,
        accept: impl AsyncFn(&RawGet) -> Result<(), String>,
    ) -> Result<Connected, String> {
        let start = self.next.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for step in 0..self.hosts.len() {
            let index = (start + step) % self.hosts.len();
            let host = &self.hosts[index];
            let attempt = async {
                let docker = connect(Some(host), limit).await?;
                let raw = RawGet::new(host, &docker);
                accept(&raw).await?;
                Ok::<_, String>(Connected {
                    docker,
                    raw,
                    host: host.clone(),
                    index,
                })
            };
            match attempt.await {
                Ok(connected) => return Ok(connected),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.join("; "))
    }

    /// The session on `connected` was lost: the next attempt starts with the engine after it.
    pub fn lost(&self, connected: &Connected) {
        self.next
            .store((connected.index + 1) % self.hosts.len(), Ordering::Relaxed);
    }
}

/// Plain JSON GETs on the engine a [`Docker`] talks to, in its negotiated API version, into
/// berth's own models: for what bollard's models leave out (bollard 0.21's `Task` has no
/// `NetworksAttachments`, a Swarm task's addresses).
pub struct RawGet {
    transport: Transport,
    version: String,
}

enum Transport {
    Unix(Client<UnixConnector, Empty<Bytes>>, String),
    Tcp(Client<HttpConnector, Empty<Bytes>>, String),
}

impl RawGet {
    pub fn new(host: &str, docker: &Docker) -> RawGet {
        let version = docker.client_version();
        let version = format!("/v{}.{}", version.major_version, version.minor_version);
        let transport = if is_tcp(host) {
            let base = host.replacen("tcp://", "http://", 1);
            let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
            Transport::Tcp(client, base.trim_end_matches('/').to_owned())
        } else {
            let socket = host.strip_prefix("unix://").unwrap_or(host).to_owned();
            let client = Client::builder(TokioExecutor::new()).build(UnixConnector);
            Transport::Unix(client, socket)
        };
        RawGet { transport, version }
    }

    /// `GET path_and_query` (e.g. `/tasks?filters=...`) parsed as `T`, within `limit`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        limit: Duration,
    ) -> Result<T, String> {
        let path = format!("{}{path_and_query}", self.version);
        let what = path_and_query.split('?').next().unwrap_or_default();
        let request = async {
            let response = match &self.transport {
                Transport::Unix(client, socket) => {
                    client.get(hyperlocal::Uri::new(socket, &path).into()).await
                }
                Transport::Tcp(client, base) => {
                    let uri = format!("{base}{path}")
                        .parse()
                        .map_err(|e| format!("bad URI {base}{path}: {e}"))?;
                    client.get(uri).await
                }
            }
            .map_err(|e| format!("GET {what}: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("GET {what}: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("GET {what}: {status}: {}", engine_message(&body)));
            }
            serde_json::from_slice(&body).map_err(|e| format!("GET {what}: {e}"))
        };
        match tokio::time::timeout(limit, request).await {
            Ok(result) => result,
            Err(_) => Err(format!("GET {what}: no answer within {limit:?}")),
        }
    }
}

/// The `message` of an engine's error body, else the body as text.
fn engine_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Error {
        message: String,
    }
    serde_json::from_slice::<Error>(body)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_owned())
}

/// `filters=<JSON>` for a list call, percent-encoded: `[("desired-state", &["running"])]`.
pub fn filters(pairs: &[(&str, &[&str])]) -> String {
    let map: BTreeMap<&str, &[&str]> = pairs.iter().copied().collect();
    let json = serde_json::to_string(&map).expect("string maps serialize");
    let mut query = String::from("filters=");
    for byte in json.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            query.push(byte as char);
        } else {
            query.push_str(&format!("%{byte:02X}"));
        }
    }
    query
}

/// One engine call with [`CALL_TIMEOUT`].
pub async fn call<T>(
    request: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, String> {
    call_within(CALL_TIMEOUT, request).await
}

/// One engine call with a deadline of `limit`.
pub async fn call_within<T>(
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_json_percent_encoded() {
        assert_eq!(
            filters(&[("desired-state", &["running"])]),
            "filters=%7B%22desired-state%22%3A%5B%22running%22%5D%7D"
        );
    }

    #[test]
    fn engine_errors_are_read_from_their_json() {
        assert_eq!(
            engine_message(br#"{"message":"This node is not a swarm manager."}"#),
            "This node is not a swarm manager."
        );
        assert_eq!(engine_message(b"plain text\n"), "plain text");
    }
}
