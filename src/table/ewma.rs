//! A backend's response latency as the `ewma` algorithm weighs it. A leaf the member holds and
//! the selector reads.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::health::clock::nanos_since_epoch;

/// A backend's peak-EWMA response latency (Finagle's and linkerd's `PeakEwma`): a slower
/// response raises the estimate at once, faster ones pull it down with time constant
/// [`LATENCY_DECAY`], and reading it decays it too, so a backend that got no traffic while it
/// looked slow is tried again.
pub struct PeakEwma {
    /// Estimate in nanoseconds, as `f64` bits.
    estimate: AtomicU64,
    /// When the estimate was last updated, in [`crate::health::clock`] nanoseconds.
    stamp: AtomicU64,
}

/// How fast the estimate forgets: within about a second a recovered backend looks fast again.
pub const LATENCY_DECAY: Duration = Duration::from_secs(1);

/// A new backend's estimate before its first response: neither flooded nor starved.
const INITIAL_LATENCY: Duration = Duration::from_millis(5);

impl Default for PeakEwma {
    fn default() -> Self {
        Self {
            estimate: AtomicU64::new((INITIAL_LATENCY.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(nanos_since_epoch(Instant::now())),
        }
    }
}

impl PeakEwma {
    fn decayed(&self, now: Instant, toward: f64) -> f64 {
        let previous = f64::from_bits(self.estimate.load(Relaxed));
        let elapsed = nanos_since_epoch(now).saturating_sub(self.stamp.load(Relaxed)) as f64;
        let keep = (-elapsed / LATENCY_DECAY.as_nanos() as f64).exp();
        previous * keep + toward * (1.0 - keep)
    }

    /// Records one response's latency (to its header).
    pub fn observe(&self, latency: Duration, now: Instant) {
        let sample = latency.as_nanos() as f64;
        let previous = f64::from_bits(self.estimate.load(Relaxed));
        let next = if sample > previous {
            sample
        } else {
            self.decayed(now, sample)
        };
        self.estimate.store(next.to_bits(), Relaxed);
        self.stamp.store(nanos_since_epoch(now), Relaxed);
    }

    /// The estimate now, in nanoseconds (never below one, so load still counts).
    pub fn estimate(&self, now: Instant) -> f64 {
        self.decayed(now, 0.0).max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let ewma = PeakEwma::default();
        let t0 = Instant::now();
        ewma.observe(Duration::from_millis(100), t0);
        assert!(
            (ewma.estimate(t0) - 100e6).abs() < 1e6,
            "a slow response counts at once"
        );
        let later = t0 + LATENCY_DECAY * 3;
        ewma.observe(Duration::from_millis(1), later);
        assert!(ewma.estimate(later) < 10e6, "{}", ewma.estimate(later));
        assert!(
            ewma.estimate(t0 + LATENCY_DECAY * 20) < 1e3,
            "unused, it is tried again"
        );
    }
}
