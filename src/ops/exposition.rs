//! `GET /metrics`: the Prometheus text exposition, written straight from the live route
//! table's series handles, then the process-wide families.
//!
//! One pass over the table fills every family's own buffer (the format wants a family's samples
//! together; a pass per family would fetch each scattered series from memory once per family),
//! and the buffers are sent one after another without being joined. A scrape costs one walk of
//! the table and the bytes it writes, nothing per series beyond that.
//! `admin.metrics_detail: service` keeps the per-service families and, per backend, only
//! `berth_server_up` and `berth_server_info`: a fleet of 30,000 backends is then a few
//! hundred thousand samples instead of a million (see the README's metrics reference).

use bytes::Bytes;

use crate::config::MetricsDetail;
use crate::metrics::series::{CHECK_DURATION, SERVER_LATENCY, SERVICE_LATENCY};
use crate::metrics::text::{Buffers, Family};
use crate::metrics::Metrics;
use crate::spec::policy::ProbeKind;
use crate::table::member::Member;
use crate::table::upstream::Upstream;
use crate::table::RouteTable;

/// The exposition as the buffers it is sent in, in order: one per family, then the
/// process-wide families. Their concatenation is the text format. The buffers come from
/// `buffers` and go back there once dropped.
pub fn render(
    table: &RouteTable,
    metrics: &Metrics,
    detail: MetricsDetail,
    buffers: &Buffers,
) -> Vec<Bytes> {
    let upstreams = table.upstreams();
    let mut services = ServiceFamilies::new(upstreams, buffers);
    let members = upstreams.iter().map(|u| u.members().len()).sum();
    let first_member = upstreams.iter().flat_map(|u| u.members()).next();
    let mut servers = ServerFamilies::new(first_member, members, detail, buffers);
    for upstream in upstreams {
        services.add(upstream);
        let probed = upstream.policy.health_check.kind != ProbeKind::None;
        for member in upstream.members() {
            servers.add(member, probed);
        }
    }
    let mut chunks: Vec<Bytes> = services
        .into_chunks()
        .into_iter()
        .chain(servers.into_chunks())
        .map(|chunk| buffers.body(chunk))
        .collect();
    chunks.push(metrics.render_process_wide().into());
    chunks
}

/// The per-service families, filled in one pass over the table.
struct ServiceFamilies {
    requests: Family,
    duration: Family,
    open: Family,
    retries: Family,
    retry_budget_exhausted: Family,
    queue_depth: Family,
    queue_timeouts: Family,
}

