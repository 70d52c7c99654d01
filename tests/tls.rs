//! TLS termination end to end: the real binary, certificates made by the test (rcgen, ECDSA
//! P-256), and real clients: `curl` (OpenSSL) and a rustls client that reports which
//! certificate, version and protocol berth negotiated.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::tls::*;
use common::*;
use rustls::AlertDescription;

/// A berth with two TLS listeners, a redirecting one and a plain one, in front of a whoami.
///
/// - `public` (TLS 1.2+, h2 and http/1.1): `a.example.com` (CN `a v1`), and `*.wild.example.com`
///   + `fallback.example.com` (CN `wild`), the default certificate.
/// - `strict` (TLS 1.3 only, http/1.1 only, no default certificate): `a.example.com`.
/// - `redirect` (`{http}`): redirects to `public`; `plain`: plain HTTP.
struct Edge {
    pki: Pki,
    public: SocketAddr,
    strict: SocketAddr,
    plain: SocketAddr,
    berth: Berth,
    _whoami: Whoami,
}

const APP_DOMAINS: &str = "[a.example.com, \"*.wild.example.com\", fallback.example.com]";

fn edge_config(
    pki: &Pki,
    public: SocketAddr,
    strict: SocketAddr,
    plain: SocketAddr,
    whoami: SocketAddr,
) -> String {
    let (a, a_key) = (pki.path("a.crt"), pki.path("a.key"));
    let (w, w_key) = (pki.path("wild.crt"), pki.path("wild.key"));
    format!(
        r#"listeners:
  - name: public
    address: "{public}"
    tls:
      certificates:
        - {{cert: "{a}", key: "{a_key}"}}
        - {{cert: "{w}", key: "{w_key}"}}
      default_certificate: fallback.example.com
  - name: strict
    address: "{strict}"
    tls:
      certificates: [{{cert: "{a}", key: "{a_key}"}}]
      min_version: "1.3"
      alpn: [http/1.1]
  - name: redirect
    address: "{{http}}"
    redirect_https: true
  - name: plain
    address: "{plain}"
admin:
  address: "{{admin}}"
server:
  watch_interval: 200ms
services:
  - name: app
    domains: {APP_DOMAINS}
    tls: {{enabled: true, hsts: "max-age=600; includeSubDomains"}}
    health_check: {{interval: 200ms}}
    backends: [{{address: "{whoami}"}}]
  - name: plainonly
    domains: [plain.example.com]
    health_check: {{interval: 200ms}}
    backends: [{{address: "{whoami}"}}]
"#,
        a = a.display(),
        a_key = a_key.display(),
        w = w.display(),
        w_key = w_key.display(),
    )
}

impl Edge {
    fn start() -> Edge {
        let pki = Pki::new();
        pki.leaf("a", "a v1", &["a.example.com"], -1, 90);
        pki.leaf(
            "wild",
            "wild",
            &["*.wild.example.com", "fallback.example.com"],
            -1,
            90,
        );
        let whoami = Whoami::start("w");
        let (public, strict, plain) = (free_addr(), free_addr(), free_addr());
        let berth = Berth::start(&edge_config(&pki, public, strict, plain, whoami.addr));
        berth.wait_backend_health("app", whoami.addr, "healthy");
        Edge {
            pki,
            public,
            strict,
            plain,
            berth,
            _whoami: whoami,
        }
    }

    async fn connect(&self, addr: SocketAddr, hello: Hello<'_>) -> Result<Tls, std::io::Error> {
        Tls::connect(addr, &self.pki.ca_file(), hello).await
    }

    /// curl to `https://{name}:{port}{path}` on `addr`, trusting the test CA.
    fn curl(&self, addr: SocketAddr, name: &str, path: &str, args: &[&str]) -> (bool, String) {
        let resolve = format!("{name}:{}:127.0.0.1", addr.port());
        let url = format!("https://{name}:{}{path}", addr.port());
        let ca = self.pki.ca_file();
        let mut all = vec!["--resolve", &resolve, "--cacert", ca.to_str().unwrap()];
        all.extend_from_slice(args);
        all.push(&url);
        curl(&all)
    }

