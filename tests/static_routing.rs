//! Static mode end to end: the real binary, real whoami backends, a real HTTP client.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn config(services: &str) -> String {
    format!("{LISTENERS}services:\n{services}")
}

fn service(name: &str, domains: &str, extra: &str, backends: &[&Whoami]) -> String {
    let mut out = format!(
        "  - name: {name}\n    domains: {domains}\n    health_check: {{ interval: 200ms, timeout: 500ms }}\n{extra}    backends:\n"
    );
    for b in backends {
        out.push_str(&format!("      - address: \"{}\"\n", b.addr));
    }
    out
}

async fn count_backends(
    client: &reqwest::Client,
    url: &str,
    host: &str,
    n: usize,
) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let reply = get(client, url, host).await.unwrap();
        assert_eq!(reply.status, 200, "{host}: {}", reply.body);
        *seen.entry(reply.backend().unwrap().to_owned()).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn routes_by_host_with_wildcards_and_round_robin() {
    let a = Whoami::start("a");
    let b = Whoami::start("b");
    let berth = Berth::start(&config(&service(
        "api",
        r#"["api.example.com", "*.api.example.com"]"#,
        "",
        &[&a, &b],
    )));
    berth.wait_backend_health("api", a.addr, "healthy");
    berth.wait_backend_health("api", b.addr, "healthy");
    let client = client();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for host in [
        "api.example.com",
        "API.Example.com:8080",
        "x.api.example.com",
        "a.b.api.example.com",
    ] {
        for (name, n) in count_backends(&client, &berth.url("/"), host, 4).await {
            *seen.entry(name).or_default() += n;
        }
    }
    assert_eq!(seen.get("a"), Some(&8), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&8), "{seen:?}");

    let reply = get(&client, &berth.url("/"), "api.example.org")
        .await
        .unwrap();
    assert_eq!(reply.status, 404);
    assert!(
        reply
            .body
            .contains("no route matches host \"api.example.org\""),
        "{}",
        reply.body
    );
    let reply = get(&client, &berth.url("/"), "example.com").await.unwrap();
    assert_eq!(
        reply.status, 404,
        "*.api.example.com must not match a bare parent"
    );
    assert!(berth
        .metrics()
        .contains(r#"berth_requests_unrouted_total{code="404"} 2"#));
}

#[tokio::test]
async fn longest_path_prefix_wins() {
    let root = Whoami::start("root");
    let api = Whoami::start("api");
    let v2 = Whoami::start("v2");
    let berth = Berth::start(&config(&format!(
        "{}{}{}",
        service("root", "[shop.test]", "", &[&root]),
        service("api", "[shop.test]", "    path_prefix: /api\n", &[&api]),
        service("v2", "[shop.test]", "    path_prefix: /api/v2\n", &[&v2]),
    )));
    for (name, w) in [("root", &root), ("api", &api), ("v2", &v2)] {
        berth.wait_backend_health(name, w.addr, "healthy");
    }
    let client = client();
    for (path, expected) in [
        ("/", "root"),
        ("/apiary", "root"),
        ("/api", "api"),
        ("/api/users?x=1", "api"),
        ("/api/v2", "v2"),
        ("/api/v2/orders", "v2"),
    ] {
        let reply = get(&client, &berth.url(path), "shop.test").await.unwrap();
        assert_eq!(reply.backend(), Some(expected), "{path}");
    }
}

#[tokio::test]
async fn weighted_round_robin_follows_the_weights() {
    let backends = [
        Whoami::start("w1"),
        Whoami::start("w2"),
        Whoami::start("w3"),
    ];
    let mut svc = String::from(
        "  - name: weighted\n    domains: [w.test]\n    health_check: { interval: 200ms }\n    backends:\n",
    );
    for (i, b) in backends.iter().enumerate() {
        svc.push_str(&format!(
            "      - {{ address: \"{}\", weight: {} }}\n",
            b.addr,
            i + 1
        ));
    }
    let berth = Berth::start(&config(&svc));
    for b in &backends {
        berth.wait_backend_health("weighted", b.addr, "healthy");
    }
    let seen = count_backends(&client(), &berth.url("/"), "w.test", 60).await;
    assert_eq!(
        (seen["w1"], seen["w2"], seen["w3"]),
        (10, 20, 30),
        "weights 1:2:3 over 60 requests: {seen:?}"
    );
}

#[tokio::test]
async fn no_healthy_backend_is_503_and_never_a_hang() {
    let dead = free_addr();
    let berth = Berth::start(&config(&format!(
        "  - name: gone\n    domains: [gone.test]\n    health_check: {{ interval: 200ms }}\n    backends:\n      - address: \"{dead}\"\n"
    )));
    let client = client();
    let started = Instant::now();
    let reply = get(&client, &berth.url("/"), "gone.test").await.unwrap();
    assert_eq!(reply.status, 503);
    assert!(
        reply
            .body
            .contains("no healthy backend for service \"gone\""),
        "{}",
        reply.body
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    berth.wait_backend_health("gone", dead, "unhealthy");
    assert_eq!(
        get(&client, &berth.url("/"), "gone.test")
            .await
            .unwrap()
            .status,
        503
    );
    // Metrics are recorded in the logging phase, just after the response is sent.
    wait_for("both 503s to be counted", Duration::from_secs(2), || {
        berth
            .metrics()
            .contains(r#"berth_service_requests_total{code="503",method="GET",service="gone"} 2"#)
    });
}

#[tokio::test]
async fn a_backend_gets_no_traffic_before_its_first_probe_passes() {
    let a = Whoami::start("a");
    let berth = Berth::start(&config(&format!(
        "  - name: slow\n    domains: [slow.test]\n    health_check: {{ interval: 200ms, initial_delay: 2s }}\n    backends:\n      - address: \"{}\"\n",
        a.addr
    )));
    let client = client();
    assert_eq!(
        berth.backend_health("slow", a.addr).as_deref(),
        Some("starting")
    );
    assert_eq!(
        get(&client, &berth.url("/"), "slow.test")
            .await
            .unwrap()
            .status,
        503
    );
    berth.wait_backend_health("slow", a.addr, "healthy");
    assert_eq!(
        get(&client, &berth.url("/"), "slow.test")
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn a_killed_backend_leaves_rotation_and_returns_when_restarted() {
    let a = Whoami::start("a");
    let mut b = Whoami::start("b");
    let berth = Berth::start(&config(&service("api", "[api.test]", "", &[&a, &b])));
    berth.wait_backend_health("api", b.addr, "healthy");
    berth.wait_backend_health("api", a.addr, "healthy");

    b.kill();
    let killed = Instant::now();
    berth.wait_backend_health("api", b.addr, "unhealthy");
    let removal = killed.elapsed();
    eprintln!("dead backend left rotation {removal:?} after it was killed (interval 200ms, unhealthy_threshold 2)");
    assert!(removal < Duration::from_millis(1500), "{removal:?}");
    assert!(berth.metrics().contains(&format!(
        "berth_server_up{{server=\"{}\",service=\"api\"}} 0",
        b.addr
    )));
    let client = client();
    let seen = count_backends(&client, &berth.url("/"), "api.test", 10).await;
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");

    b.restart();
    berth.wait_backend_health("api", b.addr, "healthy");
    let seen = count_backends(&client, &berth.url("/"), "api.test", 10).await;
    assert_eq!(seen.get("b"), Some(&5), "{seen:?}");
}

#[tokio::test]
async fn retries_hide_a_dead_backend_that_checks_have_not_caught() {
    let a = Whoami::start("a");
    let mut b = Whoami::start("b");
    let svc = format!(
        "  - name: api\n    domains: [api.test]\n    health_check: {{ interval: 1m }}\n    retries: 1\n    backends:\n      - address: \"{}\"\n      - address: \"{}\"\n",
        a.addr, b.addr
    );
    let berth = Berth::start(&config(&svc));
    berth.wait_backend_health("api", b.addr, "healthy");
    let client = client();
    count_backends(&client, &berth.url("/"), "api.test", 4).await;
    b.kill();
    let seen = count_backends(&client, &berth.url("/"), "api.test", 20).await;
    assert_eq!(seen.get("a"), Some(&20), "{seen:?}");
    assert_eq!(
        berth.backend_health("api", b.addr).as_deref(),
        Some("healthy"),
        "the check has not run yet"
    );
    let metrics = berth.metrics();
    assert!(
        metrics.contains("berth_service_retries_total{service=\"api\"}"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "berth_server_connection_errors_total{{server=\"{}\",service=\"api\"}}",
        b.addr
    )));
}

/// berth sets the forwarding headers and keeps `Host`. A client's own `X-Forwarded-For` is
/// appended to only when the peer is one of the listener's `trusted_proxies`; by default it is
/// replaced (see `tests/hostile.rs` for Proto and Host).
#[tokio::test]
async fn forwarding_headers_are_added_and_host_is_kept() {
    let a = Whoami::start("a");
    let services = service("api", "[api.test]", "", &[&a]);
    for (listener, forwarded_for) in [
        ("", "x-forwarded-for: 127.0.0.1\n"),
        (
            "    trusted_proxies: [\"127.0.0.1\"]\n",
            "x-forwarded-for: 203.0.113.7, 127.0.0.1\n",
        ),
    ] {
        let yaml = config(&services).replace(
            "    address: \"{http}\"\n",
            &format!("    address: \"{{http}}\"\n{listener}"),
        );
        let berth = Berth::start(&yaml);
        berth.wait_backend_health("api", a.addr, "healthy");
        let reply = get_with(
            &client(),
            &berth.url("/echo"),
            &[
                ("host", "api.test:8080"),
                ("x-forwarded-for", "203.0.113.7"),
            ],
        )
        .await
        .unwrap();
        let body = reply.body.to_ascii_lowercase();
        assert!(body.contains("host: api.test:8080"), "{body}");
        assert!(body.contains(forwarded_for), "{listener:?}: {body}");
        assert!(body.contains("x-forwarded-proto: http"), "{body}");
        assert!(body.contains("x-forwarded-host: api.test:8080"), "{body}");
    }
}

#[tokio::test]
async fn access_log_writes_one_line_per_request_to_stdout_when_enabled() {
    let a = Whoami::start("a");
    let services = service("api", "[api.test]", "", &[&a]);
    let berth = Berth::start(&format!(
        "{LISTENERS}server:\n  access_log: true\nservices:\n{services}"
    ));
    berth.wait_backend_health("api", a.addr, "healthy");
    let client = client();
    let reply = get(&client, &berth.url("/logged?x=1"), "api.test")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let reply = get(&client, &berth.url("/"), "nobody.test").await.unwrap();
    assert_eq!(reply.status, 404);
    let backend = format!("backend={}", a.addr);
    let mut lines = Vec::new();
    wait_for("two access-log lines", Duration::from_secs(5), || {
        lines = berth
            .process
            .log()
            .lines()
            .filter(|l| l.contains(" method=") && l.contains(" duration_us="))
            .map(str::to_owned)
            .collect();
        lines.len() >= 2
    });
    let routed = &lines[0];
    for field in [
        "method=GET",
        "host=api.test ",
        "uri=/logged?x=1 ",
        "status=200",
        "service=api ",
        backend.as_str(),
        "client=127.0.0.1:",
    ] {
        assert!(routed.contains(field), "{field} missing in {routed}");
    }
    assert!(lines[1].contains("status=404"), "{}", lines[1]);
    assert!(lines[1].contains("host=nobody.test "), "{}", lines[1]);
    assert!(!lines[1].contains("service="), "{}", lines[1]);
}

#[tokio::test]
async fn access_log_is_off_by_default() {
    let a = Whoami::start("a");
    let berth = Berth::start(&config(&service("api", "[api.test]", "", &[&a])));
    berth.wait_backend_health("api", a.addr, "healthy");
    let reply = get(&client(), &berth.url("/"), "api.test").await.unwrap();
    assert_eq!(reply.status, 200);
    // The access log is written every 100 ms; give it ample time to (wrongly) appear.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!berth.process.log().contains(" duration_us="));
}

#[tokio::test]
async fn sticky_cookie_pins_a_client_to_its_backend() {
    let mut a = Whoami::start("a");
    let mut b = Whoami::start("b");
    let berth = Berth::start(&config(&service(
        "api",
        "[api.test]",
        "    sticky_cookie: SRV\n",
        &[&a, &b],
    )));
    berth.wait_backend_health("api", a.addr, "healthy");
    berth.wait_backend_health("api", b.addr, "healthy");
    let client = client();
    let first = get(&client, &berth.url("/"), "api.test").await.unwrap();
    let cookie = first.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.starts_with("SRV=") && cookie.ends_with("; path=/"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let pinned = first.backend().unwrap().to_owned();
    for _ in 0..6 {
        let reply = get_with(
            &client,
            &berth.url("/"),
            &[("host", "api.test"), ("cookie", &pair)],
        )
        .await
        .unwrap();
        assert_eq!(reply.backend(), Some(pinned.as_str()));
        assert!(
            reply.header("set-cookie").is_none(),
            "a valid cookie is not set again"
        );
    }
    // When the pinned backend goes, the client moves and gets a new cookie.
    let pinned_backend = if pinned == "a" { &mut a } else { &mut b };
    pinned_backend.kill();
    berth.wait_backend_health("api", pinned_backend.addr, "unhealthy");
    let moved = get_with(
        &client,
        &berth.url("/"),
        &[("host", "api.test"), ("cookie", &pair)],
    )
    .await
    .unwrap();
    assert_eq!(moved.status, 200);
    assert_ne!(moved.backend(), Some(pinned.as_str()));
    assert!(moved.header("set-cookie").unwrap().starts_with("SRV="));
}

/// Sends raw bytes and returns the status line berth answers with.
fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_absolute_uris_route_by_authority() {
    let a = Whoami::start("a");
    let berth = Berth::start(&config(&service("api", "[api.test]", "", &[&a])));
    berth.wait_backend_health("api", a.addr, "healthy");
    let status = raw_request(berth.http, b"GET / HTTP/1.0\r\n\r\n");
    assert!(status.contains(" 400 "), "no Host: {status}");
    let status = raw_request(
        berth.http,
        b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
    );
    assert!(status.contains(" 400 "), "bad Host: {status}");
    let status = raw_request(berth.http, b"\x16\x03\x01garbage\r\n\r\n");
    assert!(
        status.is_empty() || status.contains(" 400 "),
        "garbage: {status}"
    );
    let status = raw_request(
        berth.http,
        b"GET http://api.test/x HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
    );
    assert!(status.contains(" 200 "), "absolute-form: {status}");
    // Pingora refuses an authority that contradicts Host (a request-smuggling guard).
    let status = raw_request(
        berth.http,
        b"GET http://api.test/x HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    );
    assert!(
        status.contains(" 400 "),
        "contradicting absolute-form: {status}"
    );
    // Still alive and serving.
    assert_eq!(
        get(&client(), &berth.url("/"), "api.test")
            .await
            .unwrap()
            .status,
        200
    );
}

/// Runs a client loop against `host` until `stop`, counting failures (non-200 or errors).
fn client_loop(
    url: String,
    host: &'static str,
    stop: Arc<AtomicBool>,
) -> (
    tokio::task::JoinHandle<()>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (ok2, failed2) = (Arc::clone(&ok), Arc::clone(&failed));
    let task = tokio::spawn(async move {
        let client = client();
        while !stop.load(Ordering::Relaxed) {
            match get(&client, &url, host).await {
                Ok(reply) if reply.status == 200 => ok2.fetch_add(1, Ordering::Relaxed),
                Ok(reply) => {
                    eprintln!("client loop: {} {}", reply.status, reply.body);
                    failed2.fetch_add(1, Ordering::Relaxed)
                }
                Err(e) => {
                    eprintln!("client loop: {e}");
                    failed2.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    });
    (task, ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_valid_config_and_refuses_a_broken_one_without_dropping_requests() {
    let a = Whoami::start("a");
    let b = Whoami::start("b");
    let v1 = config(&service("api", "[api.test]", "", &[&a]));
    let berth = Berth::start(&v1);
    berth.wait_backend_health("api", a.addr, "healthy");
    let stop = Arc::new(AtomicBool::new(false));
    let (task, ok, failed) = client_loop(berth.url("/"), "api.test", Arc::clone(&stop));
    let client = client();

    // A valid change, by SIGHUP: a second backend and a new service.
    let v2 = config(&format!(
        "{}{}",
        service("api", "[api.test]", "", &[&a, &b]),
        service("web", "[web.test]", "", &[&b]),
    ));
    berth.write_config(&v2);
    berth.process.signal("HUP");
    berth.wait_backend_health("web", b.addr, "healthy");
    assert_eq!(
        get(&client, &berth.url("/"), "web.test")
            .await
            .unwrap()
            .backend(),
        Some("b")
    );
    assert_eq!(
        berth.backend_health("api", a.addr).as_deref(),
        Some("healthy"),
        "an unchanged backend keeps its health"
    );

    // A broken config is refused; everything keeps serving.
    berth.write_config("listeners: [}\n");
    berth.process.signal("HUP");
    wait_for(
        "the refused reload to be counted",
        Duration::from_secs(5),
        || {
            berth
                .metrics()
                .contains(r#"berth_config_reloads_total{result="failure"} 1"#)
        },
    );
    assert!(berth
        .metrics()
        .contains("berth_config_last_reload_success 0"));
    assert_eq!(
        get(&client, &berth.url("/"), "web.test")
            .await
            .unwrap()
            .status,
        200
    );
    assert!(berth.process.log().contains("config reload refused"));

    // A change of the file alone (no signal) is picked up too.
    berth.write_config(&config(&service("api", "[api.test]", "", &[&a, &b])));
    wait_for(
        "the file watcher to drop web.test",
        Duration::from_secs(10),
        || berth.routes().as_array().unwrap().len() == 1,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("client loop during reloads: {ok} ok, {failed} failed");
    assert!(ok > 50, "the loop ran ({ok})");
    assert_eq!(failed, 0);
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_zero() {
    let a = Whoami::start("a");
    let mut berth = Berth::start(&config(&service("api", "[api.test]", "", &[&a])));
    berth.wait_backend_health("api", a.addr, "healthy");
    let url = berth.url("/slow?wait=1500ms");
    let in_flight = tokio::spawn(async move { get(&client(), &url, "api.test").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    berth.process.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!accepts(berth.http), "no new connections after SIGTERM");
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.status, 200, "the in-flight request completes");
    let status = berth.process.wait_exit(Duration::from_secs(5));
    let took = signalled.elapsed();
    eprintln!("berth exited {took:?} after SIGTERM with a 1.5 s request in flight");
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(3),
        "exits once drained, not after the whole grace period"
    );
}

#[test]
fn check_accepts_a_good_config_and_pinpoints_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let fill = |yaml: String| {
        yaml.replace("{http}", "127.0.0.1:8080")
            .replace("{admin}", "127.0.0.1:9900")
    };
    let good = dir.path().join("good.yaml");
    let good_services = "  - domains: [a.test]\n    backends: [{address: \"127.0.0.1:9\"}]\n";
    std::fs::write(&good, fill(config(good_services))).unwrap();
    let out = check(&good);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok (1 listeners, 1 services, 1 backends)")
    );

    let bad = dir.path().join("bad.yaml");
    let bad_services = "  - domains: [a.test]\n    health_check:\n      interval: soon\n";
    std::fs::write(&bad, fill(config(bad_services))).unwrap();
    let out = check(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:"), "{err}");
    assert!(err.contains("services[0].health_check.interval"), "{err}");
    assert!(err.contains("invalid duration \"soon\""), "{err}");

    let out = std::process::Command::new(BERTH)
        .arg("check")
        .env("BERTH_CONFIG", &good)
        .output()
        .unwrap();
    assert!(out.status.success(), "BERTH_CONFIG names the file: {out:?}");
}

#[tokio::test]
async fn demo_serves_its_config_with_builtin_backends() {
    let (b1, b2) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let http = free_addr();
    let admin = free_addr();
    let demo = std::fs::read_to_string(repo_path("conf/demo.yaml"))
        .unwrap()
        .replace("127.0.0.1:8080", &http.to_string())
        .replace("127.0.0.1:9900", &admin.to_string())
        .replace("127.0.0.1:9001", &b1.to_string())
        .replace("127.0.0.1:9002", &b2.to_string());
    let path = dir.path().join("demo.yaml");
    std::fs::write(&path, demo).unwrap();
    let _demo = Process::spawn(
        "berth demo",
        std::process::Command::new(BERTH)
            .args(["demo", "--config"])
            .arg(&path),
        dir.path().join("demo.log"),
    );
    wait_for("demo ready", Duration::from_secs(20), || {
        admin_get(admin, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let client = client();
    wait_for(
        "both demo backends healthy",
        Duration::from_secs(10),
        || {
            admin_get(admin, "/api/routes")
                .is_some_and(|(_, body)| body.matches("\"healthy\"").count() >= 4)
        },
    );
    let seen = count_backends(&client, &format!("http://{http}/"), "whoami.localhost", 4).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn h2c_listeners_speak_http2_and_backends_still_get_a_host() {
    let a = Whoami::start("a");
    let berth = Berth::start(
        &config(&service("api", "[api.test]", "", &[&a]))
            .replace("address: \"{http}\"", "address: \"{http}\"\n    h2c: true"),
    );
    berth.wait_backend_health("api", a.addr, "healthy");
    // HTTP/2 carries the host as :authority, taken from the URL; resolve it to the listener.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("api.test", berth.http)
        .build()
        .unwrap();
    let response = h2
        .get(format!("http://api.test:{}/x", berth.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap().to_ascii_lowercase();
    assert!(body.contains("host: api.test"), "{body}");
    // HTTP/1.1 still works on the same listener.
    assert_eq!(
        get(&client(), &berth.url("/"), "api.test")
            .await
            .unwrap()
            .status,
        200
    );
}
