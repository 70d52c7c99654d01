//! berth built in-process through `App`, with a scripted route source beside the config file:
//! the seam a new source is tested through before it meets a real engine. The scripted source
//! publishes snapshots on command; the test watches a real client's requests follow them.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use tokio::sync::{mpsc, oneshot};

use berth::app::App;
use berth::model::{BackendSpec, PolicyLayer, ServiceSpec, Snapshot, SourceKind};
use berth::sources::{Feed, Source};
use common::*;

/// Publishes whatever the test sends it.
struct Scripted(Mutex<Option<mpsc::UnboundedReceiver<Snapshot>>>);

#[async_trait]
impl Source for Scripted {
    fn kind(&self) -> SourceKind {
        SourceKind::Docker
    }

    async fn run(&self, feed: Feed, mut shutdown: ShutdownWatch) {
        let mut script = self.0.lock().unwrap().take().expect("run once");
        loop {
            tokio::select! {
                Some(snapshot) = script.recv() => feed.publish(snapshot),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Stops the server when the test says so.
struct StopWhenTold(Mutex<Option<oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for StopWhenTold {
    async fn recv(&self) -> ShutdownSignal {
        let told = self.0.lock().unwrap().take().expect("asked once");
        let _ = told.await;
        ShutdownSignal::FastShutdown
    }
}

fn routes_to(backend: &Whoami) -> Snapshot {
    let mut policy = PolicyLayer::default();
    policy.health_check.kind = Some(berth::model::policy::ProbeKind::None);
    Snapshot::of(
        vec![ServiceSpec {
            name: "scripted".into(),
            domains: vec!["scripted.test".into()],
            path_prefix: "/".into(),
            listeners: None,
            policy,
            backends: vec![BackendSpec::new(backend.addr)],
            source: SourceKind::Docker,
        }],
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_source_drives_a_real_berth_in_process() {
    let (a, b) = (Whoami::start("a"), Whoami::start("b"));
    let (http, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.yaml");
    std::fs::write(
        &path,
        LISTENERS
            .replace("{http}", &http.to_string())
            .replace("{admin}", &admin.to_string()),
    )
    .unwrap();

    let (script, script_rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = oneshot::channel();
    // `App` loads and runs on a thread of its own, as `berth serve` does on its main thread.
    let server = std::thread::spawn(move || {
        App::load(path)?
            .with_source(Box::new(Scripted(Mutex::new(Some(script_rx)))))
            .run_until(Box::new(StopWhenTold(Mutex::new(Some(stop_rx)))))
    });

    wait_for("the admin listener", Duration::from_secs(10), || {
        admin_get(admin, "/readyz").is_some()
    });
    let (status, body) = admin_get(admin, "/readyz").unwrap();
    assert_eq!(status, 503, "the scripted source has not published: {body}");

    script.send(routes_to(&a)).unwrap();
    wait_for("readiness", Duration::from_secs(10), || {
        admin_get(admin, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    let client = client();
    let url = format!("http://{http}/");
    let reply = get(&client, &url, "scripted.test").await.unwrap();
    assert_eq!(reply.backend(), Some("a"));

    script.send(routes_to(&b)).unwrap();
    let mut served_by_b = false;
    for _ in 0..100 {
        let reply = get(&client, &url, "scripted.test").await.unwrap();
        if reply.backend() == Some("b") {
            served_by_b = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served_by_b, "the second publication moved the route to b");

    // No keep-alive connection left open across the fast shutdown.
    drop(client);
    stop.send(()).unwrap();
    server.join().unwrap().unwrap();
}
