//! Docker discovery against a real engine: real containers on the bridge network, berth on the
//! host, a real HTTP client. Skipped (loudly) without an engine; CI requires one.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;

fn backend(container: &Container) -> SocketAddr {
    SocketAddr::new(container.ip(None), 80)
}

/// A domain only this test process uses (other tests' containers are visible to every berth).
fn domain(name: &str) -> String {
    format!("{name}-{}.test", std::process::id())
}

/// Which container answered (busybox httpd serves the hostname, i.e. the short id).
fn served_by(reply: &Reply) -> String {
    reply.body.trim().to_owned()
}

#[tokio::test]
async fn the_acsrouting_example_alternates_sets_containerid_and_sticks() {
    if !available("the_acsrouting_example") {
        return;
    }
    let labels = [
        ("aliyun.routing.port_80", "restserver.local"),
        ("aliyun.scale", "2"),
        ("aliyun.probe.url", "http://container:80"),
        ("aliyun.probe.initial_delay_seconds", "2"),
        ("aliyun.probe.timeout_seconds", "2"),
    ];
    let c1 = Container::run("restserver_1", &labels, &[]);
    let c2 = Container::run("restserver_2", &labels, &[]);
    let berth = Berth::start(&berth_config(""));
    berth.wait_backend_health("restserver.local", backend(&c1), "healthy");
    berth.wait_backend_health("restserver.local", backend(&c2), "healthy");

    let ids: HashMap<&str, &str> = [
        (c1.short_id(), c1.id.as_str()),
        (c2.short_id(), c2.id.as_str()),
    ]
    .into();
    let client = client();
    let mut order = Vec::new();
    for _ in 0..6 {
        let reply = get(&client, &berth.url("/"), "restserver.local")
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        let short = served_by(&reply);
        let full = ids
            .get(short.as_str())
            .unwrap_or_else(|| panic!("unknown server {short}"));
        assert_eq!(
            reply.header("set-cookie"),
            Some(format!("CONTAINERID={full}; path=/").as_str())
        );
        order.push(short);
    }
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "requests alternate between the two containers: {order:?}"
    );

    let cookie = format!("CONTAINERID={}", c2.id);
    for _ in 0..5 {
        let reply = get_with(
            &client,
            &berth.url("/"),
            &[("host", "restserver.local"), ("cookie", &cookie)],
        )
        .await
        .unwrap();
        assert_eq!(
            served_by(&reply),
            c2.short_id(),
            "the cookie pins the container"
        );
        assert!(reply.header("set-cookie").is_none());
    }
}

