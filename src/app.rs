//! Wiring only: builds the Pingora server from a config file (one proxy service per listener,
//! the admin listener, the route sources, the control plane, the probe driver) and runs it.
//!
//! [`App`] is also the seam for tests and embedders: it takes extra route sources and extra
//! services, and a shutdown signal of the caller's choosing, so a scripted source can drive a
//! real berth in-process.

use std::path::PathBuf;
use std::sync::Arc;

use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig as Endpoint};
use pingora_core::protocols::http::v2::server::default_h2_options;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_core::services::ServiceWithDependents;
use tokio::sync::{watch, Notify};

use crate::admin::traffic::{Sampler, Traffic};
use crate::admin::Admin;
use crate::config::Config;
use crate::control::prober::Prober;
use crate::control::Controller;
use crate::metrics::Metrics;
use crate::model::policy::MAX_RETRIES;
use crate::model::Snapshot;
use crate::proxy::forwarding::Scheme;
use crate::proxy::guard::{Guarded, Limits};
use crate::proxy::Proxy;
use crate::runtime::lifecycle::Lifecycle;
use crate::runtime::readiness::Readiness;
use crate::runtime::signals::Signals;
use crate::runtime::systemd::{self, ReadyNotifier};
use crate::sources::docker::DockerSource;
use crate::sources::file::{self, FileSource};
use crate::sources::swarm::SwarmSource;
use crate::sources::{channel, FeedReader, Source, SourceService};
use crate::table::live::LiveTable;
use crate::tls::acme::{AcmeManager, AcmeStatus};
use crate::tls::challenge::Challenges;
use crate::tls::store::{CertMap, CertStore};
use crate::tls::TlsLookup;

/// A berth ready to run: its config loaded and checked, its sources chosen.
pub struct App {
    path: PathBuf,
    config: Config,
    /// The file's services as loaded at start.
    file_snapshot: Snapshot,
    /// The TLS listeners' certificates as loaded at start.
    certificates: Vec<CertMap>,
    /// Sources after the file, Swarm and Docker, lowest precedence last.
    extra_sources: Vec<Box<dyn Source>>,
    extra_services: Vec<Box<dyn ServiceWithDependents>>,
}

/// What every part of a running berth shares.
struct Shared {
    live: Arc<LiveTable>,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// Reload requests, counted (SIGHUP adds one); the file source reads them.
    reload: watch::Sender<u64>,
    /// The last reload request the file source has finished.
    reloaded: watch::Receiver<u64>,
    certificates: Arc<CertStore>,
    /// With an `acme` section: the challenges in flight and each domain's state.
    acme: Option<(Arc<Challenges>, Arc<AcmeStatus>)>,
}

