//! The process's lifecycle as the data path sees it: how many requests are in flight, and
//! whether berth is shutting down (readiness says so, SIGTERM waits for the count to reach 0).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub struct Lifecycle {
    inflight: AtomicUsize,
    shutting_down: AtomicBool,
}

impl Lifecycle {
    pub fn request_started(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(Arc::clone(self))
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// Counts one request as in flight until dropped, so shutdown can wait for it.
pub struct InflightGuard(Arc<Lifecycle>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Release);
    }
}
