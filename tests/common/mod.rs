//! Test harness: the real `berth` binary and real `berth whoami` backends on loopback ports,
//! driven with a real HTTP client.

#![allow(dead_code)] // each test binary uses its own subset of the helpers

pub mod docker;
pub mod image;
pub mod raw_backend;
pub mod swarm;
pub mod tls;
pub mod traffic;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// The listener and admin sections every test config starts with; `Berth` fills in the
/// `{http}` and `{admin}` addresses.
pub const LISTENERS: &str = r#"
listeners:
  - name: main
    address: "{http}"
admin:
  address: "{admin}"
"#;

/// Runs `berth check --config path`.
pub fn check(path: &Path) -> std::process::Output {
    Command::new(BERTH)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

/// A loopback port nobody listens on right now, and not handed out before by this test
/// binary: the kernel may give a port it just gave again once its listener is dropped, and a
/// config that names one address twice is refused.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls `condition` until it holds or `timeout` passes; panics with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A child process killed when dropped; its output goes to a log file that is printed if the
/// test fails.
pub struct Process {
    pub child: Child,
    name: String,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, command: &mut Command, log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Process {
            child,
            name: name.to_owned(),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log());
        }
    }
}

/// A `berth whoami` backend.
pub struct Whoami {
    pub name: String,
    pub addr: SocketAddr,
    process: Process,
    dir: tempfile::TempDir,
}

impl Whoami {
    pub fn start(name: &str) -> Whoami {
        Self::start_on(name, free_addr())
    }

    pub fn start_on(name: &str, addr: SocketAddr) -> Whoami {
        Self::start_with(name, addr, &[])
    }

    /// A whoami with extra flags (`--delay 50ms`, `--status 503`).
    pub fn start_with(name: &str, addr: SocketAddr, flags: &[&str]) -> Whoami {
        let dir = tempfile::tempdir().unwrap();
        let process = Process::spawn(
            &format!("whoami {name}"),
            Command::new(BERTH)
                .args(["whoami", "--listen", &addr.to_string(), "--name", name])
                .args(flags),
            dir.path().join("whoami.log"),
        );
        wait_for(
            &format!("whoami {name} on {addr}"),
            Duration::from_secs(10),
            || accepts(addr),
        );
        Whoami {
            name: name.to_owned(),
            addr,
            process,
            dir,
        }
    }

    /// Kills the backend abruptly (SIGKILL) and waits until its port refuses connections.
    pub fn kill(&mut self) {
        self.process.kill();
        wait_for(
            "killed whoami to stop accepting",
            Duration::from_secs(5),
            || !accepts(self.addr),
        );
    }

    /// Starts the same backend again on the same address.
    pub fn restart(&mut self) {
        *self = Whoami::start_on(&self.name.clone(), self.addr);
    }
}

/// A running `berth serve`.
pub struct Berth {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub process: Process,
    _dir: tempfile::TempDir,
}

impl Berth {
    /// Starts berth with `yaml`, where `{http}` and `{admin}` stand for free loopback
    /// addresses of the first listener and the admin listener. Waits for `/readyz`.
    pub fn start(yaml: &str) -> Berth {
        let berth = Self::spawn(yaml, &[]);
        berth.wait_ready();
        berth
    }

    /// Starts berth without waiting for readiness, with extra environment variables.
    pub fn spawn(yaml: &str, env: &[(&str, &str)]) -> Berth {
        Self::spawn_with(yaml, env, free_addr())
    }

    /// Starts berth without waiting for readiness, with `{http}` at a chosen address.
    pub fn spawn_on(yaml: &str, http: SocketAddr) -> Berth {
        Self::spawn_with(yaml, &[], http)
    }

    fn spawn_with(yaml: &str, env: &[(&str, &str)], http: SocketAddr) -> Berth {
        let admin = free_addr();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("berth.yaml");
        std::fs::write(&config, fill(yaml, http, admin)).unwrap();
        let mut command = serve_command(&config);
        for (key, value) in env {
            command.env(key, value);
        }
        let process = Process::spawn("berth", &mut command, dir.path().join("berth.log"));
        Berth {
            http,
            admin,
            config,
            process,
            _dir: dir,
        }
    }

    /// Stops berth (SIGTERM, then waits for it to exit) and starts it again with the same
    /// config file and addresses; waits for `/readyz`.
    pub fn restart(&mut self) {
        self.process.signal("TERM");
        self.process.wait_exit(Duration::from_secs(15));
        self.process = Process::spawn(
            "berth (restarted)",
            &mut serve_command(&self.config),
            self._dir.path().join("berth-restarted.log"),
        );
        self.wait_ready();
    }

    pub fn wait_ready(&self) {
        wait_for("berth /readyz", Duration::from_secs(20), || {
            admin_get(self.admin, "/readyz").is_some_and(|(status, _)| status == 200)
        });
    }

    /// Replaces the config file (same placeholders as [`Berth::start`]).
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, fill(yaml, self.http, self.admin)).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `GET /api/routes`, parsed.
    pub fn routes(&self) -> serde_json::Value {
        api_routes(self.admin)
    }

    pub fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics").expect("admin answers").1
    }

    /// The health berth reports for `backend` in `service` (`healthy`, `starting`, ...).
    pub fn backend_health(&self, service: &str, backend: SocketAddr) -> Option<String> {
        let routes = self.routes();
        let service = routes
            .as_array()?
            .iter()
            .find(|s| s["name"] == service)?
            .clone();
        let backend = service["backends"]
            .as_array()?
            .iter()
            .find(|b| b["address"] == backend.to_string())?
            .clone();
        backend["health"].as_str().map(str::to_owned)
    }

    pub fn wait_backend_health(&self, service: &str, backend: SocketAddr, health: &str) {
        wait_for(
            &format!("{service}/{backend} to be {health}"),
            Duration::from_secs(15),
            || self.backend_health(service, backend).as_deref() == Some(health),
        );
    }
}

fn serve_command(config: &Path) -> Command {
    let mut command = Command::new(BERTH);
    command
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info");
    command
}

fn fill(yaml: &str, http: SocketAddr, admin: SocketAddr) -> String {
    yaml.replace("{http}", &http.to_string())
        .replace("{admin}", &admin.to_string())
}

/// `GET /api/routes` of the admin listener at `admin`, parsed.
pub fn api_routes(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = admin_get(admin, "/api/routes").expect("admin answers");
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// A minimal blocking GET for the admin listener (status, body); `None` if it does not answer.
pub fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// An HTTP client that sends every request with a chosen `Host` and does not pool
/// connections across tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The `Name:` line of a whoami answer: which backend served the request.
    pub fn backend(&self) -> Option<&str> {
        self.body
            .lines()
            .find_map(|line| line.strip_prefix("Name: "))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn get(client: &reqwest::Client, url: &str, host: &str) -> reqwest::Result<Reply> {
    get_with(client, url, &[("host", host)]).await
}

pub async fn get_with(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> reqwest::Result<Reply> {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Whether the external tool a test needs runs (`tool args` exits 0). Without it the test is
/// skipped with a loud message, unless `BERTH_REQUIRE_TOOLS=1` (CI sets it; `.ci/run` installs
/// every tool), where it fails.
pub fn tool_available(test: &str, tool: &str, args: &[&str]) -> bool {
    let found = Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("BERTH_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "BERTH_REQUIRE_TOOLS=1 but `{tool} {}` failed (.ci/run installs it)",
            args.join(" ")
        );
        eprintln!("SKIPPED {test}: `{tool}` is not installed (.ci/run installs it); this test was NOT run");
    }
    found
}

/// Path of a file in the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}
