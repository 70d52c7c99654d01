//! `GET /` on the admin listener: the status page an operator opens first. One self-contained
//! HTML document (inline CSS and script, nothing fetched from elsewhere, so it works
//! air-gapped), rendered from the live route table and the [`Traffic`] sampler on each request.
//!
//! Every string that came from a source (service names, domains, paths, container names, probe
//! reasons) is attacker-controlled in a shared cluster, so it only enters the page through
//! [`Html::text`], which escapes it; the rest is `'static` markup. A Content-Security-Policy
//! allows only the page's own script (by hash) as a second wall.
//!
//! The script re-fetches the page every few seconds and swaps the fresh `#status` element in
//! (no reload, no flicker, the filter and scroll position stay); without script the page reloads
//! itself every [`REFRESH_SECONDS`].

use std::time::{Instant, SystemTime};

use base64::Engine as _;

use super::present::{age, latency, rate, short_id, thousands};
use super::traffic::{LastMinute, Traffic};
use crate::health::state::HealthStatus;
use crate::model::policy::ProbeKind;
use crate::model::PlatformHealth;
use crate::table::member::Member;
use crate::table::upstream::{Standing, Upstream};
use crate::table::RouteTable;

/// The status page of one berth process.
pub struct StatusPage {
    /// The machine's name: an operator with several load balancers must see which one this is.
    host: String,
    started: SystemTime,
    content_security_policy: String,
    /// The proxy listeners' names, in the route table's order.
    listeners: Vec<String>,
}

impl StatusPage {
    pub fn new(started: SystemTime, listeners: Vec<String>) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let script_hash = ring::digest::digest(&ring::digest::SHA256, SCRIPT.as_bytes());
        let content_security_policy = format!(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{}'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            base64::engine::general_purpose::STANDARD.encode(script_hash.as_ref())
        );
        Self {
            host,
            started,
            content_security_policy,
            listeners,
        }
    }

    /// The headers the page must be served with: only its own script runs, nothing is loaded
    /// from elsewhere, no one frames it.
    pub fn headers(&self) -> [(&'static str, &str); 3] {
        [
            ("content-security-policy", &self.content_security_policy),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
        ]
    }

    /// The page for `table`; `traffic` is `None` when metrics are off (nothing is counted).
    pub fn render(&self, table: &RouteTable, traffic: Option<&Traffic>) -> String {
        let now = Now {
            wall: SystemTime::now(),
            mono: Instant::now(),
        };
        let upstreams = table.upstreams();
        let backends: usize = upstreams.iter().map(|u| u.members().len()).sum();
        let mut page = Html(String::with_capacity(
            8 * 1024 + upstreams.len() * 1_200 + backends * 500,
        ));
        self.head(&mut page, &now);
        page.raw("<main id=\"status\">");
        summary(&mut page, upstreams, traffic.is_some(), &now);
        page.raw(TABLE_HEAD);
        for (i, upstream) in upstreams.iter().enumerate() {
            let served_on = Listeners {
                names: &self.listeners,
                serving: table.served_on(i),
            };
            service(&mut page, upstream, &served_on, traffic, &now);
        }
        page.raw("</table>");
        if upstreams.is_empty() {
            page.raw("<p class=\"empty\">No services: nothing is routed yet.</p>");
        }
        page.raw("</main>");
        page.raw(FOOT_BEFORE_SCRIPT);
        page.raw(SCRIPT);
        page.raw("</script></body></html>\n");
        page.0
    }

    fn head(&self, page: &mut Html, now: &Now) {
        page.raw(HEAD_BEFORE_TITLE);
        page.raw("berth");
        if !self.host.is_empty() {
            page.raw(" on ");
            page.text(&self.host);
        }
        page.raw("</title>");
        page.raw(HEAD_AFTER_TITLE);
        page.raw("<h1>berth");
        if !self.host.is_empty() {
            page.raw(" <span class=\"host\">on ");
            page.text(&self.host);
            page.raw("</span>");
        }
        page.raw("</h1><span class=\"meta\">");
        page.text(env!("CARGO_PKG_VERSION"));
        page.raw(" · started ");
        let up = now.wall.duration_since(self.started).unwrap_or_default();
        page.text(&age(up));
        page.raw(" ago</span>");
        page.raw(CONTROLS);
    }
}

