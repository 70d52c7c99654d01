//! The config file and container labels express the same policy knobs: fed the same settings,
//! they must produce the same service, and fed the same bad value, the same problem. The
//! tables below pin chosen values; the property test at the end feeds both sources generated
//! values for every knob they write alike.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_yaml_ng::{Mapping, Value};

use super::docker::labels::{build_snapshot, parse_instance, Instance};
use super::file::FileServices;
use crate::config::Config;
use crate::model::{ServiceSpec, SourceKind};

const IP: &str = "172.17.0.2";

/// `(key, value)` pairs: config keys (dotted for nesting) or label keys (after `berth.`).
type Settings<'a> = &'a [(&'a str, &'a str)];

/// The file service that says what a container with only a routing label says: the labels'
/// own defaults (TCP probe, acsrouting's cookie) written out.
fn base_file_service() -> Mapping {
    serde_yaml_ng::from_str(&format!(
        "domains: [a.test]\nsticky_cookie: CONTAINERID\nhealth_check: {{type: tcp}}\n\
         backends: [{{address: \"{IP}:80\"}}]\n"
    ))
    .unwrap()
}

/// Sets `key` (dotted for nesting; `backend.weight` is the first backend's) in the entry.
fn set(service: &mut Mapping, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap();
    let mut map = service;
    for part in parts {
        map = if part == "backend" {
            map.get_mut("backends").unwrap()[0]
                .as_mapping_mut()
                .unwrap()
        } else {
            map.entry(part.into())
                .or_insert_with(|| Value::Mapping(Mapping::new()))
                .as_mapping_mut()
                .unwrap()
        };
    }
    map.insert(last.into(), value);
}

/// The file service with `keys` set, each value read as YAML (`3`, `[a, b]`).
fn file_service(keys: Settings) -> Result<ServiceSpec, String> {
    let mut service = base_file_service();
    for (key, value) in keys {
        set(&mut service, key, serde_yaml_ng::from_str(value).unwrap());
    }
    file_service_from(service)
}

fn file_service_from(service: Mapping) -> Result<ServiceSpec, String> {
    let mut doc = Mapping::new();
    doc.insert(
        "listeners".into(),
        serde_yaml_ng::from_str("[{name: main, address: \"127.0.0.1:8080\"}]").unwrap(),
    );
    doc.insert("services".into(), Value::Sequence(vec![service.into()]));
    let text = serde_yaml_ng::to_string(&doc).unwrap();
    let path = Path::new("same.yaml");
    let config = Config::parse(&text, path).map_err(|e| e.message)?;
    let services = FileServices::from_config(&config, path).map_err(|e| e.message)?;
    let snapshot = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(services.resolve())
        .map_err(|e| e.message)?;
    Ok(Arc::unwrap_or_clone(
        snapshot.services.into_iter().next().unwrap(),
    ))
}

fn container(labels: Settings) -> Instance {
    let mut all: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (format!("berth.{k}"), v.to_string()))
        .collect();
    all.entry("berth.routing.port_80".into())
        .or_insert_with(|| "a.test".into());
    Instance {
        id: "c0ffee".into(),
        name: "web".into(),
        placement: None,
        labels: all,
        networks: [("bridge".to_string(), IP.parse().unwrap())].into(),
        platform_health: None,
        draining: false,
    }
}

fn label_service(labels: Settings) -> Result<ServiceSpec, String> {
    let instance = container(labels);
    let prefixes = ["berth".to_string()];
    parse_instance(&instance, &prefixes, None).map_err(|e| e.problem)?;
    let (snapshot, warnings) = build_snapshot(&[&instance], &prefixes, None, SourceKind::Docker);
    assert!(warnings.is_empty(), "{warnings:?}");
    Ok(Arc::unwrap_or_clone(
        snapshot.services.into_iter().next().unwrap(),
    ))
}

