//! berth as a Prometheus target, checked with Prometheus' own tools: `promtool check metrics`
//! on the exposition, and a real Prometheus server scraping berth while a backend dies, queried
//! with every PromQL expression of the Grafana dashboard so the dashboard cannot drift from
//! the metrics.
//!
//! Needs Debian's `prometheus` package (`/usr/bin/prometheus`, `/usr/bin/promtool`); without
//! it the Prometheus tests print `SKIPPED` and pass.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const DASHBOARD: &str = "grafana/berth-dashboard.json";

/// Dashboard expressions that may legitimately return nothing in this static-mode scenario,
/// matched by the metric they read. Everything else must return at least one series.
const MAY_BE_EMPTY: &[&str] = &[
    // Discovery counters only get series once a discovery source (Docker) reports, and these
    // tests run berth with static services only.
    "berth_discovery_events_total",
    "berth_discovery_errors_total",
    // ACME orders only have series where an `acme` section is configured (tests/acme.rs).
    "berth_acme_orders_total",
];

fn prometheus_missing() -> bool {
    if Path::new(PROMETHEUS).exists() {
        return false;
    }
    eprintln!(
        "SKIPPED: prometheus not installed ({PROMETHEUS} is missing; apt-get install prometheus)"
    );
    true
}

/// Two whoami backends behind service `api` (HTTP probes every 200ms), and service `flaky`
/// whose second backend refuses connections and is never probed, so every other request to
/// it is a connection error and a retry. A TLS listener holds a certificate for `api`.
struct Scenario {
    a: Whoami,
    b: Whoami,
    dead: SocketAddr,
    berth: Berth,
    _pki: common::tls::Pki,
}

impl Scenario {
    fn start() -> Scenario {
        let a = Whoami::start("a");
        let b = Whoami::start("b");
        let dead = free_addr();
        let pki = common::tls::Pki::new();
        let (crt, key) = pki.leaf("api", "api", &["api.example.com"], -1, 30);
        let tls_listener = format!(
            "  - name: public\n    address: \"{}\"\n    tls:\n      certificates: [{{cert: \"{}\", key: \"{}\"}}]\n",
            free_addr(),
            crt.display(),
            key.display()
        );
        let listeners = LISTENERS.replace("admin:", &format!("{tls_listener}admin:"));
        let berth = Berth::start(&format!(
            r#"{listeners}services:
  - name: api
    domains: ["api.example.com"]
    health_check: {{ interval: 200ms, timeout: 500ms }}
    backends:
      - address: "{a}"
      - address: "{b}"
  - name: flaky
    domains: ["flaky.example.com"]
    health_check: {{ type: none }}
    backends:
      - address: "{a}"
      - address: "{dead}"
"#,
            a = a.addr,
            b = b.addr,
        ));
        berth.wait_backend_health("api", a.addr, "healthy");
        berth.wait_backend_health("api", b.addr, "healthy");
        Scenario {
            a,
            b,
            dead,
            berth,
            _pki: pki,
        }
    }
}

/// One round of mixed traffic to berth at `base` (`http://addr`): 200s, a 503 from the
/// backend, a POST with a body, a request that needs a retry, and unrouted 404 and 400.
/// Errors are ignored: a backend may be dying.
async fn traffic_round(client: &reqwest::Client, base: &str, round: usize) {
    let url = |path: &str| format!("{base}{path}");
    let _ = get(client, &url("/"), "api.example.com").await;
    let _ = get(client, &url("/"), "flaky.example.com").await;
    if round % 4 == 0 {
        let _ = get(client, &url("/?status=503"), "api.example.com").await;
        let _ = client
            .post(url("/upload"))
            .header("host", "api.example.com")
            .body("0123456789abcdef")
            .send()
            .await;
        let _ = get(client, &url("/"), "unknown.example.com").await;
        let _ = get(client, &url("/"), "bad host").await;
    }
}

