//! Instants as `u64` nanoseconds since a process-wide origin, so deadlines (next probe, end of
//! an ejection) fit in atomics that the data path reads without a lock.

use std::sync::OnceLock;
use std::time::Instant;

pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `at` as nanoseconds since [`epoch`]; never 0 for an instant after the first call, so 0 can
/// mean "none".
pub fn nanos_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

pub fn instant_at(nanos: u64) -> Instant {
    epoch() + std::time::Duration::from_nanos(nanos)
}
