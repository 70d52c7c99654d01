//! The published route table: one atomic pointer the data path reads lock-free, swapped whole
//! by the control plane.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::Notify;

use super::RouteTable;

pub struct LiveTable {
    table: ArcSwap<RouteTable>,
    /// Woken whenever a new table is published (the probe driver probes new backends at once).
    pub changed: Notify,
    complete: AtomicBool,
}

impl Default for LiveTable {
    fn default() -> Self {
        Self {
            table: ArcSwap::from_pointee(RouteTable::default()),
            changed: Notify::new(),
            complete: AtomicBool::new(false),
        }
    }
}

impl LiveTable {
    /// The live table, for background work that may hold it across awaits.
    pub fn load_full(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// The live table, for one request's routing decision (cheaper than [`Self::load_full`]).
    pub fn load(&self) -> Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// Publishes a new table atomically; requests already routed keep the one they read.
    /// `complete` says every source has contributed (readiness waits for that).
    pub fn publish(&self, table: RouteTable, complete: bool) {
        self.table.store(Arc::new(table));
        if complete {
            self.complete.store(true, Ordering::Release);
        }
        self.changed.notify_waiters();
    }

    /// Whether a table with every source's routes has been published.
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }
}
