//! The per-service and per-backend series: plain atomics owned by the route table's upstreams
//! and members, so recording is a relaxed add and the exposition reads them straight from the
//! live table (no registry, no copies of every series at scrape time).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::label::LabelSet;

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }

    /// Adds one unless the value has reached `max`; `true` if it added.
    pub fn inc_below(&self, max: i64) -> bool {
        self.0
            .fetch_update(Relaxed, Relaxed, |v| (v < max).then_some(v + 1))
            .is_ok()
    }
}

/// Upper bounds of a duration histogram's buckets: seconds (as written in `le`) and the same
/// bound in nanoseconds (as compared on record).
pub struct Buckets {
    pub le: &'static [&'static str],
    pub nanos: &'static [u64],
}

// Buckets cost a sample each, per service or per backend: a scrape of 30,000 backends must
// stay cheap, so per-backend histograms get fewer buckets than per-service ones.
pub static SERVICE_LATENCY: Buckets = Buckets {
    le: &[
        "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "1", "2.5",
        "10",
    ],
    nanos: &[
        500_000,
        1_000_000,
        2_500_000,
        5_000_000,
        10_000_000,
        25_000_000,
        50_000_000,
        100_000_000,
        250_000_000,
        1_000_000_000,
        2_500_000_000,
        10_000_000_000,
    ],
};
pub static SERVER_LATENCY: Buckets = Buckets {
    le: &["0.001", "0.005", "0.025", "0.1", "0.25", "1", "2.5", "10"],
    nanos: &[
        1_000_000,
        5_000_000,
        25_000_000,
        100_000_000,
        250_000_000,
        1_000_000_000,
        2_500_000_000,
        10_000_000_000,
    ],
};
pub static CHECK_DURATION: Buckets = Buckets {
    le: &["0.001", "0.01", "0.1", "1", "5"],
    nanos: &[
        1_000_000,
        10_000_000,
        100_000_000,
        1_000_000_000,
        5_000_000_000,
    ],
};

/// The most counts a histogram keeps (its bounds and "above every bound").
pub const MAX_BUCKETS: usize = 16;

/// A histogram of durations: one count per bucket (not cumulative; the exposition adds them
/// up) plus one for "above every bound", and the sum in nanoseconds.
pub struct Histogram {
    pub buckets: &'static Buckets,
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(buckets: &'static Buckets) -> Self {
        Self {
            buckets,
            counts: (0..=buckets.nanos.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let index = self
            .buckets
            .nanos
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(self.buckets.nanos.len());
        self.counts[index].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Per-bucket counts (the last is above every bound) and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut counts = [0; MAX_BUCKETS];
        let (counts, sum_nanos) = self.read_into(&mut counts);
        (counts.to_vec(), sum_nanos as f64 / 1e9)
    }

    /// [`Self::snapshot`] into a caller's buffer, the sum in nanoseconds: a scrape reads tens
    /// of thousands of these and writes the sum as an exact decimal.
    pub fn read_into<'a>(&self, counts: &'a mut [u64; MAX_BUCKETS]) -> (&'a [u64], u64) {
        for (out, count) in counts.iter_mut().zip(self.counts.iter()) {
            *out = count.load(Relaxed);
        }
        (&counts[..self.counts.len()], self.sum_nanos.load(Relaxed))
    }
}

/// Counters keyed by a small label combination (status code, method), found by a lock-free
/// scan of the few combinations a series actually sees; a miss takes the slow path once.
/// Cardinality is bounded by the keys: codes 100..=599 or `other`, a fixed set of methods.
pub struct LabelledCounters<K> {
    /// `None` until the first count: a series per backend that never served a request holds
    /// no list.
    entries: ArcSwapOption<Vec<(K, Arc<Counter>)>>,
}

impl<K> Default for LabelledCounters<K> {
    fn default() -> Self {
        Self {
            entries: ArcSwapOption::empty(),
        }
    }
}

impl<K: Copy + Eq> LabelledCounters<K> {
    pub fn inc(&self, key: K) {
        if let Some(entries) = &*self.entries.load() {
            if let Some((_, counter)) = entries.iter().find(|(k, _)| *k == key) {
                counter.inc();
                return;
            }
        }
        let counter = Arc::new(Counter::default());
        counter.inc();
        self.entries.rcu(|entries| {
            let mut entries = entries.as_deref().cloned().unwrap_or_default();
            match entries.iter().find(|(k, _)| *k == key) {
                // Another thread added the key first: count there instead.
                Some((_, existing)) => existing.inc(),
                None => entries.push((key, Arc::clone(&counter))),
            }
            Some(Arc::new(entries))
        });
    }

    /// Every key seen so far with its count.
    pub fn values(&self) -> Vec<(K, u64)> {
        let mut values = Vec::new();
        self.for_each(|k, count| values.push((k, count)));
        values
    }

