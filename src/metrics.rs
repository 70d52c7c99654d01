//! Every Prometheus metric berth exports, in one place.
//!
//! The data path never looks a series up by label strings: each service and each backend holds
//! a [`ServiceSeries`] / [`ServerSeries`] resolved once when the route table is compiled, and the
//! per-status-code counters are cached behind a lock-free list. A series lives exactly as long as
//! something routes to it: when the last holder is dropped (the backend or service left every
//! live route table and every in-flight request), its label sets are removed, so dead containers
//! leave no stale `berth_server_up` behind and churn cannot grow cardinality without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::spec::BackendIdentity;

// Buckets cost a series each, per service or per backend: a scrape of 1,000 backends must
// stay cheap, so per-backend histograms get fewer buckets than per-service ones.
const SERVICE_LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];
const SERVER_LATENCY_BUCKETS: &[f64] = &[0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0];
const CHECK_BUCKETS: &[f64] = &[0.001, 0.01, 0.1, 1.0, 5.0];

/// The metric families and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    service_requests: IntCounterVec,
    service_duration: HistogramVec,
    service_open: IntGaugeVec,
    service_retries: IntCounterVec,
    server_requests: IntCounterVec,
    server_duration: HistogramVec,
    server_up: IntGaugeVec,
    server_open: IntGaugeVec,
    server_connection_errors: IntCounterVec,
    server_check_failures: IntCounterVec,
    server_check_up_down: IntCounterVec,
    server_check_duration: HistogramVec,
    server_info: IntGaugeVec,
    server_bytes_received: IntCounterVec,
    server_bytes_sent: IntCounterVec,
    unrouted: IntCounterVec,
    config_reloads: IntCounterVec,
    config_last_reload_success: IntGauge,
    discovery_events: IntCounterVec,
    discovery_errors: IntCounterVec,
    /// Live series holders, so two holders of one label set share (and jointly own) it.
    services: Mutex<HashMap<String, Weak<ServiceSeries>>>,
    servers: Mutex<HashMap<(String, String), Weak<ServerSeries>>>,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(vec.clone()))
        .expect("unique metric");
    vec
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(vec.clone()))
        .expect("unique metric");
    vec
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let vec = HistogramVec::new(opts, labels).expect("valid metric");
    registry
        .register(Box::new(vec.clone()))
        .expect("unique metric");
    vec
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        let svc = &["service"];
        let srv = &["service", "server"];
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process collector");
        let config_last_reload_success = IntGauge::new(
            "berth_config_last_reload_success",
            "1 if the last config (re)load succeeded, 0 if it was refused.",
        )
        .expect("valid metric");
        r.register(Box::new(config_last_reload_success.clone()))
            .expect("unique metric");
        Arc::new(Metrics {
            service_requests: counter_vec(
                &r,
                "berth_service_requests_total",
                "Requests routed to a service, by response status code and method.",
                &["service", "code", "method"],
            ),
            service_duration: histogram_vec(
                &r,
                "berth_service_request_duration_seconds",
                "Time from request headers received to response sent, per service.",
                svc,
                SERVICE_LATENCY_BUCKETS,
            ),
            service_open: gauge_vec(
                &r,
                "berth_service_open_connections",
                "Requests in flight to a service.",
                svc,
            ),
            service_retries: counter_vec(
                &r,
                "berth_service_retries_total",
                "Requests sent to another backend after a connection failure.",
                svc,
            ),
            server_requests: counter_vec(
                &r,
                "berth_server_requests_total",
                "Requests a backend answered (or failed), by status code.",
                &["service", "server", "code"],
            ),
            server_duration: histogram_vec(
                &r,
                "berth_server_request_duration_seconds",
                "Upstream time: from choosing the backend to the end of its response.",
                srv,
                SERVER_LATENCY_BUCKETS,
            ),
            server_up: gauge_vec(
                &r,
                "berth_server_up",
                "1 if the backend is in rotation (probes pass and it is not draining), else 0.",
                srv,
            ),
            server_open: gauge_vec(
                &r,
                "berth_server_open_connections",
                "Requests in flight to a backend.",
                srv,
            ),
            server_connection_errors: counter_vec(
                &r,
                "berth_server_connection_errors_total",
                "Failed attempts to connect to a backend.",
                srv,
            ),
            server_check_failures: counter_vec(
                &r,
                "berth_server_check_failures_total",
                "Active health probes that failed.",
                srv,
            ),
            server_check_up_down: counter_vec(
                &r,
                "berth_server_check_up_down_total",
                "Transitions of a backend between healthy and unhealthy.",
                srv,
            ),
            server_check_duration: histogram_vec(
                &r,
                "berth_server_check_duration_seconds",
                "Duration of active health probes.",
                srv,
                CHECK_BUCKETS,
            ),
            server_info: gauge_vec(
                &r,
                "berth_server_info",
                "Always 1; joins a backend address to its container (empty for static backends).",
                &["service", "server", "container_id", "container_name"],
            ),
            server_bytes_received: counter_vec(
                &r,
                "berth_server_bytes_received_total",
                "Response body bytes berth received from a backend.",
                srv,
            ),
            server_bytes_sent: counter_vec(
                &r,
                "berth_server_bytes_sent_total",
                "Request body bytes berth sent to a backend.",
                srv,
            ),
            unrouted: counter_vec(
                &r,
                "berth_requests_unrouted_total",
                "Requests answered by berth itself without a service: 404 unknown host, 400 bad request.",
                &["code"],
            ),
            config_reloads: counter_vec(
                &r,
                "berth_config_reloads_total",
                "Config file (re)loads, by result (success, failure).",
                &["result"],
            ),
            config_last_reload_success,
            discovery_events: counter_vec(
                &r,
                "berth_discovery_events_total",
                "Events received from a discovery source, by type.",
                &["source", "type"],
            ),
            discovery_errors: counter_vec(
                &r,
                "berth_discovery_errors_total",
                "Errors talking to a discovery source (lost connection, failed list).",
                &["source"],
            ),
            registry: r,
            services: Mutex::new(HashMap::new()),
            servers: Mutex::new(HashMap::new()),
        })
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        out
    }

    /// The series of one service, shared by every route-table version that holds it.
    pub fn service(self: &Arc<Self>, service: &str) -> Arc<ServiceSeries> {
        let mut live = self.services.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(series) = live.get(service).and_then(Weak::upgrade) {
            return series;
        }
        let labels = [service];
        let series = Arc::new(ServiceSeries {
            name: service.to_owned(),
            duration: self.service_duration.with_label_values(&labels),
            open: self.service_open.with_label_values(&labels),
            retries: self.service_retries.with_label_values(&labels),
            requests: LabelCache::default(),
            metrics: Arc::clone(self),
        });
        live.insert(service.to_owned(), Arc::downgrade(&series));
        series
    }

    /// The series of one backend of one service.
    pub fn server(self: &Arc<Self>, service: &str, server: &str) -> Arc<ServerSeries> {
        let mut live = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        let key = (service.to_owned(), server.to_owned());
        if let Some(series) = live.get(&key).and_then(Weak::upgrade) {
            return series;
        }
        let labels = [service, server];
        let series = Arc::new(ServerSeries {
            service: service.to_owned(),
            server: server.to_owned(),
            duration: self.server_duration.with_label_values(&labels),
            up: self.server_up.with_label_values(&labels),
            open: self.server_open.with_label_values(&labels),
            connection_errors: self.server_connection_errors.with_label_values(&labels),
            check_failures: self.server_check_failures.with_label_values(&labels),
            check_up_down: self.server_check_up_down.with_label_values(&labels),
            check_duration: self.server_check_duration.with_label_values(&labels),
            bytes_received: self.server_bytes_received.with_label_values(&labels),
            bytes_sent: self.server_bytes_sent.with_label_values(&labels),
            requests: LabelCache::default(),
            metrics: Arc::clone(self),
        });
        live.insert(key, Arc::downgrade(&series));
        series
    }

    /// `berth_server_info` for one backend identity; removed when the guard drops.
    pub fn server_info(
        self: &Arc<Self>,
        service: &str,
        server: &str,
        identity: &BackendIdentity,
    ) -> InfoSeries {
        let labels = [
            service.to_owned(),
            server.to_owned(),
            identity.id.clone().unwrap_or_default(),
            identity.name.clone().unwrap_or_default(),
        ];
        self.server_info.with_label_values(&labels).set(1);
        InfoSeries {
            labels,
            metrics: Arc::clone(self),
        }
    }

    pub fn unrouted(&self, code: u16) {
        self.unrouted.with_label_values(&[status_label(code)]).inc();
    }

    pub fn config_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.config_reloads.with_label_values(&[result]).inc();
        self.config_last_reload_success.set(i64::from(success));
    }

    pub fn discovery_event(&self, source: &str, kind: &str) {
        self.discovery_events
            .with_label_values(&[source, kind])
            .inc();
    }

    /// Creates a source's series at zero, so alerts on them have data before the first error.
    pub fn discovery_source(&self, source: &str) {
        self.discovery_errors.with_label_values(&[source]);
    }

    pub fn discovery_error(&self, source: &str) {
        self.discovery_errors.with_label_values(&[source]).inc();
    }
}

