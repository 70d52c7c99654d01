//! The `berth` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;

use berth::app::App;
use berth::config::Config;
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
    },
    /// Exit 0 if the running berth's admin `/healthz` answers 200 (for Docker `HEALTHCHECK`;
    /// the image has no curl).
    Healthcheck {
        #[arg(long, env = "BERTH_CONFIG")]
        config: PathBuf,
    },
    /// Print the running berth's route table (admin `/api/routes`), asked from this host so
    /// the default `admin.allow` (loopback) lets it in: `docker exec berth berth routes`.
    Routes {
        #[arg(long, env = "BERTH_CONFIG")]
        config: PathBuf,
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
    let cli = Cli::parse();
    berth::ops::logging::init();
    let result = match cli.command {
        Command::Serve { config } => App::load(config).and_then(App::run),
        Command::Demo { config } => berth::demo::demo(config),
        Command::Check { config } => check(&config),
        Command::Healthcheck { config } => healthcheck(&config),
        Command::Routes { config } => routes(&config),
        Command::Whoami { listen, name } => {
            whoami(listen, name);
            Ok(())
        }
    };
    berth::ops::access_log::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("berth: {message}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> Result<(), String> {
    let (config, snapshot) = file::load(path).map_err(|e| e.to_string())?;
    let services = &snapshot.services;
    let backends: usize = services.iter().map(|s| s.backends.len()).sum();
    println!(
        "{}: ok ({} listeners, {} services, {} backends{})",
        path.display(),
        config.listeners.len(),
        services.len(),
        backends,
        if config.docker.enabled {
            ", docker discovery on"
        } else {
            ""
        }
    );
    Ok(())
}

fn healthcheck(path: &std::path::Path) -> Result<(), String> {
    admin_get(path, "/healthz").map(|_| ())
}

fn routes(path: &std::path::Path) -> Result<(), String> {
    print!("{}", admin_get(path, "/api/routes")?);
    Ok(())
}

/// GETs `path` from the admin listener of the berth running `config` (on this host: an
/// unspecified address is asked on loopback), with the admin token when there is one; the
/// body of a 200, else an error naming the answer.
fn admin_get(config: &std::path::Path, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let admin = config
        .admin
        .ok_or("the config has no admin listener to ask")?;
    let mut addr = admin.address;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let authorization = admin
        .token
        .map(|t| format!("Authorization: Bearer {}\r\n", t.expose()))
        .unwrap_or_default();
    let timeout = std::time::Duration::from_secs(3);
    let fail = |e: std::io::Error| format!("admin listener {addr}: {e}");
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: berth\r\n{authorization}Connection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(fail)?;
    let status = reply.lines().next().unwrap_or_default();
    match reply.split_once("\r\n\r\n") {
        Some((_, body)) if status.split_whitespace().nth(1) == Some("200") => Ok(body.to_owned()),
        _ => Err(format!(
            "admin listener {addr} answered {status:?} to {path}"
        )),
    }
}

fn whoami(listen: SocketAddr, name: String) {
    let conf = ServerConf {
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = Service::new(format!("whoami {name}"), Whoami::new(name));
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    server.run(Default::default());
}