impl ServiceFamilies {
    fn new(upstreams: &[std::sync::Arc<Upstream>], buffers: &Buffers) -> Self {
        let labels = upstreams.first().map_or("", |u| &u.series.labels);
        let size = |name, lines_each| Family::estimate(name, labels, upstreams.len() * lines_each);
        let one = |name, kind, help| Family::new(name, kind, help, size(name, 1), buffers);
        let requests = "berth_service_requests_total";
        let duration = "berth_service_request_duration_seconds";
        Self {
            requests: Family::new(
                requests,
                "counter",
                "Requests routed to a service, by response status code and method.",
                size(requests, 2),
                buffers,
            ),
            duration: Family::histogram_of(
                duration,
                "Time from request headers received to response sent, per service.",
                SERVICE_LATENCY.le,
                size(duration, SERVICE_LATENCY.le.len() + 3),
                buffers,
            ),
            open: one(
                "berth_service_open_connections",
                "gauge",
                "Requests in flight to a service.",
            ),
            retries: one(
                "berth_service_retries_total",
                "counter",
                "Requests sent to another backend after a failure.",
            ),
            retry_budget_exhausted: one(
                "berth_service_retry_budget_exhausted_total",
                "counter",
                "Failures not retried because the service's retry budget was spent.",
            ),
            queue_depth: one(
                "berth_service_queue_depth",
                "gauge",
                "Requests waiting for a backend below max_connections.",
            ),
            queue_timeouts: one(
                "berth_service_queue_timeouts_total",
                "counter",
                "Requests answered 503 after waiting queue_timeout for a backend.",
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
        self.queue_depth.sample(labels, &[], upstream.queue.depth());
        self.queue_timeouts
            .sample(labels, &[], series.queue_timeouts.get());
    }

    fn into_chunks(self) -> Vec<Vec<u8>> {
        [
            self.requests,
            self.duration,
            self.open,
            self.retries,
            self.retry_budget_exhausted,
            self.queue_depth,
            self.queue_timeouts,
        ]
        .into_iter()
        .map(Family::into_bytes)
        .collect()
    }
}

/// The per-backend families: `berth_server_up` and `berth_server_info` always, the rest only
/// with `metrics_detail: full`, and the `check` families only for backends that are probed
/// (as HAProxy does: without probes they could only ever say 0, and they are a third of a
/// backend's samples).
struct ServerFamilies {
    up: Family,
    info: Family,
    detail: Option<ServerDetail>,
}

struct ServerDetail {
    requests: Family,
    open: Family,
    connection_errors: Family,
    check_failures: Family,
    check_up_down: Family,
    bytes_received: Family,
    bytes_sent: Family,
    ejections: Family,
    duration: Family,
    check_duration: Family,
}

impl ServerFamilies {
    /// Families sized for `members` backends labelled like `first`.
    fn new(
        first: Option<&std::sync::Arc<Member>>,
        members: usize,
        detail: MetricsDetail,
        buffers: &Buffers,
    ) -> Self {
        let labels = first.map_or("", |m| &m.series.labels);
        let size = |name, lines_each| Family::estimate(name, labels, members * lines_each);
        let one = |name, kind, help| Family::new(name, kind, help, size(name, 1), buffers);
        let info = "berth_server_info";
        let info_size = Family::estimate(info, first.map_or("", |m| &m.info_labels), members);
        Self {
            up: one(
                "berth_server_up",
                "gauge",
                "1 if the backend is in rotation (probes pass and it is not draining), else 0.",
            ),
            info: Family::new(
                info,
                "gauge",
                "Always 1; joins a backend address to its container (empty for static backends) \
                 and, for a Swarm task, to its service, task, slot and node.",
                info_size,
                buffers,
            ),
            detail: (detail == MetricsDetail::Full).then(|| {
                let duration = "berth_server_request_duration_seconds";
                let check_duration = "berth_server_check_duration_seconds";
                ServerDetail {
                    requests: one(
                        "berth_server_requests_total",
                        "counter",
                        "Requests a backend answered (or failed), by status code.",
                    ),
                    open: one(
                        "berth_server_open_connections",
                        "gauge",
                        "Requests in flight to a backend.",
                    ),
                    connection_errors: one(
                        "berth_server_connection_errors_total",
                        "counter",
                        "Failed attempts to connect to a backend.",
                    ),
                    check_failures: one(
                        "berth_server_check_failures_total",
                        "counter",
                        "Active health probes that failed.",
                    ),
                    check_up_down: one(
                        "berth_server_check_up_down_total",
                        "counter",
                        "Transitions of a backend between healthy and unhealthy.",
                    ),
                    bytes_received: one(
                        "berth_server_bytes_received_total",
                        "counter",
                        "Response body bytes berth received from a backend.",
                    ),
                    bytes_sent: one(
                        "berth_server_bytes_sent_total",
                        "counter",
                        "Request body bytes berth sent to a backend.",
                    ),
                    ejections: one(
                        "berth_server_ejections_total",
                        "counter",
                        "Times passive health ejected a backend after failing requests.",
                    ),
                    duration: Family::histogram_of(
                        duration,
                        "Upstream time: from choosing the backend to the end of its response.",
                        SERVER_LATENCY.le,
                        size(duration, SERVER_LATENCY.le.len() + 3),
                        buffers,
                    ),
                    check_duration: Family::histogram_of(
                        check_duration,
                        "Duration of active health probes.",
                        CHECK_DURATION.le,
                        size(check_duration, CHECK_DURATION.le.len() + 3),
                        buffers,
                    ),
                }
            }),
        }
    }

    fn add(&mut self, member: &Member, probed: bool) {
        let series = &member.series;
        let labels = &series.labels;
        self.up.sample(labels, &[], i64::from(member.routable()));
        self.info.sample(&member.info_labels, &[], 1);
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

    fn into_chunks(self) -> Vec<Vec<u8>> {
        let mut families = vec![self.up, self.info];
        if let Some(d) = self.detail {
            families.extend([
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
            ]);
        }
        families.into_iter().map(Family::into_bytes).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerConfig;
    use crate::health::probe::ProbeCache;
    use crate::spec::hostname::DomainSet;
    use crate::spec::{BackendIdentity, BackendSpec, Placement, PolicyLayer, Snapshot};
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
        String::from_utf8(render(table, &Metrics::new(), detail, &buffers).concat()).unwrap()
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

    #[test]
    fn server_info_names_a_swarm_tasks_service_slot_and_node() {
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
