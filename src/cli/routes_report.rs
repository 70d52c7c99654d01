//! `berth routes`: a running berth's live route table as an aligned text table, read from its
//! admin listener's `/api/routes`. The exit status says whether every service can take traffic
//! (see [`Verdict`]), so scripts and monitoring can use it without parsing the table.

use std::borrow::Cow;
use std::io::Write;
use std::time::{Duration, SystemTime};

use super::admin_client::{self, Admin};
use crate::admin::present::{age, short_id};
use crate::admin::routes_api::{BackendView, ServiceView};

/// What `berth routes` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every service has a backend that takes new requests.
    AllRoutable,
    /// These services have none: their requests get 503.
    Unroutable(Vec<String>),
}

/// Fetches `/api/routes` from `admin` and writes it to `out`: as received with `json`, else as
/// a table (with a row per backend when `verbose`).
pub fn run(
    admin: &Admin,
    json: bool,
    verbose: bool,
    out: &mut impl Write,
) -> Result<Verdict, String> {
    let reply = admin_client::get(admin, "/api/routes", Duration::from_secs(10))?;
    if reply.status != 200 {
        return Err(format!(
            "admin listener {}: /api/routes answered {}",
            admin.addr, reply.status
        ));
    }
    let services: Vec<ServiceView> = serde_json::from_slice(&reply.body).map_err(|e| {
        format!(
            "admin listener {}: /api/routes is not a route list: {e}",
            admin.addr
        )
    })?;
    let written = if json {
        out.write_all(&reply.body)
    } else {
        out.write_all(table(&services, verbose, SystemTime::now()).as_bytes())
    };
    written.map_err(|e| format!("writing the routes: {e}"))?;
    let unroutable: Vec<String> = services
        .iter()
        .filter(|s| s.routable_backends() == 0)
        .map(|s| s.name.clone())
        .collect();
    Ok(if unroutable.is_empty() {
        Verdict::AllRoutable
    } else {
        Verdict::Unroutable(unroutable)
    })
}