/// Every status code from 100 to 599 as three ASCII digits, so a code label is a `'static`
/// slice: no allocation per request, and cardinality is bounded by construction.
static CODE_DIGITS: [u8; 1500] = {
    let mut digits = [0u8; 1500];
    let mut i = 0;
    while i < 500 {
        let code = i + 100;
        digits[i * 3] = b'0' + (code / 100) as u8;
        digits[i * 3 + 1] = b'0' + (code / 10 % 10) as u8;
        digits[i * 3 + 2] = b'0' + (code % 10) as u8;
        i += 1;
    }
    digits
};

static CODES: &str = match std::str::from_utf8(&CODE_DIGITS) {
    Ok(codes) => codes,
    Err(_) => panic!("CODE_DIGITS is ASCII"),
};

/// The status code label; codes outside 100..=599 (or 0, "no response") are `other`.
fn status_label(code: u16) -> &'static str {
    if (100..600).contains(&code) {
        let at = usize::from(code - 100) * 3;
        &CODES[at..at + 3]
    } else {
        "other"
    }
}

/// The method as a bounded label: arbitrary methods must not create arbitrary series.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Counters keyed by a small label combination, found by a lock-free scan of the few
/// combinations a series actually sees; a miss takes the slow path once.
struct LabelCache<K> {
    entries: ArcSwap<Vec<(K, IntCounter)>>,
}

