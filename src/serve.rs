//! `berth serve`: assembles the Pingora server (one proxy service per listener, the admin
//! listener, the health driver, the control plane) and runs it until a signal ends it.

use std::path::PathBuf;
use std::sync::Arc;

use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_core::services::ServiceWithDependents;
use pingora_proxy::ProxyServiceBuilder;
use tokio::sync::{watch, Notify};

use crate::admin::Admin;
use crate::config::{Config, MAX_RETRIES};
use crate::controller::Controller;
use crate::docker::DockerSource;
use crate::health::HealthDriver;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::signals::Signals;
use crate::state::Shared;

/// Runs berth with the config at `path`, plus `extra` services in the same process (the demo's
/// backends). Returns when berth has shut down; errors are for the operator, one line each.
pub fn serve(path: PathBuf, extra: Vec<Box<dyn ServiceWithDependents>>) -> Result<(), String> {
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    check_bindable(&config)?;

    let metrics = Metrics::new();
    let record_metrics = config.admin.as_ref().is_some_and(|a| a.metrics);
    let shared = Shared::new(
        config.listeners.clone(),
        Arc::clone(&metrics),
        record_metrics,
    );
    if config.server.access_log {
        crate::access_log::enable();
    }
    let reload = Arc::new(Notify::new());

    let conf = ServerConf {
        threads: config.server.worker_threads(),
        // One runtime per thread, connections pinned: work stealing cost 43% more CPU per
        // request in bench/RESULTS.md ("Levers").
        work_stealing: false,
        // signals.rs exits as soon as in-flight requests are done; this is the upper bound.
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool_size,
        max_retries: MAX_RETRIES as usize + 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let (defaults_tx, defaults_rx) = watch::channel(config.defaults.clone());
    let (docker, discovered) = if config.docker.enabled {
        let (source, rx) =
            DockerSource::new(config.docker.clone(), defaults_rx, Arc::clone(&metrics));
        (Some(source), Some(rx))
    } else {
        (None, None)
    };
    let grace = config.server.grace_period;
    let controller = Controller::start(
        Arc::clone(&shared),
        path,
        config.clone(),
        Arc::clone(&reload),
        discovered,
        defaults_tx,
    );

    for (index, listener) in config.listeners.iter().enumerate() {
        let mut options = HttpServerOptions::default();
        options.h2c = listener.h2c;
        let mut service = ProxyServiceBuilder::new(
            &server.configuration,
            Proxy::new(index, Arc::clone(&shared)),
        )
        .name(format!("listener {}", listener.name))
        .server_options(options)
        .build();
        service.add_tcp(&listener.address.to_string());
        server.add_service(service);
    }
    if let Some(admin) = &config.admin {
        let mut service = Service::new(
            "admin".to_owned(),
            Admin::new(Arc::clone(&shared), admin.metrics),
        );
        service.add_tcp(&admin.address.to_string());
        service.threads = Some(1);
        server.add_service(service);
    }
    server.add_service(background_service(
        "health checks",
        HealthDriver::new(Arc::clone(&shared)),
    ));
    server.add_service(background_service("control plane", controller));
    if let Some(docker) = docker {
        server.add_service(background_service("docker discovery", docker));
    }
    for service in extra {
        server.add_boxed_service(service);
    }

    tracing::info!(
        listeners = ?config.listeners.iter().map(|l| l.address).collect::<Vec<_>>(),
        admin = ?config.admin.as_ref().map(|a| a.address),
        "berth is starting"
    );
    let phases = server.watch_execution_phase();
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals::new(shared, reload, grace, phases)),
    });
    Ok(())
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
