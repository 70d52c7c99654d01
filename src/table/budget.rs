//! A service's retry budget: retries may be at most a share of its requests over the last
//! [`RETRY_BUDGET_WINDOW`] (with a floor of [`RETRY_BUDGET_MIN_PER_SECOND`]), so when every
//! backend fails, retries cannot multiply the load on them (linkerd's and Envoy's budgets).
//!
//! One slot per second of the window, each stamped with its second, so counting is a relaxed
//! add and a stale slot is reset by whoever first writes it in a new second.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::health::clock::nanos_since_epoch;
use crate::model::policy::{RetryBudget, RETRY_BUDGET_MIN_PER_SECOND, RETRY_BUDGET_WINDOW};

const SLOTS: usize = RETRY_BUDGET_WINDOW.as_secs() as usize;

#[derive(Default)]
struct Slot {
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

#[derive(Default)]
pub struct RetryBudgetWindow {
    slots: [Slot; SLOTS],
}

fn second(now: Instant) -> u64 {
    nanos_since_epoch(now) / 1_000_000_000
}

impl RetryBudgetWindow {
    fn slot(&self, now: Instant) -> &Slot {
        let second = second(now);
        let slot = &self.slots[(second % SLOTS as u64) as usize];
        if slot.second.load(Relaxed) != second && slot.second.swap(second, Relaxed) != second {
            slot.requests.store(0, Relaxed);
            slot.retries.store(0, Relaxed);
        }
        slot
    }

    pub fn record_request(&self, now: Instant) {
        self.slot(now).requests.fetch_add(1, Relaxed);
    }

    /// Spends one retry if the budget has one left.
    pub fn try_retry(&self, budget: &RetryBudget, now: Instant) -> bool {
        let current = second(now);
        let (mut requests, mut retries) = (0u64, 0u64);
        for slot in &self.slots {
            if current.saturating_sub(slot.second.load(Relaxed)) < SLOTS as u64 {
                requests += u64::from(slot.requests.load(Relaxed));
                retries += u64::from(slot.retries.load(Relaxed));
            }
        }
        let allowed = (requests * u64::from(budget.percent) / 100)
            .max(u64::from(RETRY_BUDGET_MIN_PER_SECOND) * SLOTS as u64);
        if retries >= allowed {
            return false;
        }
        self.slot(now).retries.fetch_add(1, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retries_are_a_share_of_requests_with_a_floor() {
        let window = RetryBudgetWindow::default();
        let budget = RetryBudget { percent: 20 };
        let now = Instant::now();
        let floor = RETRY_BUDGET_MIN_PER_SECOND as usize * SLOTS;
        for _ in 0..floor {
            assert!(window.try_retry(&budget, now));
        }
        assert!(!window.try_retry(&budget, now), "the floor is spent");
        for _ in 0..1000 {
            window.record_request(now);
        }
        let more = (0..1000).filter(|_| window.try_retry(&budget, now)).count();
        assert_eq!(more, 200 - floor, "20% of 1,000 requests in all");
        let later = now + RETRY_BUDGET_WINDOW + Duration::from_secs(1);
        assert!(window.try_retry(&budget, later), "the window moved on");
    }
}
