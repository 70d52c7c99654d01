//! `GET /metrics`: the Prometheus exposition, in the text format or (when the scraper asks
//! for it) the protobuf one, written straight from the live route table's series handles, then
//! the process-wide families.
//!
//! One pass over the table fills every family's own buffer (see [`crate::metrics::family`]),
//! and the buffers are sent one after another without being joined. A scrape costs one walk of
//! the table and the bytes it writes, nothing per series beyond that.
//! `admin.metrics_detail: service` keeps the per-service families and, per backend, only
//! `berth_server_up` and `berth_server_info`: a fleet of 30,000 backends is then a few
//! hundred thousand samples instead of a million (see the README's metrics reference).

use bytes::Bytes;

use crate::config::MetricsDetail;
use crate::metrics::buffers::Buffers;
use crate::metrics::family::{Family, Kind};
use crate::metrics::format::Format;
use crate::metrics::proto::ProtoFamily;
use crate::metrics::series::{CHECK_DURATION, SERVER_LATENCY, SERVICE_LATENCY};
use crate::metrics::text::TextFamily;
use crate::metrics::Metrics;
use crate::model::policy::ProbeKind;
use crate::table::member::Member;
use crate::table::upstream::Upstream;
use crate::table::RouteTable;

/// The exposition as the parts it is sent in, in order: each family, then the process-wide
/// families. Their concatenation is the format's document. The family buffers come from
/// `buffers` and go back there once dropped.
pub fn render(
    table: &RouteTable,
    metrics: &Metrics,
    detail: MetricsDetail,
    format: Format,
    buffers: &Buffers,
) -> Vec<Bytes> {
    let mut parts = match format {
        Format::Text => render_families::<TextFamily>(table, detail, buffers),
        Format::Proto => render_families::<ProtoFamily>(table, detail, buffers),
    };
    parts.push(metrics.render_process_wide(format).into());
    parts
}

/// Every per-service and per-backend family in `F`'s format, from one walk of the table.
fn render_families<F: Family>(
    table: &RouteTable,
    detail: MetricsDetail,
    buffers: &Buffers,
) -> Vec<Bytes> {
    let upstreams = table.upstreams();
    let mut services = ServiceFamilies::<F>::new(upstreams, buffers);
    let members = upstreams.iter().map(|u| u.members().len()).sum();
    let first_member = upstreams.iter().flat_map(|u| u.members()).next();
    let mut servers = ServerFamilies::<F>::new(first_member, members, detail, buffers);
    for upstream in upstreams {
        services.add(upstream);
        let probed = upstream.policy.health_check.kind != ProbeKind::None;
        for member in upstream.members() {
            servers.add(member, probed);
        }
    }
    let mut parts = Vec::new();
    services.finish(buffers, &mut parts);
    servers.finish(buffers, &mut parts);
    parts
}

/// The per-service families, filled in one pass over the table.
struct ServiceFamilies<F> {
    requests: F,
    duration: F,
    open: F,
    retries: F,
    retry_budget_exhausted: F,
    queue_depth: F,
    queue_timeouts: F,
}

impl<F: Family> ServiceFamilies<F> {
    fn new(upstreams: &[std::sync::Arc<Upstream>], buffers: &Buffers) -> Self {
        let labels = upstreams.first().map(|u| &u.series.labels);
        let count = upstreams.len();
        let family = |name, kind, help, series| F::new(name, kind, help, series, labels, buffers);
        Self {
            requests: family(
                "berth_service_requests_total",
                Kind::Counter,
                "Requests routed to a service, by response status code and method.",
                2 * count,
            ),
            duration: family(
                "berth_service_request_duration_seconds",
                Kind::Histogram(&SERVICE_LATENCY),
                "Time from request headers received to response sent, per service.",
                count,
            ),
            open: family(
                "berth_service_open_connections",
                Kind::Gauge,
                "Requests in flight to a service.",
                count,
            ),
            retries: family(
                "berth_service_retries_total",
                Kind::Counter,
                "Requests sent to another backend after a failure.",
                count,
            ),
            retry_budget_exhausted: family(
                "berth_service_retry_budget_exhausted_total",
                Kind::Counter,
                "Failures not retried because the service's retry budget was spent.",
                count,
            ),
            queue_depth: family(
                "berth_service_queue_depth",
                Kind::Gauge,
                "Requests waiting for a backend below max_connections.",
                count,
            ),
            queue_timeouts: family(
                "berth_service_queue_timeouts_total",
                Kind::Counter,
                "Requests answered 503 after waiting queue_timeout for a backend.",
                count,
            ),
        }
    }

