//! The status page (`GET /` on the admin listener) in a real browser: headless Chromium loads it
//! from a real berth routing static backends and Docker containers, one backend down, and the
//! test reads the DOM Chromium built (after its script ran) and saves a screenshot under
//! `target/status-page/`. Skipped (loudly) without Docker or Chromium; CI requires both.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::docker::*;
use common::*;

fn chromium_available(test: &str) -> bool {
    tool_available(test, "chromium", &["--version"])
}

/// Runs headless Chromium on `url` with a fresh profile and returns what it printed.
fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args(["90", "chromium"])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium {args:?} {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The DOM after the page's script ran for `budget` of virtual time (the page's timers fire
/// without waiting for them).
fn dom(url: &str, budget: Duration) -> String {
    chromium(
        url,
        &[
            "--dump-dom",
            &format!("--virtual-time-budget={}", budget.as_millis()),
        ],
    )
}

/// The `<tbody>` (one service) whose rows contain `needle`.
fn group<'a>(dom: &'a str, needle: &str) -> &'a str {
    let at = dom
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} is not on the page:\n{dom}"));
    let start = dom[..at].rfind("<tbody").expect("inside a service");
    let end = at + dom[at..].find("</tbody>").expect("service closes");
    &dom[start..end]
}

/// The `<tr>` (one backend) that contains `needle`.
fn row<'a>(dom: &'a str, needle: &str) -> &'a str {
    let at = dom
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} is not on the page:\n{dom}"));
    let start = dom[..at].rfind("<tr").expect("inside a row");
    let end = at + dom[at..].find("</tr>").expect("row closes");
    &dom[start..end]
}