impl<K> Default for LabelCache<K> {
    fn default() -> Self {
        Self {
            entries: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl<K: Copy + Eq> LabelCache<K> {
    fn get(&self, key: K, make: impl FnOnce() -> IntCounter) -> IntCounter {
        if let Some((_, counter)) = self.entries.load().iter().find(|(k, _)| *k == key) {
            return counter.clone();
        }
        let counter = make();
        self.entries.rcu(|entries| {
            let mut entries = Vec::clone(entries);
            if !entries.iter().any(|(k, _)| *k == key) {
                entries.push((key, counter.clone()));
            }
            entries
        });
        counter
    }

    fn keys(&self) -> Vec<K> {
        self.entries.load().iter().map(|(k, _)| *k).collect()
    }
}

/// Handles to one service's series.
pub struct ServiceSeries {
    name: String,
    duration: Histogram,
    pub open: IntGauge,
    retries: IntCounter,
    requests: LabelCache<(&'static str, &'static str)>,
    metrics: Arc<Metrics>,
}

impl ServiceSeries {
    pub fn record_request(&self, code: u16, method: &http::Method, elapsed: Duration) {
        let key = (status_label(code), method_label(method));
        self.requests
            .get(key, || {
                self.metrics
                    .service_requests
                    .with_label_values(&[self.name.as_str(), key.0, key.1])
            })
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn record_retry(&self) {
        self.retries.inc();
    }
}

impl Drop for ServiceSeries {
    fn drop(&mut self) {
        let m = &self.metrics;
        let mut live = m.services.lock().unwrap_or_else(|p| p.into_inner());
        // A new holder may have replaced us in the index between our last strong ref going away
        // and this drop; its series are the same label sets, so leave them alone.
        if live.get(&self.name).is_some_and(|w| w.strong_count() > 0) {
            return;
        }
        live.remove(&self.name);
        let labels = [self.name.as_str()];
        let _ = m.service_duration.remove_label_values(&labels);
        let _ = m.service_open.remove_label_values(&labels);
        let _ = m.service_retries.remove_label_values(&labels);
        for (code, method) in self.requests.keys() {
            let _ = m
                .service_requests
                .remove_label_values(&[self.name.as_str(), code, method]);
        }
    }
}

/// Handles to one backend's series within one service.
pub struct ServerSeries {
    service: String,
    server: String,
    duration: Histogram,
    pub up: IntGauge,
    pub open: IntGauge,
    pub connection_errors: IntCounter,
    check_failures: IntCounter,
    check_up_down: IntCounter,
    check_duration: Histogram,
    bytes_received: IntCounter,
    bytes_sent: IntCounter,
    requests: LabelCache<&'static str>,
    metrics: Arc<Metrics>,
}

impl ServerSeries {
    pub fn record_response(
        &self,
        code: u16,
        upstream_time: Duration,
        bytes_received: usize,
        bytes_sent: usize,
    ) {
        let code = status_label(code);
        self.requests
            .get(code, || {
                self.metrics.server_requests.with_label_values(&[
                    self.service.as_str(),
                    self.server.as_str(),
                    code,
                ])
            })
            .inc();
        self.duration.observe(upstream_time.as_secs_f64());
        self.bytes_received.inc_by(bytes_received as u64);
        self.bytes_sent.inc_by(bytes_sent as u64);
    }

    pub fn record_check(&self, passed: bool, elapsed: Duration, flipped: bool) {
        self.check_duration.observe(elapsed.as_secs_f64());
        if !passed {
            self.check_failures.inc();
        }
        if flipped {
            self.check_up_down.inc();
        }
    }
}

impl Drop for ServerSeries {
    fn drop(&mut self) {
        let m = &self.metrics;
        let key = (self.service.clone(), self.server.clone());
        let mut live = m.servers.lock().unwrap_or_else(|p| p.into_inner());
        if live.get(&key).is_some_and(|w| w.strong_count() > 0) {
            return;
        }
        live.remove(&key);
        let labels = [self.service.as_str(), self.server.as_str()];
        let _ = m.server_duration.remove_label_values(&labels);
        let _ = m.server_up.remove_label_values(&labels);
        let _ = m.server_open.remove_label_values(&labels);
        let _ = m.server_connection_errors.remove_label_values(&labels);
        let _ = m.server_check_failures.remove_label_values(&labels);
        let _ = m.server_check_up_down.remove_label_values(&labels);
        let _ = m.server_check_duration.remove_label_values(&labels);
        let _ = m.server_bytes_received.remove_label_values(&labels);
        let _ = m.server_bytes_sent.remove_label_values(&labels);
        for code in self.requests.keys() {
            let _ = m.server_requests.remove_label_values(&[
                self.service.as_str(),
                self.server.as_str(),
                code,
            ]);
        }
    }
}

/// Owns one `berth_server_info` series.
pub struct InfoSeries {
    labels: [String; 4],
    metrics: Arc<Metrics>,
}

impl Drop for InfoSeries {
    fn drop(&mut self) {
        let _ = self.metrics.server_info.remove_label_values(&self.labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.render()).unwrap()
    }

    #[test]
    fn series_disappear_with_their_last_holder() {
        let m = Metrics::new();
        let a = m.server("api", "10.0.0.1:80");
        let b = m.server("api", "10.0.0.1:80");
        assert!(Arc::ptr_eq(&a, &b), "one label set has one holder object");
        a.up.set(1);
        a.record_response(200, Duration::from_millis(3), 10, 0);
        let info = m.server_info("api", "10.0.0.1:80", &BackendIdentity::default());
        assert!(text(&m).contains(r#"berth_server_up{server="10.0.0.1:80",service="api"} 1"#));
        drop(a);
        assert!(text(&m).contains("berth_server_up{"), "still held by b");
        drop(b);
        drop(info);
        let out = text(&m);
        assert!(!out.contains("10.0.0.1:80"), "{out}");
    }

    #[test]
    fn service_series_are_removed_including_every_code() {
        let m = Metrics::new();
        let s = m.service("web");
        s.record_request(200, &http::Method::GET, Duration::from_millis(1));
        s.record_request(503, &http::Method::POST, Duration::from_millis(1));
        s.record_request(200, &http::Method::GET, Duration::from_millis(1));
        let out = text(&m);
        assert!(out
            .contains(r#"berth_service_requests_total{code="200",method="GET",service="web"} 2"#));
        assert!(out
            .contains(r#"berth_service_requests_total{code="503",method="POST",service="web"} 1"#));
        drop(s);
        assert!(!text(&m).contains(r#"service="web""#));
    }

    #[test]
    fn a_replaced_holder_keeps_the_shared_series() {
        let m = Metrics::new();
        let old = m.service("web");
        drop(old);
        let new = m.service("web");
        new.record_request(200, &http::Method::GET, Duration::ZERO);
        assert!(text(&m).contains(r#"service="web""#));
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(299), "299");
        assert_eq!(status_label(0), "other");
        assert_eq!(
            method_label(&http::Method::from_bytes(b"PURGE").unwrap()),
            "OTHER"
        );
    }
}