    fn add(&mut self, upstream: &Upstream) {
        let series = &upstream.series;
        let labels = &series.labels;
        series.requests.for_each(|(code, method), count| {
            self.requests
                .sample(labels, &[("code", code), ("method", method)], count)
        });
        self.duration.histogram(labels, &series.duration);
        self.open.sample(labels, &[], series.open.get());
        self.retries.sample(labels, &[], series.retries.get());
        self.retry_budget_exhausted
            .sample(labels, &[], series.retry_budget_exhausted.get());
        self.queue_depth
            .sample(labels, &[], u64::from(upstream.queue.depth()));
        self.queue_timeouts
            .sample(labels, &[], series.queue_timeouts.get());
    }

    fn finish(self, buffers: &Buffers, parts: &mut Vec<Bytes>) {
        for family in [
            self.requests,
            self.duration,
            self.open,
            self.retries,
            self.retry_budget_exhausted,
            self.queue_depth,
            self.queue_timeouts,
        ] {
            family.finish(buffers, parts);
        }
    }
}

/// The per-backend families: `berth_server_up` and `berth_server_info` always, the rest only
/// with `metrics_detail: full`, and the `check` families only for backends that are probed
/// (as HAProxy does: without probes they could only ever say 0, and they are a third of a
/// backend's samples).
struct ServerFamilies<F> {
    up: F,
    info: F,
    detail: Option<ServerDetail<F>>,
}

struct ServerDetail<F> {
    requests: F,
    open: F,
    connection_errors: F,
    check_failures: F,
    check_up_down: F,
    bytes_received: F,
    bytes_sent: F,
    ejections: F,
    duration: F,
    check_duration: F,
}

impl<F: Family> ServerFamilies<F> {
    /// Families sized for `members` backends labelled like `first`.
    fn new(
        first: Option<&std::sync::Arc<Member>>,
        members: usize,
        detail: MetricsDetail,
        buffers: &Buffers,
    ) -> Self {
        let labels = first.map(|m| &m.series.labels);
        let family = |name, kind, help| F::new(name, kind, help, members, labels, buffers);
        Self {
            up: family(
                "berth_server_up",
                Kind::Gauge,
                "1 if the backend is in rotation (probes pass and it is not draining), else 0.",
            ),
            info: F::new(
                "berth_server_info",
                Kind::Gauge,
                "Always 1; joins a backend address to its container (empty for static backends) \
                 and, for a Swarm task, to its service, task, slot and node.",
                members,
                first.map(|m| &m.info_labels),
                buffers,
            ),
            detail: (detail == MetricsDetail::Full).then(|| ServerDetail {
                requests: family(
                    "berth_server_requests_total",
                    Kind::Counter,
                    "Requests a backend answered (or failed), by status code.",
                ),
                open: family(
                    "berth_server_open_connections",
                    Kind::Gauge,
                    "Requests in flight to a backend.",
                ),
                connection_errors: family(
                    "berth_server_connection_errors_total",
                    Kind::Counter,
                    "Failed attempts to connect to a backend.",
                ),
                check_failures: family(
                    "berth_server_check_failures_total",
                    Kind::Counter,
                    "Active health probes that failed.",
                ),
                check_up_down: family(
                    "berth_server_check_up_down_total",
                    Kind::Counter,
                    "Transitions of a backend between healthy and unhealthy.",
                ),
                bytes_received: family(
                    "berth_server_bytes_received_total",
                    Kind::Counter,
                    "Response body bytes berth received from a backend.",
                ),
                bytes_sent: family(
                    "berth_server_bytes_sent_total",
                    Kind::Counter,
                    "Request body bytes berth sent to a backend.",
                ),
                ejections: family(
                    "berth_server_ejections_total",
                    Kind::Counter,
                    "Times passive health ejected a backend after failing requests.",
                ),
                duration: family(
                    "berth_server_request_duration_seconds",
                    Kind::Histogram(&SERVER_LATENCY),
                    "Upstream time: from choosing the backend to the end of its response.",
                ),
                check_duration: family(
                    "berth_server_check_duration_seconds",
                    Kind::Histogram(&CHECK_DURATION),
                    "Duration of active health probes.",
                ),
            }),
        }
    }