fn artifact_dir() -> PathBuf {
    let dir = repo_path("target/status-page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn status_url(berth: &Berth) -> String {
    format!("http://{}/", berth.admin)
}

/// A label prefix only one test reads: the engine is shared (other tests, other people), and
/// their labelled containers must not show up on its page.
fn prefix(test: &str) -> String {
    format!("t{}{test}", std::process::id())
}

/// berth with Docker discovery under `prefix` and quick probes, plus `services`.
fn config(prefix: &str, services: &str) -> String {
    format!(
        r#"{LISTENERS}
defaults:
  health_check: {{ interval: 250ms, timeout: 1s }}
discovery:
  docker:
    enabled: true
    debounce: 20ms
    label_prefixes: [{prefix}]
{services}"#
    )
}

#[tokio::test]
async fn status_page_in_a_browser_shows_static_and_docker_services_and_who_is_down() {
    if !available("status_page_in_a_browser") || !chromium_available("status_page_in_a_browser") {
        return;
    }
    let shop = "shop.example.com";
    let prefix = prefix("browser");
    let (routing, probe, weight) = (
        format!("{prefix}.routing.port_80"),
        format!("{prefix}.probe.url"),
        format!("{prefix}.lb.weight"),
    );
    let labels = [
        (routing.as_str(), shop),
        (probe.as_str(), "http://container:80/health.html"),
        (weight.as_str(), "2"),
    ];
    let c1 = Container::run("shop_1", &labels, &[]);
    let c2 = Container::run("shop_2", &labels, &[]);
    let a = Whoami::start("a");
    let mut b = Whoami::start("b");
    let search = Whoami::start("search");
    let yaml = config(
        &prefix,
        &format!(
            r#"services:
  - name: api
    domains: ["api.example.com", "*.api.example.com"]
    sticky_cookie: SRV
    backends:
      - address: "{a}"
      - address: "{b}"
  - name: search
    domains: ["search.example.com"]
    path_prefix: /v2
    health_check: {{ type: http, path: /health, initial_delay: 1h }}
    backends:
      - address: "{search}"
  - name: billing
    domains: ["billing.example.com"]
    health_check: {{ type: tcp, interval: 250ms }}
    backends:
      - address: "{dead}"
"#,
            a = a.addr,
            b = b.addr,
            search = search.addr,
            dead = free_addr(),
        ),
    );
    let berth = Berth::start(&yaml);
    berth.wait_backend_health("api", a.addr, "healthy");
    berth.wait_backend_health("api", b.addr, "healthy");
    let c1_addr = std::net::SocketAddr::new(c1.ip(None), 80);
    let c2_addr = std::net::SocketAddr::new(c2.ip(None), 80);
    berth.wait_backend_health(shop, c1_addr, "healthy");
    berth.wait_backend_health(shop, c2_addr, "healthy");

    // Traffic, some of it failing, so the figures are not all zero.
    let client = client();
    for i in 0..60 {
        let url = if i % 6 == 0 {
            berth.url("/?status=503")
        } else {
            berth.url("/")
        };
        get(&client, &url, "api.example.com").await.unwrap();
        get(&client, &berth.url("/"), shop).await.unwrap();
    }
    b.kill();
    berth.wait_backend_health("api", b.addr, "unhealthy");
    wait_for(
        "every service to have a traffic window",
        Duration::from_secs(10),
        || admin_get(berth.admin, "/").is_some_and(|(_, html)| !html.contains("measuring")),
    );

    let (status, raw) = admin_get(berth.admin, "/").unwrap();
    assert_eq!(status, 200);
    assert!(raw.starts_with("<!DOCTYPE html>"));
    assert!(
        !raw.contains("src=") && !raw.contains("@import") && !raw.contains("url("),
        "self-contained: nothing is fetched from elsewhere"
    );
    // Without JavaScript: the same table, no dead controls, and it reloads itself.
    assert!(raw.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"));
    assert!(raw.contains("id=\"controls\" hidden>"));

    // Long enough for the script's first refresh (5 s) to swap in a fresh rendering.
    let dom = dom(&status_url(&berth), Duration::from_secs(7));
    assert!(
        dom.contains("live · updated"),
        "the script ran under the CSP and refreshed the page in place:\n{dom}"
    );
    assert!(
        !dom.contains("id=\"controls\" hidden"),
        "the script shows the controls"
    );
    assert_eq!(dom.matches("<tbody").count(), 4, "{dom}");

    let api = group(&dom, "<span class=\"name\">api</span>");
    assert!(
        api.starts_with("<tbody class=\"problem degraded\""),
        "{api}"
    );
    assert!(api.contains("1/2 up"), "{api}");
    assert!(api.contains("<code>api.example.com</code>") && api.contains("*.api.example.com"));
    assert!(api.contains("sticky <code>SRV</code>") && api.contains("source <b>file</b>"));
    assert!(api.contains("req/s") && api.contains("5xx/s ("), "{api}");
    assert!(
        api.contains(" · p50 <b>") && api.contains(" · p99 <b>"),
        "{api}"
    );
    let up = row(api, &a.addr.to_string());
    assert!(up.starts_with("<tr class=\"be healthy\""), "{up}");
    assert!(up.contains("✔ healthy") && up.contains("ok <time"), "{up}");
    let down = row(api, &b.addr.to_string());
    assert!(down.starts_with("<tr class=\"be unhealthy\""), "{down}");
    assert!(
        down.contains("✖ unhealthy"),
        "the state is in words too: {down}"
    );
    assert!(
        down.contains("failed</span> <time") && down.contains("Connection refused"),
        "the reason and time of the last probe: {down}"
    );

    let search_group = group(&dom, "<span class=\"name\">search</span>");
    assert!(search_group.contains("path <code>/v2</code>"));
    let starting = row(search_group, &search.addr.to_string());
    assert!(
        starting.starts_with("<tr class=\"be starting\""),
        "{starting}"
    );
    assert!(starting.contains("◌ starting") && starting.contains("not probed yet"));

    let billing = group(&dom, "<span class=\"name\">billing</span>");
    assert!(
        billing.starts_with("<tbody class=\"problem down\""),
        "{billing}"
    );
    assert!(
        billing.contains("0/1 up · no routable backend"),
        "{billing}"
    );

    let docker = group(&dom, &format!("<span class=\"name\">{shop}</span>"));
    assert!(docker.starts_with("<tbody class=\"ok\""), "{docker}");
    assert!(docker.contains("source <b>docker</b>") && docker.contains("2/2 up"));
    assert!(docker.contains("check <b>http</b> <code>/health.html</code>"));
    for container in [&c1, &c2] {
        let backend = row(docker, &container.name);
        assert!(backend.starts_with("<tr class=\"be healthy\""), "{backend}");
        assert!(backend.contains(&format!(">{}</code>", container.short_id())));
        assert!(
            backend.contains("<td class=\"n\">2</td>"),
            "weight 2: {backend}"
        );
    }

    // The filter, restored from the address, hides every service but the Docker one.
    let filtered = self::dom(
        &format!("{}#filter={}", status_url(&berth), shop),
        Duration::from_millis(500),
    );
    assert!(filtered.contains("1 of 4 services shown"), "{filtered}");
    assert_eq!(
        filtered.matches(" hidden=\"\"").count(),
        3,
        "api, search and billing are hidden: {filtered}"
    );
    assert!(!group(&filtered, shop).contains("hidden"));

    let shot = artifact_dir().join("status-page.png");
    screenshot(&status_url(&berth), &shot);
}

fn screenshot(url: &str, path: &Path) {
    let _ = std::fs::remove_file(path);
    chromium(
        url,
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=1400,760",
        ],
    );
    let png = std::fs::read(path).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real picture"
    );
    eprintln!("screenshot: {}", path.display());
}

