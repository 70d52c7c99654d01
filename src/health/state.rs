//! Backend health: the state machine each backend runs through under active probes, and when
//! its next probe is due. A leaf: it knows the probe spec and nothing of tables or sources.
//!
//! Why berth keeps its own state instead of Pingora's `Health`: Pingora starts every backend
//! healthy and offers no way to start it unhealthy, so a new container would take traffic
//! before it could answer. berth's state starts at [`HealthStatus::Starting`] and only a passing
//! probe admits a backend. An upstream fix would be a `Health` initial state (e.g. a
//! `Backends::new_with_initial_health(false)`) plus per-check results and timings exposed to
//! callers; with both, this module would shrink to the scheduling.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::clock::{epoch, nanos_since_epoch};
use crate::model::policy::{HealthCheckSpec, ProbeKind};

/// Probe interval of a backend that has not passed its first probes yet.
pub const STARTING_INTERVAL: Duration = Duration::from_millis(250);

/// What the probes say about a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    /// Joined, no verdict yet: gets no traffic.
    Starting = 0,
    Up = 1,
    Down = 2,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Up => "healthy",
            Self::Down => "unhealthy",
        }
    }

    fn from_u8(raw: u8) -> Self {
        match raw {
            1 => Self::Up,
            2 => Self::Down,
            _ => Self::Starting,
        }
    }
}

/// The last probe of a backend, for operators.
#[derive(Clone, Debug)]
pub struct ProbeOutcome {
    pub at: SystemTime,
    pub passed: bool,
    pub detail: String,
    pub duration: Duration,
}

/// One backend's health. Only the probe driver writes it, and never for one backend twice at a
/// time, so plain atomic loads and stores suffice; the data path only loads `status`.
#[derive(Debug)]
pub struct HealthState {
    status: AtomicU8,
    passes: AtomicU32,
    failures: AtomicU32,
    /// Boxed: a backend without probes never has one, and there is a state per backend.
    last: Mutex<Option<Box<ProbeOutcome>>>,
    /// Earliest next probe, in nanoseconds since [`epoch`].
    next_probe: AtomicU64,
    probing: AtomicBool,
}

impl HealthState {
    /// A backend that has just joined: `Starting`, first probe after `initial_delay`. With no
    /// probe configured it is `Up` at once.
    pub fn joining(spec: &HealthCheckSpec) -> Self {
        let status = if spec.kind == ProbeKind::None {
            HealthStatus::Up
        } else {
            HealthStatus::Starting
        };
        Self {
            status: AtomicU8::new(status as u8),
            passes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            last: Mutex::new(None),
            next_probe: AtomicU64::new(nanos_since_epoch(Instant::now() + spec.initial_delay)),
            probing: AtomicBool::new(false),
        }
    }

    pub fn status(&self) -> HealthStatus {
        HealthStatus::from_u8(self.status.load(Relaxed))
    }

