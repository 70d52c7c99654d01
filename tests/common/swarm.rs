//! Real Docker Swarms for tests. `tests/swarm/harness.sh` runs every node as its own dockerd in
//! its own namespaces (the host's engine, which other tests use, is never touched); this drives
//! it, gives every call the node's socket explicitly (never `DOCKER_HOST`), and tears the swarm
//! down on drop, panics included. A test process killed outright leaves its swarm to the
//! harness's gc, which the next `up` runs: every name carries the owner's pid.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{admin_get, api_routes, image, repo_path, wait_for};

/// The busybox image the harness imports on every node.
pub const BUSYBOX: &str = "berth-test-busybox:latest";

/// The production image, built on node 1 from the Dockerfile's runtime stage.
pub const BERTH_IMAGE: &str = "berth:latest";

/// Serves `/www` on port 80: `/` is the container's hostname (its short id), `/health.html`
/// is for probes.
pub const HTTPD: &str =
    "hostname > /www/index.html; echo ok > /www/health.html; exec httpd -f -p 80 -h /www";

/// berth's config in these tests: Swarm and Docker discovery on (a task must be routed once),
/// quick probes.
pub const BERTH_CONFIG: &str = r#"
listeners:
  - name: main
    address: "0.0.0.0:80"
admin:
  address: "0.0.0.0:9900"
  # The tests read the route table from the host, outside the cluster's networks.
  allow: ["0.0.0.0/0", "::/0"]
defaults:
  health_check: { interval: 250ms, timeout: 1s }
discovery:
  docker: { enabled: true }
  swarm: { enabled: true, debounce: 20ms }
"#;

/// The Swarm tests take turns: two cores, and the timings they report matter. (An async lock:
/// each test holds it across its awaits, and a failed test must not poison it for the others.)
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Whether the Swarm tests can run here: root, iproute2, util-linux, dockerd and
/// busybox-static. Without them the tests are skipped with a loud message, unless
/// `BERTH_REQUIRE_DOCKER=1` or `BERTH_REQUIRE_TOOLS=1` (CI sets both), where a missing piece
/// fails the test.
pub fn available(test: &str) -> bool {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = [
        ("root", works("sh", &["-c", "[ \"$(id -u)\" = 0 ]"])),
        ("iproute2 (ip netns)", works("ip", &["netns", "list"])),
        ("nsenter", works("nsenter", &["--version"])),
        ("unshare", works("unshare", &["--version"])),
        ("dockerd", works("dockerd", &["--version"])),
        ("docker CLI", works("docker", &["--version"])),
        ("busybox", works("busybox", &["true"])),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(what, _)| what)
    .collect();
    if missing.is_empty() {
        return true;
    }
    let required = ["BERTH_REQUIRE_DOCKER", "BERTH_REQUIRE_TOOLS"]
        .into_iter()
        .find(|var| std::env::var(var).as_deref() == Ok("1"));
    if let Some(var) = required {
        panic!(
            "{var}=1 but the Swarm tests cannot run: missing {} (.ci/run installs them)",
            missing.join(", ")
        );
    }
    eprintln!(
        "SKIPPED {test}: missing {}; the Swarm tests were NOT run",
        missing.join(", ")
    );
    false
}

/// A running swarm of `nodes` dockerds; node 1 is the manager.
pub struct Swarm {
    pub id: String,
    /// `unix://` sockets, node 1 first.
    hosts: Vec<String>,
    node_ips: Vec<IpAddr>,
    pub overlay: String,
}

fn harness(args: &[&str]) -> Command {
    let mut command = Command::new("bash");
    command.arg(repo_path("tests/swarm/harness.sh")).args(args);
    command
}

