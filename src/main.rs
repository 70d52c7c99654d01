//! The `berth` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pingora_core::apps::http_app::HttpServer;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;

use berth::app::App;
use berth::cli::admin_client;
use berth::cli::routes_report::{self, Verdict};
use berth::sources::file;
use berth::whoami::Whoami;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A Host-routing HTTP load balancer on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the load balancer.
    Serve {
        #[arg(long, env = "BERTH_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file and exit (0: valid).
    Check {
        #[arg(long, env = "BERTH_CONFIG")]
        config: PathBuf,
    },
    /// A tiny HTTP backend that answers with what it received.
    Whoami {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "whoami", value_parser = header_safe)]
        name: String,
        /// Answer every request but /health after this long (e.g. 50ms).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        delay: std::time::Duration,
        /// Answer every request but /health with this status.
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// Also accept HTTP/2 without TLS (prior knowledge), as gRPC servers do.
        #[arg(long)]
        h2c: bool,
    },
    /// Exit 0 if the running berth's admin `/healthz` answers 200 (for Docker `HEALTHCHECK`;
    /// the image has no curl).
    Healthcheck {
        #[arg(long, env = "BERTH_CONFIG")]
        config: PathBuf,
    },
    /// Show a running berth's live routes; exit 2 when a service has no routable backend (its
    /// requests get 503), 1 when berth cannot be asked.
    Routes {
        /// The admin listener, `host:port` (default: the `admin.address` of `--config`).
        #[arg(long)]
        admin: Option<String>,
        /// The running berth's config file, to find its admin listener.
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        /// Print `/api/routes` as it is (JSON).
        #[arg(long)]
        json: bool,
        /// One row per backend too: health, weight, container, last probe.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Two whoami backends and berth in front of them, no Docker needed.
    Demo {
        #[arg(long, default_value = "conf/demo.yaml")]
        config: PathBuf,
    },
}

fn header_safe(name: &str) -> Result<String, String> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(name.to_owned())
    } else {
        Err("use visible ASCII characters only".into())
    }
}

fn main() -> ExitCode {
    berth::tls::install_crypto_provider();
    let cli = Cli::parse();
    berth::runtime::logging::init();
    let result = match cli.command {
        Command::Serve { config } => App::load(config).and_then(App::run),
        Command::Demo { config } => berth::demo::demo(config),
        Command::Check { config } => check(&config),
        Command::Healthcheck { config } => healthcheck(&config),
        Command::Routes {
            admin,
            config,
            json,
            verbose,
        } => return routes(admin, config, json, verbose),
        Command::Whoami {
            listen,
            name,
            delay,
            status,
            h2c,
        } => http::StatusCode::from_u16(status)
            .map_err(|e| format!("--status {status}: {e}"))
            .map(|status| {
                whoami(
                    listen,
                    Whoami::new(name).with_delay(delay).with_status(status),
                    h2c,
                )
            }),
    };
    berth::runtime::access_log::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("berth: {message}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> Result<(), String> {
    let file::Loaded {
        config,
        snapshot,
        certificates,
    } = file::load(path).map_err(|e| e.to_string())?;
    let services = &snapshot.services;
    let certificates: usize = certificates.iter().map(|c| c.len()).sum();
    let backends: usize = services.iter().map(|s| s.backends.len()).sum();
    let certificates = match certificates {
        0 => String::new(),
        n => format!(", {n} certificates"),
    };
    println!(
        "{}: ok ({} listeners, {} services, {} backends{certificates}{})",
        path.display(),
        config.listeners.len(),
        services.len(),
        backends,
        match (config.docker.enabled, config.swarm.enabled) {
            (true, true) => ", docker and swarm discovery on",
            (true, false) => ", docker discovery on",
            (false, true) => ", swarm discovery on",
            (false, false) => "",
        }
    );
    Ok(())
}

fn healthcheck(path: &std::path::Path) -> Result<(), String> {
    let admin = admin_client::from_config(path)?;
    let reply = admin_client::get(&admin, "/healthz", Duration::from_secs(3))?;
    if reply.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "admin listener {} answered {}",
            admin.addr, reply.status
        ))
    }
}

fn routes(admin: Option<String>, config: Option<PathBuf>, json: bool, verbose: bool) -> ExitCode {
    let admin = match (admin, config) {
        (Some(admin), _) => admin_client::parse_address(&admin),
        (None, Some(config)) => admin_client::from_config(&config),
        (None, None) => Err("give --admin ADDR or --config FILE (or set BERTH_CONFIG)".into()),
    };
    let verdict =
        admin.and_then(|admin| routes_report::run(&admin, json, verbose, &mut std::io::stdout()));
    match verdict {
        Ok(Verdict::AllRoutable) => ExitCode::SUCCESS,
        Ok(Verdict::Unroutable(services)) => {
            eprintln!(
                "berth routes: {} service(s) without a routable backend: {}",
                services.len(),
                services.join(", ")
            );
            ExitCode::from(2)
        }
        Err(message) => {
            eprintln!("berth: {message}");
            ExitCode::FAILURE
        }
    }
}

fn whoami(listen: SocketAddr, whoami: Whoami, h2c: bool) {
    let conf = ServerConf {
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut app = HttpServer::new_app(whoami);
    let mut options = HttpServerOptions::default();
    options.h2c = h2c;
    app.server_options = Some(options);
    let mut service = Service::new("whoami".to_owned(), app);
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    server.run(Default::default());
}
