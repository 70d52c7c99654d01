//! Load-aware balancing end to end: a slow backend gets less traffic under `least_conn`, `p2c`
//! and `ewma` than under `round_robin`, and `max_connections` queues then refuses.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const ALGORITHMS: [&str; 4] = ["round_robin", "least_conn", "p2c", "ewma"];

/// One service per algorithm, all over the same fast and slow backends.
fn config(fast: &Whoami, slow: &Whoami) -> String {
    let mut yaml = format!("{LISTENERS}services:\n");
    for algorithm in ALGORITHMS {
        yaml.push_str(&format!(
            "  - name: {algorithm}\n    domains: [{algorithm}.test]\n    algorithm: {algorithm}\n    \
             health_check: {{ interval: 200ms }}\n    backends:\n      - address: \"{}\"\n      \
             - address: \"{}\"\n",
            fast.addr, slow.addr
        ));
    }
    yaml
}

/// `clients` concurrent keep-alive clients for `duration`: requests served per backend name.
async fn run_load(
    url: &str,
    host: &str,
    clients: usize,
    duration: Duration,
) -> HashMap<String, usize> {
    let served = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, host, served) = (url.to_owned(), host.to_owned(), Arc::clone(&served));
            tokio::spawn(async move {
                let client = client();
                while Instant::now() < deadline {
                    let reply = get(&client, &url, &host).await.unwrap();
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    *served
                        .lock()
                        .unwrap()
                        .entry(reply.backend().unwrap().to_owned())
                        .or_default() += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(served).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_gets_less_traffic_under_load_aware_algorithms() {
    let fast = Whoami::start("fast");
    let slow = Whoami::start_with("slow", free_addr(), &["--delay", "100ms"]);
    let berth = Berth::start(&config(&fast, &slow));
    for algorithm in ALGORITHMS {
        berth.wait_backend_health(algorithm, slow.addr, "healthy");
        berth.wait_backend_health(algorithm, fast.addr, "healthy");
    }
    let mut shares = Vec::new();
    for algorithm in ALGORITHMS {
        let served = run_load(
            &berth.url("/"),
            &format!("{algorithm}.test"),
            12,
            Duration::from_millis(1500),
        )
        .await;
        let total: usize = served.values().sum();
        let share = served.get("slow").copied().unwrap_or(0) as f64 / total as f64;
        eprintln!("{algorithm:>12}: slow backend served {share:.3} of {total} requests");
        shares.push((algorithm, share));
    }
    let round_robin = shares[0].1;
    assert!(
        (0.4..=0.6).contains(&round_robin),
        "round robin ignores latency: {shares:?}"
    );
    for (algorithm, share) in &shares[1..] {
        assert!(
            *share < 0.25 && *share < round_robin / 2.0,
            "{algorithm} should send the slow backend much less: {shares:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_queues_then_answers_503_and_counts_it() {
    let backend = Whoami::start_with("busy", free_addr(), &["--delay", "600ms"]);
    let service = |name: &str, queue_timeout: &str| {
        format!(
            "  - name: {name}\n    domains: [{name}.test]\n    max_connections: 1\n    \
             queue_timeout: {queue_timeout}\n    health_check: {{ type: none }}\n    \
             backends: [{{ address: \"{}\" }}]\n",
            backend.addr
        )
    };
    let yaml = format!(
        "{LISTENERS}services:\n{}{}",
        service("patient", "3s"),
        service("hasty", "200ms")
    );
    let berth = Berth::start(&yaml);
    let url = berth.url("/");
    let two = |host: &'static str| {
        let url = url.clone();
        async move {
            let first = tokio::spawn({
                let url = url.clone();
                async move { get(&client(), &url, host).await.unwrap().status }
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            let started = Instant::now();
            let second = get(&client(), &url, host).await.unwrap();
            (
                first.await.unwrap(),
                second.status,
                started.elapsed(),
                second.body,
            )
        }
    };
    let (first, second, waited, _) = two("patient.test").await;
    assert_eq!(
        (first, second),
        (200, 200),
        "the second request waited its turn"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "it waited for the first: {waited:?}"
    );
    let (first, second, waited, body) = two("hasty.test").await;
    assert_eq!((first, second), (200, 503), "{body}");
    assert!(body.contains("could take the request in time"), "{body}");
    assert!(
        waited < Duration::from_millis(550),
        "refused after queue_timeout: {waited:?}"
    );
    let metrics = berth.metrics();
    assert!(
        metrics.contains("berth_service_queue_timeouts_total{service=\"hasty\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("berth_service_queue_timeouts_total{service=\"patient\"} 0\n"));
}
