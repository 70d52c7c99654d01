//! The production image, run for real: the Dockerfile's `runtime` stage built without a
//! registry, started with the Docker socket and a user-defined network exactly as the README's
//! deploy section says, reached by clients through a network alias.
//!
//! What this builds: the `runtime` stage of the Dockerfile, verbatim ([`common::image`]).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;

const IMAGE: &str = "berth-test-lb:latest";

/// Removes a container when dropped.
struct Named(String);

impl Drop for Named {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

fn inspect(container: &str, format: &str) -> String {
    docker_ok(&["inspect", "-f", format, container])
}

/// `wget` from a client container on `network`.
fn wget(network: &str, url: &str) -> String {
    docker_ok(&[
        "run",
        "--rm",
        "--network",
        network,
        IMAGE_CLIENT,
        "busybox",
        "wget",
        "-qO-",
        url,
    ])
}

const IMAGE_CLIENT: &str = common::docker::IMAGE;

#[test]
fn the_image_runs_as_the_internal_load_balancer() {
    if !available("container") {
        return;
    }
    image::build(None, IMAGE);
    let net = Network::create("lb");
    let restserver = [
        ("aliyun.routing.port_80", "restserver.local"),
        ("aliyun.scale", "2"),
        ("aliyun.probe.url", "http://container:80"),
        ("aliyun.probe.timeout_seconds", "2"),
    ];
    let rest1 = Container::run("restserver_1", &restserver, &["--network", &net.name]);
    let rest2 = Container::run("restserver_2", &restserver, &["--network", &net.name]);
    let web = Container::run(
        "web",
        &[("berth.routing.port_80", "web.local")],
        &["--network", &net.name],
    );

    let socket_gid = std::fs::metadata("/var/run/docker.sock")
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m).to_string())
        .unwrap();
    let name = format!("berth-test-{}-lb", std::process::id());
    let started = Instant::now();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &net.name,
        "--network-alias",
        "restserver.local",
        "--network-alias",
        "web.local",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock:ro",
        "--group-add",
        &socket_gid,
        "-p",
        "127.0.0.1::9900",
        "--health-interval",
        "1s",
        IMAGE,
    ]);
    let lb = Named(name);
    let admin: SocketAddr = docker_ok(&["port", &lb.0, "9900/tcp"])
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    wait_for(
        "berth /readyz from the host",
        Duration::from_secs(20),
        || admin_get(admin, "/readyz").is_some_and(|(status, _)| status == 200),
    );
    let ready = started.elapsed();
    assert_eq!(
        inspect(&lb.0, "{{.Config.User}}"),
        "10001:10001",
        "not root"
    );
    wait_for(
        "the HEALTHCHECK (berth healthcheck) to pass",
        Duration::from_secs(20),
        || inspect(&lb.0, "{{.State.Health.Status}}") == "healthy",
    );
    // The shipped config keeps the route table (container ids are sticky-cookie values) from
    // everyone but the container itself; /healthz, /readyz and /metrics stay open.
    assert_eq!(
        admin_get(admin, "/api/routes").map(|(status, _)| status),
        Some(403),
        "the route table is not open to the host"
    );
    wait_for(
        "both restservers healthy in berth",
        Duration::from_secs(20),
        || {
            let routes = docker(&["exec", &lb.0, "berth", "routes", "--json"]);
            let body = String::from_utf8_lossy(&routes.stdout);
            routes.status.success()
                && body.contains(&rest1.id)
                && body.contains(&rest2.id)
                && body.matches("\"healthy\"").count() >= 3
        },
    );

    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..4 {
        answered.insert(wget(&net.name, "http://restserver.local/"));
    }
    let expected: std::collections::BTreeSet<String> =
        [rest1.short_id().to_owned(), rest2.short_id().to_owned()].into();
    assert_eq!(
        answered, expected,
        "both restserver replicas answer through the alias"
    );
    assert_eq!(wget(&net.name, "http://web.local/"), web.short_id());

    // Recorded in the logging phase, just after each response.
    wait_for(
        "the 4 requests to be counted",
        Duration::from_secs(2),
        || {
            admin_get(admin, "/metrics").is_some_and(|(_, m)| {
            m.contains("berth_service_requests_total{code=\"200\",method=\"GET\",service=\"restserver.local\"} 4")
        })
        },
    );
    let (_, metrics) = admin_get(admin, "/metrics").unwrap();
    assert!(metrics.contains(&format!("container_id=\"{}\"", rest1.id)));

    let pid = inspect(&lb.0, "{{.State.Pid}}");
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let stopping = Instant::now();
    docker_ok(&["stop", &lb.0]);
    let stop_took = stopping.elapsed();
    assert_eq!(
        inspect(&lb.0, "{{.State.ExitCode}}"),
        "0",
        "berth exits 0 on docker stop"
    );
    assert!(
        stop_took < Duration::from_secs(9),
        "exits within the grace period: {stop_took:?}"
    );
    eprintln!(
        "image: start to ready {ready:?}; idle {rss}; docker stop took {stop_took:?} (exit 0)"
    );
}

#[test]
fn the_compose_file_is_valid_and_wires_the_acsrouting_example() {
    let path = repo_path("conf/compose/docker-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let compose: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let services = &compose["services"];
    let berth = &services["berth"];
    assert_eq!(berth["build"]["context"].as_str(), Some("../.."));
    assert!(berth["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v.as_str() == Some("/var/run/docker.sock:/var/run/docker.sock:ro")));
    let aliases = berth["networks"]["default"]["aliases"]
        .as_sequence()
        .unwrap();
    assert!(aliases
        .iter()
        .any(|a| a.as_str() == Some("restserver.local")));
    let labels = &services["restserver"]["labels"];
    assert_eq!(
        labels["aliyun.routing.port_80"].as_str(),
        Some("restserver.local")
    );
    assert_eq!(
        labels["aliyun.probe.url"].as_str(),
        Some("http://container:80")
    );
    assert!(services["restclient"]["command"]
        .as_str()
        .is_some_and(|c| c.contains("restserver.local")));
    // The compose file mounts the dashboard and provisioning that the repository ships.
    for volume in services["grafana"]["volumes"].as_sequence().unwrap() {
        let host = volume.as_str().unwrap().split(':').next().unwrap();
        assert!(path.parent().unwrap().join(host).exists(), "{host} exists");
    }
    // Where Docker Compose is installed, let it validate the file too.
    let compose = [&["docker", "compose"][..], &["docker-compose"][..]]
        .into_iter()
        .find(|cmd| {
            Command::new(cmd[0])
                .args(&cmd[1..])
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    match compose {
        Some(cmd) => {
            let out = Command::new(cmd[0])
                .args(&cmd[1..])
                .arg("-f")
                .arg(&path)
                .args(["config", "-q"])
                .env("DOCKER_GID", "999")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{cmd:?} config: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => eprintln!(
            "docker compose is not installed: the compose file was checked by structure only"
        ),
    }
}
