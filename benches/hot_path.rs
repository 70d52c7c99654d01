//! Micro-benchmarks of berth's own per-request work: host normalisation, route lookup, backend
//! selection, sticky-cookie parsing and metrics recording; and of what the admin listener
//! renders from a large table (the `/metrics` exposition, the status page).
//!
//! The end-to-end harness (`bench/run.sh`) measures the whole proxy, where Pingora and the kernel
//! dominate; these isolate berth's share so a regression in it shows up here first, in
//! nanoseconds, instead of drowning in the +-8% noise of a load test.
//!
//! Run with `cargo bench --bench hot_path` (add `-- route` etc. to filter).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use berth::admin::exposition;
use berth::admin::status_page::StatusPage;
use berth::admin::traffic::Traffic;
use berth::config::{ListenerConfig, MetricsDetail};
use berth::health::probe::ProbeCache;
use berth::metrics::buffers::Buffers;
use berth::metrics::format::Format;
use berth::metrics::{Metrics, ServerSeries, ServiceSeries};
use berth::model::hostname::{normalize_request_host, DomainSet, MAX_HOST_LEN};
use berth::model::policy::{Algorithm, HealthCheckLayer, ProbeKind};
use berth::model::{BackendSpec, PolicyLayer, ServiceSpec, Snapshot, SourceKind};
use berth::proxy::cookie::find_in_header;
use berth::table::upstream::Upstream;
use berth::table::RouteTable;

/// A service whose backends are routable at once (no probe), like a `health_check: none` one.
fn service(name: &str, domains: Vec<String>, prefix: &str, backends: usize) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        domains,
        path_prefix: prefix.into(),
        listeners: None,
        policy: PolicyLayer {
            health_check: HealthCheckLayer {
                kind: Some(ProbeKind::None),
                ..HealthCheckLayer::default()
            },
            ..PolicyLayer::default()
        },
        backends: (0..backends)
            .map(|i| BackendSpec::new(format!("127.0.0.1:{}", 9001 + i).parse().unwrap()))
            .collect(),
        source: SourceKind::File,
    }
}

/// The upstream of `spec` with the built-in defaults, as the control plane would build it.
fn build(spec: ServiceSpec, probes: &ProbeCache) -> Upstream {
    let policy = spec.policy.resolve();
    Upstream::build(Arc::new(spec), Arc::new(policy), None, probes)
}

fn listener() -> ListenerConfig {
    ListenerConfig::new("main", "127.0.0.1:8080".parse().unwrap())
}

/// 1,000 services: 800 exact hosts (every 10th with an extra `/api` route), 200 wildcards.
fn route_table() -> RouteTable {
    let mut services = Vec::new();
    for i in 0..800 {
        services.push(service(
            &format!("exact-{i}"),
            vec![format!("app{i}.example.com")],
            "/",
            1,
        ));
        if i % 10 == 0 {
            services.push(service(
                &format!("api-{i}"),
                vec![format!("app{i}.example.com")],
                "/api",
                1,
            ));
        }
    }
    for i in 0..200 {
        services.push(service(
            &format!("wild-{i}"),
            vec![format!("*.tenant{i}.example.org")],
            "/",
            1,
        ));
    }
    RouteTable::compile(
        &Snapshot::of(services, None),
        &PolicyLayer::default(),
        &[listener()],
        &DomainSet::default(),
        &RouteTable::default(),
        &ProbeCache::default(),
    )
}

fn bench_host(c: &mut Criterion) {
    let mut group = c.benchmark_group("host");
    for (name, raw) in [
        ("plain", &b"app42.example.com"[..]),
        ("port_upper", &b"App42.Example.COM:8080"[..]),
    ] {
        group.bench_function(BenchmarkId::new("normalize", name), |b| {
            let mut buf = [0u8; MAX_HOST_LEN];
            b.iter(|| normalize_request_host(black_box(raw), &mut buf).map(str::len))
        });
    }
    group.finish();
}

