//! State shared by the data path, the control plane and the admin listener.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::Notify;

use crate::config::ListenerConfig;
use crate::metrics::Metrics;
use crate::probe::ProbeCache;
use crate::router::RouteTable;

pub struct Shared {
    table: ArcSwap<RouteTable>,
    /// Woken whenever a new table is published (the health driver probes new backends at once).
    pub table_changed: Notify,
    pub metrics: Arc<Metrics>,
    pub probes: ProbeCache,
    /// Whether the data path records metrics (`admin.metrics`).
    pub record_metrics: bool,
    pub listeners: Vec<ListenerConfig>,
    inflight: AtomicUsize,
    loaded: AtomicBool,
    shutting_down: AtomicBool,
}

impl Shared {
    pub fn new(
        listeners: Vec<ListenerConfig>,
        metrics: Arc<Metrics>,
        record_metrics: bool,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            table: ArcSwap::from_pointee(RouteTable::default()),
            table_changed: Notify::new(),
            metrics,
            probes: ProbeCache::default(),
            record_metrics,
            listeners,
            inflight: AtomicUsize::new(0),
            loaded: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// The live table, for background work that may hold it across awaits.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// The live table, for one request's routing decision (cheaper than [`Self::table`]).
    pub fn table_guard(&self) -> Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// Publishes a new table atomically; requests already routed keep the one they read.
    /// `complete` says every source has contributed (readiness waits for that).
    pub fn publish(&self, table: RouteTable, complete: bool) {
        self.table.store(Arc::new(table));
        if complete {
            self.loaded.store(true, Ordering::Release);
        }
        self.table_changed.notify_waiters();
    }

    /// Whether a route table has been loaded.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

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
pub struct InflightGuard(Arc<Shared>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Release);
    }
}
