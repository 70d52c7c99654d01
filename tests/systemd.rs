//! `conf/systemd/berth.service` and `conf/systemd/berth.yaml`, checked as far as a machine
//! without systemd as PID 1 allows:
//!
//! - `systemd-analyze verify` accepts the unit (with this build's binary substituted), and
//!   `systemd-analyze security --offline` rates its sandbox "OK" (exposure at most 2.0);
//! - its `ExecStartPre`, `ExecStart` and `ExecReload` lines run as written: `ExecStart` as an
//!   unprivileged user holding only the unit's ambient capability under `no_new_privs`
//!   (`setpriv` stands in for `DynamicUser`, `AmbientCapabilities`, `CapabilityBoundingSet` and
//!   `NoNewPrivileges`), binding port 80; berth sends `READY=1` to `$NOTIFY_SOCKET` once
//!   `/readyz` says ready, `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` on the
//!   unit's `KillSignal`; a bad edit stops at `ExecReload`'s check;
//! - under strace, a serving, reloading and stopping berth makes only system calls the unit's
//!   `SystemCallFilter` allows, opens only `RestrictAddressFamilies` sockets, never maps memory
//!   writable and executable (`MemoryDenyWriteExecute`) and opens no file for writing
//!   (`ProtectSystem=strict`).
//!
//! Not verified here: systemd itself applying the namespaces (`ProtectSystem`, `PrivateTmp`,
//! `ProtectHome`, ...), the dynamic user, and the seccomp filter as PID 1 would.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const UNIT: &str = "conf/systemd/berth.service";
const INSTALLED_BINARY: &str = "/usr/local/bin/berth";
const INSTALLED_CONFIG: &str = "/etc/berth/berth.yaml";

/// The unit as installed on this machine: this build's binary, a config of the test's.
fn unit_for(config: &Path) -> String {
    std::fs::read_to_string(repo_path(UNIT))
        .unwrap()
        .replace(INSTALLED_BINARY, BERTH)
        .replace(INSTALLED_CONFIG, config.to_str().unwrap())
}

/// Every value of `key=` in the unit, in order.
fn settings<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