fn bench_route(c: &mut Criterion) {
    let table = route_table();
    let mut group = c.benchmark_group("route_1000_services");
    let cases: [(&str, &str, &[u8]); 5] = [
        ("exact", "app421.example.com", b"/index.html"),
        ("exact_longer_prefix", "app420.example.com", b"/api/users/7"),
        ("wildcard_2_labels_deep", "a.b.tenant99.example.org", b"/"),
        ("miss_unknown_host", "nobody.example.net", b"/"),
        ("miss_many_labels", "a.b.c.d.e.f.example.net", b"/"),
    ];
    for (name, host, path) in cases {
        let expect_hit = !name.starts_with("miss");
        assert_eq!(table.route(0, host, path).is_some(), expect_hit, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                table
                    .route(0, black_box(host), black_box(path))
                    .map(Arc::as_ptr)
            })
        });
    }
    group.finish();

    // Compile time is the control plane's (reloads, discovery events), not per request, but
    // it is what a busy Docker host pays on every container start and stop.
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("1000_services_from_scratch", |b| b.iter(route_table));
    group.finish();
}

fn bench_select(c: &mut Criterion) {
    let probes = ProbeCache::default();
    let mut group = c.benchmark_group("select");
    for backends in [3usize, 30] {
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::Random,
            Algorithm::ConsistentHash,
        ] {
            let mut spec = service(
                &format!("{}-{backends}", algorithm.as_str()),
                vec!["a.example.com".into()],
                "/",
                backends,
            );
            spec.policy.algorithm = Some(algorithm);
            let upstream = build(spec, &probes);
            assert!(upstream.select(b"10.0.0.1", &[]).is_some());
            group.bench_function(
                BenchmarkId::new(algorithm.as_str(), format!("{backends}_backends")),
                |b| b.iter(|| upstream.select(black_box(&[10, 0, 0, 1]), black_box(&[]))),
            );
        }
    }

    // A retry: the first backend failed, pick any other.
    let upstream = build(
        service("retry", vec!["r.example.com".into()], "/", 3),
        &probes,
    );
    group.bench_function("round_robin/3_backends_excluding_1", |b| {
        b.iter(|| upstream.select(b"", black_box(&[0])))
    });

    // A sticky hit: the cookie names a routable backend.
    let mut spec = service("sticky", vec!["s.example.com".into()], "/", 3);
    spec.policy.sticky_cookie = Some("SRV".into());
    let upstream = build(spec, &probes);
    let id = upstream.member(1).cookie_id();
    assert_eq!(upstream.sticky_member(id.as_bytes(), &[]), Some(1));
    group.bench_function("sticky_member_hit", |b| {
        b.iter(|| upstream.sticky_member(black_box(id.as_bytes()), &[]))
    });
    group.finish();
}

fn bench_cookie(c: &mut Criterion) {
    let mut group = c.benchmark_group("cookie");
    let header = b"_ga=GA1.2.1234567890.1700000000; session=0f3c9a7e1b2d4c5f6a7b8c9d; \
                   theme=dark; SRV=9e1f0c2b3a4d5e6f; lang=en-GB";
    group.throughput(Throughput::Bytes(header.len() as u64));
    for (name, cookie) in [
        ("first", &b"_ga"[..]),
        ("fourth", &b"SRV"[..]),
        ("absent", &b"BERTHID"[..]),
    ] {
        group.bench_function(BenchmarkId::new("find_in_header_5_cookies", name), |b| {
            b.iter(|| find_in_header(black_box(header), black_box(cookie)))
        });
    }
    group.bench_function("find_in_header_single", |b| {
        b.iter(|| find_in_header(black_box(b"SRV=9e1f0c2b3a4d5e6f"), black_box(b"SRV")))
    });
    group.finish();
}