    fn counter(&self, series: &str) -> u64 {
        self.berth
            .metrics()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_exact_then_wildcard_then_default_and_refuses_without_default() {
    let edge = Edge::start();
    let served = |tls: &Tls| tls.served_cn();
    let exact = edge
        .connect(edge.public, Hello::sni("a.example.com"))
        .await
        .unwrap();
    assert_eq!(served(&exact), "a v1");
    let wildcard = edge
        .connect(edge.public, Hello::sni("x.wild.example.com"))
        .await
        .unwrap();
    assert_eq!(served(&wildcard), "wild");
    // A wildcard covers one label; deeper names and unknown names get the default.
    for sni in [
        Some("y.x.wild.example.com"),
        Some("unknown.example.org"),
        None,
    ] {
        let tls = edge
            .connect(edge.public, Hello::unverified(sni))
            .await
            .unwrap();
        assert_eq!(served(&tls), "wild", "{sni:?}");
    }

    // Without a default certificate, unknown names and clients without SNI are refused.
    for sni in [Some("unknown.example.org"), None] {
        let Err(e) = edge.connect(edge.strict, Hello::unverified(sni)).await else {
            panic!("{sni:?} was not refused");
        };
        assert_eq!(
            alert(&e),
            Some(AlertDescription::AccessDenied),
            "{sni:?}: {e}"
        );
    }
    let (ok, out) = edge.curl(edge.strict, "unknown.example.com", "/", &[]);
    assert!(!ok && out.contains("alert access denied"), "{out}");

    // Refused handshakes are counted, not logged at ERROR (scanners would flood the log).
    let refused = r#"berth_tls_handshake_failures_total{reason="no_certificate"}"#;
    wait_for("refusals counted", Duration::from_secs(5), || {
        edge.counter(refused) >= 3
    });
    assert!(
        !edge.berth.process.log().contains("handshake error"),
        "{}",
        edge.berth.process.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_gives_h2_to_clients_that_offer_it_and_http11_to_the_rest() {
    let edge = Edge::start();
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    let h2 = edge
        .connect(
            edge.public,
            Hello {
                alpn: both,
                ..Hello::sni("a.example.com")
            },
        )
        .await
        .unwrap();
    assert_eq!(h2.alpn().as_deref(), Some(&b"h2"[..]));
    let h1 = edge
        .connect(edge.public, Hello::sni("a.example.com"))
        .await
        .unwrap();
    assert_eq!(h1.alpn().as_deref(), Some(&b"http/1.1"[..]));
    let strict = edge
        .connect(
            edge.strict,
            Hello {
                alpn: both,
                ..Hello::sni("a.example.com")
            },
        )
        .await
        .unwrap();
    assert_eq!(
        strict.alpn().as_deref(),
        Some(&b"http/1.1"[..]),
        "alpn: [http/1.1]"
    );

    let (ok, out) = edge.curl(edge.public, "a.example.com", "/h2", &["--http2"]);
    assert!(ok, "{out}");
    assert!(out.contains("ALPN: server accepted h2"), "{out}");
    assert!(out.contains("< HTTP/2 200"), "{out}");
    // The backend speaks HTTP/1.1 and gets a Host header built from :authority.
    assert!(out.contains("GET /h2 HTTP/1.1"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("\nhost: a.example.com:"),
        "{out}"
    );
    let (ok, out) = edge.curl(edge.public, "a.example.com", "/", &["--http1.1"]);
    assert!(
        ok && out.contains("ALPN: server accepted http/1.1") && out.contains("< HTTP/1.1 200"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_0_and_1_1_are_refused_and_a_minimum_of_1_3_is_honoured() {
    let edge = Edge::start();
    // OpenSSL 3 only offers TLS 1.0/1.1 at security level 0.
    for (min, max) in [("--tlsv1.0", "1.0"), ("--tlsv1.1", "1.1")] {
        let (ok, out) = edge.curl(
            edge.public,
            "a.example.com",
            "/",
            &[min, "--tls-max", max, "--ciphers", "DEFAULT:@SECLEVEL=0"],
        );
        assert!(
            !ok && out.contains("alert handshake failure"),
            "TLS {max}: {out}"
        );
    }
    let (ok, out) = edge.curl(
        edge.public,
        "a.example.com",
        "/",
        &["--tlsv1.2", "--tls-max", "1.2"],
    );
    assert!(ok && out.contains("SSL connection using TLSv1.2"), "{out}");
    let (ok, out) = edge.curl(edge.public, "a.example.com", "/", &[]);
    assert!(ok && out.contains("SSL connection using TLSv1.3"), "{out}");

    let tls12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let public = edge
        .connect(
            edge.public,
            Hello {
                versions: tls12,
                ..Hello::sni("a.example.com")
            },
        )
        .await
        .unwrap();
    assert_eq!(public.version(), Some(rustls::ProtocolVersion::TLSv1_2));

    // min_version "1.3": a client that cannot speak 1.3 (OpenSSL limited to 1.2 offers no
    // TLS 1.3 cipher suite) is refused in the handshake (see SniResolver)...
    let (ok, out) = edge.curl(
        edge.strict,
        "a.example.com",
        "/",
        &["--tlsv1.2", "--tls-max", "1.2"],
    );
    assert!(!ok && out.contains("alert access denied"), "{out}");
    // ...and one that offers TLS 1.3 suites but negotiates 1.2 anyway (rustls limited to 1.2
    // still offers them) gets 403 on every request.
    let mut offers_13_suites = edge
        .connect(
            edge.strict,
            Hello {
                versions: tls12,
                ..Hello::sni("a.example.com")
            },
        )
        .await
        .unwrap();
    assert_eq!(
        offers_13_suites.version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (status, _, body) = offers_13_suites.get("a.example.com", "/").await.unwrap();
    assert_eq!(status, 403, "{body}");
    let mut strict = edge
        .connect(edge.strict, Hello::sni("a.example.com"))
        .await
        .unwrap();
    assert_eq!(strict.version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(strict.get("a.example.com", "/").await.unwrap().0, 200);
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listeners_forward_https_send_hsts_and_serve_only_tls_services() {
    let edge = Edge::start();
    let mut tls = edge
        .connect(edge.public, Hello::sni("a.example.com"))
        .await
        .unwrap();
    let (status, headers, body) = tls.get("a.example.com", "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-forwarded-proto: https\n"), "{body}");
    assert_eq!(
        header(&headers, "strict-transport-security"),
        Some("max-age=600; includeSubDomains")
    );
    let (status, _, body) = tls.get("plain.example.com", "/").await.unwrap();
    assert_eq!(
        status, 404,
        "a service without `tls` is not served over TLS: {body}"
    );

    let client = client();
    let plain = format!("http://{}/", edge.plain);
    let reply = get(&client, &plain, "a.example.com").await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.contains("x-forwarded-proto: http\n"),
        "{}",
        reply.body
    );
    assert_eq!(
        reply.header("strict-transport-security"),
        None,
        "HSTS only over TLS"
    );
    assert_eq!(
        get(&client, &plain, "plain.example.com")
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_listener_sends_every_request_to_https() {
    let edge = Edge::start();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = edge.berth.url("/p/q?x=1");
    for request in [client.get(&url), client.post(&url).body("kept by a 308")] {
        let reply = request
            .header("host", "A.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 308);
        assert_eq!(
            reply.headers()["location"],
            format!("https://a.example.com:{}/p/q?x=1", edge.public.port()).as_str()
        );
    }
    let raw = std::net::TcpStream::connect(edge.berth.http).and_then(|mut s| {
        use std::io::{Read, Write};
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    });
    assert!(
        raw.unwrap().starts_with("HTTP/1.1 400"),
        "no host, no redirect"
    );
    assert!(edge.counter(r#"berth_requests_unrouted_total{code="308"}"#) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_swap_on_reload_while_connections_stay_open() {
    let edge = Edge::start();
    let mut kept = edge
        .connect(edge.public, Hello::sni("a.example.com"))
        .await
        .unwrap();
    assert_eq!(kept.served_cn(), "a v1");
    assert_eq!(kept.get("a.example.com", "/").await.unwrap().0, 200);
    let ca = edge.pki.ca_file();
    let mut h2 = h2_connect(edge.public, &ca, "a.example.com").await;
    assert_eq!(
        h2_get(&mut h2, "https://a.example.com/1")
            .await
            .unwrap()
            .status,
        200
    );

    // SIGHUP with new files: new handshakes get the new certificate.
    edge.pki.leaf("a", "a v2", &["a.example.com"], -1, 90);
    edge.berth.process.signal("HUP");
    let mut fresh = None;
    for _ in 0..250 {
        let tls = edge
            .connect(edge.public, Hello::sni("a.example.com"))
            .await
            .unwrap();
        if tls.served_cn() == "a v2" {
            fresh = Some(tls);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut fresh = fresh.expect("new connections get the new certificate");
    assert_eq!(fresh.get("a.example.com", "/").await.unwrap().0, 200);
    // Connections made before keep theirs and keep working.
    assert_eq!(kept.served_cn(), "a v1");
    assert_eq!(kept.get("a.example.com", "/again").await.unwrap().0, 200);
    assert_eq!(
        h2_get(&mut h2, "https://a.example.com/2")
            .await
            .unwrap()
            .status,
        200
    );

    // A changed certificate file is picked up without a signal (watch_interval).
    edge.pki.leaf("a", "a v3", &["a.example.com"], -1, 90);
    let started = Instant::now();
    wait_until_served(&edge, "a v3").await;
    eprintln!(
        "certificate file change picked up in {:?}",
        started.elapsed()
    );

    // A bad certificate refuses the reload, naming the file; the old one keeps serving.
    edge.pki.leaf("a", "a expired", &["a.example.com"], -30, -1);
    edge.berth.process.signal("HUP");
    wait_for("the refused reload", Duration::from_secs(5), || {
        edge.counter(r#"berth_config_reloads_total{result="failure"}"#) >= 1
    });
    let log = edge.berth.process.log();
    let crt = edge.pki.path("a.crt");
    let expected = format!(
        "listeners[0].tls.certificates[0]: {}: the certificate expired on",
        crt.display()
    );
    assert!(log.contains(&expected), "{log}");
    let tls = edge
        .connect(edge.public, Hello::sni("a.example.com"))
        .await
        .unwrap();
    assert_eq!(tls.served_cn(), "a v3");
    assert_eq!(kept.get("a.example.com", "/still").await.unwrap().0, 200);
}

async fn wait_until_served(edge: &Edge, cn: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tls = edge
            .connect(edge.public, Hello::sni("a.example.com"))
            .await
            .unwrap();
        if tls.served_cn() == cn {
            return;
        }
        assert!(Instant::now() < deadline, "{cn} was never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn check_names_the_certificate_file_and_its_problem() {
    let pki = Pki::new();
    pki.leaf("a", "a", &["a.example.com"], -1, 90);
    pki.leaf("b", "b", &["b.example.com"], -1, 90);
    pki.leaf("old", "old", &["old.example.com"], -90, -1);
    std::fs::write(pki.path("notpem.crt"), "this is not PEM\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let check_with = |cert: &str, key: &str| {
        let config = dir.path().join("berth.yaml");
        std::fs::write(
            &config,
            format!(
                "listeners:\n  - name: public\n    address: \"127.0.0.1:8443\"\n    tls:\n      \
                 certificates:\n        - {{cert: \"{}\", key: \"{}\"}}\n",
                pki.path(cert).display(),
                pki.path(key).display()
            ),
        )
        .unwrap();
        let out = check(&config);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _) = check_with("a.crt", "a.key");
    assert!(ok);
    let cases = [
        (
            "notpem.crt",
            "a.key",
            "notpem.crt",
            "no CERTIFICATE block (is it a PEM file?)",
        ),
        (
            "a.crt",
            "b.key",
            "b.key",
            "the private key does not match the certificate in",
        ),
        (
            "old.crt",
            "old.key",
            "old.crt",
            "the certificate expired on",
        ),
        (
            "a.crt",
            "missing.key",
            "missing.key",
            "cannot read the key file",
        ),
    ];
    for (cert, key, named, problem) in cases {
        let (ok, err) = check_with(cert, key);
        assert!(!ok, "{cert} + {key} passed");
        let expected = format!(
            "berth.yaml: listeners[0].tls.certificates[0]: {}: {problem}",
            pki.path(named).display()
        );
        assert!(err.contains(&expected), "{cert} + {key}: {err}");
    }
}

/// A gRPC-style backend that speaks only HTTP/2 without TLS: each answer has a body, what the
/// backend saw in `x-seen`, and a `grpc-status: 0` trailer.
async fn h2c_only_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let seen = format!("{:?} {}", request.version(), request.uri());
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("x-seen", seen)
                        .body(())
                        .unwrap();
                    let Ok(mut send) = respond.send_response(response, false) else {
                        continue;
                    };
                    let _ = send.send_data(Bytes::from_static(b"hello over h2c"), false);
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let _ = send.send_trailers(trailers);
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_backends_get_http2_end_to_end_with_trailers() {
    let pki = Pki::new();
    pki.leaf("grpc", "grpc", &["grpc.example.com"], -1, 90);
    let backend = h2c_only_backend().await;
    let public = free_addr();
    let berth = Berth::start(&format!(
        r#"listeners:
  - name: public
    address: "{public}"
    tls:
      certificates: [{{cert: "{crt}", key: "{key}"}}]
  - name: main
    address: "{{http}}"
admin:
  address: "{{admin}}"
services:
  - name: grpc
    domains: [grpc.example.com]
    tls: true
    backend_protocol: h2c
    health_check: {{type: http, path: /health, interval: 200ms}}
    backends: [{{address: "{backend}"}}]
"#,
        crt = pki.path("grpc.crt").display(),
        key = pki.path("grpc.key").display(),
    ));
    // The backend speaks nothing but HTTP/2: healthy means the probes spoke h2c too.
    berth.wait_backend_health("grpc", backend, "healthy");
    let mut h2 = h2_connect(public, &pki.ca_file(), "grpc.example.com").await;
    for call in 0..3 {
        let reply = h2_get(
            &mut h2,
            &format!("https://grpc.example.com/pkg.Svc/Call{call}"),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "hello over h2c");
        let seen = reply.headers["x-seen"].to_str().unwrap();
        assert!(
            seen.starts_with("HTTP/2.0 ") && seen.ends_with(&format!("/pkg.Svc/Call{call}")),
            "{seen}"
        );
        let trailers = reply.trailers.expect("trailers reach the client");
        assert_eq!(trailers["grpc-status"], "0");
    }
    // HTTP/1.1 clients on a plain listener reach the same h2c backend.
    let reply = get(&client(), &berth.url("/pkg.Svc/Plain"), "grpc.example.com")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "hello over h2c");
}

#[test]
fn the_shipped_edge_config_checks() {
    let out = check(&repo_path("conf/edge.yaml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