    /// Calls `f` with every key seen so far and its count, without allocating.
    pub fn for_each(&self, mut f: impl FnMut(K, u64)) {
        if let Some(entries) = &*self.entries.load() {
            for (k, counter) in entries.iter() {
                f(*k, counter.get());
            }
        }
    }
}

/// One service's series.
pub struct ServiceSeries {
    /// `service`.
    pub labels: LabelSet,
    /// By (status code label, method label).
    pub requests: LabelledCounters<(&'static str, &'static str)>,
    pub duration: Histogram,
    /// Requests in flight.
    pub open: Gauge,
    pub retries: Counter,
    pub retry_budget_exhausted: Counter,
    pub queue_timeouts: Counter,
}

impl ServiceSeries {
    pub fn new(service: &str) -> Arc<Self> {
        Arc::new(Self {
            labels: LabelSet::new(&[("service", service)]),
            requests: LabelledCounters::default(),
            duration: Histogram::new(&SERVICE_LATENCY),
            open: Gauge::default(),
            retries: Counter::default(),
            retry_budget_exhausted: Counter::default(),
            queue_timeouts: Counter::default(),
        })
    }

    pub fn record_request(&self, code: u16, method: &http::Method, elapsed: Duration) {
        self.requests
            .inc((status_label(code), method_label(method)));
        self.duration.observe(elapsed);
    }
}

/// One backend's series within one service.
pub struct ServerSeries {
    /// `server`, `service`.
    pub labels: LabelSet,
    /// By status code label.
    pub requests: LabelledCounters<&'static str>,
    pub duration: Histogram,
    pub open: Gauge,
    pub connection_errors: Counter,
    pub check_failures: Counter,
    pub check_up_down: Counter,
    pub check_duration: Histogram,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub ejections: Counter,
}

impl ServerSeries {
    pub fn new(service: &str, server: &str) -> Arc<Self> {
        Arc::new(Self {
            labels: LabelSet::new(&[("server", server), ("service", service)]),
            requests: LabelledCounters::default(),
            duration: Histogram::new(&SERVER_LATENCY),
            open: Gauge::default(),
            connection_errors: Counter::default(),
            check_failures: Counter::default(),
            check_up_down: Counter::default(),
            check_duration: Histogram::new(&CHECK_DURATION),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            ejections: Counter::default(),
        })
    }

    pub fn record_response(
        &self,
        code: u16,
        upstream_time: Duration,
        bytes_received: usize,
        bytes_sent: usize,
    ) {
        self.requests.inc(status_label(code));
        self.duration.observe(upstream_time);
        self.bytes_received.add(bytes_received as u64);
        self.bytes_sent.add(bytes_sent as u64);
    }

    pub fn record_check(&self, passed: bool, elapsed: Duration, flipped: bool) {
        self.check_duration.observe(elapsed);
        if !passed {
            self.check_failures.inc();
        }
        if flipped {
            self.check_up_down.inc();
        }
    }
}

/// Every status code from 100 to 599 as three ASCII digits, so a code label is a `'static`
/// slice: no allocation per request, and cardinality is bounded by construction.
static CODE_DIGITS: [u8; 1500] = {
    let mut digits = [0u8; 1500];
    let mut i = 0;
    while i < 500 {
        let code = i + 100;
        digits[i * 3] = b'0' + (code / 100) as u8;
        digits[i * 3 + 1] = b'0' + (code / 10 % 10) as u8;
        digits[i * 3 + 2] = b'0' + (code % 10) as u8;
        i += 1;
    }
    digits
};

static CODES: &str = match std::str::from_utf8(&CODE_DIGITS) {
    Ok(codes) => codes,
    Err(_) => panic!("CODE_DIGITS is ASCII"),
};

/// The status code label; codes outside 100..=599 (or 0, "no response") are `other`.
pub fn status_label(code: u16) -> &'static str {
    if (100..600).contains(&code) {
        let at = usize::from(code - 100) * 3;
        &CODES[at..at + 3]
    } else {
        "other"
    }
}

/// The method as a bounded label: arbitrary methods must not create arbitrary series.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(299), "299");
        assert_eq!(status_label(0), "other");
        assert_eq!(
            method_label(&http::Method::from_bytes(b"PURGE").unwrap()),
            "OTHER"
        );
    }

    #[test]
    fn histograms_count_per_bucket_and_sum() {
        let h = Histogram::new(&CHECK_DURATION);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(9));
        let (counts, sum) = h.snapshot();
        assert_eq!(counts, [2, 0, 1, 0, 0, 1], "a bound is inclusive (le)");
        assert!((sum - 9.0515).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn labelled_counters_keep_one_counter_per_key() {
        let c = LabelledCounters::default();
        c.inc("200");
        c.inc("503");
        c.inc("200");
        assert_eq!(c.values(), [("200", 2), ("503", 1)]);
    }
}