/// The command lines of `key=` (`ExecStart`, ...), split into words (the unit quotes nothing).
fn commands(unit: &str, key: &str) -> Vec<Vec<String>> {
    settings(unit, key)
        .into_iter()
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn run(command: &[String]) -> std::process::Output {
    Command::new(&command[0])
        .args(&command[1..])
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

/// A directory everyone may read (the service runs as another user).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `conf/systemd/berth.yaml` with its listener on `http`, admin on `admin`, and the two
/// example backends replaced by `backends`.
fn example_config(http: SocketAddr, admin: SocketAddr, backends: [&Whoami; 2]) -> String {
    let example = std::fs::read_to_string(repo_path("conf/systemd/berth.yaml")).unwrap();
    for placeholder in [
        "0.0.0.0:80",
        "127.0.0.1:9900",
        "10.0.0.11:8080",
        "10.0.0.12:8080",
    ] {
        assert!(
            example.contains(placeholder),
            "the example still has {placeholder}"
        );
    }
    example
        .replace("0.0.0.0:80", &http.to_string())
        .replace("127.0.0.1:9900", &admin.to_string())
        .replace("10.0.0.11:8080", &backends[0].addr.to_string())
        .replace("10.0.0.12:8080", &backends[1].addr.to_string())
        .replace("interval: 2s", "interval: 200ms")
}

fn write_config(path: &Path, yaml: &str) {
    std::fs::write(path, yaml).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Port 80 on a loopback address of this process's own, so parallel runs do not collide.
fn port_80() -> SocketAddr {
    let pid = std::process::id();
    SocketAddr::from(([127, 80, (pid >> 8) as u8, pid as u8], 80))
}

/// The socket systemd would listen on for notifications.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        // The service's user must be able to send to it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        NotifySocket { socket, path }
    }

    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Reads messages until one has the line `wanted`; returns it.
    fn expect(&self, wanted: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(message) if message.lines().any(|l| l == wanted) => return message,
                Some(message) => seen.push(message),
                None => break,
            }
        }
        panic!("no {wanted} within {timeout:?}; got {seen:?}");
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// `Key:` of `/proc/PID/status`.
fn proc_status(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn systemd_analyze_accepts_the_unit_and_rates_its_sandbox_ok() {
    if !tool_available("systemd_analyze", "systemd-analyze", &["--version"]) {
        return;
    }
    let dir = open_dir();
    let config = dir.path().join("berth.yaml");
    std::fs::copy(repo_path("conf/systemd/berth.yaml"), &config).unwrap();
    let unit = dir.path().join("berth.service");
    std::fs::write(&unit, unit_for(&config)).unwrap();

    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{complaints}");
    assert!(complaints.trim().is_empty(), "warnings: {complaints}");

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let overall = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for berth.service: "))
        .map(|(_, rest)| rest.to_owned())
        .unwrap_or_else(|| panic!("no overall rating:\n{report}"));
    let exposure: f64 = overall.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        exposure <= 2.0 && overall.contains("OK"),
        "exposure {overall}:\n{report}"
    );
}

#[tokio::test]
async fn the_units_command_lines_start_reload_and_stop_berth_and_notify_systemd() {
    if !tool_available("unit_command_lines", "setpriv", &["--version"]) {
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED unit_command_lines: switching to the service's user needs root; this test was NOT run");
        return;
    }
    let (a, b) = (Whoami::start("a"), Whoami::start("b"));
    let (http, admin) = (port_80(), free_addr());
    let dir = open_dir();
    let config = dir.path().join("berth.yaml");
    let yaml = example_config(http, admin, [&a, &b]);
    write_config(&config, &yaml);
    let unit = unit_for(&config);
    assert_eq!(settings(&unit, "Type"), ["notify"]);

    for command in commands(&unit, "ExecStartPre") {
        let out = run(&command);
        assert!(out.status.success(), "{command:?}: {out:?}");
    }

    // ExecStart as the unit runs it: another user, only the unit's capability, no way to
    // gain more.
    assert_eq!(settings(&unit, "NoNewPrivileges"), ["yes"]);
    let capability = settings(&unit, "AmbientCapabilities")[0]
        .to_ascii_lowercase()
        .replace("cap_", "");
    assert_eq!(
        settings(&unit, "CapabilityBoundingSet")[0],
        settings(&unit, "AmbientCapabilities")[0]
    );
    let caps = format!("-all,+{capability}");
    let notify = NotifySocket::bind(dir.path());
    let start = &commands(&unit, "ExecStart")[0];
    let mut berth = Process::spawn(
        "berth (ExecStart)",
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args([
                format!("--inh-caps={caps}"),
                format!("--ambient-caps={caps}"),
                format!("--bounding-set={caps}"),
            ])
            .args(["--no-new-privs", "--"])
            .args(start)
            .env("NOTIFY_SOCKET", &notify.path),
        dir.path().join("berth.log"),
    );
    let pid = berth.child.id();

    let ready = notify.expect("READY=1", Duration::from_secs(20));
    assert!(ready.contains("STATUS=serving 1 services"), "{ready}");
    let (status, _) = admin_get(admin, "/readyz").expect("admin answers");
    assert_eq!(status, 200, "READY=1 only once /readyz says ready");
    assert_eq!(
        proc_status(pid, "Uid").split_whitespace().next(),
        Some("65534")
    );
    for set in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(
            proc_status(pid, set),
            "0000000000000400",
            "{set}: CAP_NET_BIND_SERVICE alone"
        );
    }
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    berth_wait_healthy(admin, 2);
    let reply = get(&client(), &format!("http://{http}/"), "app.example.com")
        .await
        .unwrap();
    assert_eq!(
        reply.status, 200,
        "served on port 80 by an unprivileged user"
    );

    // systemctl reload: check, then SIGHUP; systemd hears RELOADING=1, then READY=1.
    let reload = |expect_check: bool| {
        for command in commands(&unit, "ExecReload") {
            let command: Vec<String> = command
                .iter()
                .map(|word| word.replace("$MAINPID", &pid.to_string()))
                .collect();
            let out = run(&command);
            if !out.status.success() {
                assert!(!expect_check, "{command:?}: {out:?}");
                // systemd stops a reload at its first failing command.
                return String::from_utf8_lossy(&out.stderr).into_owned();
            }
        }
        assert!(expect_check, "a bad config passed ExecReload's check");
        String::new()
    };
    write_config(
        &config,
        &format!(
            "{yaml}  - name: extra\n    domains: [\"extra.example.com\"]\n    backends:\n      - address: \"{}\"\n",
            a.addr
        ),
    );
    reload(true);
    let reloading = notify.expect("RELOADING=1", Duration::from_secs(5));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let again = notify.expect("READY=1", Duration::from_secs(10));
    assert!(again.contains("STATUS=config re-read"), "{again}");
    wait_for("the reloaded service", Duration::from_secs(5), || {
        admin_get(admin, "/api/routes").is_some_and(|(_, body)| body.contains("extra.example.com"))
    });

    // A bad edit stops at the check: berth never sees it and keeps serving.
    write_config(
        &config,
        &yaml.replace("grace_period: 10s", "grace_period: soon"),
    );
    let refused = reload(false);
    assert!(refused.contains("grace_period"), "{refused}");
    assert_eq!(
        notify.next(Duration::from_millis(300)),
        None,
        "no reload began"
    );
    assert!(admin_get(admin, "/api/routes")
        .unwrap()
        .1
        .contains("extra.example.com"));

    // systemctl stop: KillSignal, STOPPING=1, exit 0 well within TimeoutStopSec.
    let signal = settings(&unit, "KillSignal")[0]
        .trim_start_matches("SIG")
        .to_owned();
    berth.signal(&signal);
    notify.expect("STOPPING=1", Duration::from_secs(5));
    let status = berth.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
}

