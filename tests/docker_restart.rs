//! dockerd restarted under berth: the routes it knew keep serving while the engine is away,
//! and berth reconnects and follows events again once it is back.
//!
//! A test binary of its own, because it stops the engine every other Docker test needs
//! (`cargo test` runs test binaries one after another). It needs dockerd's `--live-restore`
//! so containers survive the restart; `.ci/run` starts dockerd that way.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;

/// The engine behind `/var/run/docker.sock`, from its default pid file: other dockerds (the
/// Swarm tests' own) may run beside it and must not be touched.
fn dockerd_pid() -> Option<u32> {
    std::fs::read_to_string("/var/run/docker.pid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn engine_up() -> bool {
    docker(&["version", "--format", "{{.Server.APIVersion}}"])
        .status
        .success()
}

#[tokio::test]
async fn routes_survive_a_dockerd_restart_and_resync_after() {
    if !available("dockerd_restart") {
        return;
    }
    if docker_ok(&["info", "--format", "{{.LiveRestoreEnabled}}"]) != "true" {
        assert!(
            std::env::var("BERTH_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "this test needs dockerd --live-restore (containers must outlive the daemon)"
        );
        eprintln!("SKIPPED dockerd_restart: dockerd runs without --live-restore");
        return;
    }
    let pid = dockerd_pid().expect("dockerd runs on this machine");
    let cmdline: Vec<String> = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();

    let host = format!("restart-{}.test", std::process::id());
    let labels = [("berth.routing.port_80", host.as_str())];
    let c1 = Container::run("restart_1", &labels, &[]);
    let berth = Berth::start(&berth_config(""));
    let addr = SocketAddr::new(c1.ip(None), 80);
    berth.wait_backend_health(&host, addr, "healthy");

    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    wait_for("dockerd to stop", Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    let down = Instant::now();
    let client = client();
    wait_for(
        "berth to notice the engine is gone",
        Duration::from_secs(10),
        || {
            berth
                .process
                .log()
                .contains("the last known routes keep serving")
        },
    );
    for _ in 0..5 {
        let reply = get(&client, &berth.url("/"), &host).await.unwrap();
        assert_eq!(
            reply.status, 200,
            "routes are kept while the engine is away"
        );
        assert_eq!(reply.body.trim(), c1.short_id());
    }
    assert!(berth
        .metrics()
        .contains("berth_discovery_errors_total{source=\"docker\"}"));
    assert!(!berth
        .metrics()
        .contains("berth_discovery_errors_total{source=\"docker\"} 0"));

    let restarted = Command::new("sh")
        .arg("-c")
        .arg("setsid \"$@\" >>/tmp/dockerd-restarted-by-test.log 2>&1 </dev/null &")
        .arg("sh")
        .args(&cmdline)
        .status()
        .expect("restart dockerd");
    assert!(restarted.success());
    wait_for("dockerd to come back", Duration::from_secs(60), engine_up);
    eprintln!("dockerd was down for {:?}", down.elapsed());

    // Events flow again: a new container is routed.
    let c2 = Container::run("restart_2", &labels, &[]);
    let added = Instant::now();
    berth.wait_backend_health(&host, SocketAddr::new(c2.ip(None), 80), "healthy");
    eprintln!(
        "after the restart a new container was routed within {:?}",
        added.elapsed()
    );
    assert_eq!(
        berth.backend_health(&host, addr).as_deref(),
        Some("healthy")
    );
}
