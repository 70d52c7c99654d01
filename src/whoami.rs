//! `berth whoami`: a tiny backend for demos and tests, in the spirit of traefik/whoami. It
//! answers every request with what it saw, so a client can tell which backend served it and
//! which headers the proxy added.
//!
//! Query parameters shape the answer: `?wait=200ms` delays it, `?status=503` sets its status.
//! `--delay` and `--status` do the same for every request but `/health`: a backend that is
//! slow or broken while its health endpoint still passes, as real ones often are.

use std::fmt::Write;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

pub struct Whoami {
    name: String,
    delay: Duration,
    status: StatusCode,
}

impl Whoami {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            delay: Duration::ZERO,
            status: StatusCode::OK,
        }
    }

    /// Answers every request but `/health` after `delay`.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answers every request but `/health` with `status`.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

/// The value of `key` in a query string.
fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

#[async_trait]
impl ServeHttp for Whoami {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body_len = 0;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            body_len += chunk.len();
        }
        let req = session.req_header();
        let query = req.uri.query();
        let health = req.uri.path() == "/health";
        let wait = query_param(query, "wait")
            .and_then(|w| humantime::parse_duration(w).ok())
            .unwrap_or(if health { Duration::ZERO } else { self.delay });
        if !wait.is_zero() {
            tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
        }
        let status = query_param(query, "status")
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(if health { StatusCode::OK } else { self.status });

        let body = if health {
            "ok\n".to_owned()
        } else {
            let mut out = String::with_capacity(512);
            let _ = writeln!(out, "Name: {}", self.name);
            if let Some(peer) = session.client_addr() {
                let _ = writeln!(out, "RemoteAddr: {peer}");
            }
            let _ = writeln!(out, "{} {} {:?}", req.method, req.uri, req.version);
            for (name, value) in req.headers.iter() {
                let _ = writeln!(
                    out,
                    "{}: {}",
                    name,
                    String::from_utf8_lossy(value.as_bytes())
                );
            }
            if body_len > 0 {
                let _ = writeln!(out, "Body-Length: {body_len}");
            }
            out
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(http::header::CONTENT_LENGTH, body.len())
            .header("x-whoami-name", self.name.as_str())
            .body(body.into_bytes())
            .expect("whoami names are valid header values")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&wait=2s"), "wait"), Some("2s"));
        assert_eq!(query_param(Some("wait"), "wait"), None);
        assert_eq!(query_param(None, "wait"), None);
    }
}
