//! Each service's traffic over the last minute, for the status page: request rate, 5xx rate and
//! latency quantiles, without Prometheus.
//!
//! The data path already counts everything in plain atomics ([`ServiceSeries`]); this only reads
//! them. A background task ([`Sampler`]) copies every service's totals and latency buckets every
//! [`INTERVAL`] and keeps the last [`KEPT`] copies, so the page compares the live counters with
//! the copy about a minute old: a rate is the difference over the time between them, and a
//! quantile is estimated from the difference of the bucket counts by linear interpolation within
//! the bucket, as Prometheus' `histogram_quantile` does. Memory is bounded by the table: about
//! 1 KiB per service (7 copies of 15 counters), forgotten when the service leaves the table.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use rustc_hash::FxHashMap;

use crate::metrics::ServiceSeries;
use crate::table::live::LiveTable;
use crate::table::RouteTable;

/// Time between two copies of the counters.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Copies kept per service: the oldest is 60 to 70 s old, the window the page reports.
pub const KEPT: usize = 7;
/// Shorter windows give rates too noisy to show.
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// One service's counters at one moment.
struct Sample {
    at: Instant,
    requests: u64,
    errors: u64,
    /// Latency histogram counts per bucket (not cumulative), the last above every bound.
    buckets: Box<[u64]>,
}

impl Sample {
    fn take(series: &ServiceSeries, at: Instant) -> Sample {
        let (mut requests, mut errors) = (0, 0);
        for ((code, _method), count) in series.requests.values() {
            requests += count;
            if code.starts_with('5') {
                errors += count;
            }
        }
        Sample {
            at,
            requests,
            errors,
            buckets: series.duration.snapshot().0.into_boxed_slice(),
        }
    }
}

/// The copies of one service's counters, oldest first.
struct History {
    /// The series they were taken from: a service that left and came back under the same name
    /// has new counters, and its old copies must not be compared with them.
    series: Weak<ServiceSeries>,
    samples: VecDeque<Sample>,
}

/// A service's traffic over the last minute (the exact window is [`LastMinute::window`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LastMinute {
    pub window: Duration,
    pub requests_per_second: f64,
    /// Responses with a 5xx status, per second.
    pub errors_per_second: f64,
    /// Latency quantiles in seconds; `None` without requests in the window.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// The kept copies of every service's counters, by service name.
#[derive(Default)]
pub struct Traffic {
    histories: Mutex<FxHashMap<Box<str>, History>>,
}

impl Traffic {
    /// Copies the counters of every service of `table` (`only_new`: only of those with no copy
    /// yet, so a service that just appeared gets figures before the next interval), and forgets
    /// services that are no longer in it.
    pub fn record(&self, table: &RouteTable, now: Instant, only_new: bool) {
        let mut histories = self.histories.lock().unwrap_or_else(|p| p.into_inner());
        if !only_new {
            histories.retain(|name, _| table.upstream(name).is_some());
        }
        for upstream in table.upstreams() {
            let series = &upstream.series;
            let history = histories
                .entry(upstream.spec.name.as_str().into())
                .or_insert_with(|| History {
                    series: Arc::downgrade(series),
                    samples: VecDeque::with_capacity(KEPT),
                });
            if !Weak::ptr_eq(&history.series, &Arc::downgrade(series)) {
                history.series = Arc::downgrade(series);
                history.samples.clear();
            }
            if only_new && !history.samples.is_empty() {
                continue;
            }
            if history.samples.len() == KEPT {
                history.samples.pop_front();
            }
            history.samples.push_back(Sample::take(series, now));
        }
    }

    /// The traffic of the service `name` (whose counters are `series`) from its oldest kept copy
    /// to the live counters; `None` until a copy at least a second old exists.
    pub fn last_minute(
        &self,
        name: &str,
        series: &Arc<ServiceSeries>,
        now: Instant,
    ) -> Option<LastMinute> {
        let histories = self.histories.lock().unwrap_or_else(|p| p.into_inner());
        let history = histories.get(name)?;
        if !Weak::ptr_eq(&history.series, &Arc::downgrade(series)) {
            return None;
        }
        let then = history.samples.front()?;
        let window = now.checked_duration_since(then.at)?;
        if window < MIN_WINDOW {
            return None;
        }
        let current = Sample::take(series, now);
        let seconds = window.as_secs_f64();
        let buckets: Vec<u64> = current
            .buckets
            .iter()
            .zip(then.buckets.iter())
            .map(|(now, then)| now.saturating_sub(*then))
            .collect();
        let bounds: Vec<f64> = series
            .duration
            .buckets
            .nanos
            .iter()
            .map(|&n| n as f64 / 1e9)
            .collect();
        Some(LastMinute {
            window,
            requests_per_second: current.requests.saturating_sub(then.requests) as f64 / seconds,
            errors_per_second: current.errors.saturating_sub(then.errors) as f64 / seconds,
            p50: quantile(0.5, &bounds, &buckets),
            p99: quantile(0.99, &bounds, &buckets),
        })
    }
}

/// The `q`-quantile of the observations counted per bucket in `counts` (not cumulative; one
/// more than `bounds`, the last above every bound), as Prometheus' `histogram_quantile`
/// estimates it: linear interpolation within the bucket the rank falls in (from 0 for the
/// first bucket); a rank in the last bucket gives the highest bound. `None` without
/// observations.
pub fn quantile(q: f64, bounds: &[f64], counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (index, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = bounds.get(index) else {
                break;
            };
            let lower = if index == 0 { 0.0 } else { bounds[index - 1] };
            return Some(lower + (upper - lower) * (rank - below as f64) / count as f64);
        }
        below += count;
    }
    bounds.last().copied()
}