/// The moment a page is rendered, on both clocks.
struct Now {
    wall: SystemTime,
    mono: Instant,
}

/// HTML under construction. Text from outside only enters through [`Html::text`]; markup is
/// `'static`.
struct Html(String);

impl Html {
    fn raw(&mut self, markup: &'static str) {
        self.0.push_str(markup);
    }

    fn text(&mut self, text: &str) {
        escape_into(&mut self.0, text);
    }

    fn num(&mut self, n: impl itoa::Integer) {
        self.0.push_str(itoa::Buffer::new().format(n));
    }
}

/// Appends `text` with the characters HTML gives meaning to escaped; safe in element content
/// and in double- or single-quoted attribute values.
fn escape_into(out: &mut String, text: &str) {
    let mut done = 0;
    for (at, byte) in text.bytes().enumerate() {
        let entity = match byte {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        out.push_str(&text[done..at]);
        out.push_str(entity);
        done = at + 1;
    }
    out.push_str(&text[done..]);
}

fn summary(page: &mut Html, upstreams: &[std::sync::Arc<Upstream>], counted: bool, now: &Now) {
    let (mut up, mut total, mut unroutable, mut degraded) = (0, 0, 0, 0);
    for upstream in upstreams {
        let routable = upstream.members().iter().filter(|m| m.routable()).count();
        up += routable;
        total += upstream.members().len();
        if routable == 0 {
            unroutable += 1;
        } else if routable < upstream.members().len() {
            degraded += 1;
        }
    }
    page.raw("<p class=\"summary\"><b>");
    page.num(upstreams.len());
    page.raw("</b> services · <b>");
    page.num(up);
    page.raw("</b> of <b>");
    page.num(total);
    page.raw("</b> backends up");
    if unroutable > 0 {
        page.raw(" · <span class=\"bad\">⚠ <b>");
        page.num(unroutable);
        page.raw("</b> without a routable backend</span>");
    }
    if degraded > 0 {
        page.raw(" · <span class=\"warn\"><b>");
        page.num(degraded);
        page.raw("</b> degraded</span>");
    }
    page.raw(" · rendered <time>");
    page.text(&humantime::format_rfc3339_seconds(now.wall).to_string());
    page.raw("</time>");
    if counted {
        page.raw(" · rates and latency over the last minute");
    } else {
        page.raw(" · <span class=\"warn\">admin.metrics is off: no traffic figures</span>");
    }
    page.raw("</p>");
}

const TABLE_HEAD: &str = "<table><thead><tr><th>health</th><th>backend</th><th>container</th>\
<th class=\"n\">weight</th><th>last probe</th><th class=\"n\">in flight</th>\
<th class=\"n\">requests</th><th class=\"n\">5xx</th><th class=\"n\">conn. errors</th>\
</tr></thead>";

/// The listeners that route a service, by name.
struct Listeners<'a> {
    names: &'a [String],
    serving: &'a [usize],
}

