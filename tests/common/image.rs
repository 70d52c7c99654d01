//! The production image without a registry: the Dockerfile's `runtime` stage, verbatim, built
//! on any engine (the host's, or a Swarm node's). Its `build` stage (the Rust compile) needs a
//! registry (rust image, apt, crates.io); here it is replaced by an image holding this test
//! run's `berth` binary under `/out/` (debug info stripped, as the `build` stage does), and
//! `RUNTIME_BASE` by an image of the binary's shared libraries, both made with `docker import`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{repo_path, BERTH};

const BASE: &str = "berth-test-runtime-base:latest";
const BINARY: &str = "berth-test-binary:latest";

/// `docker` on the engine at `host` (`None`: the CLI's default, the host's engine).
fn docker(host: Option<&str>) -> Command {
    let mut command = Command::new("docker");
    if let Some(host) = host {
        command.args(["-H", host]);
    }
    command
}

/// `docker import`s a directory as an image.
fn import(host: Option<&str>, dir: &Path, tag: &str) {
    let mut import = docker(host)
        .args(["import", "-", tag])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["-c", "."])
        .stdout(import.stdin.take().unwrap())
        .status()
        .unwrap();
    assert!(
        tar.success() && import.wait().unwrap().success(),
        "docker import {tag}"
    );
}

/// The shared libraries `binary` loads (from `ldd`), copied into `root`.
fn copy_libraries(binary: &Path, root: &Path) {
    let ldd = Command::new("ldd").arg(binary).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|word| word.starts_with('/'))
            .map(Path::new);
        if let Some(path) = path {
            let target = root.join(path.strip_prefix("/").unwrap());
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(path, target).unwrap();
        }
    }
}

/// This run's binary without debug info (what the Dockerfile's `build` stage installs), made
/// once per test process: a debug build is 200 MB, stripped a quarter of that.
fn stripped_binary() -> &'static Path {
    static STRIPPED: OnceLock<PathBuf> = OnceLock::new();
    STRIPPED.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let stripped = dir.join("berth-stripped");
        let partial = dir.join(format!("berth-stripped.{}", std::process::id()));
        let status = Command::new("strip")
            .args(["--strip-debug", "-o"])
            .arg(&partial)
            .arg(BERTH)
            .status()
            .expect("strip (binutils) is installed");
        assert!(status.success(), "strip --strip-debug {BERTH}");
        std::fs::rename(&partial, &stripped).unwrap();
        stripped
    })
}

/// Builds the Dockerfile's runtime stage as `tag` on the engine at `host`.
pub fn build(host: Option<&str>, tag: &str) {
    let binary = stripped_binary();
    let base = tempfile::tempdir().unwrap();
    copy_libraries(binary, base.path());
    std::fs::create_dir_all(base.path().join("tmp")).unwrap();
    import(host, base.path(), BASE);

    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out");
    std::fs::create_dir_all(out.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(out.join("etc/ssl/certs")).unwrap();
    std::fs::copy(binary, out.join("usr/local/bin/berth")).unwrap();
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        out.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .unwrap();
    // As the build stage makes it: berth's ACME storage, owned by its user, 0700.
    let acme = out.join("var/lib/berth/acme");
    std::fs::create_dir_all(&acme).unwrap();
    std::os::unix::fs::chown(&acme, Some(10001), Some(10001)).unwrap();
    std::fs::set_permissions(&acme, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    import(host, out_dir.path(), BINARY);

    let dockerfile = std::fs::read_to_string(repo_path("Dockerfile")).unwrap();
    let runtime = &dockerfile[dockerfile
        .find("FROM ${RUNTIME_BASE} AS runtime")
        .expect("the Dockerfile has a runtime stage")..];
    let generated = format!("ARG RUNTIME_BASE\nFROM {BINARY} AS build\n{runtime}");
    let mut build = docker(host)
        .args([
            "build",
            "-q",
            "-f",
            "-",
            "--build-arg",
            &format!("RUNTIME_BASE={BASE}"),
            "-t",
            tag,
        ])
        .arg(repo_path(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    build
        .stdin
        .take()
        .unwrap()
        .write_all(generated.as_bytes())
        .unwrap();
    assert!(
        build.wait().unwrap().success(),
        "docker build of the runtime stage"
    );
}