/// The text table: one row per service, and with `verbose` one indented row per backend under
/// it. `now` dates the last probes.
pub fn table(services: &[ServiceView], verbose: bool, now: SystemTime) -> String {
    if services.is_empty() {
        return "no services\n".into();
    }
    let mut service_rows = vec![[
        "SERVICE",
        "DOMAINS",
        "PATH",
        "LISTENERS",
        "UP",
        "ALGORITHM",
        "SOURCE",
        "",
    ]
    .map(String::from)
    .to_vec()];
    let mut backend_rows = Vec::new();
    for service in services {
        let up = service.routable_backends();
        service_rows.push(vec![
            printable(&service.name).into(),
            printable(&service.domains.join(",")).into(),
            printable(&service.path_prefix).into(),
            printable(&service.listeners.join(",")).into(),
            format!("{up}/{}", service.backends.len()),
            service.algorithm.clone(),
            service.source.clone(),
            if up == 0 {
                "NO ROUTABLE BACKEND".into()
            } else {
                String::new()
            },
        ]);
        if verbose {
            let probed = service.health_check.kind != "none";
            backend_rows.push(
                service
                    .backends
                    .iter()
                    .map(|b| backend_row(b, probed, now))
                    .collect::<Vec<_>>(),
            );
        }
    }
    let service_lines = align(&service_rows);
    let backend_lines = align(&backend_rows.iter().flatten().cloned().collect::<Vec<_>>());
    let mut out = String::new();
    let mut backend_lines = backend_lines.into_iter();
    out.push_str(&service_lines[0]);
    out.push('\n');
    for (index, line) in service_lines[1..].iter().enumerate() {
        out.push_str(line);
        out.push('\n');
        for _ in backend_rows.get(index).map_or(&[][..], Vec::as_slice) {
            out.push_str("  ");
            out.push_str(&backend_lines.next().unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

fn backend_row(backend: &BackendView, probed: bool, now: SystemTime) -> Vec<String> {
    let mut container = match (&backend.container_name, &backend.container_id) {
        (Some(name), Some(id)) => format!("{} {}", printable(name), printable(short_id(id))),
        (Some(name), None) => printable(name).into(),
        (None, Some(id)) => printable(short_id(id)).into(),
        (None, None) => "-".into(),
    };
    if let Some(task) = &backend.task {
        container.push_str(&format!(" on {}", printable(&task.node)));
    }
    let probe = match &backend.last_probe {
        _ if !probed => "no health check".into(),
        None => "not probed yet".into(),
        Some(probe) => {
            let when = humantime::parse_rfc3339(&probe.time)
                .ok()
                .map(|at| now.duration_since(at).unwrap_or_default())
                .map_or_else(|| probe.time.clone(), |ago| format!("{} ago", age(ago)));
            if probe.passed {
                format!("probe ok {when}")
            } else {
                format!("probe failed {when}: {}", printable(&probe.detail))
            }
        }
    };
    vec![
        printable(&backend.address).into(),
        backend.health.clone(),
        format!("weight {}", backend.weight),
        container,
        probe,
    ]
}

/// Pads every column but the last to its widest cell; trailing spaces are trimmed.
fn align(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths[c] - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// Text from labels and probes, safe for a terminal: control characters (an escape sequence
/// could rewrite the screen) are shown escaped.
fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::routes_api::{HealthCheckView, ProbeView, TaskView};

    fn backend(address: &str, health: &str, probe: Option<(bool, &str)>) -> BackendView {
        BackendView {
            address: address.into(),
            weight: 1,
            container_id: None,
            container_name: None,
            task: None,
            health: health.into(),
            routable: health == "healthy",
            in_flight: 0,
            ejection: None,
            last_probe: probe.map(|(passed, detail)| ProbeView {
                passed,
                detail: detail.into(),
                time: "2026-01-01T00:00:00.000Z".into(),
                duration_ms: 1.0,
            }),
        }
    }

    fn service(name: &str, domains: &[&str], backends: Vec<BackendView>) -> ServiceView {
        ServiceView {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            path_prefix: "/".into(),
            visibility: "public".into(),
            listeners: vec!["main".into()],
            max_body_size: None,
            algorithm: "round_robin".into(),
            hash_key: "client_ip".into(),
            sticky_cookie: None,
            source: "file".into(),
            retries: 2,
            health_check: HealthCheckView {
                kind: "http".into(),
                interval_ms: 2000,
            },
            passive_health: false,
            max_connections: None,
            queue_depth: 0,
            slow_start_ms: 0,
            backend_protocol: "h1".into(),
            tls: Default::default(),
            backends,
        }
    }

    #[test]
    fn columns_align_and_backends_sit_under_their_service() {
        let mut shop = service(
            "shop.test",
            &["shop.test"],
            vec![backend(
                "172.17.0.2:80",
                "unhealthy",
                Some((false, "connection refused\x1b[2J")),
            )],
        );
        shop.source = "docker".into();
        shop.backends[0].container_name = Some("shop_1".into());
        shop.backends[0].container_id = Some("3f2a9c1b7e0d55aa".into());
        let services = [
            service(
                "api",
                &["api.example.com", "*.api.example.com"],
                vec![
                    backend("127.0.0.1:9001", "healthy", Some((true, "ok"))),
                    backend("127.0.0.1:9002", "starting", None),
                ],
            ),
            shop,
        ];
        let now = humantime::parse_rfc3339("2026-01-01T00:00:03Z").unwrap();
        let text = table(&services, true, now);
        let expected = "\
SERVICE    DOMAINS                            PATH  LISTENERS  UP   ALGORITHM    SOURCE
api        api.example.com,*.api.example.com  /     main       1/2  round_robin  file
  127.0.0.1:9001  healthy    weight 1  -                    probe ok 3.0s ago
  127.0.0.1:9002  starting   weight 1  -                    not probed yet
shop.test  shop.test                          /     main       0/1  round_robin  docker  NO ROUTABLE BACKEND
  172.17.0.2:80   unhealthy  weight 1  shop_1 3f2a9c1b7e0d  probe failed 3.0s ago: connection refused\\u{1b}[2J
";
        assert_eq!(text, expected, "\n{text}");
        assert_eq!(
            table(&services, false, now).lines().count(),
            3,
            "without -v, one row per service"
        );
    }

    #[test]
    fn a_swarm_task_names_its_node() {
        let mut web = service(
            "web.local",
            &["web.local"],
            vec![backend("10.0.1.5:80", "healthy", None)],
        );
        web.backends[0].container_name = Some("web.1.k3j".into());
        web.backends[0].task = Some(TaskView {
            service: "web".into(),
            id: "k3j".into(),
            slot: Some(1),
            node: "node-2".into(),
        });
        let text = table(&[web], true, SystemTime::UNIX_EPOCH);
        assert!(text.contains("web.1.k3j on node-2"), "{text}");
    }
}