/// Waits until `/api/routes` shows `n` healthy backends.
fn berth_wait_healthy(admin: SocketAddr, n: usize) {
    wait_for("healthy backends", Duration::from_secs(10), || {
        admin_get(admin, "/api/routes")
            .is_some_and(|(_, body)| body.matches("\"healthy\"").count() >= n)
    });
}

/// The system calls of a systemd syscall group, groups within it expanded.
fn syscall_group(group: &str, into: &mut BTreeSet<String>) {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", group])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {group}"
    );
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if name.starts_with('@') {
            syscall_group(name, into);
        } else {
            into.insert(name.to_owned());
        }
    }
}

#[tokio::test]
async fn berth_stays_inside_the_units_system_call_and_file_limits() {
    if !tool_available("unit_limits", "strace", &["-V"])
        || !tool_available("unit_limits", "systemd-analyze", &["--version"])
    {
        return;
    }
    let unit = std::fs::read_to_string(repo_path(UNIT)).unwrap();
    let (mut allowed, mut denied) = (BTreeSet::new(), BTreeSet::new());
    for filter in settings(&unit, "SystemCallFilter") {
        let (set, groups) = match filter.strip_prefix('~') {
            Some(groups) => (&mut denied, groups),
            None => (&mut allowed, filter),
        };
        for group in groups.split_whitespace() {
            syscall_group(group, set);
        }
    }
    assert!(allowed.len() > 100 && !denied.is_empty());
    let families: Vec<&str> = settings(&unit, "RestrictAddressFamilies")[0]
        .split_whitespace()
        .collect();

    let (a, b) = (Whoami::start("a"), Whoami::start("b"));
    let (http, admin) = (free_addr(), free_addr());
    let dir = open_dir();
    let config = dir.path().join("berth.yaml");
    let yaml = example_config(http, admin, [&a, &b]);
    write_config(&config, &yaml);
    let notify = NotifySocket::bind(dir.path());
    let trace = dir.path().join("trace");
    let mut strace = Process::spawn(
        "strace berth",
        Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&trace)
            .args(["--", BERTH, "serve", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify.path),
        dir.path().join("berth.log"),
    );
    notify.expect("READY=1", Duration::from_secs(30));
    let berth_pid: u32 =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.child.id()))
            .unwrap()
            .trim()
            .parse()
            .expect("strace runs berth");

    // Everything a serving berth does: probes, proxying, every admin page, a reload, a stop.
    berth_wait_healthy(admin, 2);
    let client = client();
    for _ in 0..5 {
        let reply = get(&client, &format!("http://{http}/"), "app.example.com")
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
    for path in ["/", "/metrics", "/api/routes", "/readyz"] {
        assert_eq!(admin_get(admin, path).map(|(s, _)| s), Some(200), "{path}");
    }
    let kill = |signal: &str| {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &berth_pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    kill("HUP");
    notify.expect("RELOADING=1", Duration::from_secs(5));
    notify.expect("READY=1", Duration::from_secs(10));
    kill("TERM");
    let status = strace.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", strace.log());

    let trace = std::fs::read_to_string(&trace).unwrap();
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for line in trace.lines() {
        // "PID name(args) = result", or "PID <... name resumed> ..." for a call strace split.
        let call = line
            .split_once(' ')
            .map_or(line, |(_, rest)| rest)
            .trim_start();
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            continue;
        }
        used.insert(name.to_owned());
        if name == "socket" {
            let family = args.split(',').next().unwrap_or_default();
            if !families.contains(&family) {
                problems.push(format!(
                    "socket family outside RestrictAddressFamilies: {line}"
                ));
            }
        }
        if matches!(name, "mmap" | "mprotect" | "pkey_mprotect")
            && args.contains("PROT_WRITE")
            && args.contains("PROT_EXEC")
        {
            problems.push(format!("writable and executable memory: {line}"));
        }
        if matches!(name, "open" | "openat" | "openat2" | "creat")
            && ["O_WRONLY", "O_RDWR", "O_CREAT"]
                .iter()
                .any(|flag| args.contains(flag))
        {
            problems.push(format!("a file opened for writing: {line}"));
        }
    }
    assert!(used.len() > 30, "the trace has berth's calls: {used:?}");
    for name in &used {
        if !allowed.contains(name) {
            problems.push(format!("{name} is outside SystemCallFilter's allow list"));
        }
        if denied.contains(name) {
            problems.push(format!("{name} is in SystemCallFilter's deny list"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