#[test]
fn the_same_settings_make_the_same_service() {
    let rows: &[(Settings, Settings)] = &[
        (&[], &[]),
        (&[("backend.weight", "3")], &[("lb.weight", "3")]),
        (&[("algorithm", "random")], &[("lb.algorithm", "random")]),
        (
            &[
                ("algorithm", "consistent_hash"),
                ("hash_key", "header:X-User"),
            ],
            &[
                ("lb.algorithm", "consistent_hash"),
                ("lb.hash_key", "header:X-User"),
            ],
        ),
        (&[("retries", "4")], &[("lb.retries", "4")]),
        (&[("sticky_cookie", "SRV")], &[("lb.sticky_cookie", "SRV")]),
        (&[("sticky_cookie", "\"\"")], &[("lb.sticky", "false")]),
        (
            &[
                ("health_check.type", "http"),
                ("health_check.path", "/ready"),
                ("health_check.port", "8081"),
            ],
            &[("probe.url", "http://container:8081/ready")],
        ),
        (
            &[("health_check.port", "81")],
            &[("probe.url", "tcp://container:81")],
        ),
        (
            &[
                ("health_check.interval", "3s"),
                ("health_check.timeout", "1s"),
                ("health_check.initial_delay", "5s"),
                ("health_check.healthy_threshold", "2"),
                ("health_check.unhealthy_threshold", "4"),
            ],
            &[
                ("probe.interval_seconds", "3"),
                ("probe.timeout_seconds", "1"),
                ("probe.initial_delay_seconds", "5"),
                ("probe.healthy_threshold", "2"),
                ("probe.unhealthy_threshold", "4"),
            ],
        ),
        (
            &[("path_prefix", "/api"), ("domains", "[A.Test]")],
            &[("routing.port_80", "A.Test/api")],
        ),
        (
            &[("algorithm", "least_conn")],
            &[("lb.algorithm", "least_conn")],
        ),
        (&[("algorithm", "ewma")], &[("lb.algorithm", "ewma")]),
        (
            &[("retry_on", "[connect_failure, 503, timeout]")],
            &[("lb.retry_on", "connect_failure,503,timeout")],
        ),
        (&[("retry_budget", "none")], &[("lb.retry_budget", "none")]),
        (&[("retry_budget", "35%")], &[("lb.retry_budget", "35%")]),
        (
            &[
                ("slow_start", "30s"),
                ("max_connections", "10"),
                ("queue_timeout", "500ms"),
                ("max_queue", "50"),
            ],
            &[
                ("lb.slow_start", "30s"),
                ("lb.max_connections", "10"),
                ("lb.queue_timeout", "500ms"),
                ("lb.max_queue", "50"),
            ],
        ),
        (
            &[("passive_health.enabled", "true")],
            &[("lb.passive", "true")],
        ),
        (
            &[
                ("passive_health.consecutive_failures", "3"),
                ("passive_health.failure_statuses", "[500, 503]"),
                ("passive_health.ejection", "10s"),
                ("passive_health.max_ejection", "1m"),
                ("passive_health.max_ejected_percent", "30%"),
            ],
            &[
                ("lb.passive.consecutive_failures", "3"),
                ("lb.passive.failure_statuses", "500,503"),
                ("lb.passive.ejection", "10s"),
                ("lb.passive.max_ejection", "1m"),
                ("lb.passive.max_ejected_percent", "30%"),
            ],
        ),
        (&[("tls", "true")], &[("tls", "true")]),
        (&[("tls.enabled", "false")], &[("tls", "false")]),
        (&[("tls.acme", "true")], &[("tls.acme", "true")]),
        (
            &[
                ("tls.enabled", "true"),
                ("tls.hsts", "\"max-age=31536000; includeSubDomains\""),
            ],
            &[
                ("tls", "true"),
                ("tls.hsts", "max-age=31536000;includesubdomains"),
            ],
        ),
        (
            &[("backend_protocol", "h2c")],
            &[("backend.protocol", "h2c")],
        ),
        (&[("visibility", "internal")], &[("visibility", "internal")]),
        (&[("visibility", "public")], &[("visibility", "public")]),
        (&[("max_body_size", "10MiB")], &[("max_body_size", "10MiB")]),
        (&[("max_body_size", "1024")], &[("max_body_size", "1024")]),
        (&[("max_body_size", "none")], &[("max_body_size", "none")]),
    ];
    for (file_keys, labels) in rows {
        let mut from_file = file_service(file_keys).unwrap();
        let from_labels = label_service(labels).unwrap();
        // What only differs by where a service comes from.
        from_file.source = SourceKind::Docker;
        from_file.backends[0].identity = from_labels.backends[0].identity.clone();
        assert_eq!(from_file, from_labels, "{file_keys:?} vs {labels:?}");
    }
}