    pub fn last_probe(&self) -> Option<ProbeOutcome> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .cloned()
    }

    /// Applies one probe result; returns the new status if it changed.
    ///
    /// `healthy_threshold` consecutive passes bring a starting or unhealthy backend up;
    /// `unhealthy_threshold` consecutive failures take a starting or healthy one down.
    pub fn observe(&self, passed: bool, spec: &HealthCheckSpec) -> Option<HealthStatus> {
        let status = self.status();
        let (streak, other, threshold, target) = if passed {
            (
                &self.passes,
                &self.failures,
                spec.healthy_threshold,
                HealthStatus::Up,
            )
        } else {
            (
                &self.failures,
                &self.passes,
                spec.unhealthy_threshold,
                HealthStatus::Down,
            )
        };
        other.store(0, Relaxed);
        let count = streak.load(Relaxed).saturating_add(1);
        streak.store(count, Relaxed);
        if status != target && count >= threshold {
            self.status.store(target as u8, Relaxed);
            Some(target)
        } else {
            None
        }
    }

    /// Marks the backend up without a probe (the service stopped probing).
    pub fn force_up(&self) {
        self.status.store(HealthStatus::Up as u8, Relaxed);
    }

    pub fn record(&self, outcome: ProbeOutcome) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.as_deref_mut() {
            Some(previous) => *previous = outcome,
            None => *last = Some(Box::new(outcome)),
        }
    }

    /// Claims the next probe if it is due; otherwise says when it will be.
    pub fn claim_if_due(&self, now: Instant) -> Result<(), Instant> {
        let due = epoch() + Duration::from_nanos(self.next_probe.load(Relaxed));
        if self.probing.load(Relaxed) {
            return Err(now + Duration::from_millis(100));
        }
        if due > now {
            return Err(due);
        }
        self.probing.store(true, Relaxed);
        Ok(())
    }

    /// Ends the claimed probe; the next is due at `next`.
    pub fn release(&self, next: Instant) {
        self.next_probe.store(nanos_since_epoch(next), Relaxed);
        self.probing.store(false, Relaxed);
    }

    /// Time to the next probe: a backend still waiting for its first verdict (a container
    /// whose server is not listening yet) is re-probed sooner, like HAProxy's `fastinter`.
    pub fn next_probe_in(&self, spec: &HealthCheckSpec) -> Duration {
        match self.status() {
            HealthStatus::Starting => spec.interval.min(STARTING_INTERVAL),
            _ => spec.interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(healthy: u32, unhealthy: u32) -> HealthCheckSpec {
        HealthCheckSpec {
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
            ..HealthCheckSpec::default()
        }
    }

    #[test]
    fn a_new_backend_waits_for_healthy_threshold_passes() {
        let spec = spec(2, 2);
        let h = HealthState::joining(&spec);
        assert_eq!(h.status(), HealthStatus::Starting);
        assert_eq!(h.observe(true, &spec), None);
        assert_eq!(h.status(), HealthStatus::Starting);
        assert_eq!(h.observe(true, &spec), Some(HealthStatus::Up));
    }

    #[test]
    fn failures_must_be_consecutive() {
        let spec = spec(1, 3);
        let h = HealthState::joining(&spec);
        h.observe(true, &spec);
        assert_eq!(h.observe(false, &spec), None);
        assert_eq!(h.observe(false, &spec), None);
        assert_eq!(
            h.observe(true, &spec),
            None,
            "a pass resets the failure streak"
        );
        assert_eq!(h.observe(false, &spec), None);
        assert_eq!(h.observe(false, &spec), None);
        assert_eq!(h.observe(false, &spec), Some(HealthStatus::Down));
        assert_eq!(h.observe(true, &spec), Some(HealthStatus::Up));
    }

    #[test]
    fn a_starting_backend_that_keeps_failing_shows_as_down() {
        let spec = spec(1, 2);
        let h = HealthState::joining(&spec);
        h.observe(false, &spec);
        assert_eq!(h.observe(false, &spec), Some(HealthStatus::Down));
    }

    #[test]
    fn no_probe_means_up_from_the_start() {
        let spec = HealthCheckSpec {
            kind: ProbeKind::None,
            ..HealthCheckSpec::default()
        };
        assert_eq!(HealthState::joining(&spec).status(), HealthStatus::Up);
    }

    #[test]
    fn the_first_probe_waits_for_initial_delay() {
        let spec = HealthCheckSpec {
            initial_delay: Duration::from_secs(60),
            ..HealthCheckSpec::default()
        };
        let h = HealthState::joining(&spec);
        let due = h.claim_if_due(Instant::now()).unwrap_err();
        assert!(due > Instant::now() + Duration::from_secs(59));
        assert!(h
            .claim_if_due(Instant::now() + Duration::from_secs(61))
            .is_ok());
        assert!(
            h.claim_if_due(Instant::now() + Duration::from_secs(61))
                .is_err(),
            "one probe at a time"
        );
    }
}
