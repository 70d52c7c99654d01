//! `berth demo`: the config file's loopback backends as `whoami` services in the same process,
//! plus `serve` on that config, so a newcomer sees berth route with one command.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use pingora_core::services::listening::Service;

use crate::app::App;
use crate::sources::file;
use crate::whoami::Whoami;

pub fn demo(path: PathBuf) -> Result<(), String> {
    let file::Loaded {
        config, snapshot, ..
    } = file::load(&path).map_err(|e| e.to_string())?;
    let backends: BTreeSet<SocketAddr> = snapshot
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.addr))
        .filter(|addr| addr.ip().is_loopback())
        .collect();
    let mut app = App::load(path)?;
    for addr in &backends {
        let name = format!("whoami-{}", addr.port());
        let mut service = Service::new(name.clone(), Whoami::new(name));
        service.add_tcp(&addr.to_string());
        service.threads = Some(1);
        app = app.with_service(Box::new(service));
    }

    let listener = config.listeners[0].address;
    println!(
        "berth demo: {} whoami backends on {backends:?}",
        backends.len()
    );
    println!("Try:");
    for service in &snapshot.services {
        if let Some(domain) = service.domains.iter().find(|d| !d.starts_with('*')) {
            println!(
                "  curl -H 'Host: {domain}' http://{listener}{}",
                service.path_prefix
            );
        }
    }
    println!("  curl -H 'Host: unknown.example' http://{listener}/     # 404: no route");
    if let Some(admin) = &config.admin {
        println!("  curl http://{}/api/routes", admin.address);
        println!("  curl http://{}/metrics", admin.address);
    }
    println!("Stop with Ctrl+C.");
    app.run()
}
