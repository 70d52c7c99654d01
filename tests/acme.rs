//! Automatic certificates against a real ACME server: Let's Encrypt's test CA, pebble (Debian
//! package `pebble`), started by each test on loopback with its mock DNS
//! (`pebble-challtestsrv`) answering 127.0.0.1 for every name. pebble validates HTTP-01 for
//! real: it fetches the token from berth's redirect listener.
//!
//! Without pebble installed the tests print `SKIPPED` and pass, unless `BERTH_REQUIRE_TOOLS=1`
//! (`.ci/run` installs it and sets that).

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use serde_json::Value;

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";
const DOMAIN: &str = "shop.example.com";

fn pebble_missing(test: &str) -> bool {
    !(tool_available(test, PEBBLE, &["-h"]) && tool_available(test, CHALLTESTSRV, &["-h"]))
}

/// pebble and its mock DNS server. pebble's own HTTPS certificate comes from a test CA
/// (`pki`), which berth trusts through `acme.ca_certificate`.
struct Pebble {
    pki: Pki,
    directory: String,
    management: SocketAddr,
    process: Process,
    _dns: Process,
}

impl Pebble {
    /// pebble validating HTTP-01 on `http_port` (berth's redirect listener); certificates
    /// valid for `validity` (pebble's default: 5 years).
    fn start(http_port: u16, validity: Option<Duration>) -> Pebble {
        let pki = Pki::new();
        pki.leaf("pebble", "pebble", &["localhost", "127.0.0.1"], -1, 30);
        let (api, management, dns_addr, dns_management) =
            (free_addr(), free_addr(), free_addr(), free_addr());
        let dns = Process::spawn(
            "pebble-challtestsrv",
            Command::new(CHALLTESTSRV).args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &dns_addr.to_string(),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &dns_management.to_string(),
            ]),
            pki.path("challtestsrv.log"),
        );
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": api.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": pki.path("pebble.crt"),
            "privateKey": pki.path("pebble.key"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(validity) = validity {
            config["pebble"]["certificateValidityPeriod"] = validity.as_secs().into();
        }
        std::fs::write(pki.path("pebble.json"), config.to_string()).unwrap();
        let process = Process::spawn(
            "pebble",
            Command::new(PEBBLE)
                .arg("-config")
                .arg(pki.path("pebble.json"))
                .args(["-dnsserver", &dns_addr.to_string(), "-strict=false"])
                // Without it pebble's validation sleeps 0-15 s at random.
                .env("PEBBLE_VA_NOSLEEP", "1"),
            pki.path("pebble.log"),
        );
        let pebble = Pebble {
            directory: format!("https://{api}/dir"),
            management,
            pki,
            process,
            _dns: dns,
        };
        wait_for("pebble's directory", Duration::from_secs(20), || {
            pebble.fetch(&pebble.directory).is_some()
        });
        pebble
    }

    /// GET over pebble's HTTPS.
    fn fetch(&self, url: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sSf", "--max-time", "5", "--cacert"])
            .arg(self.pki.ca_file())
            .arg(url)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes the root of the certificates this pebble issues (new at every start) to a file.
    fn issuing_root(&self) -> PathBuf {
        let root = self
            .fetch(&format!("https://{}/roots/0", self.management))
            .expect("pebble's issuing root");
        let path = self.pki.path("issuing-root.pem");
        std::fs::write(&path, root).unwrap();
        path
    }
}

/// berth with a TLS listener that has no certificate of its own, a redirect listener on
/// `{http}` (pebble's HTTP-01 port), and a service for `DOMAIN` whose `tls` is `tls`.
fn berth_config(
    pebble: &Pebble,
    public: SocketAddr,
    storage: &Path,
    tls: &str,
    backend: SocketAddr,
    extra: &str,
) -> String {
    format!(
        r#"listeners:
  - name: public
    address: "{public}"
    tls: {{}}
  - name: redirect
    address: "{{http}}"
    redirect_https: true
admin:
  address: "{{admin}}"
acme:
  directory: "{directory}"
  email: ops@example.com
  storage: "{storage}"
  ca_certificate: "{ca}"
{extra}services:
  - name: shop
    domains: [{DOMAIN}, "*.shop.example.com", shop.local]
    tls: {tls}
    health_check: {{interval: 200ms}}
    backends: [{{address: "{backend}"}}]
"#,
        directory = pebble.directory,
        storage = storage.display(),
        ca = pebble.pki.ca_file().display(),
    )
}

/// The leaf certificate `DOMAIN` is served with on `public`, checked against `root`.
async fn served(public: SocketAddr, root: &Path) -> Result<Vec<u8>, std::io::Error> {
    let mut tls = Tls::connect(public, root, Hello::sni(DOMAIN)).await?;
    let (status, _, _) = tls.get(DOMAIN, "/").await?;
    assert_eq!(status, 200);
    Ok(tls.leaf_der())
}