    fn add(&mut self, member: &Member, probed: bool) {
        let series = &member.series;
        let labels = &series.labels;
        self.up.sample(labels, &[], i64::from(member.routable()));
        self.info.sample(&member.info_labels, &[], 1u64);
        let Some(detail) = &mut self.detail else {
            return;
        };
        series
            .requests
            .for_each(|code, count| detail.requests.sample(labels, &[("code", code)], count));
        detail.open.sample(labels, &[], series.open.get());
        for (family, counter) in [
            (&mut detail.connection_errors, &series.connection_errors),
            (&mut detail.bytes_received, &series.bytes_received),
            (&mut detail.bytes_sent, &series.bytes_sent),
            (&mut detail.ejections, &series.ejections),
        ] {
            family.sample(labels, &[], counter.get());
        }
        detail.duration.histogram(labels, &series.duration);
        if probed {
            for (family, counter) in [
                (&mut detail.check_failures, &series.check_failures),
                (&mut detail.check_up_down, &series.check_up_down),
            ] {
                family.sample(labels, &[], counter.get());
            }
            detail
                .check_duration
                .histogram(labels, &series.check_duration);
        }
    }

    fn finish(self, buffers: &Buffers, parts: &mut Vec<Bytes>) {
        self.up.finish(buffers, parts);
        self.info.finish(buffers, parts);
        if let Some(d) = self.detail {
            for family in [
                d.requests,
                d.open,
                d.connection_errors,
                d.check_failures,
                d.check_up_down,
                d.bytes_received,
                d.bytes_sent,
                d.ejections,
                d.duration,
                d.check_duration,
            ] {
                family.finish(buffers, parts);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use prometheus::proto::MetricType;

    use super::*;
    use crate::config::ListenerConfig;
    use crate::health::probe::ProbeCache;
    use crate::metrics::family::decode_proto;
    use crate::metrics::label::LabelSet;
    use crate::model::hostname::DomainSet;
    use crate::model::{BackendIdentity, BackendSpec, Placement, PolicyLayer, Snapshot};
    use crate::table::tests::service;

    fn compile(backends: &[&str], previous: &RouteTable) -> RouteTable {
        let backends = backends
            .iter()
            .map(|a| BackendSpec::new(a.parse().unwrap()))
            .collect();
        compile_specs(backends, previous)
    }

    fn compile_specs(backends: Vec<BackendSpec>, previous: &RouteTable) -> RouteTable {
        let mut api = service("api", &["api.test"], "/");
        api.backends = backends;
        RouteTable::compile(
            &Snapshot::of(vec![api], None),
            &PolicyLayer::default(),
            &[ListenerConfig::new("main", "127.0.0.1:0".parse().unwrap())],
            &DomainSet::default(),
            previous,
            &ProbeCache::default(),
        )
    }

    fn text(table: &RouteTable, detail: MetricsDetail) -> String {
        let buffers = Buffers::default();
        let parts = render(table, &Metrics::new(), detail, Format::Text, &buffers);
        String::from_utf8(parts.concat()).unwrap()
    }

    #[test]
    fn series_follow_the_live_table_and_keep_counting_across_versions() {
        let first = compile(&["10.0.0.1:80", "10.0.0.2:80"], &RouteTable::default());
        let api = first.upstream("api").unwrap();
        api.member(0)
            .series
            .record_response(200, Default::default(), 5, 0);
        let out = text(&first, MetricsDetail::Full);
        assert!(out.contains(
            "berth_server_requests_total{code=\"200\",server=\"10.0.0.1:80\",service=\"api\"} 1\n"
        ));
        assert!(out.contains("berth_server_info{container_id=\"\",container_name=\"\",server=\"10.0.0.2:80\",service=\"api\"} 1\n"));

        let second = compile(&["10.0.0.1:80"], &first);
        second
            .upstream("api")
            .unwrap()
            .member(0)
            .series
            .record_response(200, Default::default(), 5, 0);
        let out = text(&second, MetricsDetail::Full);
        assert!(
            out.contains("berth_server_requests_total{code=\"200\",server=\"10.0.0.1:80\",service=\"api\"} 2\n"),
            "the kept backend counts on"
        );
        assert!(
            !out.contains("10.0.0.2:80"),
            "a removed backend leaves no series"
        );
    }

    /// Swarm task `web.2` on node-2, at 10.250.0.5:80.
    fn swarm_task() -> BackendSpec {
        let mut task = BackendSpec::new("10.250.0.5:80".parse().unwrap());
        task.identity = BackendIdentity {
            id: Some("c0ffee".into()),
            name: Some("web.2.k3j".into()),
            placement: Some(Placement {
                service: "web".into(),
                task_id: "k3j".into(),
                slot: Some(2),
                node: "node-2".into(),
            }),
        };
        task
    }

    #[test]
    fn server_info_names_a_swarm_tasks_service_slot_and_node() {
        let task = swarm_task();
        let out = text(
            &compile_specs(vec![task], &RouteTable::default()),
            MetricsDetail::Full,
        );
        assert!(
            out.contains("berth_server_info{container_id=\"c0ffee\",container_name=\"web.2.k3j\",node=\"node-2\",task_id=\"k3j\",task_service=\"web\",task_slot=\"2\",server=\"10.250.0.5:80\",service=\"api\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn service_detail_keeps_only_up_and_info_per_backend() {
        let table = compile(&["10.0.0.1:80"], &RouteTable::default());
        let full = text(&table, MetricsDetail::Full);
        let lean = text(&table, MetricsDetail::Service);
        for family in [
            "berth_server_request_duration_seconds_bucket",
            "berth_server_check_duration_seconds_bucket",
            "berth_server_requests_total",
            "berth_server_open_connections",
        ] {
            assert!(full.contains(family));
            assert!(!lean.contains(family));
        }
        assert!(lean.contains("berth_server_up{"));
        assert!(lean.contains("berth_server_info{"));
        assert!(lean.contains("berth_service_request_duration_seconds_bucket{"));
    }

    /// Every sample of a text exposition: `name{labels}`, labels sorted (as Prometheus keeps
    /// them), to its value. The test's label values hold no `",`.
    fn text_samples(text: &str) -> BTreeMap<String, f64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let series = match series.split_once('{') {
                    Some((name, labels)) => {
                        let labels = labels.strip_suffix("\"}").unwrap();
                        let mut pairs: Vec<&str> = labels.split("\",").collect();
                        pairs.sort();
                        format!("{name}{{{}\"}}", pairs.join("\","))
                    }
                    None => series.to_owned(),
                };
                (series, value.parse().unwrap())
            })
            .collect()
    }

    /// The same for a protobuf exposition, as Prometheus turns it into series.
    fn proto_samples(parts: &[Bytes]) -> BTreeMap<String, f64> {
        let mut samples = BTreeMap::new();
        for family in decode_proto(parts) {
            let name = family.name();
            for metric in &family.metric {
                let pairs: Vec<(String, String)> = metric
                    .label
                    .iter()
                    .map(|l| (l.name().to_owned(), l.value().to_owned()))
                    .collect();
                let mut add = |suffix: &str, extra: Option<String>, value: f64| {
                    let mut pairs = pairs.clone();
                    pairs.extend(extra.map(|le| ("le".to_owned(), le)));
                    pairs.sort();
                    let pairs: Vec<(&str, &str)> = pairs
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    let series = match pairs.is_empty() {
                        true => format!("{name}{suffix}"),
                        false => format!("{name}{suffix}{{{}}}", LabelSet::new(&pairs).text),
                    };
                    samples.insert(series, value);
                };
                match family.type_() {
                    MetricType::COUNTER => add("", None, metric.counter.value()),
                    MetricType::GAUGE => add("", None, metric.gauge.value()),
                    MetricType::HISTOGRAM => {
                        let h = &metric.histogram;
                        for bucket in &h.bucket {
                            let le = match bucket.upper_bound() {
                                f64::INFINITY => "+Inf".to_owned(),
                                bound => bound.to_string(),
                            };
                            add("_bucket", Some(le), bucket.cumulative_count() as f64);
                        }
                        add("_sum", None, h.sample_sum());
                        add("_count", None, h.sample_count() as f64);
                    }
                    other => panic!("{name}: unexpected type {other:?}"),
                }
            }
        }
        samples
    }

    #[test]
    fn protobuf_carries_every_sample_of_the_text_format() {
        let task = swarm_task();
        let table = compile_specs(
            vec![task, BackendSpec::new("10.0.0.1:80".parse().unwrap())],
            &RouteTable::default(),
        );
        let api = table.upstream("api").unwrap();
        for (code, millis) in [(200, 3), (200, 700), (503, 12_000)] {
            let elapsed = Duration::from_millis(millis);
            api.series.record_request(code, &http::Method::GET, elapsed);
            api.member(1)
                .series
                .record_response(code, elapsed, 1 << 40, 17);
        }
        let metrics = Metrics::new();
        metrics.config_reload(true);
        let buffers = Buffers::default();
        for detail in [MetricsDetail::Full, MetricsDetail::Service] {
            let text = render(&table, &metrics, detail, Format::Text, &buffers);
            let proto = render(&table, &metrics, detail, Format::Proto, &buffers);
            let text_bytes: usize = text.iter().map(Bytes::len).sum();
            let proto_bytes: usize = proto.iter().map(Bytes::len).sum();
            let text = text_samples(std::str::from_utf8(&text.concat()).unwrap());
            let proto = proto_samples(&proto);
            assert_eq!(
                text.keys().collect::<Vec<_>>(),
                proto.keys().collect::<Vec<_>>(),
                "{detail:?}: the same series"
            );
            // The process-wide families are the registry's, encoded by the `prometheus`
            // crate; the process' own figures move between the two scrapes.
            for (series, value) in text.iter().filter(|(s, _)| !s.starts_with("process_")) {
                assert!(
                    (value - proto[series]).abs() <= value.abs() * 1e-12,
                    "{series}: {value} in text, {} in protobuf",
                    proto[series]
                );
            }
            assert!(text.contains_key(
                "berth_server_info{container_id=\"c0ffee\",container_name=\"web.2.k3j\",node=\"node-2\",server=\"10.250.0.5:80\",service=\"api\",task_id=\"k3j\",task_service=\"web\",task_slot=\"2\"}"
            ));
            assert!(
                proto_bytes < text_bytes,
                "{detail:?}: {proto_bytes} bytes in protobuf, {text_bytes} in text"
            );
        }
    }

    #[test]
    fn backends_without_probes_have_no_check_series() {
        let mut quiet = service("quiet", &["quiet.test"], "/");
        quiet.backends = vec![BackendSpec::new("10.0.0.9:80".parse().unwrap())];
        quiet.policy.health_check.kind = Some(ProbeKind::None);
        let mut probed = service("probed", &["probed.test"], "/");
        probed.backends = vec![BackendSpec::new("10.0.0.8:80".parse().unwrap())];
        let table = RouteTable::compile(
            &Snapshot::of(vec![quiet, probed], None),
            &PolicyLayer::default(),
            &[ListenerConfig::new("main", "127.0.0.1:0".parse().unwrap())],
            &DomainSet::default(),
            &RouteTable::default(),
            &ProbeCache::default(),
        );
        let full = text(&table, MetricsDetail::Full);
        for family in [
            "berth_server_check_failures_total{",
            "berth_server_check_up_down_total{",
            "berth_server_check_duration_seconds_count{",
        ] {
            assert!(full.contains(&format!("{family}server=\"10.0.0.8:80\"")));
            assert!(!full.contains(&format!("{family}server=\"10.0.0.9:80\"")));
        }
        assert!(full.contains("berth_server_request_duration_seconds_count{server=\"10.0.0.9:80\""));
    }
}
