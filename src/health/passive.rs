//! Passive health (outlier ejection) of one backend: real requests that fail in a row take it
//! out of rotation for a while, doubling on repeat, before a probe would notice.
//!
//! The per-backend state machine lives here; the limits that span a service (never eject
//! more than `max_ejected_percent`, never the last routable backend) are applied by the
//! upstream, which sees all of its backends. After an ejection ends the backend is on
//! probation: its next outcome decides whether it is back for good or ejected again at once.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::clock::{instant_at, nanos_since_epoch};
use crate::model::policy::PassiveHealthSpec;

/// Why and until when a backend is ejected, for operators.
#[derive(Clone, Debug)]
pub struct Ejection {
    pub reason: String,
    pub until: SystemTime,
}

#[derive(Default)]
pub struct PassiveState {
    consecutive_failures: AtomicU32,
    /// End of the current ejection in [`super::clock`] nanoseconds; 0: not ejected.
    ejected_until: AtomicU64,
    /// Ejections since the backend last proved itself: each doubles the next one.
    streak: AtomicU32,
    probation: AtomicBool,
    /// Boxed: most backends are never ejected, and there is a state per backend.
    last: Mutex<Option<Box<Ejection>>>,
}

impl PassiveState {
    /// Whether the backend is out of rotation right now.
    pub fn is_ejected(&self, now: Instant) -> bool {
        match self.ejected_until.load(Relaxed) {
            0 => false,
            until => now < instant_at(until),
        }
    }

    /// [`Self::is_ejected`] without reading the clock for a backend that was never ejected:
    /// the data path asks this of every candidate.
    pub fn is_ejected_now(&self) -> bool {
        match self.ejected_until.load(Relaxed) {
            0 => false,
            until => Instant::now() < instant_at(until),
        }
    }

    /// The current ejection, if the backend is ejected.
    pub fn ejection(&self, now: Instant) -> Option<Ejection> {
        if !self.is_ejected(now) {
            return None;
        }
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .cloned()
    }

    /// A request succeeded: the failure streak ends, and a backend on probation is back.
    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Relaxed);
        if self.probation.swap(false, Relaxed) {
            self.streak.store(0, Relaxed);
        }
    }

    /// A request failed. `true` when this failure calls for an ejection: the streak reached
    /// `consecutive_failures`, or the backend failed on probation.
    pub fn record_failure(&self, spec: &PassiveHealthSpec, now: Instant) -> bool {
        if self.is_ejected(now) {
            return false;
        }
        if self.probation.load(Relaxed) {
            return true;
        }
        let failures = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        failures >= spec.consecutive_failures
    }

    /// Takes the backend out until its ejection (doubling with each repeat) ends.
    pub fn eject(&self, spec: &PassiveHealthSpec, reason: String, now: Instant) -> Duration {
        let streak = self.streak.fetch_add(1, Relaxed).min(16);
        let length = spec
            .ejection
            .saturating_mul(1 << streak)
            .min(spec.max_ejection);
        self.consecutive_failures.store(0, Relaxed);
        self.probation.store(true, Relaxed);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(Ejection {
            reason,
            until: SystemTime::now() + length,
        }));
        self.ejected_until
            .store(nanos_since_epoch(now + length), Relaxed);
        length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PassiveHealthSpec {
        PassiveHealthSpec {
            consecutive_failures: 3,
            ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(35),
            ..PassiveHealthSpec::default()
        }
    }

    #[test]
    fn consecutive_failures_call_for_ejection_and_a_success_resets_them() {
        let (s, now) = (PassiveState::default(), Instant::now());
        assert!(!s.record_failure(&spec(), now));
        assert!(!s.record_failure(&spec(), now));
        s.record_success();
        assert!(!s.record_failure(&spec(), now));
        assert!(!s.record_failure(&spec(), now));
        assert!(s.record_failure(&spec(), now));
    }

    #[test]
    fn ejections_double_up_to_the_maximum_and_probation_decides() {
        let (s, now) = (PassiveState::default(), Instant::now());
        assert_eq!(s.eject(&spec(), "503".into(), now), Duration::from_secs(10));
        assert!(s.is_ejected(now + Duration::from_secs(9)));
        let back = now + Duration::from_secs(11);
        assert!(!s.is_ejected(back), "the ejection ends by itself");
        assert!(s.record_failure(&spec(), back), "one failure on probation");
        assert_eq!(
            s.eject(&spec(), "503".into(), back),
            Duration::from_secs(20)
        );
        let back = back + Duration::from_secs(21);
        assert!(s.record_failure(&spec(), back));
        assert_eq!(
            s.eject(&spec(), "503".into(), back),
            Duration::from_secs(35),
            "capped"
        );
        let back = back + Duration::from_secs(36);
        s.record_success();
        assert!(
            !s.record_failure(&spec(), back),
            "proved itself: a fresh streak"
        );
        assert_eq!(s.eject(&spec(), "x".into(), back), Duration::from_secs(10));
    }
}