fn service(
    page: &mut Html,
    upstream: &Upstream,
    served_on: &Listeners,
    traffic: Option<&Traffic>,
    now: &Now,
) {
    let spec = &upstream.spec;
    let policy = &upstream.policy;
    let members = upstream.members();
    let routable = members.iter().filter(|m| m.routable()).count();
    let (group, pill) = if routable == 0 {
        ("problem down", "pill down")
    } else if routable < members.len() {
        ("problem degraded", "pill degraded")
    } else {
        ("ok", "pill up")
    };
    page.raw("<tbody class=\"");
    page.raw(group);
    page.raw("\" data-search=\"");
    page.text(&spec.name);
    for domain in &spec.domains {
        page.raw(" ");
        page.text(domain);
    }
    page.raw("\"><tr class=\"svc\"><th colspan=\"9\"><div class=\"sh\"><span class=\"name\">");
    page.text(&spec.name);
    page.raw("</span><span class=\"");
    page.raw(pill);
    page.raw("\">");
    page.num(routable);
    page.raw("/");
    page.num(members.len());
    page.raw(" up");
    if routable == 0 {
        page.raw(" · no routable backend");
    }
    page.raw("</span><span class=\"doms\">");
    for domain in &spec.domains {
        page.raw("<code>");
        page.text(domain);
        page.raw("</code> ");
    }
    page.raw("</span><span class=\"kv\">path <code>");
    page.text(&spec.path_prefix);
    page.raw("</code></span><span class=\"kv\">listeners <b>");
    if served_on.serving.is_empty() {
        page.raw("none");
    }
    for (k, &at) in served_on.serving.iter().enumerate() {
        if k > 0 {
            page.raw(", ");
        }
        page.text(served_on.names.get(at).map_or("?", String::as_str));
    }
    if policy.visibility == crate::model::policy::Visibility::Internal {
        page.raw(" · internal");
    }
    page.raw("</b></span><span class=\"kv\"><b>");
    page.raw(policy.algorithm.as_str());
    page.raw("</b>");
    if policy.algorithm == crate::model::policy::Algorithm::ConsistentHash {
        page.raw(" on ");
        page.text(&policy.hash_key.to_string());
    }
    if let Some(cookie) = &policy.sticky_cookie {
        page.raw(" · sticky <code>");
        page.text(cookie);
        page.raw("</code>");
    }
    page.raw("</span><span class=\"kv\">source <b>");
    page.raw(spec.source.as_str());
    page.raw("</b></span><span class=\"kv\">check <b>");
    let check = &policy.health_check;
    page.raw(check.kind.as_str());
    page.raw("</b>");
    if check.kind == ProbeKind::Http {
        page.raw(" <code>");
        page.text(&check.path);
        page.raw("</code>");
    }
    if check.kind != ProbeKind::None {
        page.raw(" every ");
        page.text(&humantime::format_duration(check.interval).to_string());
    }
    page.raw("</span>");
    service_traffic(
        page,
        traffic.map(|t| t.last_minute(&spec.name, &upstream.series, now.mono)),
        upstream.series.open.get(),
    );
    page.raw("</div></th></tr>");
    for (index, member) in members.iter().enumerate() {
        backend(page, upstream, index, member, traffic.is_some(), now);
    }
    page.raw("</tbody>");
}

/// `figures`: `None` when metrics are off, `Some(None)` before the first window.
fn service_traffic(page: &mut Html, figures: Option<Option<LastMinute>>, in_flight: i64) {
    page.raw("<span class=\"traffic\">");
    match figures {
        None => page.raw("no traffic figures"),
        Some(None) => page.raw("<span title=\"the first copy of the counters is not a second old yet\">measuring…</span>"),
        Some(Some(m)) => {
            page.raw("<span title=\"over the last ");
            page.text(&age(m.window));
            page.raw("\"><b>");
            page.text(&rate(m.requests_per_second));
            page.raw("</b> req/s · ");
            if m.errors_per_second > 0.0 {
                page.raw("<span class=\"bad\"><b>");
                page.text(&rate(m.errors_per_second));
                page.raw("</b> 5xx/s (");
                let share = 100.0 * m.errors_per_second / m.requests_per_second.max(f64::MIN_POSITIVE);
                page.text(&format!("{share:.1}"));
                page.raw("%)</span>");
            } else {
                page.raw("<b>0</b> 5xx/s");
            }
            for (name, value) in [("p50", m.p50), ("p99", m.p99)] {
                page.raw(" · ");
                page.raw(name);
                page.raw(" <b>");
                match value {
                    Some(seconds) => page.text(&latency(seconds)),
                    None => page.raw("–"),
                }
                page.raw("</b>");
            }
            page.raw("</span>");
        }
    }
    page.raw(" · <b>");
    page.num(in_flight);
    page.raw("</b> in flight</span>");
}

