//! Active probes: Pingora's `HttpHealthCheck` and `TcpHealthCheck`, configured from a service's
//! health-check spec and shared by every service that probes the same way.
//!
//! Why shared: each Pingora check owns a connector, and building one loads and parses the
//! system CA store (36 ms in a debug build). One per service would make a config of 10,000
//! services take minutes to load. So checks are cached by what they bake in (kind, path, Host,
//! port, timeout); HTTP checks get a connector with an empty CA store (a probe never speaks TLS),
//! which makes a distinct one cheap; TCP checks share the few distinct settings that exist.
//! An upstream fix: constructors that take a shared (`Arc`) connector, or TLS set up lazily.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pingora_core::connectors::http::Connector as HttpConnector;
use pingora_core::connectors::ConnectorOptions;
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;

use crate::model::policy::{BackendProtocol, HealthCheckSpec, ProbeKind};

type Check = dyn HealthCheck + Send + Sync;

/// What a Pingora check is configured with; services that agree on it share one check.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CheckKey {
    kind: ProbeKind,
    /// The request path of HTTP probes; empty for TCP.
    path: String,
    /// The `Host` header of HTTP probes; empty for TCP.
    host: String,
    port: Option<u16>,
    timeout: Duration,
    /// HTTP probes speak HTTP/2 by prior knowledge (to backends that speak nothing else).
    h2c: bool,
}

/// Checks shared across services and across route-table versions; an entry lives as long as
/// an upstream uses it.
#[derive(Default)]
pub struct ProbeCache(Mutex<HashMap<CheckKey, Weak<Check>>>);

impl ProbeCache {
    fn check(&self, key: CheckKey) -> Arc<Check> {
        let mut checks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(check) = checks.get(&key).and_then(Weak::upgrade) {
            return check;
        }
        checks.retain(|_, check| check.strong_count() > 0);
        let check = build_check(&key);
        checks.insert(key, Arc::downgrade(&check));
        check
    }
}

fn build_check(key: &CheckKey) -> Arc<Check> {
    match key.kind {
        ProbeKind::Http => {
            // No TLS, so no CA store: /dev/null is an empty PEM file.
            let mut options = ConnectorOptions::new(1);
            options.ca_file = Some("/dev/null".into());
            let mut http =
                HttpHealthCheck::new_custom(&key.host, false, HttpConnector::new(Some(options)));
            let mut req = RequestHeader::build("GET", key.path.as_bytes(), None)
                .expect("paths are validated");
            req.insert_header("Host", key.host.as_str())
                .expect("hosts are validated");
            req.insert_header("User-Agent", "berth-health-check")
                .expect("static header");
            http.req = req;
            http.peer_template.options.connection_timeout = Some(key.timeout);
            http.peer_template.options.read_timeout = Some(key.timeout);
            http.port_override = key.port;
            if key.h2c {
                http.peer_template.options.set_http_version(2, 2);
            }
            http.validator = Some(Box::new(accept_2xx_3xx));
            Arc::new(http)
        }
        ProbeKind::Tcp | ProbeKind::None => {
            let mut tcp = TcpHealthCheck::default();
            tcp.peer_template.options.connection_timeout = Some(key.timeout);
            Arc::new(tcp)
        }
    }
}

fn accept_2xx_3xx(resp: &ResponseHeader) -> pingora_error::Result<()> {
    if resp.status.is_success() || resp.status.is_redirection() {
        Ok(())
    } else {
        Error::e_explain(
            ErrorType::CustomCode("unhealthy status", resp.status.as_u16()),
            format!("probe answered {}", resp.status),
        )
    }
}

/// A failed probe as operators read it: the innermost cause (`Connection refused (os error
/// 111)`, `probe answered 503 Service Unavailable`), not Pingora's whole chain of contexts.
fn reason(error: &Error) -> String {
    let mut innermost = error;
    while let Some(cause) = innermost.cause.as_deref() {
        let next = cause
            .downcast_ref::<Box<Error>>()
            .map(AsRef::as_ref)
            .or_else(|| cause.downcast_ref::<Error>());
        match next {
            Some(next) => innermost = next,
            None => return cause.to_string(),
        }
    }
    match &innermost.context {
        Some(context) => context.to_string(),
        None => innermost.etype.as_str().to_owned(),
    }
}

/// How one service probes its backends.
pub struct Probe {
    check: Arc<Check>,
    pub spec: HealthCheckSpec,
}

impl Probe {
    /// `None` when the service does not probe (`type: none`). `host` is the `Host` header of
    /// HTTP probes, which speak the service's `protocol` to its backends.
    pub fn new(
        spec: &HealthCheckSpec,
        host: &str,
        protocol: BackendProtocol,
        cache: &ProbeCache,
    ) -> Option<Arc<Probe>> {
        let (path, host) = match spec.kind {
            ProbeKind::None => return None,
            ProbeKind::Http => (spec.path.clone(), host.to_owned()),
            ProbeKind::Tcp => (String::new(), String::new()),
        };
        let check = cache.check(CheckKey {
            kind: spec.kind,
            path,
            host,
            port: spec.port,
            timeout: spec.timeout,
            h2c: spec.kind == ProbeKind::Http && protocol == BackendProtocol::H2c,
        });
        Some(Arc::new(Probe {
            check,
            spec: spec.clone(),
        }))
    }

    /// Probes one backend; `Err` carries a short reason for operators.
    pub async fn run(&self, target: &Backend) -> Result<(), String> {
        let mut target = target.clone();
        if let (ProbeKind::Tcp, Some(port)) = (self.spec.kind, self.spec.port) {
            target.addr.set_port(port);
        }
        match tokio::time::timeout(self.spec.timeout, self.check.check(&target)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(reason(&e)),
            Err(_) => Err(format!("no answer within {:?}", self.spec.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: ProbeKind) -> HealthCheckSpec {
        HealthCheckSpec {
            kind,
            timeout: Duration::from_millis(500),
            ..HealthCheckSpec::default()
        }
    }

    #[test]
    fn services_that_probe_alike_share_one_check() {
        let cache = ProbeCache::default();
        let tcp = spec(ProbeKind::Tcp);
        let a = Probe::new(&tcp, "a.test", BackendProtocol::H1, &cache).unwrap();
        let mut slower = tcp.clone();
        slower.interval = Duration::from_secs(9);
        let b = Probe::new(&slower, "b.test", BackendProtocol::H1, &cache).unwrap();
        assert!(
            Arc::ptr_eq(&a.check, &b.check),
            "interval and host do not matter to TCP"
        );
        let http = HealthCheckSpec {
            path: "/h".into(),
            ..spec(ProbeKind::Http)
        };
        let c = Probe::new(&http, "a.test", BackendProtocol::H1, &cache).unwrap();
        let d = Probe::new(&http, "b.test", BackendProtocol::H1, &cache).unwrap();
        assert!(!Arc::ptr_eq(&c.check, &d.check), "the Host header differs");
        assert!(Probe::new(
            &spec(ProbeKind::None),
            "a.test",
            BackendProtocol::H1,
            &cache
        )
        .is_none());
    }

    #[tokio::test]
    async fn probes_pass_and_fail_against_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let cache = ProbeCache::default();
        let probe = Probe::new(&spec(ProbeKind::Tcp), "", BackendProtocol::H1, &cache).unwrap();
        let backend = |addr: std::net::SocketAddr| Backend::new(&addr.to_string()).unwrap();
        assert!(probe.run(&backend(open)).await.is_ok());
        assert_eq!(
            probe.run(&backend(closed)).await,
            Err("Connection refused (os error 111)".into()),
            "the reason is the root cause, short"
        );
    }
}
