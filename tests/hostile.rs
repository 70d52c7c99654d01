//! Hostile input through the real binary (issue 12, "Hardening for the edge").
//!
//! Each table row is raw bytes a client sends to berth over a plain `TcpStream` (so malformed
//! input really goes out), what that client must get back, and what a raw-socket backend
//! (`common::raw_backend`) must have received: often nothing, or a normalised request. Rows
//! run in parallel against one berth, each on its own host name and its own backend, and a
//! failing table prints every row (`PASS`/`FAIL`, and what happened) before it fails, so one run
//! shows berth's whole behaviour.
//!
//! Where the issue leaves a choice ("normalise or refuse, state which"), a row accepts either,
//! but never the behaviour the issue reports (forwarded verbatim, dropped, corrupted).
//!
//! Config keys that do not exist yet are written the way issue 12 names them; where it names
//! none, the choice is said at the test (`server.keepalive_timeout`; sizes as byte counts).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw_backend::{body_bytes, find, RawBackend, Script};
use common::*;

// ---------------------------------------------------------------------------------------------
// The client side: raw bytes out, responses parsed as a strict client would.

/// How a row's client sends its bytes.
#[derive(Clone)]
enum Sending {
    /// Everything in one write.
    Once(Vec<u8>),
    /// `head` at once, then `line` every `every`, until berth answers or closes, at most
    /// `for_at_most`.
    Trickle {
        head: Vec<u8>,
        line: Vec<u8>,
        every: Duration,
        for_at_most: Duration,
    },
}

fn once(text: &str) -> Sending {
    Sending::Once(text.as_bytes().to_vec())
}

/// One response as the client parsed it.
#[derive(Clone, Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body ended where its framing says (all `Content-Length` bytes, or the last chunk).
    complete: bool,
    chunked: bool,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Everything the client got.
#[derive(Clone, Debug, Default)]
struct Answer {
    raw: Vec<u8>,
    responses: Vec<Response>,
    /// berth closed the connection (EOF or reset) before the client stopped reading.
    closed: bool,
    /// When the first byte of the answer arrived, from the first byte sent.
    first_byte_after: Option<Duration>,
    /// When the client stopped reading (berth closed, or the answer settled, or the deadline).
    ended_after: Duration,
}

impl Answer {
    fn first(&self) -> Option<&Response> {
        self.responses.first()
    }

    fn status(&self) -> Option<u16> {
        self.first().map(|r| r.status)
    }

    fn summary(&self) -> String {
        let mut out = String::new();
        for r in &self.responses {
            let framing = if r.chunked { "chunked" } else { "length" };
            let conn = r.header("connection").unwrap_or("-");
            out.push_str(&format!(
                "{} (connection: {conn}, {framing} body {} B{}) ",
                r.status,
                r.body.len(),
                if r.complete { "" } else { ", INCOMPLETE" }
            ));
            if find(&r.body, b"berth:").is_some() {
                out.push_str("[body has berth's text] ");
            }
        }
        if self.responses.is_empty() {
            out.push_str(&format!("no response ({} raw bytes) ", self.raw.len()));
        }
        if let Some(t) = self.first_byte_after {
            out.push_str(&format!("at {:.1}s, ", t.as_secs_f64()));
        }
        if self.closed {
            out.push_str(&format!("closed at {:.1}s", self.ended_after.as_secs_f64()));
        } else {
            out.push_str("kept open");
        }
        out
    }
}

/// Parses consecutive HTTP/1.1 responses out of `raw`; the last one may be incomplete.
fn parse_responses(raw: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(head_end) = find(rest, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let after = &rest[head_end + 4..];
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let (body, complete, used) = if chunked {
            dechunk(after)
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let n = len.min(after.len());
            (after[..n].to_vec(), n == len, n)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            (Vec::new(), true, 0)
        } else {
            // Close-delimited: everything that came.
            (after.to_vec(), true, after.len())
        };
        out.push(Response {
            status,
            headers,
            body,
            complete,
            chunked,
        });
        if !complete {
            break;
        }
        rest = &after[used..];
    }
    out
}

/// A chunked body: (data, ended with the last chunk, bytes used).
fn dechunk(buf: &[u8]) -> (Vec<u8>, bool, usize) {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find(&buf[at..], b"\r\n") else {
            return (data, false, at);
        };
        let text = String::from_utf8_lossy(&buf[at..at + line_end]).into_owned();
        let Ok(size) = usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
        else {
            return (data, false, at);
        };
        let start = at + line_end + 2;
        if size == 0 {
            return match find(&buf[start..], b"\r\n") {
                Some(0) => (data, true, start + 2),
                Some(_) => match find(&buf[start..], b"\r\n\r\n") {
                    Some(end) => (data, true, start + end + 4),
                    None => (data, false, start),
                },
                None => (data, false, start),
            };
        }
        if buf.len() < start + size + 2 {
            data.extend_from_slice(&buf[start..buf.len().min(start + size)]);
            return (data, false, buf.len());
        }
        data.extend_from_slice(&buf[start..start + size]);
        at = start + size + 2;
    }
}

/// Sends `send` to `addr` and reads until berth closes, or until the answer is complete and
/// nothing more came for `quiet`, or `deadline` passes.
fn exchange(addr: SocketAddr, send: &Sending, quiet: Duration, deadline: Duration) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let started = Instant::now();
    let mut answer = Answer::default();
    let mut buf = [0u8; 64 * 1024];
    let mut last_data = Instant::now();
    let mut trickle_at = None;
    match send {
        Sending::Once(bytes) => {
            let _ = stream.write_all(bytes);
        }
        Sending::Trickle { head, .. } => {
            let _ = stream.write_all(head);
            trickle_at = Some(Instant::now());
        }
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    loop {
        if let (
            Some(at),
            Sending::Trickle {
                line,
                every,
                for_at_most,
                ..
            },
        ) = (trickle_at, send)
        {
            if answer.raw.is_empty() && at.elapsed() >= *every && started.elapsed() < *for_at_most {
                if stream.write_all(line).is_err() {
                    // berth closed; read what it said.
                }
                trickle_at = Some(Instant::now());
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                answer.closed = true;
                break;
            }
            Ok(n) => {
                if answer.first_byte_after.is_none() {
                    answer.first_byte_after = Some(started.elapsed());
                }
                answer.raw.extend_from_slice(&buf[..n]);
                last_data = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let responses = parse_responses(&answer.raw);
                let settled = !answer.raw.is_empty()
                    && responses.last().is_some_and(|r| r.complete)
                    && last_data.elapsed() >= quiet;
                if settled || started.elapsed() >= deadline {
                    break;
                }
            }
            Err(_) => {
                answer.closed = true;
                break;
            }
        }
    }
    answer.responses = parse_responses(&answer.raw);
    answer.ended_after = started.elapsed();
    answer
}

// ---------------------------------------------------------------------------------------------
// Rows and their checks.

/// What a row saw on both sides.
struct Outcome {
    answer: Answer,
    /// Every byte the backend received, connections concatenated.
    backend: Vec<u8>,
    /// Complete requests the backend parsed and answered.
    backend_requests: usize,
}