impl Swarm {
    /// `nodes` nodes, the first `managers` of them managers.
    pub fn up(nodes: usize, managers: usize) -> Swarm {
        static INSTANCE: AtomicUsize = AtomicUsize::new(0);
        let instance = INSTANCE.fetch_add(1, Ordering::Relaxed) % 10;
        let started = Instant::now();
        let out = harness(&["up", &nodes.to_string()])
            .env("HARNESS_OWNER", std::process::id().to_string())
            .env("HARNESS_INSTANCE", instance.to_string())
            .env("HARNESS_MANAGERS", managers.to_string())
            .output()
            .expect("bash runs the harness");
        assert!(
            out.status.success(),
            "harness up {nodes}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|word| word.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let get = |key: &str| {
            env.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("harness printed no {key}"))
        };
        let swarm = Swarm {
            id: get("HARNESS_ID"),
            hosts: (1..=nodes)
                .map(|i| get(&format!("DOCKER_HOST_{i}")))
                .collect(),
            node_ips: (1..=nodes)
                .map(|i| get(&format!("HARNESS_NODE_IP_{i}")).parse().unwrap())
                .collect(),
            overlay: get("HARNESS_OVERLAY"),
        };
        eprintln!(
            "swarm {} up: {nodes} node(s) in {:?}",
            swarm.id,
            started.elapsed()
        );
        swarm
    }

    /// Node `node`'s engine socket (1-based).
    pub fn host(&self, node: usize) -> &str {
        &self.hosts[node - 1]
    }

    pub fn node_ip(&self, node: usize) -> IpAddr {
        self.node_ips[node - 1]
    }

    /// The hostname of node `node`, as `/api/routes` names it.
    pub fn node_name(&self, node: usize) -> String {
        format!("bh{}-{node}", self.id)
    }

    pub fn docker(&self, node: usize, args: &[&str]) -> Output {
        Command::new("docker")
            .args(["-H", self.host(node)])
            .args(args)
            .output()
            .expect("the docker CLI is installed")
    }

    /// Runs `docker -H <node> args`, panicking with its stderr if it fails; trimmed stdout.
    pub fn docker_ok(&self, node: usize, args: &[&str]) -> String {
        let out = self.docker(node, args);
        assert!(
            out.status.success(),
            "docker -H {} {}: {}",
            self.host(node),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `docker service create` on the manager: the busybox image serving [`HTTPD`] on the
    /// overlay, with `args` (labels, replicas, constraints) before the image.
    pub fn create_service(&self, name: &str, args: &[&str]) {
        let mut all = vec![
            "service",
            "create",
            "-d",
            "-q",
            "--no-resolve-image",
            "--init",
            "--name",
            name,
            "--network",
            &self.overlay,
        ];
        all.extend(args);
        all.extend([BUSYBOX, "sh", "-c", HTTPD]);
        self.docker_ok(1, &all);
    }

    /// Node loss: KILLs node `node`'s dockerd, containerd and containers.
    pub fn kill_node(&self, node: usize) {
        let out = harness(&["kill-node", &self.id, &node.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "harness kill-node {node}");
    }

    /// The gid of node 1's socket: berth's image runs as uid 10001 and needs the group.
    pub fn socket_gid(&self) -> String {
        let path = self.host(1).trim_start_matches("unix://");
        std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(path).unwrap()).to_string()
    }

    /// berth as a container on node 1 (the production image), attached to the overlay, with
    /// the node's own socket, `config` and extra `volumes`; its listener and admin published
    /// on node 1's address. Waits for `/readyz`.
    pub fn berth(&self, config: &str, volumes: &[&str]) -> SwarmBerth {
        image::build(Some(self.host(1)), BERTH_IMAGE);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("berth.yaml"), config).unwrap();
        // The image runs as uid 10001: it must be able to read the config.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let name = format!("bh{}-berth", self.id);
        let config_mount = format!("{}:/etc/berth-test:ro", dir.path().display());
        let gid = self.socket_gid();
        let mut args = vec!["run", "-d", "--name", &name, "--network", &self.overlay];
        for volume in volumes {
            args.extend(["-v", volume]);
        }
        let started = Instant::now();
        args.extend([
            "-p",
            "80:80",
            "-p",
            "9900:9900",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock:ro",
            "--group-add",
            &gid,
            "-v",
            &config_mount,
            "-e",
            "BERTH_CONFIG=/etc/berth-test/berth.yaml",
            "-e",
            "RUST_LOG=info,berth=debug,pingora_core=warn,pingora_proxy=warn",
            BERTH_IMAGE,
        ]);
        self.docker_ok(1, &args);
        let berth = SwarmBerth {
            host: self.host(1).to_owned(),
            container: name,
            http: SocketAddr::new(self.node_ip(1), 80),
            admin: SocketAddr::new(self.node_ip(1), 9900),
            _config: dir,
        };
        wait_for("berth /readyz", Duration::from_secs(30), || {
            admin_get(berth.admin, "/readyz").is_some_and(|(status, _)| status == 200)
        });
        eprintln!("berth ready in {:?}", started.elapsed());
        berth
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in 1..=self.hosts.len() {
                let log = format!("/var/lib/berth-swarm/bh{}/{node}/dockerd.log", self.id);
                let tail = Command::new("tail").args(["-n", "20", &log]).output();
                if let Ok(tail) = tail {
                    eprintln!(
                        "----- {log} -----\n{}",
                        String::from_utf8_lossy(&tail.stdout)
                    );
                }
            }
        }
        let _ = harness(&["down", &self.id]).output();
    }
}

/// berth running in the swarm.
pub struct SwarmBerth {
    host: String,
    container: String,
    /// The listener and the admin listener, published on node 1's address.
    pub http: SocketAddr,
    pub admin: SocketAddr,
    _config: tempfile::TempDir,
}

impl SwarmBerth {
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

    /// The backends of the service named `service`; empty when it is not routed.
    pub fn backends(&self, service: &str) -> Vec<serde_json::Value> {
        self.routes()
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == service)
            .and_then(|s| s["backends"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The task ids of the service's backends that take traffic.
    pub fn routable_tasks(&self, service: &str) -> Vec<String> {
        let mut tasks: Vec<String> = self
            .backends(service)
            .iter()
            .filter(|b| b["routable"] == true)
            .map(|b| b["task"]["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        tasks.sort();
        tasks
    }

    pub fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["-H", &self.host, "logs", &self.container])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for SwarmBerth {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- berth's log -----\n{}", self.logs());
        }
    }
}