fn backend(
    page: &mut Html,
    upstream: &Upstream,
    index: usize,
    member: &Member,
    counted: bool,
    now: &Now,
) {
    let standing = upstream.standing(index);
    let (class, badge) = match standing {
        Standing::Probed(HealthStatus::Up) => ("healthy", "✔ healthy"),
        Standing::Probed(HealthStatus::Down) => ("unhealthy", "✖ unhealthy"),
        Standing::Probed(HealthStatus::Starting) => ("starting", "◌ starting"),
        Standing::Held(PlatformHealth::Unhealthy) => ("unhealthy", "✖ unhealthy"),
        Standing::Held(PlatformHealth::Starting) => ("starting", "◌ starting"),
        Standing::Draining => ("draining", "⇣ draining"),
        Standing::Ejected(_) => ("unhealthy", "⊘ ejected"),
    };
    page.raw("<tr class=\"be ");
    page.raw(class);
    page.raw("\"><td><span class=\"st\">");
    page.raw(badge);
    page.raw("</span>");
    match &standing {
        Standing::Draining => page.raw(
            "<small>container stopping: in-flight requests finish, new ones go elsewhere</small>",
        ),
        Standing::Held(health) => {
            page.raw("<small>Docker health check says ");
            page.raw(match health {
                PlatformHealth::Starting => "starting",
                PlatformHealth::Unhealthy => "unhealthy",
            });
            page.raw("</small>");
        }
        Standing::Ejected(ejection) => {
            page.raw("<small>failing requests (");
            page.text(&ejection.reason);
            page.raw(") took it out until ");
            page.text(&humantime::format_rfc3339_seconds(ejection.until).to_string());
            page.raw("</small>");
        }
        Standing::Probed(_) => {}
    }
    page.raw("</td><td class=\"addr\">");
    page.text(&member.addr.to_string());
    page.raw("</td><td>");
    match (&member.identity.name, &member.identity.id) {
        (None, None) => page.raw("<span class=\"none\">static</span>"),
        (name, id) => {
            if let Some(name) = name {
                page.text(name);
            }
            if let Some(id) = id {
                page.raw(" <code class=\"id\" title=\"");
                page.text(id);
                page.raw("\">");
                page.text(short_id(id));
                page.raw("</code>");
            }
        }
    }
    page.raw("</td><td class=\"n\">");
    page.num(upstream.spec.backends[index].weight);
    page.raw("</td><td class=\"probe\">");
    last_probe(page, upstream, member, now);
    page.raw("</td>");
    let series = &member.series;
    if counted {
        let (mut requests, mut errors) = (0u64, 0u64);
        for (code, count) in series.requests.values() {
            requests += count;
            if code.starts_with('5') {
                errors += count;
            }
        }
        page.raw("<td class=\"n\">");
        page.num(series.open.get());
        page.raw("</td><td class=\"n\">");
        page.text(&thousands(requests));
        page.raw(if errors > 0 {
            "</td><td class=\"n bad\">"
        } else {
            "</td><td class=\"n\">"
        });
        page.text(&thousands(errors));
        let connection_errors = series.connection_errors.get();
        page.raw(if connection_errors > 0 {
            "</td><td class=\"n bad\">"
        } else {
            "</td><td class=\"n\">"
        });
        page.text(&thousands(connection_errors));
        page.raw("</td></tr>");
    } else {
        page.raw("<td class=\"n\">–</td><td class=\"n\">–</td><td class=\"n\">–</td><td class=\"n\">–</td></tr>");
    }
}

fn last_probe(page: &mut Html, upstream: &Upstream, member: &Member, now: &Now) {
    if upstream.policy.health_check.kind == ProbeKind::None {
        page.raw("<span class=\"none\">no health check</span>");
        return;
    }
    let Some(probe) = member.health.last_probe() else {
        page.raw("<span class=\"none\">not probed yet</span>");
        return;
    };
    page.raw(if probe.passed {
        "ok"
    } else {
        "<span class=\"bad\">failed</span>"
    });
    page.raw(" <time datetime=\"");
    let at = humantime::format_rfc3339_millis(probe.at).to_string();
    page.text(&at);
    page.raw("\" title=\"");
    page.text(&at);
    page.raw(" (took ");
    page.text(&latency(probe.duration.as_secs_f64()));
    page.raw(")\">");
    page.text(&age(now.wall.duration_since(probe.at).unwrap_or_default()));
    page.raw(" ago</time>");
    if !probe.passed {
        page.raw("<small>");
        page.text(&probe.detail);
        page.raw("</small>");
    }
}