#[test]
fn the_same_bad_value_gets_the_same_problem() {
    let rows: &[(&str, &str, &str, &str)] = &[
        ("backend.weight", "0", "lb.weight", "0"),
        ("backend.weight", "x", "lb.weight", "x"),
        ("backend.weight", "300", "lb.weight", "300"),
        ("algorithm", "fastest", "lb.algorithm", "fastest"),
        ("hash_key", "header:a b", "lb.hash_key", "header:a b"),
        ("retries", "11", "lb.retries", "11"),
        ("sticky_cookie", "a;b", "lb.sticky_cookie", "a;b"),
        (
            "health_check.healthy_threshold",
            "0",
            "probe.healthy_threshold",
            "0",
        ),
        ("path_prefix", "/api?x", "routing.port_80", "a.test/api?x"),
        (
            "health_check.path",
            "/a b",
            "probe.url",
            "http://container:80/a b",
        ),
        ("health_check.port", "0", "probe.url", "tcp://container:0"),
        ("retry_on", "sometimes", "lb.retry_on", "sometimes"),
        ("retry_budget", "lots", "lb.retry_budget", "lots"),
        ("max_connections", "-1", "lb.max_connections", "-1"),
        ("max_queue", "0", "lb.max_queue", "0"),
        ("slow_start", "soon", "lb.slow_start", "soon"),
        (
            "passive_health.failure_statuses",
            "[700]",
            "lb.passive.failure_statuses",
            "700",
        ),
        (
            "passive_health.max_ejected_percent",
            "120%",
            "lb.passive.max_ejected_percent",
            "120%",
        ),
        ("tls", "maybe", "tls", "maybe"),
        ("tls.acme", "maybe", "tls.acme", "maybe"),
        ("tls.hsts", "max-age=forever", "tls.hsts", "max-age=forever"),
        ("backend_protocol", "grpc", "backend.protocol", "grpc"),
        ("visibility", "private", "visibility", "private"),
        ("max_body_size", "0", "max_body_size", "0"),
        ("max_body_size", "10 MB", "max_body_size", "10 MB"),
        ("max_body_size", "-1", "max_body_size", "-1"),
    ];
    for (file_key, file_value, label, label_value) in rows {
        let file_problem = file_service(&[(file_key, file_value)]).unwrap_err();
        let label_problem = label_service(&[(label, label_value)]).unwrap_err();
        assert_eq!(file_problem, label_problem, "{file_key}={file_value}");
    }
}

/// Every knob the file and the labels write in the same syntax: `(file key, label key)`.
const ALIKE: &[(&str, &str)] = &[
    ("backend.weight", "lb.weight"),
    ("algorithm", "lb.algorithm"),
    ("hash_key", "lb.hash_key"),
    ("retries", "lb.retries"),
    ("sticky_cookie", "lb.sticky_cookie"),
    ("retry_on", "lb.retry_on"),
    ("retry_budget", "lb.retry_budget"),
    ("slow_start", "lb.slow_start"),
    ("max_connections", "lb.max_connections"),
    ("queue_timeout", "lb.queue_timeout"),
    ("max_queue", "lb.max_queue"),
    ("passive_health.enabled", "lb.passive"),
    (
        "passive_health.consecutive_failures",
        "lb.passive.consecutive_failures",
    ),
    (
        "passive_health.failure_statuses",
        "lb.passive.failure_statuses",
    ),
    ("passive_health.ejection", "lb.passive.ejection"),
    ("passive_health.max_ejection", "lb.passive.max_ejection"),
    (
        "passive_health.max_ejected_percent",
        "lb.passive.max_ejected_percent",
    ),
    ("health_check.healthy_threshold", "probe.healthy_threshold"),
    (
        "health_check.unhealthy_threshold",
        "probe.unhealthy_threshold",
    ),
    ("visibility", "visibility"),
    ("max_body_size", "max_body_size"),
];

