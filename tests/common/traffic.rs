//! Steady client traffic for churn tests: keep-alive and new-connection clients in loops,
//! counting every answer by status and every connection error, so a test can assert that
//! nothing a client would notice went wrong.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the clients saw.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Answers by status code.
    pub statuses: BTreeMap<u16, usize>,
    /// Connection errors, timeouts, truncated bodies.
    pub errors: usize,
}

impl Counts {
    pub fn ok(&self) -> usize {
        self.statuses.get(&200).copied().unwrap_or(0)
    }

    /// Everything but a 200.
    pub fn failed(&self) -> usize {
        self.errors
            + self
                .statuses
                .iter()
                .filter(|(s, _)| **s != 200)
                .map(|(_, n)| n)
                .sum::<usize>()
    }
}

pub struct Traffic {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// `clients` keep-alive and `clients` new-connection-per-request loops, each sending
    /// `method` (POST with a small body) to `url` with `Host: host`.
    pub fn start(url: &str, host: &str, method: reqwest::Method, clients: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let mut tasks = Vec::new();
        for fresh in [false, true] {
            for _ in 0..clients {
                let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
                if fresh {
                    builder = builder.pool_max_idle_per_host(0);
                }
                let client = builder.build().unwrap();
                let (url, host, method) = (url.to_owned(), host.to_owned(), method.clone());
                let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let mut request =
                            client.request(method.clone(), &url).header("host", &host);
                        if method == reqwest::Method::POST {
                            request = request.body("payload=1");
                        }
                        let outcome = match request.send().await {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                response.bytes().await.map(|_| status)
                            }
                            Err(e) => Err(e),
                        };
                        let mut counts = counts.lock().unwrap();
                        match outcome {
                            Ok(status) => *counts.statuses.entry(status).or_default() += 1,
                            Err(e) => {
                                eprintln!("traffic: {e}");
                                counts.errors += 1;
                            }
                        }
                    }
                }));
            }
        }
        Traffic {
            stop,
            counts,
            tasks,
        }
    }

    /// What the clients saw so far.
    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    pub async fn finish(self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.counts).unwrap().into_inner().unwrap()
    }
}