const HEAD_BEFORE_TITLE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript><title>";

const HEAD_AFTER_TITLE: &str = "<style>
:root{--fg:#1f2328;--muted:#59636e;--bg:#fff;--line:#d1d9e0;--svc:#f6f8fa;--code:#eff2f5;
--ok:#1a7f37;--ok-bg:#dafbe1;--bad:#cf222e;--bad-bg:#ffebe9;--warn:#9a6700;--warn-bg:#fff8c5;
--drain:#8250df;--drain-bg:#fbefff;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;--line:#3d444d;
--svc:#151b23;--code:#262c36;--ok:#3fb950;--ok-bg:#12261e;--bad:#f85149;--bad-bg:#2d1214;
--warn:#d29922;--warn-bg:#272115;--drain:#ab7df8;--drain-bg:#231a33}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,\"Segoe UI\",sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1rem;padding:.6rem 1rem;border-bottom:1px solid var(--line)}
h1{font-size:1.2rem;margin:0}.host,.meta,small,.none{color:var(--muted);font-weight:normal}
#filter{font:inherit;padding:.25rem .5rem;min-width:18rem;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}
#note{color:var(--muted);margin-left:auto}body.stale #note{color:var(--bad);font-weight:bold}
body.stale main{opacity:.6}
main{padding:0 1rem 1rem}.summary{margin:.6rem 0}
table{border-collapse:collapse;width:100%}
thead th{position:sticky;top:0;background:var(--bg);text-align:left;font-weight:600;color:var(--muted);
border-bottom:2px solid var(--line);padding:.3rem .5rem;white-space:nowrap;z-index:1}
td{padding:.25rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap;width:1%}
tr.svc th{background:var(--svc);text-align:left;font-weight:normal;padding:.5rem;border-top:1.5rem solid var(--bg);
border-bottom:1px solid var(--line);border-left:4px solid var(--ok)}
tbody.degraded tr.svc th{border-left-color:var(--warn)}tbody.down tr.svc th{border-left-color:var(--bad);background:var(--bad-bg)}
.sh{display:flex;flex-wrap:wrap;align-items:baseline;gap:.2rem 1rem}.name{font-weight:700;font-size:1.05rem}
.traffic{margin-left:auto;font-variant-numeric:tabular-nums}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--code);padding:0 .25rem;border-radius:4px}
.addr{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:nowrap}
.pill{font-weight:700;padding:0 .5rem;border-radius:999px}
.pill.up{color:var(--ok);background:var(--ok-bg)}.pill.degraded{color:var(--warn);background:var(--warn-bg)}
.pill.down{color:#fff;background:var(--bad)}
.bad{color:var(--bad)}.warn{color:var(--warn)}
tr.be td:first-child{border-left:4px solid transparent;white-space:nowrap}
tr.be small,td.probe small{display:block;white-space:normal;max-width:28rem;overflow-wrap:anywhere}
.st{font-weight:700}
tr.healthy .st{color:var(--ok)}
tr.unhealthy td{background:var(--bad-bg)}tr.unhealthy td:first-child{border-left-color:var(--bad)}tr.unhealthy .st{color:var(--bad)}
tr.starting td{background:var(--warn-bg)}tr.starting td:first-child{border-left-color:var(--warn)}tr.starting .st{color:var(--warn)}
tr.draining td{background:var(--drain-bg)}tr.draining td:first-child{border-left-color:var(--drain)}tr.draining .st{color:var(--drain)}
.empty{color:var(--muted)}footer{padding:0 1rem 1rem;color:var(--muted)}
</style></head><body><header>";

const CONTROLS: &str = "<span class=\"controls\" id=\"controls\" hidden>\
<input id=\"filter\" type=\"search\" placeholder=\"filter by domain or service  ( / )\" autocomplete=\"off\" aria-label=\"filter by domain\"> \
<label><input id=\"problems\" type=\"checkbox\"> only problems</label> \
<label><input id=\"live\" type=\"checkbox\" checked> auto-refresh</label> \
<span id=\"shown\"></span></span>\
<span id=\"note\">refreshes every 5 s</span></header>";

const FOOT_BEFORE_SCRIPT: &str = "<footer>JSON: <a href=\"/api/routes\">/api/routes</a> · \
Prometheus: <a href=\"/metrics\">/metrics</a> · <a href=\"/readyz\">/readyz</a></footer><script>";

/// The page's only script: filter, auto-refresh. Its SHA-256 is in the page's CSP, so it must
/// stay a constant.
const SCRIPT: &str = r#"(() => {
'use strict';
const $ = (id) => document.getElementById(id);
const filter = $('filter'), problems = $('problems'), live = $('live'), note = $('note');
const EVERY = 5000;
let timer = 0;
$('controls').hidden = false;
const wanted = location.hash.match(/^#filter=(.*)$/);
if (wanted) filter.value = decodeURIComponent(wanted[1]);
function apply() {
  const q = filter.value.trim().toLowerCase();
  const only = problems.checked;
  let shown = 0, total = 0;
  for (const group of document.querySelectorAll('#status tbody[data-search]')) {
    total++;
    const show = (!q || group.dataset.search.toLowerCase().includes(q)) &&
      (!only || group.classList.contains('problem'));
    group.hidden = !show;
    if (show) shown++;
  }
  $('shown').textContent = q || only ? `${shown} of ${total} services shown` : '';
  const hash = q ? '#filter=' + encodeURIComponent(q) : '';
  if (location.hash !== hash) history.replaceState(null, '', location.pathname + hash);
}
function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(refresh, ms);
}
async function refresh() {
  if (!live.checked || document.hidden) return schedule(EVERY);
  const started = performance.now();
  try {
    const response = await fetch(location.pathname, { cache: 'no-store' });
    if (!response.ok) throw new Error(`it answered ${response.status}`);
    const fresh = new DOMParser().parseFromString(await response.text(), 'text/html')
      .getElementById('status');
    if (!fresh) throw new Error('its answer has no status');
    $('status').replaceWith(document.adoptNode(fresh));
    apply();
    document.body.classList.remove('stale');
    note.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    schedule(Math.max(EVERY, 10 * (performance.now() - started)));
  } catch (e) {
    document.body.classList.add('stale');
    note.textContent = `berth did not answer at ${new Date().toLocaleTimeString()} ` +
      `(${e.message}); the figures below are older`;
    schedule(EVERY);
  }
}
filter.addEventListener('input', apply);
problems.addEventListener('change', apply);
live.addEventListener('change', () => schedule(live.checked ? 0 : EVERY));
document.addEventListener('visibilitychange', () => { if (!document.hidden) schedule(0); });
document.addEventListener('keydown', (e) => {
  if (e.key === '/' && document.activeElement !== filter) { e.preventDefault(); filter.focus(); }
});
apply();
schedule(EVERY);
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerConfig;
    use crate::health::probe::ProbeCache;
    use crate::model::hostname::DomainSet;
    use crate::model::{BackendIdentity, BackendSpec, PolicyLayer, Snapshot, SourceKind};
    use crate::table::tests::service;

    #[test]
    fn escaping_covers_text_and_attributes() {
        let mut out = String::new();
        escape_into(&mut out, r#"a<script>alert("x&y")</script>'é"#);
        assert_eq!(
            out,
            "a&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;é"
        );
    }

    fn table() -> RouteTable {
        let mut evil = service("evil", &["evil.test"], r#"/<script>alert("x&y")</script>"#);
        evil.name = r#"evil.test/<script>alert("x&y")</script>"#.into();
        evil.source = SourceKind::Docker;
        evil.backends = vec![BackendSpec {
            identity: BackendIdentity {
                id: Some("<img src=x onerror=alert(1)>0123456789".into()),
                name: Some("a\"b'c&d<e>".into()),
                placement: None,
            },
            ..BackendSpec::new("10.0.0.9:80".parse().unwrap())
        }];
        evil.policy.health_check.path = Some("/'probe'&".into());
        RouteTable::compile(
            &Snapshot::of(
                vec![service("api", &["api.test", "*.api.test"], "/"), evil],
                None,
            ),
            &PolicyLayer::default(),
            &[ListenerConfig::new("main", "127.0.0.1:0".parse().unwrap())],
            &DomainSet::default(),
            &RouteTable::default(),
            &ProbeCache::default(),
        )
    }

    #[test]
    fn nothing_from_a_source_reaches_the_page_unescaped() {
        let page = StatusPage::new(SystemTime::now(), vec!["main".into()])
            .render(&table(), Some(&Traffic::default()));
        for raw in ["<script>alert", "<img", "'probe'", "a\"b", "c&d", "<e>"] {
            assert!(!page.contains(raw), "{raw:?} is in the page unescaped");
        }
        assert!(page.contains("evil.test/&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;"));
        assert!(page.contains("a&quot;b&#39;c&amp;d&lt;e&gt;"));
        assert!(page.contains("/&#39;probe&#39;&amp;"));
        assert_eq!(
            page.matches("<script").count(),
            1,
            "the page's own script is the only one"
        );
    }

    #[test]
    fn draining_and_held_backends_say_why_in_words() {
        let mut web = service("web", &["web.test"], "/");
        web.backends = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
            .iter()
            .map(|a| BackendSpec::new(a.parse().unwrap()))
            .collect();
        web.backends[0].admission = crate::model::Admission::Draining;
        web.backends[1].admission = crate::model::Admission::Held(PlatformHealth::Unhealthy);
        web.backends[2].admission = crate::model::Admission::Held(PlatformHealth::Starting);
        let table = RouteTable::compile(
            &Snapshot::of(vec![web], None),
            &PolicyLayer::default(),
            &[],
            &DomainSet::default(),
            &RouteTable::default(),
            &ProbeCache::default(),
        );
        let page = StatusPage::new(SystemTime::now(), vec!["main".into()])
            .render(&table, Some(&Traffic::default()));
        let row = |addr: &str| {
            let at = page.find(addr).unwrap();
            &page[page[..at].rfind("<tr").unwrap()..at + page[at..].find("</tr>").unwrap()]
        };
        let draining = row("10.0.0.1:80");
        assert!(
            draining.starts_with("<tr class=\"be draining\">"),
            "{draining}"
        );
        assert!(draining.contains("⇣ draining") && draining.contains("container stopping"));
        let held = row("10.0.0.2:80");
        assert!(held.starts_with("<tr class=\"be unhealthy\">"), "{held}");
        assert!(held.contains("Docker health check says unhealthy"));
        assert!(row("10.0.0.3:80").contains("Docker health check says starting"));
        assert!(page.contains("<b>0</b> of <b>3</b> backends up"));
        assert!(page.contains("0/3 up · no routable backend"));
    }

    #[test]
    fn the_csp_allows_exactly_the_page_script() {
        let page = StatusPage::new(SystemTime::now(), vec!["main".into()]);
        let csp = page.headers()[0].1;
        let expected = base64::engine::general_purpose::STANDARD
            .encode(ring::digest::digest(&ring::digest::SHA256, SCRIPT.as_bytes()).as_ref());
        assert!(
            csp.contains(&format!("script-src 'sha256-{expected}'")),
            "{csp}"
        );
        let html = page.render(&table(), None);
        assert!(
            html.contains(&format!("<script>{SCRIPT}</script>")),
            "the hashed text is exactly the script element's content"
        );
        assert!(html.contains("admin.metrics is off"));
    }
}