impl Outcome {
    fn backend_text(&self) -> String {
        String::from_utf8_lossy(&self.backend).into_owned()
    }

    fn backend_lower(&self) -> String {
        self.backend_text().to_ascii_lowercase()
    }

    /// The backend's first request line.
    fn backend_request_line(&self) -> Option<String> {
        let text = self.backend_text();
        text.split("\r\n")
            .next()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
    }

    fn summary(&self) -> String {
        let backend = match self.backend_request_line() {
            None => "backend saw nothing".to_owned(),
            Some(line) => format!(
                "backend saw {} B, {} request(s), first line {line:?}",
                self.backend.len(),
                self.backend_requests
            ),
        };
        format!("client: {} | {backend}", self.answer.summary())
    }
}

type Check = Box<dyn Fn(&Outcome) -> Result<(), String> + Send + Sync>;

fn check(f: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static) -> Check {
    Box::new(f)
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

/// Every check holds.
fn all(checks: Vec<Check>) -> Check {
    check(move |o| {
        for c in &checks {
            c(o)?;
        }
        Ok(())
    })
}

/// One of two acceptable behaviours (refuse or normalise).
fn either(a: Check, b: Check) -> Check {
    check(move |o| match (a(o), b(o)) {
        (Ok(()), _) | (_, Ok(())) => Ok(()),
        (Err(x), Err(y)) => Err(format!("neither {x}, nor {y}")),
    })
}

fn status_in(codes: &'static [u16]) -> Check {
    check(move |o| {
        ensure(
            o.answer.status().is_some_and(|s| codes.contains(&s)),
            || format!("the client must get one of {codes:?}"),
        )
    })
}

fn status(code: u16) -> Check {
    check(move |o| {
        ensure(o.answer.status() == Some(code), || {
            format!("the client must get {code}")
        })
    })
}

fn backend_saw_nothing() -> Check {
    check(|o| {
        ensure(o.backend.is_empty(), || {
            "the backend must see nothing".to_owned()
        })
    })
}

/// An error answer that says it closes, then closes (no `Connection: keep-alive` lie).
fn answered_and_closed() -> Check {
    check(|o| {
        let first = o.answer.first().ok_or("no answer")?;
        ensure(first.says_close() && o.answer.closed, || {
            format!(
                "the answer must say `Connection: close` and close (it says {:?}, closed: {})",
                first.header("connection"),
                o.answer.closed
            )
        })
    })
}

/// Refused with one of `codes`, before any backend saw a byte, with `Connection: close`.
fn refused(codes: &'static [u16]) -> Check {
    all(vec![
        status_in(codes),
        backend_saw_nothing(),
        answered_and_closed(),
    ])
}

fn backend_has(needle: &'static str) -> Check {
    check(move |o| {
        ensure(
            o.backend_lower().contains(&needle.to_ascii_lowercase()),
            || format!("the backend must see {needle:?}"),
        )
    })
}

fn backend_lacks(needle: &'static str) -> Check {
    check(move |o| {
        ensure(
            !o.backend_lower().contains(&needle.to_ascii_lowercase()),
            || format!("the backend must not see {needle:?}"),
        )
    })
}

fn backend_request_line(expected: &'static str) -> Check {
    check(move |o| {
        ensure(
            o.backend_request_line().as_deref() == Some(expected),
            || format!("the backend's request line must be {expected:?}"),
        )
    })
}

/// The backend answered `n` complete requests and the client got `n` complete answers.
fn proxied(n: usize) -> Check {
    check(move |o| {
        let complete = o.answer.responses.iter().filter(|r| r.complete).count();
        ensure(o.backend_requests == n && complete == n, || {
            format!("{n} request(s) must be proxied and answered")
        })
    })
}

/// The response started as the backend's 200 and then stopped short: the connection is
/// closed, the body is incomplete (no terminating chunk / fewer bytes than announced), and
/// every body byte is the backend's (berth wrote no error text into it).
fn truncated() -> Check {
    check(|o| {
        let r = o.answer.first().ok_or("no response at all")?;
        ensure(r.status == 200, || {
            "the backend's 200 header must reach the client".into()
        })?;
        ensure(!r.complete, || {
            format!(
                "the client must see a truncated body, not a complete {} B one",
                r.body.len()
            )
        })?;
        ensure(o.answer.closed, || "the connection must be closed".into())?;
        ensure(r.body == body_bytes(r.body.len()), || {
            "every body byte must be the backend's (berth wrote into the body)".into()
        })
    })
}

/// `n` answers to `n` pipelined requests, or a first answer marked `Connection: close`
/// followed by the close (RFC 9112 9.3.2: the client then retries the rest).
fn pipelined(n: usize) -> Check {
    check(move |o| {
        let complete: Vec<&Response> = o.answer.responses.iter().filter(|r| r.complete).collect();
        if complete.len() == n && complete.iter().all(|r| r.status == 200) {
            return Ok(());
        }
        let first = o.answer.first().ok_or("no answer")?;
        ensure(
            first.complete && first.says_close() && o.answer.closed,
            || {
                format!(
                    "{n} pipelined requests need {n} answers or a first answer with \
                 `Connection: close` (got {} answers, first says {:?})",
                    complete.len(),
                    first.header("connection")
                )
            },
        )
    })
}

/// One table row.
struct Row {
    name: &'static str,
    /// How the backend of this row answers.
    script: Script,
    /// `{host}` stands for the row's own host name.
    send: Sending,
    expect: Check,
}

fn row(name: &'static str, send: Sending, expect: Check) -> Row {
    Row {
        name,
        script: Script::ok("backend says hi"),
        send,
        expect,
    }
}

impl Row {
    fn backend(mut self, script: Script) -> Row {
        self.script = script;
        self
    }
}

fn host_of(index: usize) -> String {
    format!("row{index}.test")
}

fn fill_host(bytes: &[u8], host: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    if text.contains('\u{fffd}') {
        return bytes.to_vec();
    }
    text.replace("{host}", host).into_bytes()
}

/// berth with one service per row (`row<i>.test` -> the row's backend; no health probes, so
/// the backend records only what clients caused, and no retries).
fn table_config(backends: &[RawBackend], server: &str) -> String {
    let mut yaml = format!("{LISTENERS}{server}services:\n");
    for (i, b) in backends.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: row{i}\n    domains: [\"{}\"]\n    health_check: {{ type: none }}\n    retries: 0\n    backends:\n      - address: \"{}\"\n",
            host_of(i),
            b.addr
        ));
    }
    yaml
}

/// Runs every row in parallel through one berth and fails listing the rows that failed;
/// prints every row with what happened either way.
///
/// With `BERTH_HOSTILE_AGAINST=nginx` the same rows run through nginx as a reverse proxy
/// instead (one `server` per row host, nginx's defaults plus `nginx_directives`), to compare.
fn run_table(table: &str, rows: Vec<Row>) {
    // nginx: its defaults, with the whole-head timeout at the 10 s the issue asks of berth.
    run_table_config(
        table,
        rows,
        |backends| table_config(backends, ""),
        "client_header_timeout 10s;",
    );
}

