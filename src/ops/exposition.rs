//! `GET /metrics`: the Prometheus text exposition, written straight from the live route
//! table's series handles, then the process-wide families.
//!
//! Each family is one pass over the table (the format wants a family's samples together), so a
//! scrape costs a walk of the table and the bytes it writes, nothing per series beyond that.
//! `admin.metrics_detail: service` keeps the per-service families and, per backend, only
//! `berth_server_up` and `berth_server_info`: a fleet of 30,000 backends is then a few
//! hundred thousand samples instead of a million (see the README's metrics reference).

use crate::config::MetricsDetail;
use crate::metrics::text::Exposition;
use crate::metrics::Metrics;
use crate::table::member::Member;
use crate::table::upstream::Upstream;
use crate::table::RouteTable;

pub fn render(table: &RouteTable, metrics: &Metrics, detail: MetricsDetail) -> Vec<u8> {
    let upstreams = table.upstreams();
    let members: usize = upstreams.iter().map(|u| u.members().len()).sum();
    let per_member = match detail {
        MetricsDetail::Full => 2_400,
        MetricsDetail::Service => 250,
    };
    let mut out =
        Exposition::with_capacity(16 * 1024 + upstreams.len() * 2_000 + members * per_member);
    services(&mut out, upstreams);
    servers(&mut out, upstreams, detail);
    out.append(&metrics.render_process_wide());
    out.into_bytes()
}

fn services(out: &mut Exposition, upstreams: &[std::sync::Arc<Upstream>]) {
    let name = "berth_service_requests_total";
    out.family(
        name,
        "counter",
        "Requests routed to a service, by response status code and method.",
    );
    for u in upstreams {
        u.series.requests.for_each(|(code, method), count| {
            out.sample(
                name,
                &u.series.labels,
                &[("code", code), ("method", method)],
                count,
            )
        });
    }
    let name = "berth_service_request_duration_seconds";
    out.family(
        name,
        "histogram",
        "Time from request headers received to response sent, per service.",
    );
    for u in upstreams {
        out.histogram(name, &u.series.labels, &u.series.duration);
    }
    let name = "berth_service_open_connections";
    out.family(name, "gauge", "Requests in flight to a service.");
    for u in upstreams {
        out.sample(name, &u.series.labels, &[], u.series.open.get());
    }
    let name = "berth_service_retries_total";
    out.family(
        name,
        "counter",
        "Requests sent to another backend after a failure.",
    );
    for u in upstreams {
        out.sample(name, &u.series.labels, &[], u.series.retries.get());
    }
    let name = "berth_service_retry_budget_exhausted_total";
    out.family(
        name,
        "counter",
        "Failures not retried because the service's retry budget was spent.",
    );
    for u in upstreams {
        out.sample(
            name,
            &u.series.labels,
            &[],
            u.series.retry_budget_exhausted.get(),
        );
    }
    let name = "berth_service_queue_depth";
    out.family(
        name,
        "gauge",
        "Requests waiting for a backend below max_connections.",
    );
    for u in upstreams {
        out.sample(name, &u.series.labels, &[], u.queue.depth());
    }
    let name = "berth_service_queue_timeouts_total";
    out.family(
        name,
        "counter",
        "Requests answered 503 after waiting queue_timeout for a backend.",
    );
    for u in upstreams {
        out.sample(name, &u.series.labels, &[], u.series.queue_timeouts.get());
    }
}

/// One integer per backend.
fn per_member(
    out: &mut Exposition,
    upstreams: &[std::sync::Arc<Upstream>],
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&Member) -> i64,
) {
    out.family(name, kind, help);
    for m in upstreams.iter().flat_map(|u| u.members()) {
        out.sample(name, &m.series.labels, &[], value(m));
    }
}

/// Per-backend families. `berth_server_up` and `berth_server_info` always; the rest only
/// with `metrics_detail: full`.
fn servers(out: &mut Exposition, upstreams: &[std::sync::Arc<Upstream>], detail: MetricsDetail) {
    per_member(
        out,
        upstreams,
        "berth_server_up",
        "gauge",
        "1 if the backend is in rotation (probes pass and it is not draining), else 0.",
        |m| i64::from(m.routable()),
    );
    server_info(out, upstreams);
    if detail == MetricsDetail::Service {
        return;
    }
    let name = "berth_server_requests_total";
    out.family(
        name,
        "counter",
        "Requests a backend answered (or failed), by status code.",
    );
    for m in upstreams.iter().flat_map(|u| u.members()) {
        m.series
            .requests
            .for_each(|code, count| out.sample(name, &m.series.labels, &[("code", code)], count));
    }
    per_member(
        out,
        upstreams,
        "berth_server_open_connections",
        "gauge",
        "Requests in flight to a backend.",
        |m| m.series.open.get(),
    );
    per_member(
        out,
        upstreams,
        "berth_server_connection_errors_total",
        "counter",
        "Failed attempts to connect to a backend.",
        |m| m.series.connection_errors.get() as i64,
    );
    per_member(
        out,
        upstreams,
        "berth_server_check_failures_total",
        "counter",
        "Active health probes that failed.",
        |m| m.series.check_failures.get() as i64,
    );
    per_member(
        out,
        upstreams,
        "berth_server_check_up_down_total",
        "counter",
        "Transitions of a backend between healthy and unhealthy.",
        |m| m.series.check_up_down.get() as i64,
    );
    per_member(
        out,
        upstreams,
        "berth_server_bytes_received_total",
        "counter",
        "Response body bytes berth received from a backend.",
        |m| m.series.bytes_received.get() as i64,
    );
    per_member(
        out,
        upstreams,
        "berth_server_bytes_sent_total",
        "counter",
        "Request body bytes berth sent to a backend.",
        |m| m.series.bytes_sent.get() as i64,
    );
    per_member(
        out,
        upstreams,
        "berth_server_ejections_total",
        "counter",
        "Times passive health ejected a backend after failing requests.",
        |m| m.series.ejections.get() as i64,
    );
    let name = "berth_server_request_duration_seconds";
    out.family(
        name,
        "histogram",
        "Upstream time: from choosing the backend to the end of its response.",
    );
    for m in upstreams.iter().flat_map(|u| u.members()) {
        out.histogram(name, &m.series.labels, &m.series.duration);
    }
    let name = "berth_server_check_duration_seconds";
    out.family(name, "histogram", "Duration of active health probes.");
    for m in upstreams.iter().flat_map(|u| u.members()) {
        out.histogram(name, &m.series.labels, &m.series.check_duration);
    }
}

fn server_info(out: &mut Exposition, upstreams: &[std::sync::Arc<Upstream>]) {
    let name = "berth_server_info";
    out.family(
        name,
        "gauge",
        "Always 1; joins a backend address to its container (empty for static backends) and, \
         for a Swarm task, to its service, task, slot and node.",
    );
    for m in upstreams.iter().flat_map(|u| u.members()) {
        out.sample(name, &m.info_labels, &[], 1);
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
            &Snapshot {
                services: vec![api],
                defaults: None,
            },
            &PolicyLayer::default(),
            &[ListenerConfig::new("main", "127.0.0.1:0".parse().unwrap())],
            &DomainSet::default(),
            previous,
            &ProbeCache::default(),
        )
    }

    fn text(table: &RouteTable, detail: MetricsDetail) -> String {
        String::from_utf8(render(table, &Metrics::new(), detail)).unwrap()
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
}
