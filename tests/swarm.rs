//! Swarm discovery against real swarms: every node a real dockerd in its own namespaces
//! (`tests/swarm/harness.sh`), berth as the production image in a container on the overlay,
//! real tasks, a real HTTP client from the host through berth's published port. The tests take
//! turns; each builds its own swarm and tears it down, even when it fails.
//!
//! Each prints `swarm timing: <what> <seconds>` lines: `bench/swarm_timings.sh` runs this
//! binary several times and reports their medians (bench/RESULTS.md).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::swarm::*;
use common::traffic::Traffic;
use common::*;

/// Routing and probe labels of the test services.
const WEB: &[&str] = &[
    "--label",
    "aliyun.routing.port_80=web.local",
    "--label",
    "aliyun.probe.url=http://container:80/health.html",
];

fn timing(what: &str, took: Duration) {
    eprintln!("swarm timing: {what} {:.3}", took.as_secs_f64());
}

/// Which replica answered: busybox httpd serves the container's hostname, its short id.
fn served_by(reply: &Reply) -> String {
    reply.body.trim().to_owned()
}

/// Waits until `berth` routes exactly `count` backends of `service`, all routable.
fn wait_routable(berth: &SwarmBerth, service: &str, count: usize, timeout: Duration) {
    wait_for(
        &format!("{count} routable backends of {service}"),
        timeout,
        || {
            let backends = berth.backends(service);
            backends.len() == count && backends.iter().all(|b| b["routable"] == true)
        },
    );
}

