//! `berth routes` against a real running berth: the table, `-v`, `--json`, the ways to name
//! the admin listener, and the exit status scripts rely on.

mod common;

use std::process::{Command, Output};

use common::*;

fn routes(args: &[&str]) -> Output {
    Command::new(BERTH)
        .arg("routes")
        .args(args)
        .env_remove("BERTH_CONFIG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn services(a: &Whoami, b: &Whoami, with_orphan: bool) -> String {
    let mut yaml = format!(
        r#"{LISTENERS}defaults:
  health_check: {{ interval: 200ms, timeout: 500ms }}
services:
  - name: api
    domains: ["api.test", "*.api.test"]
    backends:
      - address: "{}"
      - address: "{}"
        weight: 3
"#,
        a.addr, b.addr
    );
    if with_orphan {
        yaml.push_str(&format!(
            r#"  - name: orphan
    domains: ["orphan.test"]
    path_prefix: /v1
    backends:
      - address: "{}"
"#,
            free_addr()
        ));
    }
    yaml
}

#[test]
fn routes_prints_the_live_table_and_fails_while_a_service_has_no_backend() {
    let a = Whoami::start("a");
    let b = Whoami::start("b");
    let berth = Berth::start(&services(&a, &b, true));
    berth.wait_backend_health("api", a.addr, "healthy");
    berth.wait_backend_health("api", b.addr, "healthy");
    let orphan: std::net::SocketAddr = berth.routes()[1]["backends"][0]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    berth.wait_backend_health("orphan", orphan, "unhealthy");
    let admin = berth.admin.to_string();

    let out = routes(&["--admin", &admin]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("SERVICE"), "{text}");
    let columns = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        columns(lines[1]),
        [
            "api",
            "api.test,*.api.test",
            "/",
            "main",
            "2/2",
            "round_robin",
            "file"
        ]
    );
    assert_eq!(
        columns(lines[2]),
        [
            "orphan",
            "orphan.test",
            "/v1",
            "main",
            "0/1",
            "round_robin",
            "file",
            "NO",
            "ROUTABLE",
            "BACKEND"
        ]
    );
    let domains_at = lines[0].find("DOMAINS").unwrap();
    assert!(
        lines[1..]
            .iter()
            .all(|l| l[domains_at - 2..].starts_with("  ") && !l[domains_at..].starts_with(' ')),
        "columns are aligned:\n{text}"
    );
    assert!(
        stderr(&out).contains("1 service(s) without a routable backend: orphan"),
        "{}",
        stderr(&out)
    );

    // -v: a row per backend under its service; the config file names the admin listener.
    let config = berth.config.to_str().unwrap();
    let out = routes(&["--config", config, "-v"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[2].trim_start().starts_with(&a.addr.to_string()),
        "{text}"
    );
    assert!(
        lines[2].contains("healthy") && lines[2].contains("weight 1"),
        "{text}"
    );
    assert!(
        lines[2].contains("probe ok") && lines[2].contains(" ago"),
        "{text}"
    );
    assert!(lines[3].contains(&b.addr.to_string()) && lines[3].contains("weight 3"));
    assert!(lines[4].starts_with("orphan"), "{text}");
    assert!(
        lines[5].contains("unhealthy")
            && lines[5].contains("probe failed")
            && lines[5].ends_with("ago: Connection refused (os error 111)"),
        "the reason is shown: {text}"
    );

    // --json: /api/routes as it is, through BERTH_CONFIG.
    let out = Command::new(BERTH)
        .args(["routes", "--json"])
        .env("BERTH_CONFIG", config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["name"], "api");
    assert_eq!(json[1]["backends"][0]["routable"], false);

    // Once every service has a routable backend, the exit status is 0.
    berth.write_config(&services(&a, &b, false));
    wait_for(
        "the orphan to be gone",
        std::time::Duration::from_secs(10),
        || berth.routes().as_array().is_some_and(|s| s.len() == 1),
    );
    let out = routes(&["--admin", &format!("http://{admin}/")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn routes_exits_1_when_berth_cannot_be_asked() {
    let out = routes(&["--admin", &free_addr().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("admin listener"), "{}", stderr(&out));

    let out = routes(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--admin"), "{}", stderr(&out));
}
