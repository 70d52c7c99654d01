//! Every Prometheus metric berth exports.
//!
//! Two kinds live here. The per-service and per-backend series ([`series`]) are plain atomics
//! held by the route table's upstreams and members, resolved once when the table is compiled:
//! the data path never looks a series up by label strings, and the exposition
//! ([`crate::admin::exposition`]) writes them straight from the live table, so a series exists
//! exactly as long as something routes to it and a scrape copies nothing. The process-wide
//! families (reloads, discovery, unrouted requests, `process_*`) are few and rarely written;
//! they stay in a `prometheus` registry ([`Metrics`]), whose exposition (text or protobuf) is
//! appended.

pub mod buffers;
pub mod family;
pub mod format;
pub mod label;
pub mod proto;
pub mod series;
pub mod text;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, ProtobufEncoder, Registry,
    TextEncoder,
};

use format::Format;
use series::status_label;
pub use series::{ServerSeries, ServiceSeries};

/// The process-wide metric families and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    unrouted: IntCounterVec,
    config_reloads: IntCounterVec,
    config_last_reload_success: IntGauge,
    discovery_events: IntCounterVec,
    discovery_errors: IntCounterVec,
    certificate_expiry: IntGaugeVec,
    acme_orders: IntCounterVec,
    listener_open: IntGaugeVec,
    listener_refused: IntCounterVec,
}

/// One listener's connection series, resolved once when the listener is built.
pub struct ListenerSeries {
    /// Connections open now.
    pub open: IntGauge,
    /// Connections closed at once because `max_connections` were open.
    pub refused: IntCounter,
}

/// Why a client's TLS handshake failed, as far as Pingora's log line tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// berth had no certificate for the name the client asked for (SNI), or the client
    /// cannot speak the listener's minimum version.
    NoCertificate,
    /// The client aborted with an alert (e.g. it does not trust the certificate).
    ClientAlert,
    /// No common protocol version, cipher suite or signature scheme, or a malformed message.
    Protocol,
    /// The connection closed or was reset during the handshake.
    Closed,
    /// No handshake within 60 s (Pingora's fixed limit).
    Timeout,
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 6] = [
        Self::NoCertificate,
        Self::ClientAlert,
        Self::Protocol,
        Self::Closed,
        Self::Timeout,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::ClientAlert => "client_alert",
            Self::Protocol => "protocol",
            Self::Closed => "closed",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }
}

/// Failed client handshakes. Process-wide statics, because they are counted by the log
/// subscriber (`crate::runtime::logging`), which exists before any [`Metrics`]: Pingora reports
/// these failures only as log lines.
static TLS_HANDSHAKE_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "berth_tls_handshake_failures_total",
            "Client TLS handshakes that failed, by reason.",
        ),
        &["reason"],
    )
    .expect("valid metric")
});

static H2_HANDSHAKE_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "berth_h2_handshake_failures_total",
        "Client connections that negotiated HTTP/2 but failed its connection preface.",
    )
    .expect("valid metric")
});

/// Counts a failed client TLS handshake.
pub fn tls_handshake_failed(reason: HandshakeFailure) {
    TLS_HANDSHAKE_FAILURES
        .with_label_values(&[reason.as_str()])
        .inc();
}

/// Counts a client whose HTTP/2 connection preface failed.
pub fn h2_handshake_failed() {
    H2_HANDSHAKE_FAILURES.inc();
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(vec.clone()))
        .expect("unique metric");
    vec
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
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
        r.register(Box::new(TLS_HANDSHAKE_FAILURES.clone()))
            .expect("unique metric");
        r.register(Box::new(H2_HANDSHAKE_FAILURES.clone()))
            .expect("unique metric");
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "berth_tls_certificate_expiry_timestamp_seconds",
                "When the certificate berth holds for a name expires (the soonest, if several), in seconds since the epoch.",
            ),
            &["domain"],
        )
        .expect("valid metric");
        r.register(Box::new(certificate_expiry.clone()))
            .expect("unique metric");
        let listener_open = IntGaugeVec::new(
            Opts::new(
                "berth_listener_open_connections",
                "Client connections a listener holds open.",
            ),
            &["listener"],
        )
        .expect("valid metric");
        r.register(Box::new(listener_open.clone()))
            .expect("unique metric");
        Arc::new(Metrics {
            listener_open,
            listener_refused: counter_vec(
                &r,
                "berth_listener_connections_refused_total",
                "Client connections closed at once because the listener had max_connections open.",
                &["listener"],
            ),
            unrouted: counter_vec(
                &r,
                "berth_requests_unrouted_total",
                "Requests answered by berth itself without a service: 404 unknown host, 400 bad request, 403 not allowed or below the listener's TLS version, 308 redirect to HTTPS, 200 ACME challenge, 408/431 request head too slow/large, 501 unsupported transfer coding.",
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
            certificate_expiry,
            acme_orders: counter_vec(
                &r,
                "berth_acme_orders_total",
                "ACME certificate orders, by result (success, failure).",
                &["result"],
            ),
            registry: r,
        })
    }

    /// Creates the TLS handshake failure series at zero, so alerts on them have data before
    /// the first failure.
    pub fn tls_listeners(&self) {
        for reason in HandshakeFailure::ALL {
            TLS_HANDSHAKE_FAILURES.with_label_values(&[reason.as_str()]);
        }
    }

    /// Replaces every certificate expiry series: `soonest` maps each name to its expiry.
    pub fn certificate_expiry(&self, soonest: HashMap<&str, i64>) {
        self.certificate_expiry.reset();
        for (name, expiry) in soonest {
            self.certificate_expiry
                .with_label_values(&[name])
                .set(expiry);
        }
    }

    /// Creates the ACME order series at zero.
    pub fn acme_enabled(&self) {
        for result in ["success", "failure"] {
            self.acme_orders.with_label_values(&[result]);
        }
    }

    pub fn acme_order(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.acme_orders.with_label_values(&[result]).inc();
    }

    /// The process-wide families in `format`.
    pub fn render_process_wide(&self, format: Format) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        let families = self.registry.gather();
        match format {
            Format::Text => TextEncoder::new().encode(&families, &mut out),
            Format::Proto => ProtobufEncoder::new().encode(&families, &mut out),
        }
        .expect("encoding into a Vec cannot fail");
        out
    }

    /// The series of the listener `name`, created at zero.
    pub fn listener(&self, name: &str) -> ListenerSeries {
        ListenerSeries {
            open: self.listener_open.with_label_values(&[name]),
            refused: self.listener_refused.with_label_values(&[name]),
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
