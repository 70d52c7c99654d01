//! Static mode end to end: the real binary, real whoami backends, a real HTTP client.

mod common;

use std::collections::HashMap;

use common::*;

fn two_backend_config(a: &Whoami, b: &Whoami, extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "{{http}}"
admin:
  address: "{{admin}}"
services:
  - name: api
    domains: ["api.example.com", "*.api.example.com"]
    health_check: {{ interval: 200ms, timeout: 500ms }}
{extra}    backends:
      - address: "{a}"
      - address: "{b}"
"#,
        a = a.addr,
        b = b.addr
    )
}

#[tokio::test]
async fn routes_by_host_with_wildcards_and_round_robin() {
    let a = Whoami::start("a");
    let b = Whoami::start("b");
    let berth = Berth::start(&two_backend_config(&a, &b, ""));
    berth.wait_backend_health("api", a.addr, "healthy");
    berth.wait_backend_health("api", b.addr, "healthy");
    let client = client();
    let mut seen = HashMap::new();
    for host in [
        "api.example.com",
        "API.Example.com:8080",
        "x.api.example.com",
    ] {
        for _ in 0..4 {
            let reply = get(&client, &berth.url("/"), host).await.unwrap();
            assert_eq!(reply.status, 200, "{host}");
            *seen.entry(reply.backend().unwrap().to_owned()).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.get("a"), Some(&6), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&6), "{seen:?}");
}