/// [`run_table`] with the config `config` builds from the rows' backends.
fn run_table_config(
    table: &str,
    rows: Vec<Row>,
    config: impl Fn(&[RawBackend]) -> String,
    nginx_directives: &str,
) {
    let backends: Vec<RawBackend> = rows
        .iter()
        .map(|r| RawBackend::start(r.script.clone()))
        .collect();
    let against_nginx = std::env::var("BERTH_HOSTILE_AGAINST").as_deref() == Ok("nginx");
    let proxy = if against_nginx {
        Proxy::Nginx(Nginx::start(&backends, nginx_directives))
    } else {
        Proxy::Berth(start_berth(&config(&backends)))
    };
    let http = proxy.http();
    let backends = Arc::new(backends);
    let rows: Vec<Arc<Row>> = rows.into_iter().map(Arc::new).collect();
    let handles: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let row = Arc::clone(row);
            let backends = Arc::clone(&backends);
            std::thread::spawn(move || {
                let host = host_of(i);
                let send = match &row.send {
                    Sending::Once(b) => Sending::Once(fill_host(b, &host)),
                    Sending::Trickle {
                        head,
                        line,
                        every,
                        for_at_most,
                    } => Sending::Trickle {
                        head: fill_host(head, &host),
                        line: line.clone(),
                        every: *every,
                        for_at_most: *for_at_most,
                    },
                };
                let deadline = match &row.send {
                    Sending::Trickle { for_at_most, .. } => *for_at_most + Duration::from_secs(2),
                    Sending::Once(_) => Duration::from_secs(8),
                };
                let answer = exchange(http, &send, Duration::from_millis(700), deadline);
                // Give the backend a moment to record what berth sent it.
                std::thread::sleep(Duration::from_millis(200));
                let backend = &backends[i];
                let outcome = Outcome {
                    answer,
                    backend: backend.received(),
                    backend_requests: backend.requests(),
                };
                let verdict = (row.expect)(&outcome);
                (row.name, verdict, outcome.summary())
            })
        })
        .collect();
    let mut failed = Vec::new();
    eprintln!("---- {table} ----");
    for handle in handles {
        let (name, verdict, summary) = handle.join().unwrap();
        match verdict {
            Ok(()) => eprintln!("PASS | {name} | {summary}"),
            Err(why) => {
                eprintln!("FAIL | {name} | {summary} | wanted: {why}");
                failed.push(name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{table}: {} row(s) failed: {failed:?} (see the table above)",
        failed.len()
    );
    // It survived all of it.
    assert!(proxy.log().lines().all(|l| !l.contains("panicked")));
}

/// The proxy a table runs through.
enum Proxy {
    Berth(Berth),
    Nginx(Nginx),
}

impl Proxy {
    fn http(&self) -> SocketAddr {
        match self {
            Proxy::Berth(b) => b.http,
            Proxy::Nginx(n) => n.http,
        }
    }

    fn log(&self) -> String {
        match self {
            Proxy::Berth(b) => b.process.log(),
            Proxy::Nginx(n) => n.process.log(),
        }
    }
}

/// nginx as a plain reverse proxy: a 404 default server, then one `server` per row host
/// passing to the row's backend over HTTP/1.1 keep-alive, `directives` in the `http` block.
struct Nginx {
    http: SocketAddr,
    process: Process,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(backends: &[RawBackend], directives: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let http = free_addr();
        let mut servers = String::new();
        for (i, b) in backends.iter().enumerate() {
            servers.push_str(&format!(
                "  upstream row{i} {{ server {}; keepalive 8; }}\n  server {{ listen {http}; server_name {}; location / {{ proxy_pass http://row{i}; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; }} }}\n",
                b.addr,
                host_of(i)
            ));
        }
        let d = dir.path().display();
        let conf = format!(
            "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  {directives}\n  server {{ listen {http} default_server; return 404; }}\n{servers}}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let process = Process::spawn(
            "nginx",
            std::process::Command::new("nginx")
                .args(["-g", "daemon off;", "-p"])
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf")),
            dir.path().join("nginx.log"),
        );
        wait_for("nginx to listen", Duration::from_secs(10), || accepts(http));
        Nginx {
            http,
            process,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master so it takes its workers with it (a SIGKILL would orphan them).
    fn drop(&mut self) {
        self.process.signal("TERM");
        self.process.wait_exit(Duration::from_secs(5));
    }
}

/// [`Berth::start`], but a config berth refuses (a key it does not know yet) fails the test at
/// once with berth's own message instead of a 20 s readiness timeout.
fn start_berth(yaml: &str) -> Berth {
    let mut berth = Berth::spawn(yaml, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = berth.process.child.try_wait().unwrap() {
            panic!(
                "berth exited ({status}) instead of serving this config:\n{}",
                berth.process.log()
            );
        }
        if admin_get(berth.admin, "/readyz").is_some_and(|(s, _)| s == 200) {
            return berth;
        }
        assert!(Instant::now() < deadline, "berth did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const GET: &str = "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// The tables.

/// "A backend that dies mid-body becomes a complete, corrupted 200": once a response has
/// started, berth must abort the connection so the client sees truncation (curl exit 18).
#[test]
fn a_backend_dying_mid_body_truncates_the_response() {
    run_table(
        "backend dies mid-body",
        vec![
            row(
                "Content-Length 1010, 1000 bytes sent, backend closes",
                once("GET /big HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                all(vec![truncated(), backend_request_line("GET /big HTTP/1.1")]),
            )
            .backend(Script::ShortBody {
                declared: 1010,
                sent: 1000,
            }),
            row(
                "chunked, 1000 bytes sent, backend closes before the last chunk",
                once("GET /big HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                all(vec![truncated(), backend_request_line("GET /big HTTP/1.1")]),
            )
            .backend(Script::ChunkedThenClose { sent: 1000 }),
            row(
                "HTTP/1.0 client, Content-Length 1010, 1000 bytes sent",
                once("GET /big HTTP/1.0\r\nHost: {host}\r\n\r\n"),
                truncated(),
            )
            .backend(Script::ShortBody {
                declared: 1010,
                sent: 1000,
            }),
        ],
    );
}

/// "Memory exhaustion by slow clients": a bounded request head, in size (431) and time (408).
#[test]
fn oversized_and_slow_request_heads_are_refused() {
    let big_headers = |count: usize, size: usize| {
        let mut req = String::from("GET / HTTP/1.1\r\nHost: {host}\r\n");
        for i in 0..count {
            req.push_str(&format!("X-Big-{i}: {}\r\n", "x".repeat(size)));
        }
        req.push_str("\r\n");
        Sending::Once(req.into_bytes())
    };
    let long_line = |size: usize| {
        format!(
            "GET /{} HTTP/1.1\r\nHost: {{host}}\r\n\r\n",
            "a".repeat(size)
        )
        .into_bytes()
    };
    run_table(
        "request head limits",
        vec![
            row(
                "40 KiB of headers (default max_request_header_size 32 KiB)",
                big_headers(5, 8 * 1024),
                refused(&[431]),
            ),
            row(
                "1 MiB of headers (what berth accepts today)",
                big_headers(120, 8 * 1024),
                refused(&[431]),
            ),
            row(
                "28 KiB of headers is still fine",
                big_headers(4, 7 * 1024),
                proxied(1),
            ),
            row(
                "40 KiB request line",
                Sending::Once(long_line(40 * 1024)),
                refused(&[414, 431]),
            ),
            row(
                "64 KiB request line",
                Sending::Once(long_line(64 * 1024)),
                refused(&[400, 414, 431]),
            ),
            row(
                "a header line every second (default request_header_timeout 10 s)",
                Sending::Trickle {
                    head: b"GET / HTTP/1.1\r\nHost: {host}\r\n".to_vec(),
                    line: b"X-Slow: 1\r\n".to_vec(),
                    every: Duration::from_secs(1),
                    for_at_most: Duration::from_secs(20),
                },
                all(vec![
                    refused(&[408]),
                    check(|o| {
                        ensure(
                            o.answer
                                .first_byte_after
                                .is_some_and(|t| t < Duration::from_secs(12)),
                            || "the 408 must come about 10 s after the first byte".into(),
                        )
                    }),
                ]),
            ),
        ],
    );
}

/// "HTTP/1.1 pipelining: requests after the first are dropped silently."
#[test]
fn pipelined_requests_are_all_answered_or_the_first_answer_closes() {
    let three = GET.repeat(3);
    let post_then_get =
        format!("POST /p HTTP/1.1\r\nHost: {{host}}\r\nContent-Length: 5\r\n\r\nhello{GET}");
    run_table(
        "pipelining",
        vec![
            row("three GETs in one write", once(&three), pipelined(3)),
            row(
                "a POST with its body and a GET in one write",
                once(&post_then_get),
                pipelined(2),
            ),
            row(
                "three GETs, the last with Connection: close",
                once(&format!(
                    "{GET}{GET}GET / HTTP/1.1\r\nHost: {{host}}\r\nConnection: close\r\n\r\n"
                )),
                pipelined(3),
            ),
        ],
    );
}

/// The "Smaller" row of the issue: each input is normalised or refused before a backend sees
/// it; a 400 never claims keep-alive.
#[test]
fn ambiguous_requests_are_normalised_or_refused() {
    run_table(
        "normalise or refuse",
        vec![
            row(
                "Content-Length: 5, 5",
                once("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5, 5\r\n\r\nhello"),
                either(
                    refused(&[400]),
                    all(vec![
                        proxied(1),
                        backend_has("\r\ncontent-length: 5\r\n"),
                        backend_lacks("5, 5"),
                    ]),
                ),
            ),
            row(
                "GET  /  HTTP/1.1 (double spaces)",
                once("GET  /  HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                either(
                    refused(&[400]),
                    all(vec![proxied(1), backend_request_line("GET / HTTP/1.1")]),
                ),
            ),
            row(
                "Upgrade: websocket without Connection: Upgrade",
                once("GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\r\n"),
                either(
                    refused(&[400]),
                    all(vec![
                        proxied(1),
                        status(200),
                        backend_lacks("connection: upgrade"),
                    ]),
                ),
            ),
            row(
                "Transfer-Encoding: gzip, chunked",
                once(
                    "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                ),
                either(
                    refused(&[400, 501]),
                    all(vec![proxied(1), backend_has("transfer-encoding: gzip")]),
                ),
            ),
            row(
                "Transfer-Encoding: gzip (not chunked last)",
                once(
                    "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip\r\n\r\nhello",
                ),
                refused(&[400, 501]),
            ),
            row(
                "absolute-form http:// URI",
                once("GET http://{host}/x?y=1 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                either(
                    refused(&[400]),
                    all(vec![proxied(1), backend_request_line("GET /x?y=1 HTTP/1.1")]),
                ),
            ),
            row(
                "absolute-form https:// URI on a plain listener",
                once("GET https://{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                either(
                    refused(&[400]),
                    all(vec![
                        proxied(1),
                        backend_request_line("GET /x HTTP/1.1"),
                        backend_has("\r\nx-forwarded-proto: http\r\n"),
                    ]),
                ),
            ),
            row(
                "400 for a bad Host says Connection: close",
                once("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
                refused(&[400]),
            ),
            row(
                "400 for a missing Host says Connection: close",
                once("GET / HTTP/1.1\r\n\r\n"),
                refused(&[400]),
            ),
            row(
                "Connection: X-Forwarded-For",
                once(
                    "GET / HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: X-Forwarded-For\r\n\r\n",
                ),
                either(
                    refused(&[400]),
                    all(vec![
                        proxied(1),
                        status(200),
                        backend_has("\r\nx-forwarded-for: "),
                        backend_lacks("connection: x-forwarded-for"),
                    ]),
                ),
            ),
        ],
    );
}

/// The smuggling set the issue says was already refused: it must stay refused, and no
/// backend may ever see a second request hidden in the first.
#[test]
fn smuggling_attempts_never_reach_a_backend() {
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n";
    let no_smuggled = || backend_lacks("/smuggled");
    let bad_chunk = |size: &str| {
        Sending::Once(
            format!(
                "POST / HTTP/1.1\r\nHost: {{host}}\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n{smuggled}"
            )
            .into_bytes(),
        )
    };
    // A request with a broken chunked body: berth may already have forwarded the head, but the
    // backend must never get a complete request, nor the bytes that follow the bad chunk.
    let bad_body = || {
        all(vec![
            status_in(&[400]),
            answered_and_closed(),
            check(|o| {
                ensure(o.backend_requests == 0, || {
                    "the backend must not get a complete request".into()
                })
            }),
            backend_lacks("hello"),
            backend_lacks("/smuggled"),
        ])
    };
    run_table(
        "smuggling",
        vec![
            row(
                "Content-Length and Transfer-Encoding: chunked (CL.TE)",
                once(&format!(
                    "POST / HTTP/1.1\r\nHost: {{host}}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
                )),
                all(vec![
                    no_smuggled(),
                    either(
                        refused(&[400]),
                        all(vec![
                            proxied(1),
                            answered_and_closed(),
                            backend_lacks("content-length"),
                        ]),
                    ),
                ]),
            ),
            row(
                "Transfer-Encoding: chunked then Content-Length (TE.CL)",
                once(&format!(
                    "POST / HTTP/1.1\r\nHost: {{host}}\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggled}"
                )),
                all(vec![
                    no_smuggled(),
                    either(
                        refused(&[400]),
                        all(vec![
                            proxied(1),
                            answered_and_closed(),
                            backend_lacks("content-length"),
                        ]),
                    ),
                ]),
            ),
            row(
                "two differing Content-Length headers",
                once("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
                refused(&[400]),
            ),
            row(
                "Content-Length: 5, 6",
                once("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5, 6\r\n\r\nhello!"),
                refused(&[400]),
            ),
            row(
                "Content-Length: +5",
                once("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: +5\r\n\r\nhello"),
                refused(&[400]),
            ),
            row(
                "obs-fold (a header continued on the next line)",
                once("GET / HTTP/1.1\r\nHost: {host}\r\nX-Folded: a\r\n b\r\n\r\n"),
                either(
                    refused(&[400]),
                    all(vec![proxied(1), backend_lacks("\r\n b\r\n")]),
                ),
            ),
            row(
                "space before the colon (Content-Length : 5)",
                once("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length : 5\r\n\r\nhello"),
                refused(&[400]),
            ),
            row("chunk size zz", bad_chunk("zz"), bad_body()),
            row("chunk size -1", bad_chunk("-1"), bad_body()),
            row(
                "chunk size overflowing 64 bits",
                bad_chunk("1ffffffffffffffff"),
                bad_body(),
            ),
            row(
                "Transfer-Encoding: chunked on HTTP/1.0",
                once(&format!(
                    "POST / HTTP/1.0\r\nHost: {{host}}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
                )),
                all(vec![refused(&[400]), no_smuggled()]),
            ),
            row(
                "two Host headers",
                once("GET / HTTP/1.1\r\nHost: {host}\r\nHost: other.test\r\n\r\n"),
                refused(&[400]),
            ),
            row(
                "absolute-form authority contradicting Host",
                once("GET http://{host}/x HTTP/1.1\r\nHost: other.test\r\n\r\n"),
                either(
                    refused(&[400]),
                    all(vec![
                        proxied(1),
                        backend_has("\r\nhost: row"),
                        backend_lacks("other.test"),
                    ]),
                ),
            ),
            row(
                "a bare LF inside a header value",
                once("GET / HTTP/1.1\r\nHost: {host}\r\nX-A: 1\nX-B: 2\r\n\r\n"),
                either(
                    refused(&[400]),
                    all(vec![proxied(1), backend_lacks("x-a: 1\nx-b")]),
                ),
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// What the table cannot say: counting, other protocols, limits with their own config.

/// The truncated response of a dying backend is a failure in the access log and the metrics,
/// not a 200.
#[test]
fn a_truncated_response_is_logged_and_counted_as_failed() {
    let backend = RawBackend::start(Script::ShortBody {
        declared: 1010,
        sent: 1000,
    });
    let berth = start_berth(&table_config(
        std::slice::from_ref(&backend),
        "server:\n  access_log: true\n",
    ));
    let answer = exchange(
        berth.http,
        &once("GET /big HTTP/1.1\r\nHost: row0.test\r\n\r\n"),
        Duration::from_millis(500),
        Duration::from_secs(5),
    );
    eprintln!("client: {}", answer.summary());
    let mut line = String::new();
    wait_for("the access-log line", Duration::from_secs(5), || {
        line = berth
            .process
            .log()
            .lines()
            .find(|l| l.contains("uri=/big"))
            .unwrap_or_default()
            .to_owned();
        !line.is_empty()
    });
    eprintln!("access log: {line}");
    std::thread::sleep(Duration::from_millis(300));
    let metrics = berth.metrics();
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("berth_service_requests_total{") && l.contains("row0"))
        .collect();
    eprintln!("metrics: {counted:?}");
    assert!(
        !line.contains("status=200"),
        "a truncated response is not logged as 200: {line}"
    );
    assert!(
        !counted.is_empty() && counted.iter().all(|l| !l.contains("code=\"200\"")),
        "a truncated response is counted, and not as 200: {counted:?}"
    );
}

/// Over HTTP/2 the same failure must reset the stream (RST_STREAM), never end it cleanly.
#[tokio::test]
async fn a_backend_dying_mid_body_resets_the_h2_stream() {
    for script in [
        Script::ShortBody {
            declared: 1010,
            sent: 1000,
        },
        Script::ChunkedThenClose { sent: 1000 },
    ] {
        let backend = RawBackend::start(script.clone());
        let berth = start_berth(
            &table_config(std::slice::from_ref(&backend), "")
                .replace("address: \"{http}\"", "address: \"{http}\"\n    h2c: true"),
        );
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .resolve("row0.test", berth.http)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let response = h2
            .get(format!("http://row0.test:{}/big", berth.http.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.bytes().await;
        eprintln!(
            "{script:?} over h2: {}",
            match &body {
                Ok(b) => format!("complete body of {} B", b.len()),
                Err(e) => format!("body error: {e}"),
            }
        );
        assert!(
            body.is_err(),
            "{script:?}: the h2 client must see the stream reset, not a complete body"
        );
    }
}

/// Pingora's pool logs `ERROR failed to acquire reusable stream` under ordinary keep-alive
/// load; log lines at ERROR must mean a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_load_without_failures_logs_no_error() {
    let a = Whoami::start("a");
    let berth = start_berth(&format!(
        "{LISTENERS}services:\n  - name: api\n    domains: [api.test]\n    health_check: {{ interval: 200ms }}\n    backends:\n      - address: \"{}\"\n",
        a.addr
    ));
    berth.wait_backend_health("api", a.addr, "healthy");
    let url = berth.url("/");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = client();
                let mut failed = 0;
                for _ in 0..250 {
                    match get(&client, &url, "api.test").await {
                        Ok(r) if r.status == 200 => {}
                        _ => failed += 1,
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap();
    }
    assert_eq!(failed, 0, "the load itself must succeed");
    let log = berth.process.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    eprintln!(
        "{} ERROR lines after 4000 keep-alive requests, {} of them 'failed to acquire reusable stream'",
        errors.len(),
        errors
            .iter()
            .filter(|l| l.contains("failed to acquire reusable stream"))
            .count()
    );
    assert!(
        errors.is_empty(),
        "no ERROR line without a failed request: {:?}",
        &errors[..errors.len().min(5)]
    );
}

/// `max_body_size` per service (written as a byte count): 413 before a backend sees the
/// request when `Content-Length` says too much; a chunked body that grows past it is cut off
/// with 413 and never reaches the backend complete.
#[test]
fn a_body_over_max_body_size_is_413() {
    run_table_with_service_extra(
        "max_body_size",
        "    max_body_size: 1024\n",
        "client_max_body_size 1024;",
        vec![
            row(
                "Content-Length 2000 over max_body_size 1024",
                Sending::Once(
                    format!(
                        "POST / HTTP/1.1\r\nHost: {{host}}\r\nContent-Length: 2000\r\n\r\n{}",
                        "b".repeat(2000)
                    )
                    .into_bytes(),
                ),
                refused(&[413]),
            ),
            row(
                "chunked body of 2000 over max_body_size 1024",
                Sending::Once(
                    format!(
                        "POST / HTTP/1.1\r\nHost: {{host}}\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n",
                        "b".repeat(2000)
                    )
                    .into_bytes(),
                ),
                all(vec![
                    status(413),
                    check(|o| {
                        ensure(o.backend_requests == 0, || {
                            "the backend must not get the complete request".into()
                        })
                    }),
                ]),
            ),
            row(
                "Content-Length 1000 under max_body_size 1024",
                Sending::Once(
                    format!(
                        "POST / HTTP/1.1\r\nHost: {{host}}\r\nContent-Length: 1000\r\n\r\n{}",
                        "b".repeat(1000)
                    )
                    .into_bytes(),
                ),
                proxied(1),
            ),
        ],
    );
}

/// [`run_table`] with `extra` added to every service.
fn run_table_with_service_extra(table: &str, extra: &'static str, nginx: &str, rows: Vec<Row>) {
    run_table_config(
        table,
        rows,
        move |backends| {
            table_config(backends, "")
                .replace("    retries: 0\n", &format!("    retries: 0\n{extra}"))
        },
        nginx,
    );
}

/// The request-head limits are configurable: `server.max_request_header_size` (a byte count)
/// and `server.request_header_timeout` for the whole head.
#[test]
fn request_head_limits_follow_the_server_config() {
    let head_of = |size: usize| {
        Sending::Once(
            format!(
                "GET / HTTP/1.1\r\nHost: {{host}}\r\nX-Pad: {}\r\n\r\n",
                "p".repeat(size)
            )
            .into_bytes(),
        )
    };
    run_table_config(
        "configured request head limits",
        vec![
            row(
                "10 KiB head over max_request_header_size 8192",
                head_of(10 * 1024),
                refused(&[431]),
            ),
            row("6 KiB head under it", head_of(6 * 1024), proxied(1)),
            row(
                "a header line every 500 ms (request_header_timeout 2s)",
                Sending::Trickle {
                    head: b"GET / HTTP/1.1\r\nHost: {host}\r\n".to_vec(),
                    line: b"X-Slow: 1\r\n".to_vec(),
                    every: Duration::from_millis(500),
                    for_at_most: Duration::from_secs(8),
                },
                all(vec![
                    refused(&[408]),
                    check(|o| {
                        ensure(
                            o.answer.first_byte_after.is_some_and(|t| {
                                t >= Duration::from_millis(1800) && t < Duration::from_secs(4)
                            }),
                            || "the 408 must come about 2 s after the first byte".into(),
                        )
                    }),
                ]),
            ),
        ],
        |backends| {
            table_config(
                backends,
                "server:\n  max_request_header_size: 8192\n  request_header_timeout: 2s\n",
            )
        },
        "client_header_timeout 2s; client_header_buffer_size 1k; large_client_header_buffers 1 8k;",
    );
}

/// berth with `keepalive_timeout: 1s` in front of a backend answering "hi", and a client
/// connection to it (reads time out after 5 s). The backend lives as long as the tuple.
fn with_one_second_keepalive() -> (RawBackend, Berth, TcpStream) {
    let backend = RawBackend::start(Script::ok("hi"));
    let berth = start_berth(&table_config(
        std::slice::from_ref(&backend),
        "server:\n  keepalive_timeout: 1s\n",
    ));
    let stream = TcpStream::connect(berth.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (backend, berth, stream)
}

/// Sends one request on `stream` and reads its whole answer, which must be a 200; `what` names
/// the request in a failure.
fn request_ok(stream: &mut TcpStream, what: &str) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: row0.test\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"hi") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "{what}: the connection was closed");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{what}");
}

/// Asserts that berth closes the idle `stream` about 1 s (under 2.5 s) after `idle_from`.
fn closes_about_a_second_after(stream: &mut TcpStream, idle_from: Instant) {
    let closed = matches!(stream.read(&mut [0u8; 64]), Ok(0) | Err(_));
    let after = idle_from.elapsed();
    eprintln!("idle keep-alive connection: closed={closed} after {after:?}");
    assert!(
        closed && after < Duration::from_millis(2500),
        "an idle keep-alive connection is closed about 1 s after the last response ({after:?})"
    );
}

/// An idle keep-alive connection is closed after the idle timeout. Issue 12 asks for one
/// without naming it; this test calls it `server.keepalive_timeout` (nginx's name).
#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let (_backend, _berth, mut stream) = with_one_second_keepalive();
    request_ok(&mut stream, "the only request");
    closes_about_a_second_after(&mut stream, Instant::now());
}

/// The idle timer only counts idle time: a connection whose requests keep coming, each within
/// the timeout of the last answer, stays open for many timeouts, and still closes one timeout
/// after its last answer. (berth moves its timer lazily, so an early firing must not close.)
#[test]
fn a_keep_alive_connection_in_use_outlives_the_keepalive_timeout() {
    let (_backend, _berth, mut stream) = with_one_second_keepalive();
    let opened = Instant::now();
    let pause = Duration::from_millis(450);
    for request in 0..7 {
        request_ok(
            &mut stream,
            &format!("request {request}, {:?} after connecting", opened.elapsed()),
        );
        std::thread::sleep(pause);
    }
    assert!(
        opened.elapsed() > Duration::from_secs(3),
        "the connection outlived three timeouts"
    );
    closes_about_a_second_after(&mut stream, Instant::now() - pause);
}

/// `server.max_connections` per listener: the excess is refused (closed at once, or 503) and
/// counted; the connections already open keep working.
#[test]
fn connections_over_max_connections_are_refused_and_counted() {
    let backend = RawBackend::start(Script::ok("hi"));
    let berth = start_berth(&table_config(
        std::slice::from_ref(&backend),
        "server:\n  max_connections: 20\n",
    ));
    let held: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(berth.http).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: row0.test\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let over = exchange(
        berth.http,
        &once("GET / HTTP/1.1\r\nHost: row0.test\r\n\r\n"),
        Duration::from_millis(300),
        Duration::from_secs(3),
    );
    eprintln!("the 21st connection: {}", over.summary());
    assert!(
        over.status() == Some(503) || (over.responses.is_empty() && over.closed),
        "the 21st connection is refused (closed or 503): {}",
        over.summary()
    );
    let metrics = berth.metrics();
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && l.contains("connection")
                && (l.contains("refused") || l.contains("rejected"))
        })
        .collect();
    eprintln!("refusal metrics: {counted:?}");
    assert!(
        counted.iter().any(|l| !l.ends_with(" 0")),
        "a refused connection is counted in a metric"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let after = exchange(
        berth.http,
        &once("GET / HTTP/1.1\r\nHost: row0.test\r\n\r\n"),
        Duration::from_millis(300),
        Duration::from_secs(3),
    );
    assert_eq!(after.status(), Some(200), "{}", after.summary());
}

/// On an `h2c` listener berth first waits for the HTTP/2 preface, which Pingora does without a
/// deadline: a client that connects and sends nothing is closed at `request_header_timeout`,
/// and an HTTP/1 head there is still timed from accept.
#[test]
fn a_silent_connection_on_an_h2c_listener_is_closed_at_the_head_timeout() {
    let backend = RawBackend::start(Script::ok("hi"));
    let berth = start_berth(
        &table_config(
            std::slice::from_ref(&backend),
            "server:\n  request_header_timeout: 1s\n",
        )
        .replace("address: \"{http}\"", "address: \"{http}\"\n    h2c: true"),
    );
    let silent = exchange(
        berth.http,
        &Sending::Once(Vec::new()),
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    eprintln!("silent on h2c: {}", silent.summary());
    assert!(
        silent.closed && silent.raw.is_empty() && silent.ended_after < Duration::from_millis(2500),
        "closed without an answer about 1 s after connecting: {}",
        silent.summary()
    );
    let slow = exchange(
        berth.http,
        &Sending::Trickle {
            head: b"GET / HTTP/1.1\r\nHost: row0.test\r\nX-Padding-To-Pass-The-Preface: 1\r\n"
                .to_vec(),
            line: b"X-Slow: 1\r\n".to_vec(),
            every: Duration::from_millis(300),
            for_at_most: Duration::from_secs(4),
        },
        Duration::from_millis(200),
        Duration::from_secs(6),
    );
    eprintln!("slow head on h2c: {}", slow.summary());
    assert_eq!(slow.status(), Some(408), "{}", slow.summary());
    assert!(slow
        .first_byte_after
        .is_some_and(|t| t < Duration::from_millis(2500)));
    let normal = exchange(
        berth.http,
        &once("GET / HTTP/1.1\r\nHost: row0.test\r\nConnection: close\r\n\r\n"),
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    assert_eq!(normal.status(), Some(200), "{}", normal.summary());
}

/// An upgraded connection (WebSocket) is a tunnel, not a stream of request heads: bytes pass
/// both ways, even ones that look like a head's end, and it outlives the head and idle
/// timeouts.
#[test]
fn an_upgraded_connection_is_a_tunnel_through_the_head_guard() {
    let backend = RawBackend::start(Script::Upgrade);
    let berth = start_berth(&table_config(
        std::slice::from_ref(&backend),
        "server:\n  request_header_timeout: 1s\n  keepalive_timeout: 1s\n",
    ));
    let mut stream = TcpStream::connect(berth.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: row0.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    for (message, after) in [
        (&b"hello"[..], Duration::ZERO),
        (b"GET / HTTP/1.1\r\n\r\n", Duration::from_millis(2500)),
    ] {
        std::thread::sleep(after);
        stream.write_all(message).unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < message.len() {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the tunnel closed");
            echoed.extend_from_slice(&buf[..n]);
        }
        assert_eq!(echoed, message, "after {after:?}");
    }
}

fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// 300 connections each trickling ~1 MiB of request headers (8 KiB every 50 ms): berth's RSS
/// stays under 100 MiB and a normal client is still answered quickly.
#[test]
fn slow_clients_are_bounded_in_memory_and_do_not_slow_others() {
    const SLOW: usize = 300;
    let backend = RawBackend::start(Script::ok("hi"));
    let berth = start_berth(&table_config(std::slice::from_ref(&backend), ""));
    let normal = once("GET / HTTP/1.1\r\nHost: row0.test\r\nConnection: close\r\n\r\n");
    for _ in 0..20 {
        exchange(berth.http, &normal, Duration::ZERO, Duration::from_secs(2));
    }
    let baseline = vm_rss_kib(berth.process.pid());
    let http = berth.http;
    let started = Instant::now();
    let slow: Vec<_> = (0..SLOW)
        .map(|i| {
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(http) else {
                    return None;
                };
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: row0.test\r\n");
                let line = format!("X-Pad-{i}: {}\r\n", "x".repeat(8 * 1024));
                let mut sent = 0;
                while sent < (1 << 20) && started.elapsed() < Duration::from_secs(12) {
                    if s.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                    sent += line.len();
                    std::thread::sleep(Duration::from_millis(50));
                }
                Some(sent)
            })
        })
        .collect();
    let mut peak = baseline;
    let mut worst = Duration::ZERO;
    let mut failures = 0;
    while started.elapsed() < Duration::from_secs(12) {
        peak = peak.max(vm_rss_kib(berth.process.pid()));
        if started.elapsed() < Duration::from_secs(1) {
            // The burst of 300 connects (and the load generator's own threads starting) on a
            // two-core machine is not berth's latency; measure once the slow clients trickle.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let t = Instant::now();
        let answer = exchange(http, &normal, Duration::ZERO, Duration::from_secs(5));
        if answer.status() != Some(200) {
            failures += 1;
        }
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent: Vec<usize> = slow.into_iter().filter_map(|t| t.join().unwrap()).collect();
    let (connected, sent) = (sent.len(), sent.iter().sum::<usize>());
    let refused: u64 = berth
        .metrics()
        .lines()
        .find(|l| l.starts_with("berth_requests_unrouted_total{code=\"431\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    eprintln!(
        "{SLOW} slow clients sent {} MiB of headers; berth RSS {} MiB at rest, {} MiB at peak; \
         normal client: worst {worst:?}, {failures} failed; {connected} connected, {refused} refused with 431",
        sent >> 20,
        baseline >> 10,
        peak >> 10
    );
    assert_eq!(
        refused, connected as u64,
        "every slow client that connected is refused at max_request_header_size"
    );
    assert_eq!(failures, 0, "a normal client is always answered");
    assert!(
        worst < Duration::from_millis(500),
        "a normal client is answered quickly ({worst:?})"
    );
    assert!(
        peak < 100 << 10,
        "berth's RSS stays under 100 MiB ({} MiB)",
        peak >> 10
    );
}

// ---------------------------------------------------------------------------------------------
// The admin API and visibility (edge and internal listeners).

/// `admin.allow` (CIDRs) guards everything but `/metrics`, `/healthz` and `/readyz`.
#[test]
fn the_admin_api_refuses_clients_outside_admin_allow() {
    let berth = start_berth(&format!(
        "{LISTENERS}  allow: [\"10.0.0.0/8\"]\nservices: []\n"
    ));
    for (path, expected) in [
        ("/api/routes", 403),
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 200),
    ] {
        let status = admin_get(berth.admin, path).map(|(s, _)| s);
        assert_eq!(status, Some(expected), "{path} from 127.0.0.1");
    }
}

/// `admin.token_file`: a bearer token opens the protected paths to a peer outside
/// `admin.allow`; a missing or wrong token is 401 and asks for it.
#[test]
fn the_admin_api_accepts_its_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef-token";
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let berth = start_berth(&format!(
        "{LISTENERS}  allow: [\"10.0.0.0/8\"]\n  token_file: \"{}\"\nservices: []\n",
        token_file.display()
    ));
    let with = |authorization: &str| {
        exchange(
            berth.admin,
            &Sending::Once(
                format!(
                    "GET /api/routes HTTP/1.1\r\nHost: admin\r\n{authorization}Connection: close\r\n\r\n"
                )
                .into_bytes(),
            ),
            Duration::from_millis(200),
            Duration::from_secs(5),
        )
    };
    let without = with("");
    assert_eq!(without.status(), Some(401), "{}", without.summary());
    assert!(without
        .first()
        .and_then(|r| r.header("www-authenticate"))
        .is_some_and(|v| v.starts_with("Bearer")));
    assert_eq!(
        with("Authorization: Bearer wrong-token-0123456\r\n").status(),
        Some(401)
    );
    let ok = with(&format!("Authorization: Bearer {token}\r\n"));
    assert_eq!(ok.status(), Some(200), "{}", ok.summary());
    assert_eq!(
        admin_get(berth.admin, "/metrics").map(|(s, _)| s),
        Some(200)
    );
}

/// The shipped configs never expose the admin API to everyone: it binds to loopback or has an
/// `allow` list.
#[test]
fn shipped_configs_keep_the_admin_api_private() {
    for entry in std::fs::read_dir(repo_path("conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let Some(admin) = yaml.get("admin") else {
            continue;
        };
        let address: SocketAddr = admin["address"].as_str().unwrap().parse().unwrap();
        let allow = admin.get("allow").and_then(|a| a.as_sequence());
        assert!(
            address.ip().is_loopback() || allow.is_some_and(|a| !a.is_empty()),
            "{}: the admin API listens on {address} for everyone",
            path.display()
        );
    }
}

/// A plain GET through `addr` for `host`, answered by berth (status, body).
fn get_raw(addr: SocketAddr, host: &str, extra_headers: &str) -> (Option<u16>, String) {
    let answer = exchange(
        addr,
        &Sending::Once(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\n{extra_headers}Connection: close\r\n\r\n")
                .into_bytes(),
        ),
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    let body = answer
        .first()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default();
    (answer.status(), body)
}

/// Every byte of berth's answer to a plain GET for `host`, but the `Date` line (the one
/// thing that may differ between two answers a second apart).
fn answer_without_date(addr: SocketAddr, host: &str) -> Vec<u8> {
    let answer = exchange(
        addr,
        &Sending::Once(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
        ),
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&answer.raw).into_owned();
    text.split_inclusive("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect::<String>()
        .into_bytes()
}

fn service_yaml(name: &str, domain: &str, extra: &str, backend: &RawBackend) -> String {
    format!(
        "  - name: {name}\n    domains: [\"{domain}\"]\n    health_check: {{ type: none }}\n{extra}    backends:\n      - address: \"{}\"\n",
        backend.addr
    )
}

/// An edge listener serves public services only; an internal service there answers exactly as
/// an unknown host does. An internal listener serves both.
#[test]
fn an_edge_listener_hides_internal_services_like_unknown_hosts() {
    let backend = RawBackend::start(Script::ok("hi"));
    let internal = free_addr();
    let services = [
        service_yaml("public", "public.test", "", &backend),
        service_yaml("restserver", "restserver.local", "", &backend),
        service_yaml(
            "private",
            "private.test",
            "    visibility: internal\n",
            &backend,
        ),
    ]
    .concat();
    let berth = start_berth(&format!(
        "listeners:\n  - name: edge\n    address: \"{{http}}\"\n    role: edge\n  - name: lan\n    address: \"{internal}\"\n    role: internal\nadmin:\n  address: \"{{admin}}\"\nservices:\n{services}"
    ));
    assert_eq!(get_raw(berth.http, "nobody.test", "").0, Some(404));
    assert_eq!(get_raw(berth.http, "public.test", "").0, Some(200));
    for host in ["restserver.local", "private.test"] {
        let (status, _) = get_raw(berth.http, host, "");
        assert_eq!(status, Some(404), "{host} on the edge listener");
        // An unknown host of the same length: the answer names the host.
        let unknown = format!("{}.test", "u".repeat(host.len() - ".test".len()));
        assert_eq!(
            String::from_utf8_lossy(&answer_without_date(berth.http, host)),
            String::from_utf8_lossy(&answer_without_date(berth.http, &unknown))
                .replace(&unknown, host),
            "{host} on the edge answers byte for byte like an unknown host"
        );
        assert_eq!(
            get_raw(internal, host, "").0,
            Some(200),
            "{host} on the internal listener"
        );
    }
    assert_eq!(get_raw(internal, "public.test", "").0, Some(200));
}

/// `internal_domains` replaces the default `["*.local"]`.
#[test]
fn internal_domains_decide_which_services_are_internal() {
    let backend = RawBackend::start(Script::ok("hi"));
    let services = [
        service_yaml("corp", "app.corp", "", &backend),
        service_yaml("local", "app.local", "", &backend),
    ]
    .concat();
    let berth = start_berth(&format!(
        "listeners:\n  - name: edge\n    address: \"{{http}}\"\n    role: edge\nadmin:\n  address: \"{{admin}}\"\ninternal_domains: [\"*.corp\"]\nservices:\n{services}"
    ));
    assert_eq!(get_raw(berth.http, "app.corp", "").0, Some(404));
    assert_eq!(get_raw(berth.http, "app.local", "").0, Some(200));
}

/// `listeners[].allow` limits who may connect (403 for everyone else).
#[test]
fn listener_allow_refuses_peers_outside_its_cidrs() {
    let backend = RawBackend::start(Script::ok("hi"));
    let open = free_addr();
    let berth = start_berth(&format!(
        "listeners:\n  - name: closed\n    address: \"{{http}}\"\n    allow: [\"10.0.0.0/8\", \"192.0.2.0/24\"]\n  - name: open\n    address: \"{open}\"\n    allow: [\"127.0.0.0/8\"]\nadmin:\n  address: \"{{admin}}\"\nservices:\n{}",
        service_yaml("public", "public.test", "", &backend)
    ));
    assert_eq!(get_raw(berth.http, "public.test", "").0, Some(403));
    assert_eq!(get_raw(open, "public.test", "").0, Some(200));
    assert!(
        backend.requests() == 1,
        "the refused request never reached the backend"
    );
}

/// The value of every `name:` header line the backend received, in order.
fn header_values(raw: &[u8], name: &str) -> Vec<String> {
    String::from_utf8_lossy(raw)
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// `X-Forwarded-For/Proto/Host`: kept and appended to only when the peer is one of the
/// listener's `trusted_proxies`; otherwise replaced with what berth itself knows.
#[test]
fn forwarded_headers_are_trusted_only_from_trusted_proxies() {
    let (edge_b, trusted_b, untrusted_b) = (
        RawBackend::start(Script::ok("hi")),
        RawBackend::start(Script::ok("hi")),
        RawBackend::start(Script::ok("hi")),
    );
    let (trusted, untrusted) = (free_addr(), free_addr());
    let services = [
        service_yaml("e", "e.test", "", &edge_b),
        service_yaml("t", "t.test", "", &trusted_b),
        service_yaml("u", "u.test", "", &untrusted_b),
    ]
    .concat();
    let berth = start_berth(&format!(
        "listeners:\n  - name: edge\n    address: \"{{http}}\"\n    role: edge\n  - name: behind_lb\n    address: \"{trusted}\"\n    role: internal\n    trusted_proxies: [\"127.0.0.0/8\"]\n  - name: lan\n    address: \"{untrusted}\"\n    role: internal\n    trusted_proxies: [\"10.0.0.0/8\"]\nadmin:\n  address: \"{{admin}}\"\nservices:\n{services}"
    ));
    let claims =
        "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\n";
    for (addr, host, backend, xff, proto, fwd_host) in [
        (berth.http, "e.test", &edge_b, "127.0.0.1", "http", "e.test"),
        (
            trusted,
            "t.test",
            &trusted_b,
            "203.0.113.7, 127.0.0.1",
            "https",
            "evil.test",
        ),
        (
            untrusted,
            "u.test",
            &untrusted_b,
            "127.0.0.1",
            "http",
            "u.test",
        ),
    ] {
        assert_eq!(get_raw(addr, host, claims).0, Some(200), "{host}");
        let raw = backend.received();
        assert_eq!(header_values(&raw, "x-forwarded-for"), [xff], "{host}");
        assert_eq!(header_values(&raw, "x-forwarded-proto"), [proto], "{host}");
        assert_eq!(
            header_values(&raw, "x-forwarded-host"),
            [fwd_host],
            "{host}"
        );
    }
}