/// Requests in a loop until stopped; records failures and when each container last answered.
struct Loop {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    ok: Arc<AtomicUsize>,
    last_seen: Arc<Mutex<HashMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Loop {
    fn start(url: String, host: String) -> Loop {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let ok = Arc::new(AtomicUsize::new(0));
        let last_seen = Arc::new(Mutex::new(HashMap::new()));
        let (s, f, o, l) = (stop.clone(), failed.clone(), ok.clone(), last_seen.clone());
        let task = tokio::spawn(async move {
            let client = client();
            while !s.load(Ordering::Relaxed) {
                match get(&client, &url, &host).await {
                    Ok(reply) if reply.status == 200 => {
                        o.fetch_add(1, Ordering::Relaxed);
                        l.lock().unwrap().insert(served_by(&reply), Instant::now());
                    }
                    Ok(reply) => {
                        eprintln!("loop: {} {}", reply.status, reply.body);
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("loop: {e}");
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Loop {
            stop,
            failed,
            ok,
            last_seen,
            task,
        }
    }

    async fn finish(self) -> (usize, usize, HashMap<String, Instant>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let seen = self.last_seen.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            seen,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_under_load_fails_no_request() {
    if !available("docker_stop_under_load") {
        return;
    }
    let host = domain("stop");
    let labels = [("berth.routing.port_80", host.as_str())];
    let c1 = Container::run("stop_1", &labels, &[]);
    let c2 = Container::run("stop_2", &labels, &[]);
    let berth = Berth::start(&berth_config(""));
    berth.wait_backend_health(&host, backend(&c1), "healthy");
    berth.wait_backend_health(&host, backend(&c2), "healthy");

    let c2_addr = backend(&c2);
    let load = Loop::start(berth.url("/"), host.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    c2.stop();
    let stopped = stopping.elapsed();
    let ok_at_stop = load.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (ok, failed, seen) = load.finish().await;
    let last = seen[c2.short_id()];
    eprintln!(
        "docker stop: {ok} requests ok, {failed} failed; last request routed to the stopped \
         container {:?} after `docker stop` began (the command took {stopped:?})",
        last.saturating_duration_since(stopping)
    );
    if failed > 0 {
        // What berth counted for this service: which backend failed, and how it was retried.
        let metrics = berth.metrics();
        let ours = metrics
            .lines()
            .filter(|l| l.contains(&host) && !l.contains("_bucket"));
        eprintln!("{}", ours.collect::<Vec<_>>().join("\n"));
    }
    assert_eq!(failed, 0);
    assert!(ok > 50, "the loop ran ({ok} requests)");
    assert!(ok > ok_at_stop, "the survivor keeps serving after the stop");
    wait_for(
        "the stopped container to leave the routes",
        Duration::from_secs(5),
        || berth.backend_health(&host, c2_addr).is_none(),
    );
}

#[tokio::test]
async fn a_failing_probe_takes_a_container_out_and_a_passing_one_brings_it_back() {
    if !available("failing_probe") {
        return;
    }
    let host = domain("probe");
    let labels = [
        ("berth.routing.port_80", host.as_str()),
        ("berth.probe.url", "http://container:80/health.html"),
    ];
    let c1 = Container::run("probe_1", &labels, &[]);
    let c2 = Container::run("probe_2", &labels, &[]);
    let berth = Berth::start(&berth_config(""));
    berth.wait_backend_health(&host, backend(&c1), "healthy");
    berth.wait_backend_health(&host, backend(&c2), "healthy");

    c2.exec("rm /www/health.html");
    let broken = Instant::now();
    berth.wait_backend_health(&host, backend(&c2), "unhealthy");
    eprintln!(
        "probe failure to removal: {:?} (interval 250ms, unhealthy_threshold 2)",
        broken.elapsed()
    );
    let client = client();
    for _ in 0..6 {
        let reply = get(&client, &berth.url("/"), &host).await.unwrap();
        assert_eq!(served_by(&reply), c1.short_id());
    }

    c2.exec("echo ok > /www/health.html");
    berth.wait_backend_health(&host, backend(&c2), "healthy");
    let mut seen = HashMap::new();
    for _ in 0..6 {
        let reply = get(&client, &berth.url("/"), &host).await.unwrap();
        *seen.entry(served_by(&reply)).or_insert(0) += 1;
    }
    assert_eq!(seen.get(c2.short_id()), Some(&3), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_container_joins_only_after_initial_delay_and_a_passing_probe() {
    if !available("new_container_joins") {
        return;
    }
    let host = domain("join");
    let labels = [
        ("berth.routing.port_80", host.as_str()),
        ("berth.probe.url", "http://container:80/"),
        ("berth.probe.initial_delay_seconds", "2"),
    ];
    let c1 = Container::run("join_1", &labels, &[]);
    let berth = Berth::start(&berth_config(""));
    berth.wait_backend_health(&host, backend(&c1), "healthy");

    let load = Loop::start(berth.url("/"), host.clone());
    let started = Instant::now();
    let c2 = Container::run("join_2", &labels, &[]);
    let running = Instant::now();
    wait_for(
        "berth to see the new container",
        Duration::from_secs(5),
        || berth.backend_health(&host, backend(&c2)).is_some(),
    );
    let seen_after = running.elapsed();
    assert_eq!(
        berth.backend_health(&host, backend(&c2)).as_deref(),
        Some("starting"),
        "no verdict before initial_delay"
    );
    wait_for(
        "the new container to serve",
        Duration::from_secs(10),
        || load.last_seen.lock().unwrap().contains_key(c2.short_id()),
    );
    let first = load.last_seen.lock().unwrap()[c2.short_id()];
    let (ok, failed, _) = load.finish().await;
    let joined = first.saturating_duration_since(started);
    eprintln!(
        "container start to first routed request: {joined:?} (initial_delay 2s; `docker run` \
         took {:?}, berth listed the container {seen_after:?} after it returned); {ok} ok, \
         {failed} failed",
        running.saturating_duration_since(started)
    );
    assert!(joined >= Duration::from_secs(2), "{joined:?}");
    assert_eq!(failed, 0);
}

#[tokio::test]
async fn docker_healthcheck_gates_routing() {
    if !available("docker_healthcheck") {
        return;
    }
    let host = domain("hc");
    let c = Container::run(
        "hc",
        &[("berth.routing.port_80", host.as_str())],
        &[
            "--health-cmd",
            "test -f /www/ready",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ],
    );
    let berth = Berth::start(&berth_config(""));
    wait_for("the container to appear", Duration::from_secs(5), || {
        berth.backend_health(&host, backend(&c)).is_some()
    });
    assert_eq!(
        berth.backend_health(&host, backend(&c)).as_deref(),
        Some("starting")
    );
    let client = client();
    assert_eq!(
        get(&client, &berth.url("/"), &host).await.unwrap().status,
        503
    );
    c.exec("touch /www/ready");
    berth.wait_backend_health(&host, backend(&c), "healthy");
    assert_eq!(
        get(&client, &berth.url("/"), &host).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn the_network_label_picks_which_network_to_route_on() {
    if !available("network_label") {
        return;
    }
    let front = Network::create("front");
    let back = Network::create("back");
    let host = domain("net");
    let c = Container::run(
        "twonets",
        &[
            ("berth.routing.port_80", host.as_str()),
            ("berth.network", back.name.as_str()),
        ],
        &["--network", &front.name],
    );
    docker_ok(&["network", "connect", &back.name, &c.id]);
    let berth = Berth::start(&berth_config(""));
    let addr = SocketAddr::new(c.ip(Some(&back.name)), 80);
    assert_ne!(addr.ip(), c.ip(Some(&front.name)));
    berth.wait_backend_health(&host, addr, "healthy");
    let reply = get(&client(), &berth.url("/"), &host).await.unwrap();
    assert_eq!(served_by(&reply), c.short_id());

    // Leaving that network takes the route away (network disconnect event).
    docker_ok(&["network", "disconnect", &back.name, &c.id]);
    wait_for(
        "the route to go with the network",
        Duration::from_secs(5),
        || berth.backend_health(&host, addr).is_none(),
    );
    assert!(berth.process.log().contains("is not on that network"));
}

#[tokio::test]
async fn bad_labels_skip_only_their_container_with_a_clear_warning() {
    if !available("bad_labels") {
        return;
    }
    let good_host = domain("good");
    let bad_host = domain("bad");
    let good = Container::run(
        "good",
        &[("berth.routing.port_80", good_host.as_str())],
        &[],
    );
    let bad_weight = Container::run(
        "badweight",
        &[
            ("berth.routing.port_80", bad_host.as_str()),
            ("berth.lb.weight", "heavy"),
        ],
        &[],
    );
    let bad_port = Container::run(
        "badport",
        &[("berth.routing.port_http", bad_host.as_str())],
        &[],
    );
    let bad_domain = Container::run(
        "baddomain",
        &[("aliyun.routing.port_80", "no spaces allowed.test")],
        &[],
    );
    let berth = Berth::start(&berth_config(""));
    berth.wait_backend_health(&good_host, backend(&good), "healthy");
    let client = client();
    assert_eq!(
        get(&client, &berth.url("/"), &good_host)
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(&client, &berth.url("/"), &bad_host)
            .await
            .unwrap()
            .status,
        404
    );
    let log = berth.process.log();
    for (container, label) in [
        (&bad_weight, "berth.lb.weight=\"heavy\""),
        (&bad_port, "berth.routing.port_http"),
        (&bad_domain, "aliyun.routing.port_80"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&container.name))
            .unwrap_or_else(|| panic!("no warning names {}:\n{log}", container.name));
        assert!(
            line.contains("WARN") && line.contains(label) && line.contains("skipped"),
            "{line}"
        );
    }
    assert!(!log.contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_label_opts_a_container_into_tls_listeners() {
    if !available("tls_label") {
        return;
    }
    let secure_host = domain("secure");
    let plain_host = domain("plain");
    let secure = Container::run(
        "secure",
        &[
            ("berth.routing.port_80", secure_host.as_str()),
            ("berth.tls", "true"),
            ("berth.tls.hsts", "max-age=60"),
        ],
        &[],
    );
    let plain = Container::run(
        "plain",
        &[("berth.routing.port_80", plain_host.as_str())],
        &[],
    );
    let pki = common::tls::Pki::new();
    let (crt, key) = pki.leaf("both", "both", &[&secure_host, &plain_host], -1, 30);
    let public = free_addr();
    let berth = Berth::start(&format!(
        r#"listeners:
  - name: main
    address: "{{http}}"
  - name: public
    address: "{public}"
    tls:
      certificates: [{{cert: "{crt}", key: "{key}"}}]
admin:
  address: "{{admin}}"
defaults:
  health_check: {{ interval: 250ms, timeout: 1s }}
discovery:
  docker:
    enabled: true
    debounce: 20ms
"#,
        crt = crt.display(),
        key = key.display(),
    ));
    berth.wait_backend_health(&secure_host, backend(&secure), "healthy");
    berth.wait_backend_health(&plain_host, backend(&plain), "healthy");
    let ca = pki.ca_file();
    for (host, served) in [(&secure_host, true), (&plain_host, false)] {
        let mut tls = common::tls::Tls::connect(public, &ca, common::tls::Hello::sni(host))
            .await
            .unwrap();
        let (status, headers, body) = tls.get(host, "/").await.unwrap();
        if served {
            assert_eq!((status, body.trim()), (200, secure.short_id()));
            assert!(headers.contains(&("strict-transport-security".into(), "max-age=60".into())));
        } else {
            assert_eq!(status, 404, "{host} has no berth.tls label");
        }
        let reply = get(&client(), &berth.url("/"), host).await.unwrap();
        assert_eq!(reply.status, 200, "plain listeners serve {host} either way");
    }
}

/// `berth.visibility: internal`, and a domain in `internal_domains` (`*.local` by default),
/// keep a Docker service off an edge listener: there it answers exactly as an unknown host,
/// while an internal listener serves it.
#[tokio::test]
async fn an_edge_listener_hides_internal_docker_services() {
    if !available("edge_hides_internal_docker_services") {
        return;
    }
    let network = Network::create("vis");
    let on_network = ["--network", network.name.as_str()];
    let private_host = domain("private");
    let local_host = format!("svc-{}.local", std::process::id());
    let public_host = domain("public");
    let private = Container::run(
        "private",
        &[
            ("berth.routing.port_80", private_host.as_str()),
            ("berth.visibility", "internal"),
        ],
        &on_network,
    );
    let local = Container::run(
        "local",
        &[("aliyun.routing.port_80", local_host.as_str())],
        &on_network,
    );
    let public = Container::run(
        "public",
        &[("berth.routing.port_80", public_host.as_str())],
        &on_network,
    );
    let lan = free_addr();
    let berth = Berth::start(&format!(
        r#"
listeners:
  - name: edge
    address: "{{http}}"
    role: edge
  - name: lan
    address: "{lan}"
    role: internal
admin:
  address: "{{admin}}"
defaults:
  health_check: {{ interval: 250ms, timeout: 1s }}
discovery:
  docker:
    enabled: true
    debounce: 20ms
    network: {}
"#,
        network.name
    ));
    for (host, container) in [
        (&private_host, &private),
        (&local_host, &local),
        (&public_host, &public),
    ] {
        let addr = SocketAddr::new(container.ip(Some(&network.name)), 80);
        berth.wait_backend_health(host, addr, "healthy");
    }
    let client = client();
    let edge = berth.url("/");
    let lan = format!("http://{lan}/");
    for (host, container) in [(&private_host, &private), (&local_host, &local)] {
        // An unknown host of the same length: the answer names the host.
        let unknown_host = format!("{}.test", "u".repeat(host.len() - ".test".len()));
        let unknown = get(&client, &edge, &unknown_host).await.unwrap();
        assert_eq!(unknown.status, 404);
        let hidden = get(&client, &edge, host).await.unwrap();
        assert_eq!(hidden.status, 404, "{host} on the edge listener");
        assert_eq!(
            hidden.body,
            unknown.body.replace(&unknown_host, host),
            "{host} answers on the edge exactly as an unknown host"
        );
        let mut headers = hidden.headers.clone();
        let mut unknown_headers = unknown.headers.clone();
        headers.remove("date");
        unknown_headers.remove("date");
        assert_eq!(headers, unknown_headers, "{host}: the same headers too");
        let served = get(&client, &lan, host).await.unwrap();
        assert_eq!(served.status, 200, "{host} on the internal listener");
        assert_eq!(served_by(&served), container.short_id());
    }
    for url in [&edge, &lan] {
        let reply = get(&client, url, &public_host).await.unwrap();
        assert_eq!(
            served_by(&reply),
            public.short_id(),
            "{public_host} at {url}"
        );
    }
    let routes = berth.routes();
    let listeners_of = |name: &str| {
        routes
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["listeners"].clone())
    };
    assert_eq!(
        listeners_of(&private_host),
        Some(serde_json::json!(["lan"]))
    );
    assert_eq!(
        listeners_of(&public_host),
        Some(serde_json::json!(["edge", "lan"]))
    );
}
