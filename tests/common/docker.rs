//! Real Docker for tests: a tiny image built locally (no registry is reachable), containers
//! and networks that clean themselves up.

use std::net::IpAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A busybox image: `/bin/busybox` and `/bin/sh`, imported from the host's busybox-static.
pub const IMAGE: &str = "berth-test-busybox:latest";

/// Serves `/www` on port 80, with `index.html` holding the container's hostname (its short
/// id) and `health.html` for probes.
pub const HTTPD: &str =
    "hostname > /www/index.html; echo ok > /www/health.html; exec busybox httpd -f -p 80 -h /www";

/// [`HTTPD`] shutting down as a well-behaved service does: on `SIGTERM` it keeps serving for a
/// second (what it has in flight, and what a proxy sent before it heard of the stop), then
/// exits. busybox httpd alone dies at once, and with it the response it is writing: a cut
/// body no proxy can repair, so a test of rolling deploys needs the polite version.
pub const GRACEFUL_HTTPD: &str = "hostname > /www/index.html; echo ok > /www/health.html; \
     busybox httpd -f -p 80 -h /www & trap 'sleep 1; kill $!' TERM; wait";

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI is installed")
}

/// Runs `docker args`, panicking with its stderr if it fails; returns trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether Docker tests can run. Without an engine they are skipped with a loud message,
/// unless `BERTH_REQUIRE_DOCKER=1` (CI sets it), where a missing engine fails the test.
pub fn available(test: &str) -> bool {
    let up = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        assert!(
            std::env::var("BERTH_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "BERTH_REQUIRE_DOCKER=1 but no Docker engine answers"
        );
        eprintln!("SKIPPED {test}: no Docker engine answers (`docker version` failed); the Docker tests were NOT run");
        return false;
    }
    ensure_image();
    remove_leftovers();
    true
}

/// Removes containers and networks of earlier test processes that died before cleaning up
/// (their names carry the pid of a process that no longer exists).
fn remove_leftovers() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dead = |name: &str| {
            name.strip_prefix("berth-test-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        };
        let containers = docker_ok(&[
            "ps",
            "-a",
            "--filter",
            "label=berth-test=1",
            "--format",
            "{{.Names}}",
        ]);
        for name in containers.lines().filter(|n| dead(n)) {
            let _ = docker(&["rm", "-f", name]);
        }
        let networks = docker_ok(&[
            "network",
            "ls",
            "--filter",
            "label=berth-test=1",
            "--format",
            "{{.Name}}",
        ]);
        for name in networks.lines().filter(|n| dead(n)) {
            let _ = docker(&["network", "rm", name]);
        }
    });
}

fn ensure_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if docker(&["image", "inspect", IMAGE]).status.success() {
            return;
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("busybox-static is installed (/bin/busybox)");
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::create_dir_all(root.path().join("www")).unwrap();
        std::fs::copy(busybox, root.path().join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", root.path().join("bin/sh")).unwrap();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C {} -c . | docker import - {IMAGE}",
                root.path().display()
            ))
            .status()
            .unwrap();
        assert!(status.success(), "docker import of the test image");
    });
}

fn unique(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "berth-test-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running container, removed when dropped.
pub struct Container {
    pub id: String,
    pub name: String,
}

impl Container {
    /// `docker run -d --init` of the test image running [`HTTPD`] with `labels`.
    pub fn run(name: &str, labels: &[(&str, &str)], extra: &[&str]) -> Container {
        Self::run_cmd(name, labels, extra, HTTPD)
    }

    pub fn run_cmd(name: &str, labels: &[(&str, &str)], extra: &[&str], script: &str) -> Container {
        let name = unique(name);
        let mut args = vec![
            "run",
            "-d",
            "--init",
            "--name",
            &name,
            "--label",
            "berth-test=1",
        ];
        let label_args: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for label in &label_args {
            args.extend(["--label", label]);
        }
        args.extend(extra);
        args.extend([IMAGE, "sh", "-c", script]);
        let id = docker_ok(&args);
        Container { id, name }
    }

    /// The container's address on `network` (or its only network).
    pub fn ip(&self, network: Option<&str>) -> IpAddr {
        let format = match network {
            Some(n) => format!("{{{{(index .NetworkSettings.Networks \"{n}\").IPAddress}}}}"),
            None => "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}".into(),
        };
        docker_ok(&["inspect", "-f", &format, &self.id])
            .parse()
            .unwrap()
    }

    /// The hostname the container answers `/` with: its short id.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    pub fn exec(&self, script: &str) {
        docker_ok(&["exec", &self.id, "sh", "-c", script]);
    }

    pub fn stop(&self) {
        docker_ok(&["stop", "-t", "5", &self.id]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.id]);
    }
}

/// A user-defined bridge network, removed when dropped.
pub struct Network {
    pub name: String,
}

impl Network {
    pub fn create(name: &str) -> Network {
        let name = unique(name);
        docker_ok(&["network", "create", "--label", "berth-test=1", &name]);
        Network { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// berth config with Docker discovery on and quick probes; `{http}`/`{admin}` as in `Berth`.
pub fn berth_config(extra: &str) -> String {
    format!(
        r#"{}
defaults:
  health_check: {{ interval: 250ms, timeout: 1s }}
discovery:
  docker:
    enabled: true
    debounce: 20ms
{extra}"#,
        super::LISTENERS
    )
}