/// Copies every service's counters every [`INTERVAL`], and those of new services as soon as
/// the table changes.
pub struct Sampler {
    traffic: Arc<Traffic>,
    live: Arc<LiveTable>,
}

impl Sampler {
    pub fn new(traffic: Arc<Traffic>, live: Arc<LiveTable>) -> Self {
        Self { traffic, live }
    }
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.traffic.record(&self.live.load_full(), Instant::now(), false),
                _ = self.live.changed.notified() => {
                    self.traffic.record(&self.live.load_full(), Instant::now(), true)
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerConfig;
    use crate::health::probe::ProbeCache;
    use crate::model::hostname::DomainSet;
    use crate::model::{PolicyLayer, Snapshot};
    use crate::table::tests::service;

    #[test]
    fn quantiles_interpolate_within_the_bucket_like_prometheus() {
        let bounds = [0.1, 0.2, 0.4];
        // 10 in (0, 0.1], 10 in (0.1, 0.2], none above.
        let counts = [10, 10, 0, 0];
        assert_eq!(quantile(0.5, &bounds, &counts), Some(0.1));
        assert!((quantile(0.75, &bounds, &counts).unwrap() - 0.15).abs() < 1e-12);
        assert!((quantile(0.25, &bounds, &counts).unwrap() - 0.05).abs() < 1e-12);
        // Ranks in the overflow bucket report the highest bound.
        assert_eq!(quantile(0.99, &bounds, &[1, 0, 0, 99]), Some(0.4));
        assert_eq!(quantile(0.5, &bounds, &[0, 0, 0, 0]), None);
        // Empty buckets before the rank are skipped, not interpolated into.
        assert!((quantile(0.5, &bounds, &[0, 0, 4, 0]).unwrap() - 0.3).abs() < 1e-12);
    }

    fn table(names: &[&str], previous: &RouteTable) -> RouteTable {
        RouteTable::compile(
            &Snapshot::of(
                names
                    .iter()
                    .map(|n| service(n, &[&format!("{n}.test")], "/")),
                None,
            ),
            &PolicyLayer::default(),
            &[ListenerConfig::new("main", "127.0.0.1:0".parse().unwrap())],
            &DomainSet::default(),
            previous,
            &ProbeCache::default(),
        )
    }

    #[test]
    fn rates_and_quantiles_cover_the_oldest_kept_copy_to_now() {
        let start = Instant::now();
        let table = table(&["api"], &RouteTable::default());
        let api = table.upstream("api").unwrap();
        let traffic = Traffic::default();
        traffic.record(&table, start, false);
        assert_eq!(
            traffic.last_minute("api", &api.series, start),
            None,
            "no window yet"
        );
        for _ in 0..90 {
            api.series
                .record_request(200, &http::Method::GET, Duration::from_millis(3));
        }
        for _ in 0..10 {
            api.series
                .record_request(503, &http::Method::POST, Duration::from_millis(40));
        }
        let figures = traffic
            .last_minute("api", &api.series, start + Duration::from_secs(10))
            .unwrap();
        assert_eq!(figures.window, Duration::from_secs(10));
        assert_eq!(figures.requests_per_second, 10.0);
        assert_eq!(figures.errors_per_second, 1.0);
        // 90 of 100 in (2.5ms, 5ms]: the median is 5/9 of the way through that bucket.
        let p50 = figures.p50.unwrap();
        assert!(
            (p50 - (0.0025 + 0.0025 * 50.0 / 90.0)).abs() < 1e-9,
            "{p50}"
        );
        // The 99th is in (25ms, 50ms], where the 10 slow ones are.
        let p99 = figures.p99.unwrap();
        assert!((0.025..=0.05).contains(&p99), "{p99}");
    }

    #[test]
    fn memory_is_bounded_by_the_table_and_kept_copies() {
        let start = Instant::now();
        let first = table(&["a", "b"], &RouteTable::default());
        let traffic = Traffic::default();
        for tick in 0..20 {
            traffic.record(&first, start + INTERVAL * tick, false);
        }
        let histories = traffic.histories.lock().unwrap();
        assert!(histories.values().all(|h| h.samples.len() == KEPT));
        drop(histories);
        let a = first.upstream("a").unwrap();
        let figures = traffic
            .last_minute("a", &a.series, start + INTERVAL * 19)
            .unwrap();
        assert_eq!(
            figures.window,
            INTERVAL * (KEPT as u32 - 1),
            "the oldest kept copy"
        );

        let second = table(&["a"], &first);
        traffic.record(&second, start + INTERVAL * 20, false);
        assert_eq!(
            traffic.histories.lock().unwrap().len(),
            1,
            "b left the table and is forgotten"
        );
    }

    #[test]
    fn a_service_that_comes_back_starts_over_and_new_ones_are_copied_at_once() {
        let start = Instant::now();
        let traffic = Traffic::default();
        let first = table(&["a"], &RouteTable::default());
        traffic.record(&first, start, false);
        let gone = table(&[], &first);
        let back = table(&["a", "new"], &gone);
        let a = back.upstream("a").unwrap();
        assert_eq!(
            traffic.last_minute("a", &a.series, start + INTERVAL),
            None,
            "copies of the old counters are not compared with the new"
        );
        traffic.record(&back, start + Duration::from_secs(1), true);
        let new = back.upstream("new").unwrap();
        assert!(traffic
            .last_minute("new", &new.series, start + Duration::from_secs(3))
            .is_some());
        assert!(traffic
            .last_minute("a", &a.series, start + Duration::from_secs(3))
            .is_some());
    }
}