#[tokio::test]
async fn promtool_accepts_the_metrics_exposition() {
    if prometheus_missing() {
        return;
    }
    // The check must be able to fail: a broken exposition is rejected.
    let (ok, out) = promtool_check_metrics("berth_broken{ 1\n");
    assert!(!ok, "promtool accepted a broken exposition: {out}");

    let s = Scenario::start();
    let client = client();
    for round in 0..12 {
        traffic_round(&client, &s.berth.url(""), round).await;
    }
    let metrics = s.berth.metrics();
    // The scenario produces what the dashboard shows, not just zeroes.
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series}:\n{metrics}"))
    };
    assert!(value(r#"berth_service_retries_total{service="flaky"}"#) > 0.0);
    let dead_errors = format!(
        r#"berth_server_connection_errors_total{{server="{}",service="flaky"}}"#,
        s.dead
    );
    assert!(value(&dead_errors) > 0.0);
    assert!(value(r#"berth_requests_unrouted_total{code="400"}"#) > 0.0);
    assert!(value(r#"berth_requests_unrouted_total{code="404"}"#) > 0.0);
    assert!(value(r#"berth_service_requests_total{code="503",method="GET",service="api"}"#) > 0.0);
    assert!(value(r#"berth_service_requests_total{code="200",method="POST",service="api"}"#) > 0.0);
    for family in [
        "berth_service_requests_total",
        "berth_service_retries_total",
        "berth_server_requests_total",
        "berth_server_connection_errors_total",
        "berth_requests_unrouted_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            metrics.contains(&format!("\n{family}")),
            "{family} missing:\n{metrics}"
        );
    }
    // promtool exits non-zero on parse errors and on lint problems, and prints each problem.
    // berth's exposition has none, so any output at all is a regression worth a look.
    let (ok, out) = promtool_check_metrics(&metrics);
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}\n---\n{metrics}"
    );
}

/// `/metrics` through the real binary: text by default and for any `Accept` berth cannot
/// serve or cannot read, protobuf (decodable, the same families) when it is preferred.
#[tokio::test]
async fn metrics_answer_protobuf_only_when_the_scraper_prefers_it() {
    let s = Scenario::start();
    let client = client();
    for round in 0..4 {
        traffic_round(&client, &s.berth.url(""), round).await;
    }
    let url = format!("http://{}/metrics", s.berth.admin);
    let scrape = |accept: Option<reqwest::header::HeaderValue>| {
        let mut request = client.get(&url);
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let header = |name| response.headers()[name].to_str().unwrap().to_owned();
            let (content_type, vary) = (header("content-type"), header("vary"));
            (content_type, vary, response.bytes().await.unwrap())
        }
    };
    let text_type = "text/plain; version=0.0.4; charset=utf-8";
    let protobuf = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; \
                    encoding=delimited";

    let (content_type, vary, text) = scrape(None).await;
    assert_eq!(
        (content_type.as_str(), vary.as_str()),
        (text_type, "Accept")
    );
    assert!(text.starts_with(b"# HELP "));

    let hostile: [&[u8]; 4] = [
        b"\xff\xfe;q=1, application/vnd.google.protobuf",
        b"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=NaN",
        b";;;=,=;q=;,,application/vnd.google.protobuf;;proto;encoding=",
        &b"text/plain;q=0.1,".repeat(400),
    ];
    for accept in hostile {
        let value = reqwest::header::HeaderValue::from_bytes(accept).unwrap();
        let (content_type, _, body) = scrape(Some(value)).await;
        assert_eq!(
            content_type,
            text_type,
            "{}",
            String::from_utf8_lossy(accept)
        );
        assert!(body.starts_with(b"# HELP "));
    }

    let accept = reqwest::header::HeaderValue::from_static(
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
         encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3",
    );
    let (content_type, vary, body) = scrape(Some(accept)).await;
    assert_eq!((content_type.as_str(), vary.as_str()), (protobuf, "Accept"));
    let mut input = protobuf::CodedInputStream::from_bytes(&body);
    let mut names = BTreeSet::new();
    while !input.eof().unwrap() {
        let family: prometheus::proto::MetricFamily = input.read_message().unwrap();
        assert!(!family.metric.is_empty(), "{}", family.name());
        names.insert(family.name().to_owned());
    }
    let text = String::from_utf8(text.to_vec()).unwrap();
    let text_names: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect();
    assert_eq!(names, text_names, "the same families in both formats");
}

/// Pipes `text` to `promtool check metrics`: (exit status success, stdout + stderr).
fn promtool_check_metrics(text: &str) -> (bool, String) {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {PROMTOOL}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A Prometheus server on loopback, scraping berth's admin listener every second.
struct Prometheus {
    addr: SocketAddr,
    http: reqwest::Client,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// With `protobuf`, Prometheus asks for the protobuf exposition (before 2.49 only the
    /// native-histograms feature does; classic histograms are still read as classic).
    async fn start(target: SocketAddr, protobuf: bool) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: berth\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = free_addr();
        let process = Process::spawn(
            "prometheus",
            Command::new(PROMETHEUS)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .args(protobuf.then_some("--enable-feature=native-histograms"))
                .arg("--log.level=warn"),
            dir.path().join("prometheus.log"),
        );
        let prometheus = Prometheus {
            addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            _process: process,
            _dir: dir,
        };
        eventually("prometheus /-/ready", Duration::from_secs(20), || async {
            let url = format!("http://{}/-/ready", prometheus.addr);
            let status = prometheus.http.get(url).send().await.ok()?.status();
            status.is_success().then_some(())
        })
        .await;
        prometheus
    }

    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = format!("http://{}{path}", self.addr);
        let response = self
            .http
            .get(url)
            .query(params)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"].clone())
    }

    /// An instant query; the result vector (or an error if the expression does not parse).
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => Ok(data["result"].as_array().unwrap().clone()),
            // A scalar is one value: count it as one series.
            _ => Ok(vec![data["result"].clone()]),
        }
    }

    /// The value of the single series of `expr`, if it has exactly one.
    async fn value(&self, expr: &str) -> Option<f64> {
        match self.query(expr).await.ok()?.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Grafana's `label_values(selector, label)` / `label_values(label)`.
    async fn label_values(&self, query: &str) -> Result<Vec<String>, String> {
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .ok_or_else(|| format!("not a label_values query: {query}"))?;
        let (selector, label) = match inner.rsplit_once(',') {
            Some((selector, label)) => (Some(selector.trim()), label.trim()),
            None => (None, inner.trim()),
        };
        let params: Vec<(&str, &str)> = selector.map(|s| ("match[]", s)).into_iter().collect();
        let data = self
            .api(&format!("/api/v1/label/{label}/values"), &params)
            .await?;
        Ok(data
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect())
    }
}

/// Polls `check` until it returns `Some`, without blocking the runtime.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_berth_and_every_dashboard_query_returns_data() {
    if prometheus_missing() {
        return;
    }
    scrape_and_query(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scraping_protobuf_gets_the_same_series_and_dashboard() {
    if prometheus_missing() {
        return;
    }
    scrape_and_query(true).await;
}

/// Prometheus scrapes berth (in the text format, or with `protobuf` in the protobuf one)
/// while traffic flows and a backend dies: the counters and gauges say what happened, and
/// every dashboard query returns data.
async fn scrape_and_query(protobuf: bool) {
    let started = Instant::now();
    let mut s = Scenario::start();
    let prometheus = Prometheus::start(s.berth.admin, protobuf).await;

    // Traffic flows for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        let base = s.berth.url("");
        tokio::spawn(async move {
            let client = client();
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                traffic_round(&client, &base, round).await;
                round += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    let api_requests = r#"sum(berth_service_requests_total{service="api"})"#;
    let first = eventually(
        "berth requests in prometheus",
        Duration::from_secs(15),
        || prometheus.value(api_requests),
    )
    .await;

    // Kill backend b: probes fail, berth takes it out of rotation, the gauge reads 0, and the
    // probe failure and up/down counters rise.
    let b = format!(r#"service="api",server="{}""#, s.b.addr);
    let counters = [
        format!("berth_server_check_failures_total{{{b}}}"),
        format!("berth_server_check_up_down_total{{{b}}}"),
    ];
    let mut before = Vec::new();
    for counter in &counters {
        before.push(prometheus.value(counter).await.expect(counter));
    }
    s.b.kill();
    let b_up = format!("berth_server_up{{{b}}}");
    eventually(
        "berth_server_up of killed b = 0",
        Duration::from_secs(15),
        || async { (prometheus.value(&b_up).await? == 0.0).then_some(()) },
    )
    .await;
    for (counter, before) in counters.iter().zip(before) {
        eventually(
            &format!("{counter} > {before}"),
            Duration::from_secs(5),
            || async { (prometheus.value(counter).await? > before).then_some(()) },
        )
        .await;
    }
    let a_up = format!(r#"berth_server_up{{service="api",server="{}"}}"#, s.a.addr);
    assert_eq!(prometheus.value(&a_up).await, Some(1.0), "a stays up");

    eventually(
        "api request counter to rise",
        Duration::from_secs(10),
        || async { (prometheus.value(api_requests).await? > first).then_some(()) },
    )
    .await;
    let servers: BTreeSet<String> = series_labels(
        &prometheus
            .query(r#"sum by (server) (berth_server_requests_total{service="api"})"#)
            .await
            .unwrap(),
        "server",
    );
    for backend in [s.a.addr, s.b.addr] {
        assert!(
            servers.contains(&backend.to_string()),
            "no berth_server_requests_total for {backend}: {servers:?}"
        );
    }

    check_dashboard_queries(&prometheus, &s).await;

    if protobuf {
        // Proof that protobuf was read: Prometheus 2 writes a bucket bound that came in
        // protobuf as a float ("1.0"); from the text format it keeps berth's "1".
        let le = r#"berth_service_request_duration_seconds_bucket{service="api",le="1.0"}"#;
        assert!(
            prometheus.value(le).await.is_some(),
            "no {le}: not scraped in protobuf"
        );
    }

    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let elapsed = started.elapsed();
    eprintln!("prometheus end-to-end test (protobuf: {protobuf}) took {elapsed:?}");
}

fn series_labels(result: &[Value], label: &str) -> BTreeSet<String> {
    result
        .iter()
        .filter_map(|series| series["metric"][label].as_str().map(str::to_owned))
        .collect()
}

/// One PromQL expression of the dashboard and where it is.
struct DashboardQuery {
    panel: String,
    expr: String,
}

/// Every target expression of every panel, including panels nested in collapsed rows.
fn dashboard_queries(dashboard: &Value) -> Vec<DashboardQuery> {
    fn walk(panels: &Value, out: &mut Vec<DashboardQuery>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(DashboardQuery {
                        panel: format!(
                            "{} / {}",
                            panel["title"].as_str().unwrap_or("?"),
                            target["refId"].as_str().unwrap_or("?")
                        ),
                        expr: expr.to_owned(),
                    });
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn load_dashboard() -> Value {
    let text = std::fs::read_to_string(repo_path(DASHBOARD)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// A variable's query text (Grafana stores it as a string or as `{ "query": ... }`).
fn variable_query(variable: &Value) -> Option<&str> {
    variable["query"]
        .as_str()
        .or_else(|| variable["query"]["query"].as_str())
}

/// Replaces Grafana variables (`$name`, `${name}`, `${name:format}`, `[[name]]`) in `text`;
/// panics on a variable it does not know, so a new variable cannot go untested.
fn interpolate(text: &str, values: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, len) = if let Some(braced) = tail.strip_prefix("${") {
            let end = braced.find('}').expect("unclosed ${");
            let name = braced[..end].split(':').next().unwrap();
            (name, end + 3)
        } else if let Some(bracketed) = tail.strip_prefix("[[") {
            let end = bracketed.find("]]").expect("unclosed [[");
            (bracketed[..end].split(':').next().unwrap(), end + 4)
        } else if let Some(plain) = tail.strip_prefix('$') {
            let end = plain
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(plain.len());
            (&plain[..end], end + 1)
        } else {
            // A `[` that opens a range selector, not a variable.
            out.push('[');
            rest = &tail[1..];
            continue;
        };
        let value = values
            .get(name)
            .unwrap_or_else(|| panic!("unknown variable {name:?} in {text}"));
        out.push_str(value);
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// A value as Grafana's Prometheus data source puts it into a regex matcher: regex
/// metacharacters escaped, with the backslash doubled for the PromQL string literal.
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if r"\^$.|?*+()[]{}".contains(c) {
            out.push_str(r"\\");
        }
        out.push(c);
    }
    out
}

/// Grafana's built-in interval variables, as Grafana would fill them for a 1s scrape.
fn builtin_values() -> HashMap<String, String> {
    [
        ("__rate_interval", "15s"),
        ("__interval", "5s"),
        ("__interval_ms", "5000"),
        ("__range", "5m"),
        ("__range_s", "300"),
        ("__range_ms", "300000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn check_dashboard_queries(prometheus: &Prometheus, s: &Scenario) {
    let dashboard = load_dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap();

    // Resolve the variables in order (each may use the ones before it), with "All" selected:
    // a variable's allValue if it has one, otherwise the regex of all its values.
    let mut all = builtin_values();
    let mut found: HashMap<String, Vec<String>> = HashMap::new();
    for variable in variables {
        let name = variable["name"].as_str().unwrap().to_owned();
        if variable["type"] == "datasource" {
            all.insert(name, "prometheus".into());
            continue;
        }
        let query = interpolate(variable_query(variable).unwrap(), &all);
        let values = eventually(
            &format!("values of ${name} ({query})"),
            Duration::from_secs(10),
            || async {
                Some(prometheus.label_values(&query).await.unwrap()).filter(|v| !v.is_empty())
            },
        )
        .await;
        let value = match variable["allValue"].as_str() {
            Some(all_value) => all_value.to_owned(),
            None => format!(
                "({})",
                values
                    .iter()
                    .map(|v| regex_escape(v))
                    .collect::<Vec<_>>()
                    .join("|")
            ),
        };
        all.insert(name.clone(), value);
        found.insert(name, values);
    }
    let expect = |variable: &str, value: String| {
        assert!(
            found[variable].contains(&value),
            "${variable} lacks {value}: {:?}",
            found[variable]
        );
    };
    expect("instance", s.berth.admin.to_string());
    expect("service", "api".into());
    expect("service", "flaky".into());
    expect("server", s.a.addr.to_string());
    expect("server", s.b.addr.to_string());
    expect("server", s.dead.to_string());

    // The same with one concrete selection: this berth, service api, backend a.
    let mut one = all.clone();
    one.insert("instance".into(), regex_escape(&s.berth.admin.to_string()));
    one.insert("service".into(), "api".into());
    one.insert("server".into(), regex_escape(&s.a.addr.to_string()));

    let queries = dashboard_queries(&dashboard);
    assert!(
        queries.len() >= 20,
        "only {} dashboard queries",
        queries.len()
    );
    let mut pending: Vec<(String, String, bool)> = Vec::new();
    for q in &queries {
        let may_be_empty = MAY_BE_EMPTY.iter().any(|m| q.expr.contains(m));
        for (selection, values) in [("all", &all), ("api/a", &one)] {
            let expr = interpolate(&q.expr, values);
            pending.push((format!("{} [{selection}]", q.panel), expr, may_be_empty));
        }
    }

    // Parse errors fail at once; an empty result gets a few seconds, since a rate needs two
    // scrapes that include the traffic.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let mut empty = Vec::new();
        for (panel, expr, may_be_empty) in &pending {
            match prometheus.query(expr).await {
                Err(e) => panic!("dashboard query of {panel} fails: {e}\n{expr}"),
                Ok(result) if result.is_empty() && !may_be_empty => {
                    empty.push((panel.clone(), expr.clone(), false))
                }
                Ok(_) => {}
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard queries without data:\n{}",
            empty
                .iter()
                .map(|(panel, expr, _)| format!("- {panel}:\n  {expr}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        pending = empty;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The dashboard's shape, without Prometheus: every panel and variable on the `datasource`
/// variable (so import and provisioning both work), the variables and rows the docs promise.
#[test]
fn dashboard_is_importable_and_provisionable() {
    let dashboard = load_dashboard();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    let ds = variable("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["service", "server"] {
        let v = variable(name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["multi"], true, "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
        assert!(
            variable_query(v).unwrap().starts_with("label_values("),
            "{name}"
        );
    }

    let uses_variable = |what: &str, datasource: &Value| {
        assert_eq!(
            datasource["uid"], "${datasource}",
            "{what} must use the datasource variable"
        );
    };
    for v in variables.iter().filter(|v| v["type"] == "query") {
        uses_variable(&format!("variable {}", v["name"]), &v["datasource"]);
    }
    let mut ids = BTreeSet::new();
    let mut rows = Vec::new();
    fn all_panels(panels: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel.clone());
            out.extend(all_panels(&panel["panels"]));
        }
        out
    }
    for panel in all_panels(&dashboard["panels"]) {
        let title = panel["title"].as_str().unwrap().to_owned();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        if panel["type"] == "row" {
            rows.push(title);
            continue;
        }
        uses_variable(&title, &panel["datasource"]);
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            uses_variable(&title, &target["datasource"]);
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}"
            );
            let expr = target["expr"].as_str().unwrap();
            if expr.contains("rate(") {
                assert!(
                    expr.contains("[$__rate_interval]") || expr.contains("[$__range]"),
                    "{title}: {expr}"
                );
            }
        }
        assert!(
            panel["type"] == "table"
                || panel["fieldConfig"]["defaults"]["unit"].is_string()
                || panel["fieldConfig"]["defaults"]["mappings"].is_array(),
            "{title} has no unit"
        );
    }
    assert_eq!(
        rows,
        [
            "Overview",
            "Backends",
            "Resilience",
            "Health checks",
            "Control plane",
            "TLS"
        ]
    );

    // Provisioning: a Prometheus data source and a file provider for the dashboard folder.
    let read_yaml = |path: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(repo_path(path)).unwrap();
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let datasources = read_yaml("grafana/provisioning/datasources/prometheus.yaml");
    assert_eq!(datasources["datasources"][0]["type"], "prometheus");
    assert!(datasources["datasources"][0]["uid"].is_string());
    let providers = read_yaml("grafana/provisioning/dashboards/berth.yaml");
    assert_eq!(providers["providers"][0]["type"], "file");
    assert!(providers["providers"][0]["options"]["path"].is_string());
}
