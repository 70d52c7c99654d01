//! The floor: the least a Pingora proxy does for a request, as the benchmark's reference for
//! what Pingora itself costs.
//!
//! berth is a Pingora application, so its CPU time per request is Pingora's plus berth's own.
//! `bench/run.sh` measures this program next to berth, nginx and HAProxy; berth's figure
//! divided by (or minus) the floor's is then berth's own overhead as one number, the part
//! berth can change without changing Pingora.
//!
//! It therefore does only what no Pingora proxy can skip, set up as berth sets Pingora up:
//! built with berth's release profile and global allocator (mimalloc), one worker thread
//! with `work_stealing: false`, an upstream keep-alive pool (berth's default size unless
//! `--pool` says otherwise), Pingora's default HTTP modules dropped. Per request it looks
//! the `Host` header (`:authority` over HTTP/2) up in a map, exactly as sent, and answers
//! 404 for an unknown host; otherwise it picks a backend with a
//! `LoadBalancer<RoundRobin>` and proxies over HTTP/1.1. It has no health checks, metrics,
//! forwarding headers, retries across backends, timeouts or logging: whatever berth spends
//! on those is berth's overhead. With `--tls-cert` and `--tls-key` its listener terminates
//! TLS the plainest way Pingora offers (one certificate, `TlsSettings::intermediate`, h2 and
//! http/1.1 by ALPN), where berth chooses certificates by SNI.
//!
//! Two switches add what any production Pingora proxy needs and berth asks of Pingora the
//! same way, so the benchmark can say how much of berth's distance to the floor is Pingora's
//! price for it: `--peer-timeouts` sets berth's default connect, read and idle timeouts on
//! every peer (Pingora then times each upstream read), and `--forwarded-headers` sets
//! `X-Forwarded-For`, `-Proto` and `-Host` with `RequestHeader::insert_header`.
//!
//! ```text
//! cargo run --release --example pingora_floor -- \
//!     --listen 127.0.0.1:8080 --route example.test=127.0.0.1:9001,127.0.0.1:9002
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use http::header;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::modules::http::HttpModules;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::RequestHeader;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, LoadBalancer};
use pingora_proxy::{ProxyHttp, ProxyServiceBuilder, Session};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How many backends `LoadBalancer::select` may look at before giving up.
const MAX_SELECT_ITERATIONS: usize = 256;

#[derive(Parser)]
#[command(about = "The minimal Pingora proxy berth is benchmarked against")]
struct Args {
    /// Address to accept connections on.
    #[arg(long)]
    listen: SocketAddr,
    /// A host and its backends, round robin: `host=ip:port,ip:port`. Repeatable.
    #[arg(long = "route", required = true, value_parser = parse_route)]
    routes: Vec<(String, Vec<SocketAddr>)>,
    /// Idle upstream connections kept for reuse (berth's default is 128).
    #[arg(long, default_value_t = 128)]
    pool: usize,
    /// Also accept HTTP/2 without TLS (prior knowledge) on the listener.
    #[arg(long, conflicts_with = "tls_cert")]
    h2c: bool,
    /// Terminate TLS with this PEM certificate chain (and `--tls-key`).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<String>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<String>,
    /// Give every peer berth's default timeouts: connect 2 s, read 60 s, idle 60 s.
    #[arg(long)]
    peer_timeouts: bool,
    /// Set X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host on the upstream request.
    #[arg(long)]
    forwarded_headers: bool,
}

fn parse_route(route: &str) -> Result<(String, Vec<SocketAddr>), String> {
    let (host, backends) = route
        .split_once('=')
        .ok_or_else(|| format!("{route:?} is not host=ip:port[,ip:port...]"))?;
    let backends = backends
        .split(',')
        .map(|b| b.parse().map_err(|e| format!("backend {b:?}: {e}")))
        .collect::<Result<Vec<SocketAddr>, String>>()?;
    Ok((host.to_owned(), backends))
}

struct Floor {
    routes: HashMap<String, LoadBalancer<RoundRobin>>,
    peer_timeouts: bool,
    forwarded_headers: bool,
}

#[async_trait]
impl ProxyHttp for Floor {
    /// The backend `request_filter` picked.
    type CTX = Option<Backend>;

    fn new_ctx(&self) -> Option<Backend> {
        None
    }

    /// No compression or other module: berth drops Pingora's defaults as well.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Option<Backend>,
    ) -> Result<bool> {
        let req = session.req_header();
        let host = req
            .uri
            .host()
            .or_else(|| req.headers.get(header::HOST)?.to_str().ok());
        *ctx = host
            .and_then(|host| self.routes.get(host))
            .and_then(|lb| lb.select(b"", MAX_SELECT_ITERATIONS));
        if ctx.is_some() {
            return Ok(false);
        }
        session.respond_error(404).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Option<Backend>,
    ) -> Result<Box<HttpPeer>> {
        let backend = ctx
            .as_ref()
            .expect("request_filter answers every request it picks no backend for");
        let mut peer = HttpPeer::new(&backend.addr, false, String::new());
        if self.peer_timeouts {
            peer.options.connection_timeout = Some(Duration::from_secs(2));
            peer.options.read_timeout = Some(Duration::from_secs(60));
            peer.options.idle_timeout = Some(Duration::from_secs(60));
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut Option<Backend>,
    ) -> Result<()> {
        if !self.forwarded_headers {
            return Ok(());
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string());
        if let Some(client) = client {
            upstream_request.insert_header("x-forwarded-for", client)?;
        }
        upstream_request.insert_header("x-forwarded-proto", "http")?;
        if let Some(host) = session.req_header().headers.get(header::HOST).cloned() {
            upstream_request.insert_header("x-forwarded-host", host)?;
        }
        Ok(())
    }
}

fn main() {
    let args = Args::parse();
    let routes = args
        .routes
        .into_iter()
        .map(|(host, backends)| {
            let lb = LoadBalancer::try_from_iter(backends).expect("socket addresses resolve");
            (host, lb)
        })
        .collect();
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        upstream_keepalive_pool_size: args.pool,
        // The benchmark stops it with SIGTERM between scenarios.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut options = HttpServerOptions::default();
    options.h2c = args.h2c;
    let floor = Floor {
        routes,
        peer_timeouts: args.peer_timeouts,
        forwarded_headers: args.forwarded_headers,
    };
    let mut service = ProxyServiceBuilder::new(&server.configuration, floor)
        .name("pingora floor")
        .server_options(options)
        .build();
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let mut tls = TlsSettings::intermediate(cert, key).expect("TLS settings");
            tls.enable_h2();
            service.add_tls_with_settings(&args.listen.to_string(), None, tls);
        }
        _ => service.add_tcp(&args.listen.to_string()),
    }
    server.add_service(service);
    server.run(Default::default());
}