/// A single-node swarm running `web` (2 replicas, [`WEB`] labels) and berth routing both; the
/// fields drop in order: berth, the swarm, then the test's turn.
struct OneNode {
    berth: SwarmBerth,
    swarm: Swarm,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// [`OneNode`], or `None` when the Swarm tests cannot run here (see [`available`]).
async fn one_node_with_web(test: &str) -> Option<OneNode> {
    let serial = serial().await;
    if !available(test) {
        return None;
    }
    let swarm = Swarm::up(1, 1);
    let mut web = WEB.to_vec();
    web.extend(["--replicas", "2"]);
    swarm.create_service("web", &web);
    let berth = swarm.berth(BERTH_CONFIG, &[]);
    wait_routable(&berth, "web.local", 2, Duration::from_secs(30));
    Some(OneNode {
        berth,
        swarm,
        _serial: serial,
    })
}

/// Requests through berth in a loop until stopped: when each replica first answered, and every
/// request that did not get a 200 from a replica.
struct Watcher {
    stop: Arc<AtomicBool>,
    first_seen: Arc<Mutex<BTreeMap<String, Instant>>>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    fn start(url: String, host: &str) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let first_seen = Arc::new(Mutex::new(BTreeMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, seen, failed, host) = (
            stop.clone(),
            first_seen.clone(),
            failures.clone(),
            host.to_owned(),
        );
        let task = tokio::spawn(async move {
            let client = client();
            while !s.load(Ordering::Relaxed) {
                match get(&client, &url, &host).await {
                    Ok(reply) if reply.status == 200 => {
                        seen.lock()
                            .unwrap()
                            .entry(served_by(&reply))
                            .or_insert_with(Instant::now);
                    }
                    Ok(reply) => failed.lock().unwrap().push(format!(
                        "{} {}",
                        reply.status,
                        reply.body.trim()
                    )),
                    Err(e) => failed.lock().unwrap().push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Watcher {
            stop,
            first_seen,
            failures,
            task,
        }
    }

    fn seen(&self) -> BTreeMap<String, Instant> {
        self.first_seen.lock().unwrap().clone()
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    async fn finish(self) -> Vec<String> {
        let Watcher {
            stop,
            failures,
            task,
            ..
        } = self;
        stop.store(true, Ordering::Relaxed);
        task.await.unwrap();
        let failures = failures.lock().unwrap().clone();
        failures
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_is_routed_once_by_service_or_container_labels() {
    let _serial = serial().await;
    if !available("every_replica_is_routed_once") {
        return;
    }
    let swarm = Swarm::up(1, 1);
    let mut web = WEB.to_vec();
    web.extend(["--replicas", "2"]);
    swarm.create_service("web", &web);
    swarm.create_service(
        "api",
        &[
            "--container-label",
            "berth.routing.port_80=api.local",
            "--replicas",
            "2",
        ],
    );
    // Docker discovery is on too, on the same engine: it must leave the tasks to Swarm.
    let berth = swarm.berth(BERTH_CONFIG, &[]);
    wait_routable(&berth, "web.local", 2, Duration::from_secs(30));
    wait_routable(&berth, "api.local", 2, Duration::from_secs(30));

    let routes = berth.routes();
    assert_eq!(
        routes.as_array().unwrap().len(),
        2,
        "one route per service, none twice: {routes:#}"
    );
    let backends = berth.backends("web.local");
    let mut ids = BTreeMap::new();
    let mut slots = BTreeSet::new();
    for backend in &backends {
        let task = &backend["task"];
        assert_eq!(task["service"], "web", "{backend:#}");
        assert_eq!(task["node"], swarm.node_name(1).as_str());
        slots.insert(task["slot"].as_u64().unwrap());
        let id = backend["container_id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 64, "the container id, not the task id");
        ids.insert(id[..12].to_owned(), id);
    }
    assert_eq!(slots, [1, 2].into());
    for service in routes.as_array().unwrap() {
        assert_eq!(service["source"], "swarm");
    }

    let client = client();
    let mut order = Vec::new();
    for _ in 0..6 {
        let reply = get(&client, &berth.url("/"), "web.local").await.unwrap();
        assert_eq!(reply.status, 200);
        let short = served_by(&reply);
        let full = ids
            .get(&short)
            .unwrap_or_else(|| panic!("{short} is not a web task"));
        assert_eq!(
            reply.header("set-cookie"),
            Some(format!("CONTAINERID={full}; path=/").as_str()),
            "acsrouting's cookie names the task's container"
        );
        order.push(short);
    }
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "requests alternate between the replicas: {order:?}"
    );
    let mut api = BTreeSet::new();
    for _ in 0..4 {
        let reply = get(&client, &berth.url("/"), "api.local").await.unwrap();
        assert_eq!(reply.status, 200);
        api.insert(served_by(&reply));
    }
    assert_eq!(api.len(), 2, "container labels route both api replicas");

    let metrics = berth.metrics();
    let info: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("berth_server_info{") && l.contains("task_service=\"web\""))
        .collect();
    assert_eq!(info.len(), 2, "{metrics}");
    assert!(info
        .iter()
        .all(|l| l.contains(&format!("node=\"{}\"", swarm.node_name(1)))
            && l.contains("task_slot=\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_2_4_1_then_service_rm() {
    let Some(setup) = one_node_with_web("scale_2_4_1_then_service_rm").await else {
        return;
    };
    let (swarm, berth) = (&setup.swarm, &setup.berth);
    let watcher = Watcher::start(berth.url("/"), "web.local");
    wait_for("both replicas answer", Duration::from_secs(10), || {
        watcher.seen().len() == 2
    });
    let before: BTreeSet<String> = watcher.seen().into_keys().collect();

    let scaled = Instant::now();
    swarm.docker_ok(1, &["service", "scale", "-d", "web=4"]);
    wait_for("4 replicas answer", Duration::from_secs(30), || {
        watcher.seen().len() == 4
    });
    let first_new = watcher
        .seen()
        .iter()
        .filter(|(replica, _)| !before.contains(*replica))
        .map(|(_, at)| *at)
        .min()
        .unwrap();
    timing("scale_up_to_first_routed_request", first_new - scaled);
    timing("scale_up_to_all_routed", scaled.elapsed());
    wait_routable(berth, "web.local", 4, Duration::from_secs(10));

    let scaled = Instant::now();
    swarm.docker_ok(1, &["service", "scale", "-d", "web=1"]);
    wait_for("the route to shrink to 1", Duration::from_secs(10), || {
        berth.backends("web.local").len() == 1
    });
    timing("scale_down_to_route_removal", scaled.elapsed());
    // The three leaving tasks get SIGTERM ~3 s after the command: past it, nothing failed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        watcher.failures(),
        Vec::<String>::new(),
        "scaling fails no request"
    );

    let removed = Instant::now();
    swarm.docker_ok(1, &["service", "rm", "web"]);
    wait_for("the route to go", Duration::from_secs(10), || {
        berth.backends("web.local").is_empty()
    });
    timing("service_rm_to_route_removal", removed.elapsed());
    watcher.finish().await;
    let reply = get(&client(), &berth.url("/"), "web.local").await.unwrap();
    assert_eq!(reply.status, 404, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let Some(setup) = one_node_with_web("a_rolling_restart_under_load").await else {
        return;
    };
    let (swarm, berth) = (&setup.swarm, &setup.berth);
    rolling_restart(swarm, berth, "").await;
}

/// `docker service update --force` (stop-first, one task at a time) under steady keep-alive and
/// new-connection clients: every request must succeed.
async fn rolling_restart(swarm: &Swarm, berth: &SwarmBerth, label: &str) {
    let old = berth.routable_tasks("web.local");
    let traffic = Traffic::start(&berth.url("/"), "web.local", reqwest::Method::GET, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    swarm.docker_ok(1, &["service", "update", "-d", "-q", "--force", "web"]);
    wait_for(
        "every task to be replaced and routed",
        Duration::from_secs(60),
        || {
            let now = berth.routable_tasks("web.local");
            berth.backends("web.local").len() == old.len()
                && now.len() == old.len()
                && now.iter().all(|t| !old.contains(t))
        },
    );
    let took = started.elapsed();
    // The last old task gets SIGTERM ~3 s after it was drained.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let counts = traffic.finish().await;
    timing(&format!("rolling_restart{label}_duration"), took);
    eprintln!(
        "swarm timing: rolling_restart{label}_failed_requests {} (of {})",
        counts.failed(),
        counts.ok() + counts.failed()
    );
    assert!(counts.ok() > 100, "{counts:?}");
    assert_eq!(
        counts.failed(),
        0,
        "a rolling restart fails no request: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_probe_takes_a_task_out_of_rotation() {
    let Some(setup) = one_node_with_web("a_failing_probe_takes_a_task_out").await else {
        return;
    };
    let (swarm, berth) = (&setup.swarm, &setup.berth);
    let backends = berth.backends("web.local");
    let sick = backends[0]["container_id"].as_str().unwrap().to_owned();
    let well = backends[1]["container_id"].as_str().unwrap().to_owned();
    let health = |id: &str| {
        berth
            .backends("web.local")
            .iter()
            .find(|b| b["container_id"] == id)
            .map(|b| b["health"].as_str().unwrap_or_default().to_owned())
    };

    swarm.docker_ok(1, &["exec", &sick, "busybox", "rm", "/www/health.html"]);
    wait_for("the probe to fail", Duration::from_secs(10), || {
        health(&sick).as_deref() == Some("unhealthy")
    });
    let client = client();
    for _ in 0..6 {
        let reply = get(&client, &berth.url("/"), "web.local").await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(
            served_by(&reply),
            well[..12],
            "only the healthy task answers"
        );
    }
    swarm.docker_ok(
        1,
        &["exec", &sick, "sh", "-c", "echo ok > /www/health.html"],
    );
    wait_for("the probe to pass again", Duration::from_secs(10), || {
        health(&sick).as_deref() == Some("healthy")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_file_deploys_the_acsrouting_example() {
    let _serial = serial().await;
    if !available("the_stack_file_deploys_the_acsrouting_example") {
        return;
    }
    let swarm = Swarm::up(1, 1);
    common::image::build(Some(swarm.host(1)), BERTH_IMAGE);
    // nginx:alpine's stand-in: the busybox image with httpd as its default command.
    let restserver = "berth-test-httpd:latest";
    let dockerfile = format!("FROM {BUSYBOX}\nCMD [\"sh\", \"-c\", \"{HTTPD}\"]\n");
    let mut build = std::process::Command::new("docker")
        .args(["-H", swarm.host(1), "build", "-q", "-t", restserver, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut build.stdin.take().unwrap(), dockerfile.as_bytes()).unwrap();
    assert!(build.wait().unwrap().success(), "build {restserver}");

    let deploy = std::process::Command::new("docker")
        .args([
            "-H",
            swarm.host(1),
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
        ])
        .arg(repo_path("conf/swarm/stack.yml"))
        .arg("demo")
        .env("DOCKER_GID", swarm.socket_gid())
        .env("BERTH_IMAGE", BERTH_IMAGE)
        .env("RESTSERVER_IMAGE", restserver)
        .env("CLIENT_IMAGE", BUSYBOX)
        .output()
        .unwrap();
    assert!(
        deploy.status.success(),
        "stack deploy: {}",
        String::from_utf8_lossy(&deploy.stderr)
    );

    // restclient prints each response's Set-Cookie header, then its body (the hostname).
    let mut answers: Vec<(String, String)> = Vec::new();
    wait_for(
        "6 answers in restclient's log",
        Duration::from_secs(90),
        || {
            let logs = swarm.docker(1, &["service", "logs", "--raw", "demo_restclient"]);
            let text = String::from_utf8_lossy(&logs.stdout).into_owned()
                + &String::from_utf8_lossy(&logs.stderr);
            answers.clear();
            let mut cookie = None;
            for line in text.lines().map(str::trim) {
                if let Some(value) = line.strip_prefix("Set-Cookie: CONTAINERID=") {
                    cookie = value.split(';').next().map(str::to_owned);
                } else if line.len() == 12 && line.bytes().all(|b| b.is_ascii_hexdigit()) {
                    answers.push((cookie.take().unwrap_or_default(), line.to_owned()));
                }
            }
            answers.len() >= 6
        },
    );
    let bodies: Vec<&str> = answers.iter().map(|(_, body)| body.as_str()).collect();
    assert_eq!(
        bodies.iter().collect::<BTreeSet<_>>().len(),
        2,
        "both replicas answer: {answers:?}"
    );
    let last: Vec<&str> = bodies[bodies.len() - 4..].to_vec();
    assert!(
        last.windows(2).all(|w| w[0] != w[1]),
        "the replicas answer by turns: {answers:?}"
    );
    for (cookie, body) in &answers {
        assert!(
            cookie.len() == 64 && cookie.starts_with(body.as_str()),
            "CONTAINERID names the container that answered: {cookie} / {body}"
        );
    }
    // The shipped config opens the route table to the berth container only: ask from inside.
    let berth = swarm.docker_ok(
        1,
        &[
            "ps",
            "-q",
            "--filter",
            "label=com.docker.swarm.service.name=demo_berth",
        ],
    );
    let routes = swarm.docker(1, &["exec", &berth, "berth", "routes", "--json"]);
    let routes: serde_json::Value = serde_json::from_slice(&routes.stdout).unwrap();
    let restserver = &routes[0];
    assert_eq!(restserver["name"], "restserver.local", "{routes:#}");
    assert_eq!(restserver["backends"].as_array().unwrap().len(), 2);
    assert_eq!(
        restserver["backends"][0]["task"]["service"],
        "demo_restserver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_three_nodes_a_rolling_update_and_a_lost_manager() {
    let _serial = serial().await;
    if !available("across_three_nodes") {
        return;
    }
    let swarm = Swarm::up(3, 3);
    // The engine declares a silent node down after a few heartbeats: 1 s, not the default 5 s.
    swarm.docker_ok(1, &["swarm", "update", "--dispatcher-heartbeat", "1s"]);
    let mut web = WEB.to_vec();
    web.extend([
        "--replicas",
        "2",
        "--replicas-max-per-node",
        "1",
        "--constraint",
        "node.labels.node!=1",
    ]);
    swarm.create_service("web", &web);
    // berth on node 1 asks node 3's manager first, its own node's second: losing node 3 also
    // shows the failover to the next manager.
    let node3 = swarm.host(3).trim_start_matches("unix://");
    let config = BERTH_CONFIG.replace(
        "swarm: { enabled: true, debounce: 20ms }",
        "swarm:\n    enabled: true\n    debounce: 20ms\n    endpoint: [unix:///run/manager-3.sock, unix:///var/run/docker.sock]",
    );
    let berth = swarm.berth(&config, &[&format!("{node3}:/run/manager-3.sock")]);
    wait_routable(&berth, "web.local", 2, Duration::from_secs(30));
    let nodes: BTreeSet<String> = berth
        .backends("web.local")
        .iter()
        .map(|b| b["task"]["node"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        nodes,
        [swarm.node_name(2), swarm.node_name(3)].into(),
        "one replica on each of the other nodes"
    );
    let client = client();
    let mut replicas = BTreeSet::new();
    for _ in 0..4 {
        let reply = get(&client, &berth.url("/"), "web.local").await.unwrap();
        assert_eq!(reply.status, 200);
        replicas.insert(served_by(&reply));
    }
    assert_eq!(
        replicas.len(),
        2,
        "both nodes' tasks answer over the overlay"
    );

    rolling_restart(&swarm, &berth, "_3_nodes").await;

    let errors_before = discovery_errors(&berth.metrics());
    let lost = berth
        .backends("web.local")
        .into_iter()
        .find(|b| b["task"]["node"] == swarm.node_name(3).as_str())
        .expect("a task on node 3");
    let task = lost["task"]["id"].as_str().unwrap().to_owned();
    let traffic = Traffic::start(&berth.url("/"), "web.local", reqwest::Method::GET, 2);
    let killed = Instant::now();
    swarm.kill_node(3);
    let mut out_of_rotation = None;
    wait_for(
        "the lost node's task to leave the route",
        Duration::from_secs(20),
        || {
            let backends = berth.backends("web.local");
            let mine = backends.iter().find(|b| b["task"]["id"] == task.as_str());
            if out_of_rotation.is_none() && mine.is_none_or(|b| b["routable"] == false) {
                out_of_rotation = Some(killed.elapsed());
            }
            mine.is_none()
        },
    );
    let removed = killed.elapsed();
    let counts = traffic.finish().await;
    timing("node_loss_to_out_of_rotation", out_of_rotation.unwrap());
    timing("node_loss_to_route_removal", removed);
    eprintln!(
        "swarm timing: node_loss_failed_requests {} (of {})",
        counts.failed(),
        counts.ok() + counts.failed()
    );
    assert!(
        discovery_errors(&berth.metrics()) > errors_before,
        "losing the engine berth talked to is counted"
    );
    wait_for(
        "berth to list again through node 1's manager",
        Duration::from_secs(20),
        || {
            berth
                .logs()
                .contains("swarm: connected and listed endpoint=unix:///var/run/docker.sock")
        },
    );
    assert_eq!(berth.routable_tasks("web.local").len(), 1);
    let reply = get(&client, &berth.url("/"), "web.local").await.unwrap();
    assert_eq!(reply.status, 200, "the task on node 2 still answers");
}

fn discovery_errors(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("berth_discovery_errors_total{source=\"swarm\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