/// Both sources accepted the value into the same service, or refused it with the same problem.
fn same_verdict(
    from_file: Result<ServiceSpec, String>,
    from_labels: Result<ServiceSpec, String>,
) -> Result<(), String> {
    match (from_file, from_labels) {
        (Ok(mut file), Ok(labels)) => {
            file.source = SourceKind::Docker;
            file.backends[0].identity = labels.backends[0].identity.clone();
            (file == labels)
                .then_some(())
                .ok_or_else(|| format!("different services:\n{file:?}\n{labels:?}"))
        }
        (Err(file), Err(labels)) if file == labels => Ok(()),
        (file, labels) => Err(format!(
            "different verdicts: file {:?}, labels {:?}",
            file.map(|_| "ok"),
            labels.map(|_| "ok")
        )),
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Values near what each knob accepts, and anything else.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "0",
                "1",
                "3",
                "10",
                "11",
                "256",
                "257",
                "-1",
                "+5",
                " 4 ",
                "none",
                "true",
                "off",
                "maybe",
                "internal",
                "public",
                "Internal",
                "random",
                "ewma",
                "consistent_hash",
                "header:X-User",
                "header:a b",
                "cookie:SID",
                "client_ip",
                "connect_failure, 503",
                "timeout,700",
                "20%",
                "120%",
                "35",
                "500ms",
                "2s",
                "1m 30s",
                "0s",
                "soon",
                "10MiB",
                "10 MB",
                "1k",
                "64KiB",
                "1g",
                "99999999999999999999",
                "502, 503",
                "SRV",
                "a;b",
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,16}",
            "\\PC{0,8}",
        ]
    }

    /// What a route label and a `domains` entry both read as one domain (no list separators,
    /// path or scheme, which only the label grammar has).
    fn domain() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_-]{1,10}(\\.[a-zA-Z0-9_*-]{1,10}){0,3}\\.?",
            "\\*\\.[a-z0-9]{1,8}\\.[a-z]{2,4}",
            "[ -+\\--.0-~]{1,20}",
        ]
        .prop_filter("a domain", |d| {
            !d.trim().is_empty() && !d.contains(['/', ',', ';']) && !d.contains("://")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_same_value_gets_the_same_verdict_from_both_sources(
            knob in 0..ALIKE.len(),
            value in value(),
        ) {
            let (file_key, label_key) = ALIKE[knob];
            // The file turns stickiness off with an empty cookie name, the labels with
            // lb.sticky=false: the one knob whose empty value means different things.
            prop_assume!(!(file_key == "sticky_cookie" && value.trim().is_empty()));
            let mut service = base_file_service();
            set(&mut service, file_key, Value::String(value.clone()));
            let verdict = same_verdict(
                file_service_from(service),
                label_service(&[(label_key, &value)]),
            );
            prop_assert!(verdict.is_ok(), "{file_key} / {label_key} = {value:?}: {verdict:?}");
        }

        #[test]
        fn the_same_domain_gets_the_same_verdict_from_both_sources(domain in domain()) {
            let mut service = base_file_service();
            set(
                &mut service,
                "domains",
                Value::Sequence(vec![Value::String(domain.clone())]),
            );
            let verdict = same_verdict(
                file_service_from(service),
                label_service(&[("routing.port_80", &domain)]),
            );
            prop_assert!(verdict.is_ok(), "{domain:?}: {verdict:?}");
        }

        /// Whatever the labels say, parsing them never panics, and one bad label costs only its
        /// own container.
        #[test]
        fn any_labels_parse_without_panicking(
            labels in prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "berth.routing.port_80", "aliyun.routing.port_8080", "berth.probe.url",
                        "aliyun.probe.timeout_seconds", "berth.lb.weight", "berth.lb.sticky",
                        "berth.lb.sticky_cookie", "berth.network", "berth.enable",
                        "berth.visibility", "aliyun.visibility", "berth.max_body_size",
                        "berth.lb.passive.ejection", "aliyun.logs.app",
                    ])
                    .prop_map(str::to_owned),
                    "(berth|aliyun|other)\\.[a-z_.0-9]{0,20}",
                ],
                prop_oneof![value(), domain(), "\\PC{0,40}"],
                0..6,
            ),
        ) {
            let mut good = container(&[]);
            good.id = "good".into();
            let mut other = container(&[]);
            other.labels = labels;
            let prefixes = ["berth".to_string(), "aliyun".to_string()];
            let _ = parse_instance(&other, &prefixes, None);
            let (snapshot, _) =
                build_snapshot(&[&good, &other], &prefixes, None, SourceKind::Docker);
            let good_routed = snapshot
                .services
                .iter()
                .flat_map(|s| &s.backends)
                .any(|b| b.identity.id.as_deref() == Some("good"));
            prop_assert!(good_routed, "the good container lost its route");
        }
    }
}
