//! Zero-error churn: backends come, go, die and fail while keep-alive and new-connection
//! clients send requests, and the clients must not notice (or, where no proxy can hide it, the
//! damage is counted and bounded). Each test prints its counts; run with `--nocapture` to see
//! them.

mod common;

use std::time::Duration;

use common::docker::{available, berth_config, Container, GRACEFUL_HTTPD};
use common::raw_backend::{RawBackend, Script};
use common::traffic::Traffic;
use common::*;
use reqwest::Method;

fn service(name: &str, extra: &str, backends: &[std::net::SocketAddr]) -> String {
    let mut yaml = format!(
        "  - name: {name}\n    domains: [{name}.test]\n    \
         health_check: {{ interval: 200ms, timeout: 500ms }}\n{extra}    backends:\n"
    );
    for addr in backends {
        yaml.push_str(&format!("      - address: \"{addr}\"\n"));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_that_swap_backends_lose_no_request() {
    let pool: Vec<Whoami> = (0..5).map(|i| Whoami::start(&format!("w{i}"))).collect();
    let yaml = |i: usize| {
        let set = [pool[i % 5].addr, pool[(i + 1) % 5].addr];
        format!("{LISTENERS}services:\n{}", service("app", "", &set))
    };
    let berth = Berth::start(&yaml(0));
    berth.wait_backend_health("app", pool[0].addr, "healthy");
    berth.wait_backend_health("app", pool[1].addr, "healthy");
    let traffic = Traffic::start(&berth.url("/"), "app.test", Method::GET, 2);
    for i in 1..=10 {
        berth.write_config(&yaml(i));
        berth.process.signal("HUP");
        // The new backend joins once its probe passes; the one both sets share serves
        // meanwhile, and the removed one finishes what it has.
        berth.wait_backend_health("app", pool[(i + 1) % 5].addr, "healthy");
        // Let traffic reach the new set before the next swap.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let counts = traffic.finish().await;
    eprintln!("static: 10 reloads swapping a backend each: {counts:?}");
    assert_eq!(counts.failed(), 0, "{counts:?}");
    assert!(
        counts.ok() >= 30,
        "the clients ran through the reloads: {counts:?}"
    );
}

/// The backends finish what they have after `SIGTERM`, as a service that is rolled must; berth's
/// part is to stop sending to a container when Docker stops it and to add its replacement only
/// once its probe passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_replacement_of_containers_loses_no_request() {
    if !available("rolling_replacement") {
        return;
    }
    let host = format!("rolling-{}.test", std::process::id());
    let labels = [("berth.routing.port_80", host.as_str())];
    let mut containers: Vec<Container> = (0..3)
        .map(|i| Container::run_cmd(&format!("roll_{i}"), &labels, &[], GRACEFUL_HTTPD))
        .collect();
    let berth = Berth::start(&berth_config(""));
    let backend = |c: &Container| std::net::SocketAddr::new(c.ip(None), 80);
    for c in &containers {
        berth.wait_backend_health(&host, backend(c), "healthy");
    }
    let traffic = Traffic::start(&berth.url("/"), &host, Method::GET, 2);
    for round in 0..3 {
        for (slot, container) in containers.iter_mut().enumerate() {
            container.stop();
            let fresh = Container::run_cmd(
                &format!("roll_{round}_{slot}"),
                &labels,
                &[],
                GRACEFUL_HTTPD,
            );
            berth.wait_backend_health(&host, backend(&fresh), "healthy");
            *container = fresh;
        }
    }
    let counts = traffic.finish().await;
    eprintln!("docker: 3 rounds replacing 3 containers one at a time: {counts:?}");
    assert_eq!(counts.failed(), 0, "{counts:?}");
    assert!(
        counts.ok() >= 30,
        "the clients ran through the churn: {counts:?}"
    );
}

/// `kill -9` of one of three backends under load with `method`: what the clients saw.
async fn kill_one_under_load(method: Method) -> reqwest::Result<common::traffic::Counts> {
    let mut backends: Vec<Whoami> = (0..3).map(|i| Whoami::start(&format!("k{i}"))).collect();
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let berth = Berth::start(&format!(
        "{LISTENERS}services:\n{}",
        service("app", "", &addrs)
    ));
    for addr in &addrs {
        berth.wait_backend_health("app", *addr, "healthy");
    }
    let traffic = Traffic::start(&berth.url("/"), "app.test", method, 4);
    tokio::time::sleep(Duration::from_millis(800)).await;
    backends[1].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(traffic.finish().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_backend_is_hidden_from_gets_and_bounded_for_posts() {
    let gets = kill_one_under_load(Method::GET).await.unwrap();
    eprintln!("kill -9 under GET load: {gets:?}");
    assert_eq!(
        gets.failed(),
        0,
        "retries hide a dead backend from GETs: {gets:?}"
    );
    let posts = kill_one_under_load(Method::POST).await.unwrap();
    eprintln!(
        "kill -9 under POST load: {posts:?} (a POST the dead backend may have processed is \
         not replayed)"
    );
    // Only the POSTs in flight on the killed backend can fail: at most one per client.
    assert!(posts.failed() <= 8, "{posts:?}");
    assert!(posts.ok() >= 30, "{posts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_503_is_ejected_by_passive_health() {
    let good = Whoami::start("good");
    let broken = Whoami::start_with("broken", free_addr(), &["--status", "503"]);
    let passive = "    passive_health: { consecutive_failures: 3 }\n";
    let retried = "    passive_health: { consecutive_failures: 3 }\n    \
                   retry_on: [connect_failure, reset_before_response, 503]\n";
    let backends = [good.addr, broken.addr];
    let berth = Berth::start(&format!(
        "{LISTENERS}services:\n{}{}",
        service("plain", passive, &backends),
        service("retried", retried, &backends)
    ));
    for name in ["plain", "retried"] {
        berth.wait_backend_health(name, broken.addr, "healthy");
        berth.wait_backend_health(name, good.addr, "healthy");
    }
    let client = client();
    for (name, at_most) in [("plain", 3), ("retried", 0)] {
        let mut unavailable = 0;
        for _ in 0..40 {
            let reply = get(&client, &berth.url("/"), &format!("{name}.test"))
                .await
                .unwrap();
            if reply.status == 503 {
                unavailable += 1;
            }
        }
        eprintln!("{name}: the client saw {unavailable} 503s in 40 requests");
        assert!(unavailable <= at_most, "{name}: {unavailable} 503s");
        assert_eq!(
            berth.backend_health(name, broken.addr).as_deref(),
            Some("ejected")
        );
    }
    let metrics = berth.metrics();
    let ejections = format!(
        "berth_server_ejections_total{{server=\"{}\",service=\"plain\"}} 1\n",
        broken.addr
    );
    assert!(metrics.contains(&ejections), "{ejections}\n{metrics}");
    assert!(metrics.contains(&format!(
        "berth_server_up{{server=\"{}\",service=\"plain\"}} 0\n",
        broken.addr
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_holds_backend_load_when_every_backend_fails() {
    let unavailable = || Script::Raw {
        bytes: b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec(),
        close: false,
    };
    let three = || [(); 3].map(|_| RawBackend::start(unavailable()));
    let (budgeted, unlimited) = (three(), three());
    let extra = |budget: &str| {
        format!(
            "    health_check: {{ type: none }}\n    retries: 2\n    retry_budget: {budget}\n    \
             retry_on: [connect_failure, 503]\n"
        )
    };
    let yaml = format!(
        "{LISTENERS}services:\n{}{}",
        service(
            "budgeted",
            &extra("20%"),
            &budgeted.iter().map(|b| b.addr).collect::<Vec<_>>()
        ),
        service(
            "unlimited",
            &extra("none"),
            &unlimited.iter().map(|b| b.addr).collect::<Vec<_>>()
        )
    )
    .replace(
        "    health_check: { interval: 200ms, timeout: 500ms }\n",
        "",
    );
    let berth = Berth::start(&yaml);
    let mut loads = Vec::new();
    for (name, backends) in [("budgeted", &budgeted), ("unlimited", &unlimited)] {
        let traffic = Traffic::start(&berth.url("/"), &format!("{name}.test"), Method::GET, 2);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let counts = traffic.finish().await;
        let requests: usize = counts.statuses.values().sum::<usize>() + counts.errors;
        let load: usize = backends.iter().map(RawBackend::requests).sum();
        eprintln!(
            "{name}: {requests} client requests made {load} backend requests ({:.2} per request)",
            load as f64 / requests as f64
        );
        loads.push((requests, load));
    }
    let (requests, load) = loads[0];
    // 20% of the requests, and the floor of 3 retries a second over the 10 s window.
    assert!(
        load as f64 <= requests as f64 * 1.2 + 30.0 + 2.0,
        "the budget held the load: {requests} requests, {load} at the backends"
    );
    let (requests, load) = loads[1];
    assert!(
        load as f64 >= requests as f64 * 2.9,
        "without a budget every failure is retried on both other backends: {requests} / {load}"
    );
}

/// A backend whose port refuses connections (its process died, its container is stopping and
/// berth has not heard yet) is retried around without spending the retry budget: with the
/// budget at its floor (3 retries a second) the hundreds of requests sent its way still all
/// succeed, while the probe that would take it out is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_refuses_connections_costs_no_request_whatever_the_budget() {
    let alive = Whoami::start("alive");
    let dead = free_addr();
    let yaml = format!(
        "{LISTENERS}services:\n{}",
        service("app", "    retry_budget: 1%\n", &[alive.addr, dead])
    )
    .replace(
        "health_check: { interval: 200ms, timeout: 500ms }",
        "health_check: { type: none }",
    );
    let berth = Berth::start(&yaml);
    let traffic = Traffic::start(&berth.url("/"), "app.test", Method::GET, 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = traffic.finish().await;
    let metrics = berth.metrics();
    let retries = metrics
        .lines()
        .find(|l| l.starts_with("berth_service_retries_total{service=\"app\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    eprintln!("a refusing backend under load: {counts:?}, {retries} retries");
    assert_eq!(counts.failed(), 0, "{counts:?}");
    assert!(
        retries > 60,
        "more retries than the budget's floor allows in 10 s ({retries})"
    );
}