#[tokio::test]
async fn status_page_escapes_hostile_container_labels() {
    if !available("status_page_escapes") || !chromium_available("status_page_escapes") {
        return;
    }
    // A path prefix is plain visible ASCII, which leaves `<`, `>`, `"`, `&` and `'`: any
    // container in a shared cluster can put them in a label, and they become the service's
    // name and path on the page. (Docker refuses such characters in container names.)
    let domain = "evil.example.com";
    let payload =
        r#"/<script>document.title="pwned&"</script><img/src=x/onerror='document.title=1'>"#;
    let route = format!("{domain}{payload}");
    let prefix = prefix("escape");
    let label = format!("{prefix}.routing.port_80");
    let _evil = Container::run("evil", &[(label.as_str(), route.as_str())], &[]);
    let berth = Berth::start(&config(&prefix, ""));
    wait_for("the hostile service", Duration::from_secs(15), || {
        berth
            .routes()
            .as_array()
            .is_some_and(|services| services.iter().any(|s| s["path_prefix"] == payload))
    });

    let (_, raw) = admin_get(berth.admin, "/").unwrap();
    let escaped = "/&lt;script&gt;document.title=&quot;pwned&amp;&quot;&lt;/script&gt;\
                   &lt;img/src=x/onerror=&#39;document.title=1&#39;&gt;";
    assert!(raw.contains(escaped), "{raw}");
    assert!(!raw.contains("<script>document"), "raw markup in the HTML");
    assert!(!raw.contains("<img"), "raw markup in the HTML");
    assert_eq!(
        raw.matches("<script").count(),
        1,
        "only the page's own script"
    );

    let dom = dom(&status_url(&berth), Duration::from_millis(500));
    let title = &dom[dom.find("<title>").unwrap()..dom.find("</title>").unwrap()];
    assert!(title.starts_with("<title>berth"), "nothing ran: {title}");
    assert_eq!(dom.matches("<script").count(), 1, "no element was injected");
    assert!(!dom.contains("<img"), "no element was injected");
    assert!(
        dom.contains(&format!(
            "<span class=\"name\">{domain}/&lt;script&gt;document.title=\"pwned&amp;\"&lt;/script&gt;\
             &lt;img/src=x/onerror='document.title=1'&gt;</span>"
        )),
        "the browser read it as text:\n{dom}"
    );
}