/// Polls until `DOMAIN` is served with a certificate `accept` likes; returns it and when.
async fn wait_served(
    public: SocketAddr,
    root: &Path,
    timeout: Duration,
    accept: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, Instant) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(leaf) = served(public, root).await {
            if accept(&leaf) {
                return (leaf, Instant::now());
            }
        }
        assert!(
            Instant::now() < deadline,
            "no acceptable certificate within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn counter(berth: &Berth, series: &str) -> u64 {
    berth
        .metrics()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The `tls.domains` entry of service `shop` for `domain` in `/api/routes`.
fn domain_state(berth: &Berth, domain: &str) -> Value {
    let routes = berth.routes();
    let shop = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "shop")
        .unwrap();
    shop["tls"]["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["domain"] == domain)
        .unwrap()
        .clone()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The `elapsed_ms` of berth's "ACME certificate installed" log lines.
fn installed_after_ms(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("ACME certificate installed"))
        .filter_map(|l| {
            l.split("elapsed_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_issues_serves_and_reuses_the_certificate_after_a_restart() {
    if pebble_missing("acme_issues_serves_and_reuses_the_certificate_after_a_restart") {
        return;
    }
    let whoami = Whoami::start("shop");
    let public = free_addr();
    let redirect = free_addr();
    let pebble = Pebble::start(redirect.port(), None);
    let state = tempfile::tempdir().unwrap();
    let storage = state.path().join("acme");
    // The service starts served over TLS without ACME; turning ACME on is what orders.
    let mut berth = Berth::spawn_on(
        &berth_config(&pebble, public, &storage, "true", whoami.addr, ""),
        redirect,
    );
    berth.wait_ready();
    berth.wait_backend_health("shop", whoami.addr, "healthy");
    let root = pebble.issuing_root();
    assert!(served(public, &root).await.is_err(), "no certificate yet");

    berth.write_config(&berth_config(
        &pebble,
        public,
        &storage,
        "{acme: true}",
        whoami.addr,
        "",
    ));
    let ordered = Instant::now();
    berth.process.signal("HUP");
    let (leaf, at) = wait_served(public, &root, Duration::from_secs(30), |_| true).await;
    eprintln!(
        "ACME timing: SIGHUP to the first HTTPS request served with the new certificate: {} ms \
         (berth's own order-to-installed: {:?} ms; account creation included)",
        (at - ordered).as_millis(),
        installed_after_ms(&berth.process.log())
    );

    // What operators see.
    let shop = domain_state(&berth, DOMAIN);
    assert_eq!(shop["certificate"]["source"], "acme", "{shop}");
    assert_eq!(shop["certificate"]["names"][0], DOMAIN);
    assert_eq!(shop["acme"]["last_error"], Value::Null);
    assert!(shop["acme"]["next_order"].is_string(), "{shop}");
    for never in ["*.shop.example.com", "shop.local"] {
        let state = domain_state(&berth, never);
        assert!(state["acme"]["not_ordered"].is_string(), "{state}");
    }
    assert_eq!(
        counter(&berth, r#"berth_acme_orders_total{result="success"}"#),
        1
    );
    assert_eq!(
        counter(&berth, r#"berth_acme_orders_total{result="failure"}"#),
        0
    );
    assert!(berth.metrics().contains(&format!(
        "berth_tls_certificate_expiry_timestamp_seconds{{domain=\"{DOMAIN}\"}}"
    )));
    // The redirect listener answers only tokens in flight.
    let reply = get(
        &client(),
        &berth.url("/.well-known/acme-challenge/unknown"),
        DOMAIN,
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 404);

    // Private files, in a directory per CA.
    let ca = storage.join(
        pebble
            .directory
            .trim_start_matches("https://")
            .replace([':', '/'], "-"),
    );
    assert_eq!((mode(&storage), mode(&ca)), (0o700, 0o700));
    for file in [
        "account.json",
        &format!("{DOMAIN}.crt"),
        &format!("{DOMAIN}.key"),
    ] {
        assert_eq!(mode(&ca.join(file)), 0o600, "{file}");
    }

    // A restart serves the stored certificate at once and orders nothing.
    berth.restart();
    let started = Instant::now();
    let (again, _) = wait_served(public, &root, Duration::from_secs(10), |_| true).await;
    eprintln!(
        "after a restart, the stored certificate was served {:?} after /readyz",
        started.elapsed()
    );
    assert_eq!(again, leaf, "the same certificate");
    assert_eq!(
        counter(&berth, r#"berth_acme_orders_total{result="success"}"#),
        0
    );
    assert!(berth
        .process
        .log()
        .contains("ACME certificate loaded from storage"));
    assert!(!berth.process.log().contains("ACME order started"));
    drop(pebble);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_renews_before_expiry_and_keeps_serving_when_the_ca_fails() {
    if pebble_missing("acme_renews_before_expiry_and_keeps_serving_when_the_ca_fails") {
        return;
    }
    let whoami = Whoami::start("shop");
    let public = free_addr();
    let redirect = free_addr();
    // 30 s certificates renewed when 24 s are left: a renewal about 6 s after each issue.
    let mut pebble = Pebble::start(redirect.port(), Some(Duration::from_secs(30)));
    let state = tempfile::tempdir().unwrap();
    let storage = state.path().join("acme");
    let berth = Berth::spawn_on(
        &berth_config(&pebble, public, &storage, "{acme: true}", whoami.addr, "").replace(
            "  ca_certificate:",
            "  renew_before: 24s\n  ca_certificate:",
        ),
        redirect,
    );
    berth.wait_ready();
    let root = pebble.issuing_root();
    let (first, _) = wait_served(public, &root, Duration::from_secs(30), |_| true).await;
    let (second, _) =
        wait_served(public, &root, Duration::from_secs(20), |leaf| leaf != first).await;
    assert!(counter(&berth, r#"berth_acme_orders_total{result="success"}"#) >= 2);

    // The CA goes away: the next renewal fails, the error shows, the certificate stays.
    pebble.process.kill();
    wait_for("a failed renewal", Duration::from_secs(20), || {
        counter(&berth, r#"berth_acme_orders_total{result="failure"}"#) >= 1
    });
    let shop = domain_state(&berth, DOMAIN);
    let error = shop["acme"]["last_error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "{shop}");
    assert_eq!(shop["certificate"]["source"], "acme");
    assert!(berth
        .process
        .log()
        .contains("the current certificate keeps serving"));
    let still = served(public, &root).await.unwrap();
    assert_eq!(still, second, "the renewed certificate keeps serving");
}