fn bench_metrics(c: &mut Criterion) {
    let service_series = ServiceSeries::new("web");
    let server = ServerSeries::new("web", "127.0.0.1:9001");
    let elapsed = Duration::from_micros(420);
    let mut group = c.benchmark_group("metrics");
    group.bench_function("service_record_request", |b| {
        b.iter(|| {
            service_series.record_request(black_box(200), &http::Method::GET, black_box(elapsed))
        })
    });
    group.bench_function("server_record_response", |b| {
        b.iter(|| server.record_response(black_box(200), black_box(elapsed), 13, 0))
    });
    // What the proxy's `logging` hook does for every proxied request.
    group.bench_function("per_request_both", |b| {
        b.iter(|| {
            service_series.record_request(black_box(200), &http::Method::GET, black_box(elapsed));
            server.record_response(black_box(200), black_box(elapsed), 13, 0);
        })
    });
    // The in-flight gauges `Route` moves up and down around each request.
    group.bench_function("open_gauges_inc_dec", |b| {
        b.iter(|| {
            service_series.open.inc();
            server.open.inc();
            server.open.dec();
            service_series.open.dec();
        })
    });
    group.finish();

    // A scrape of 10,000 services / 30,000 backends (issue 15's fleet; a smaller table would fit
    // in the CPU's cache and hide what a scrape costs) that have all served traffic: the
    // exposition is written from the table's own handles, per format and detail level, into
    // buffers kept between scrapes as the admin keeps them.
    let metrics = Metrics::new();
    let buffers = Buffers::default();
    let table = served_table(10_000, elapsed);
    let mut group = c.benchmark_group("exposition_10000_services_30000_backends");
    group.sample_size(10);
    let bytes = |parts: Vec<bytes::Bytes>| parts.iter().map(|p| p.len()).sum::<usize>();
    for format in [Format::Text, Format::Proto] {
        for detail in [MetricsDetail::Full, MetricsDetail::Service] {
            let render = || exposition::render(&table, &metrics, detail, format, &buffers);
            group.throughput(Throughput::Bytes(bytes(render()) as u64));
            group.bench_function(format!("{detail:?}_{format:?}"), |b| {
                b.iter(|| bytes(render()))
            });
        }
    }
    group.finish();

    // The status page of 1,000 services, with a minute of traffic sampled for every service.
    let table = served_table(1_000, elapsed);
    let traffic = Traffic::default();
    let now = std::time::Instant::now();
    traffic.record(
        &table,
        now.checked_sub(Duration::from_secs(60)).unwrap_or(now),
        false,
    );
    let page = StatusPage::new(std::time::SystemTime::now(), vec!["main".into()]);
    let bytes = page.render(&table, Some(&traffic)).len();
    println!("status page, 1,000 services / 3,000 backends: {bytes} bytes");
    let mut group = c.benchmark_group("status_page_1000_services_3000_backends");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("render", |b| {
        b.iter(|| page.render(&table, Some(&traffic)).len())
    });
    group.finish();
}

/// A table of `services` services with 3 backends each, every one of which has served a request.
fn served_table(services: usize, elapsed: Duration) -> RouteTable {
    let table = RouteTable::compile(
        &Snapshot::of(
            (0..services).map(|i| {
                service(
                    &format!("svc-{i}"),
                    vec![format!("s{i}.example.com")],
                    "/",
                    3,
                )
            }),
            None,
        ),
        &PolicyLayer::default(),
        &[listener()],
        &DomainSet::default(),
        &RouteTable::default(),
        &ProbeCache::default(),
    );
    for upstream in table.upstreams() {
        upstream
            .series
            .record_request(200, &http::Method::GET, elapsed);
        for member in upstream.members() {
            member.series.record_response(200, elapsed, 13, 0);
        }
    }
    table
}

criterion_group!(
    benches,
    bench_host,
    bench_route,
    bench_select,
    bench_cookie,
    bench_metrics
);
criterion_main!(benches);