impl App {
    /// Loads the config at `path` with its services; an error is for the operator, one line.
    pub fn load(path: PathBuf) -> Result<App, String> {
        let loaded = file::load(&path).map_err(|e| e.to_string())?;
        Ok(App {
            path,
            config: loaded.config,
            file_snapshot: loaded.snapshot,
            certificates: loaded.certificates,
            extra_sources: Vec::new(),
            extra_services: Vec::new(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Adds a route source, after the config file, Swarm and Docker in precedence.
    pub fn with_source(mut self, source: Box<dyn Source>) -> App {
        self.extra_sources.push(source);
        self
    }

    /// Runs `service` in the same process (the demo's backends).
    pub fn with_service(mut self, service: Box<dyn ServiceWithDependents>) -> App {
        self.extra_services.push(service);
        self
    }

    /// Runs until SIGTERM/SIGQUIT (drain, then exit) or SIGINT (exit now); SIGHUP reloads.
    pub fn run(self) -> Result<(), String> {
        self.run_with(None)
    }

    /// Runs until `signal` says to stop, without berth's signal handling.
    pub fn run_until(self, signal: Box<dyn ShutdownSignalWatch>) -> Result<(), String> {
        self.run_with(Some(signal))
    }

    fn run_with(self, signal: Option<Box<dyn ShutdownSignalWatch>>) -> Result<(), String> {
        check_bindable(&self.config)?;
        let live = Arc::new(LiveTable::default());
        let lifecycle = Arc::new(Lifecycle::default());
        let (reload, _) = watch::channel(0);
        let (reloaded_tx, reloaded) = watch::channel(0);
        let metrics = Metrics::new();
        let shared = Shared {
            readiness: Arc::new(Readiness::new(
                Arc::clone(&live),
                Arc::clone(&lifecycle),
                self.config.listeners.iter().map(|l| l.address).collect(),
            )),
            live,
            lifecycle,
            certificates: CertStore::new(self.certificates, Arc::clone(&metrics)),
            metrics,
            reload,
            reloaded,
            acme: self
                .config
                .acme
                .as_ref()
                .map(|_| (Arc::default(), Arc::default())),
        };
        shared.metrics.config_reload(true);
        if self.config.listeners.iter().any(|l| l.tls.is_some()) {
            shared.metrics.tls_listeners();
        }
        if self.config.server.access_log {
            crate::runtime::access_log::enable();
        }
        let mut server = server(&self.config);
        let config = self.config.clone();
        let grace = config.server.grace_period;
        let extra_services = self.extra_services;
        let sources = sources(
            self.path,
            self.config,
            self.file_snapshot,
            self.extra_sources,
            &shared,
            reloaded_tx,
        );
        let (readers, wake) = add_sources(&mut server, sources, &shared);
        let controller = Controller::start(
            readers,
            wake,
            Arc::clone(&shared.live),
            config.listeners.clone(),
            config.internal_domains.clone(),
        );
        // The first table is built: what loading and compiling it left behind is free.
        crate::runtime::memory::release_freed();
        server.add_service(background_service("control plane", controller));
        server.add_service(background_service(
            "health checks",
            Prober::new(Arc::clone(&shared.live)),
        ));
        if let (Some(acme), Some((challenges, status))) = (&config.acme, &shared.acme) {
            let manager = AcmeManager::new(
                acme.clone(),
                config.listeners.clone(),
                Arc::clone(&shared.live),
                Arc::clone(&shared.certificates),
                Arc::clone(challenges),
                Arc::clone(status),
                Arc::clone(&shared.metrics),
            );
            server.add_service(background_service("acme", manager));
        }
        add_listeners(&mut server, &config, &shared);
        add_admin(&mut server, &config, &shared);
        if systemd::expected() {
            server.add_service(background_service(
                "systemd readiness",
                ReadyNotifier::new(Arc::clone(&shared.readiness), Arc::clone(&shared.live)),
            ));
        }
        for service in extra_services {
            server.add_boxed_service(service);
        }

        tracing::info!(
            listeners = ?config.listeners.iter().map(|l| l.address).collect::<Vec<_>>(),
            admin = ?config.admin.as_ref().map(|a| a.address),
            "berth is starting"
        );
        let shutdown_signal = match signal {
            Some(signal) => signal,
            None => Box::new(Signals::new(
                shared.lifecycle,
                shared.reload,
                shared.reloaded,
                grace,
                server.watch_execution_phase(),
            )),
        };
        server.run(RunArgs { shutdown_signal });
        Ok(())
    }
}

/// Runs each source as a background service; returns the control plane's ends of their feeds
/// (in the sources' order) and the notification every publication wakes.
fn add_sources(
    server: &mut Server,
    sources: Vec<(Box<dyn Source>, Option<Snapshot>)>,
    shared: &Shared,
) -> (Vec<FeedReader>, Arc<Notify>) {
    let wake = Arc::new(Notify::new());
    let mut readers = Vec::with_capacity(sources.len());
    for (source, initial) in sources {
        let kind = source.kind();
        let (feed, reader) = channel(
            kind,
            initial,
            Arc::clone(&wake),
            Arc::clone(&shared.metrics),
        );
        readers.push(reader);
        server.add_service(background_service(
            &format!("{} source", kind.as_str()),
            SourceService::new(source, feed),
        ));
    }
    (readers, wake)
}

/// Every route source in precedence order, each with what it already says: the file first (it
/// wins contested routes), then Swarm, then Docker, then the extra ones. Swarm comes before
/// Docker because its answer is the same on every node: a berth on each node must route a
/// cluster-wide domain alike, and a stray local container claiming it must not take it over on
/// one node only.
fn sources(
    path: PathBuf,
    config: Config,
    file_snapshot: Snapshot,
    extra: Vec<Box<dyn Source>>,
    shared: &Shared,
    reloaded: watch::Sender<u64>,
) -> Vec<(Box<dyn Source>, Option<Snapshot>)> {
    let swarm = config
        .swarm
        .enabled
        .then(|| SwarmSource::new(config.swarm.clone()));
    let docker = config.docker.enabled.then(|| {
        let docker = DockerSource::new(config.docker.clone());
        if config.swarm.enabled {
            docker.without_swarm_tasks()
        } else {
            docker
        }
    });
    let file = FileSource::new(
        path,
        config,
        shared.reload.subscribe(),
        reloaded,
        Arc::clone(&shared.metrics),
        Arc::clone(&shared.certificates),
    );
    let mut sources: Vec<(Box<dyn Source>, Option<Snapshot>)> =
        vec![(Box::new(file), Some(file_snapshot))];
    if let Some(swarm) = swarm {
        sources.push((Box::new(swarm), None));
    }
    if let Some(docker) = docker {
        sources.push((Box::new(docker), None));
    }
    sources.extend(extra.into_iter().map(|source| (source, None)));
    sources
}

fn server(config: &Config) -> Server {
    let conf = ServerConf {
        threads: config.server.worker_threads(),
        // One runtime per thread, connections pinned: work stealing cost 43% more CPU per
        // request in bench/RESULTS.md ("Levers").
        work_stealing: false,
        // ops::signals exits as soon as in-flight requests are done; this is the upper bound.
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool_size,
        max_retries: MAX_RETRIES as usize + 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

/// One service per listener: berth's connection guard in front of Pingora's proxy.
fn add_listeners(server: &mut Server, config: &Config, shared: &Shared) {
    let record = config.admin.as_ref().is_some_and(|a| a.metrics);
    let limits = &config.server;
    // Redirects go to the first TLS listener's port.
    let https_port = config
        .listeners
        .iter()
        .find(|l| l.tls.is_some())
        .map(|l| l.address.port());
    for (index, listener) in config.listeners.iter().enumerate() {
        let metrics = record.then(|| Arc::clone(&shared.metrics));
        let scheme = match listener.tls {
            Some(_) => Scheme::Https,
            None => Scheme::Http,
        };
        let mut proxy = Proxy::new(
            index,
            listener,
            scheme,
            Arc::clone(&shared.live),
            Arc::clone(&shared.lifecycle),
            metrics.clone(),
        );
        if let Some(tls) = &listener.tls {
            proxy = proxy.tls(tls.min_version);
        } else if let Some((challenges, _)) = &shared.acme {
            proxy = proxy.acme_challenges(Arc::clone(challenges));
        }
        if let (true, Some(port)) = (listener.redirect_https, https_port) {
            proxy = proxy.redirect_https(port);
        }
        let mut app = pingora_proxy::http_proxy(&server.configuration, proxy);
        let mut options = HttpServerOptions::default();
        options.h2c = listener.h2c;
        options.h2_idle_timeout = Some(limits.keepalive_timeout).filter(|t| !t.is_zero());
        app.server_options = Some(options);
        // HTTP/2 bounds a request's decoded header list itself; the guard is for HTTP/1.
        let mut h2 = default_h2_options();
        h2.max_header_list_size(limits.max_request_header_size as u32);
        app.h2_options = Some(h2);
        let guarded = Guarded::new(
            app,
            &listener.name,
            Limits {
                max_request_header_size: limits.max_request_header_size as usize,
                request_header_timeout: limits.request_header_timeout,
                keepalive_timeout: limits.keepalive_timeout,
                max_connections: listener.max_connections.unwrap_or(limits.max_connections)
                    as usize,
            },
            metrics,
        );
        let mut service = Service::new(format!("listener {}", listener.name), guarded);
        // Pingora gives every accepted connection a 64 KiB read buffer. Over plain TCP the
        // guard and Pingora's body reader read in large chunks of their own, so that buffer
        // only costs memory: 64 MiB per thousand connections, most of what a slow client
        // holds. (TLS reads in small records, where the buffer saves system calls.)
        let address = listener.address.to_string();
        match &listener.tls {
            Some(tls) => service.add_tls_with_settings(
                &address,
                None,
                crate::tls::listener_settings(tls, &shared.certificates, index),
            ),
            None => {
                let unbuffered_reads = L4BufferSettings::default().read(0);
                service.add_listener(Endpoint::tcp(address).l4_buffer(unbuffered_reads));
            }
        }
        server.add_service(service);
    }
}

fn add_admin(server: &mut Server, config: &Config, shared: &Shared) {
    let Some(admin) = &config.admin else {
        return;
    };
    // Without metrics nothing is counted, so there is no traffic to sample.
    let traffic = admin.metrics.then(|| Arc::new(Traffic::default()));
    if let Some(traffic) = &traffic {
        server.add_service(background_service(
            "traffic sampler",
            Sampler::new(Arc::clone(traffic), Arc::clone(&shared.live)),
        ));
    }
    let mut service = Service::new(
        "admin".to_owned(),
        Admin::new(
            Arc::clone(&shared.live),
            Arc::clone(&shared.readiness),
            admin.metrics.then(|| Arc::clone(&shared.metrics)),
            admin,
            traffic,
            TlsLookup::new(
                config.listeners.clone(),
                Arc::clone(&shared.certificates),
                shared.acme.as_ref().map(|(_, status)| Arc::clone(status)),
            ),
            config.listeners.clone(),
        ),
    );
    service.add_tcp(&admin.address.to_string());
    service.threads = Some(1);
    server.add_service(service);
}

/// Pingora panics in a worker thread (and keeps running without the listener) when it cannot
/// bind, so try every address first and fail with a message that names it.
fn check_bindable(config: &Config) -> Result<(), String> {
    let listeners = config
        .listeners
        .iter()
        .map(|l| (format!("listener {:?}", l.name), l.address));
    let admin = config
        .admin
        .iter()
        .map(|a| ("admin listener".to_owned(), a.address));
    for (what, address) in listeners.chain(admin) {
        std::net::TcpListener::bind(address)
            .map_err(|e| format!("cannot listen on {address} ({what}): {e}"))?;
    }
    Ok(())
}
