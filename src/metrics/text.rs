//! Writing the Prometheus text exposition format (version 0.0.4) straight into buffers, one
//! per metric family.
//!
//! The format wants each family's samples together, but the exposition walks tens of thousands
//! of services and backends whose series sit in scattered heap objects: one pass per family
//! would reload each of them from memory once per family (cache misses were most of a scrape's
//! time). A [`Family`] is one family's own buffer, so a single pass over the table can append
//! to every family at once and the buffers are sent one after another.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::series::{Histogram, MAX_BUCKETS};

/// Most buffers kept between scrapes: one per family of a `full` exposition, twice over for
/// two scrapes at once.
const MAX_KEPT: usize = 48;

/// The buffers a scrape writes its families into, back once their response has been sent, so
/// the next scrape writes into memory that is already paged in. A fresh buffer of many MiB
/// costs the kernel a page fault and zeroing per page; at 10,000 services that was a few
/// percent of a scrape. What is kept is the largest scrape's text, until the process ends.
#[derive(Clone, Default)]
pub struct Buffers(Arc<Mutex<Vec<Vec<u8>>>>);

impl Buffers {
    /// An empty buffer with room for `capacity` bytes: the smallest kept one that has it,
    /// else the largest kept one grown (nothing to copy), else a new one.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fits = kept
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= capacity)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let largest = || {
            kept.iter()
                .enumerate()
                .max_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)
        };
        match fits.or_else(largest) {
            Some(i) => {
                let mut buf = kept.swap_remove(i);
                buf.reserve(capacity);
                buf
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// `buf` as a response body part; its memory comes back here when the part is dropped.
    pub fn body(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Returning {
            buf,
            home: self.clone(),
        })
    }
}

/// A buffer on its way out in a response, owed back to its [`Buffers`].
struct Returning {
    buf: Vec<u8>,
    home: Buffers,
}

impl AsRef<[u8]> for Returning {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut kept = self.home.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < MAX_KEPT {
            kept.push(buf);
        }
    }
}

/// One metric family's text: its `# HELP` and `# TYPE` lines, then its samples.
pub struct Family {
    buf: Vec<u8>,
    /// `name{`, written before every labelled sample.
    open: Box<str>,
    /// The bare name, for a sample without labels.
    name: &'static str,
    /// A histogram's `name_bucket{le="<bound>",` per bound, then `+Inf`: a bucket line is
    /// then this, the series' labels and the count.
    bucket_prefixes: Vec<Box<str>>,
}

impl Family {
    /// A family whose samples will take about `expected_bytes`, reserved up front (from
    /// `buffers`) so the buffer is not copied while it grows.
    pub fn new(
        name: &'static str,
        kind: &str,
        help: &str,
        expected_bytes: usize,
        buffers: &Buffers,
    ) -> Self {
        let mut buf = buffers.take(expected_bytes + help.len() + 2 * name.len() + 32);
        for part in [
            "# HELP ",
            name,
            " ",
            help,
            "\n# TYPE ",
            name,
            " ",
            kind,
            "\n",
        ] {
            buf.extend_from_slice(part.as_bytes());
        }
        Self {
            buf,
            open: format!("{name}{{").into(),
            name,
            bucket_prefixes: Vec::new(),
        }
    }

    /// A histogram family whose buckets have the upper bounds `le` (as written).
    pub fn histogram_of(
        name: &'static str,
        help: &str,
        le: &[&str],
        expected_bytes: usize,
        buffers: &Buffers,
    ) -> Self {
        let mut family = Self::new(name, "histogram", help, expected_bytes, buffers);
        family.bucket_prefixes = le
            .iter()
            .chain(&["+Inf"])
            .map(|bound| format!("{name}_bucket{{le=\"{bound}\",").into())
            .collect();
        family
    }

    /// Roughly how many bytes `lines` samples with label sets like `labels` take, for
    /// [`Self::new`]'s `expected_bytes`.
    pub fn estimate(name: &str, labels: &str, lines: usize) -> usize {
        lines * (name.len() + labels.len() + 32)
    }

    /// The sample's value and the line's end. Single digits, most values of an idle or
    /// lightly used fleet (every empty histogram bucket), skip the formatter and its copy.
    fn end<T: itoa::Integer + TryInto<u8> + Copy>(&mut self, value: T) {
        match value.try_into() {
            Ok(digit) if digit < 10 => self.buf.extend_from_slice(&[b'0' + digit, b'\n']),
            _ => {
                self.buf
                    .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
                self.buf.push(b'\n');
            }
        }
    }

    /// One integer sample. `labels` is pre-escaped (`a="x",b="y"`); `extra` values must not
    /// need escaping (status codes, methods) and come first, so callers that pass label names
    /// in order get Prometheus's sorted form.
    pub fn sample<T: itoa::Integer + TryInto<u8> + Copy>(
        &mut self,
        labels: &str,
        extra: &[(&str, &str)],
        value: T,
    ) {
        if labels.is_empty() && extra.is_empty() {
            self.buf.extend_from_slice(self.name.as_bytes());
            self.buf.push(b' ');
            self.end(value);
            return;
        }
        self.buf.extend_from_slice(self.open.as_bytes());
        for (key, value) in extra {
            self.buf.extend_from_slice(key.as_bytes());
            self.buf.extend_from_slice(b"=\"");
            self.buf.extend_from_slice(value.as_bytes());
            self.buf.extend_from_slice(b"\",");
        }
        if labels.is_empty() {
            self.buf.pop();
        } else {
            self.buf.extend_from_slice(labels.as_bytes());
        }
        self.buf.extend_from_slice(b"} ");
        self.end(value);
    }

    /// Every line of one histogram: cumulative buckets, `+Inf`, sum and count. The family must
    /// come from [`Self::histogram_of`] with the histogram's own bounds; `labels` (pre-escaped)
    /// must not be empty.
    pub fn histogram(&mut self, labels: &str, histogram: &Histogram) {
        debug_assert_eq!(self.bucket_prefixes.len(), histogram.buckets.le.len() + 1);
        let mut buffer = [0; MAX_BUCKETS];
        let (counts, sum_nanos) = histogram.read_into(&mut buffer);
        let mut cumulative = 0;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            self.buf
                .extend_from_slice(self.bucket_prefixes[i].as_bytes());
            self.buf.extend_from_slice(labels.as_bytes());
            self.buf.extend_from_slice(b"} ");
            self.end(cumulative);
        }
        self.suffixed("_sum{", labels);
        self.seconds(sum_nanos);
        self.suffixed("_count{", labels);
        self.end(cumulative);
    }

    /// `nanos` as seconds, an exact decimal without trailing zeros, and the line's end: no
    /// float formatting, which was a tenth of a scrape's time.
    fn seconds(&mut self, nanos: u64) {
        const NANOS_PER_SECOND: u64 = 1_000_000_000;
        let mut itoa = itoa::Buffer::new();
        self.buf
            .extend_from_slice(itoa.format(nanos / NANOS_PER_SECOND).as_bytes());
        let fraction = nanos % NANOS_PER_SECOND;
        if fraction != 0 {
            // One above the fraction's nine digits keeps its leading zeros; the "1" is dropped.
            let digits = &itoa.format(NANOS_PER_SECOND + fraction).as_bytes()[1..];
            let significant = digits.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
            self.buf.push(b'.');
            self.buf.extend_from_slice(&digits[..significant]);
        }
        self.buf.push(b'\n');
    }

    /// `name` + `suffix` (which opens the label set) + `labels` + `} `.
    fn suffixed(&mut self, suffix: &str, labels: &str) {
        self.buf.extend_from_slice(self.name.as_bytes());
        self.buf.extend_from_slice(suffix.as_bytes());
        self.buf.extend_from_slice(labels.as_bytes());
        self.buf.extend_from_slice(b"} ");
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::series::CHECK_DURATION;

    fn text(family: Family) -> String {
        String::from_utf8(family.into_bytes()).unwrap()
    }

    #[test]
    fn samples_are_well_formed() {
        let mut family = Family::new("x_total", "counter", "X.", 0, &Buffers::default());
        family.sample(r#"s="a""#, &[("code", "200")], 3);
        family.sample(r#"s="b""#, &[], 2);
        family.sample("", &[("code", "500")], 4);
        family.sample("", &[], 1);
        family.sample(r#"s="c""#, &[], 10u64);
        family.sample(r#"s="d""#, &[], u64::MAX);
        family.sample(r#"s="e""#, &[], -3i64);
        assert_eq!(
            text(family),
            "# HELP x_total X.\n# TYPE x_total counter\n\
             x_total{code=\"200\",s=\"a\"} 3\n\
             x_total{s=\"b\"} 2\n\
             x_total{code=\"500\"} 4\n\
             x_total 1\n\
             x_total{s=\"c\"} 10\n\
             x_total{s=\"d\"} 18446744073709551615\n\
             x_total{s=\"e\"} -3\n"
        );
    }

    #[test]
    fn a_buffer_comes_back_once_its_response_part_is_dropped() {
        let buffers = Buffers::default();
        let mut family = Family::new("x_total", "counter", "X.", 1 << 20, &buffers);
        family.sample("", &[], 7);
        let first = family.into_bytes();
        let address = first.as_ptr();
        let sent = buffers.body(first);
        assert!(sent.starts_with(b"# HELP x_total X."));
        let meanwhile = buffers.take(1 << 10);
        assert_ne!(
            meanwhile.as_ptr(),
            address,
            "a buffer still being sent is not handed out"
        );
        drop(sent);
        let again = buffers.take(1 << 20);
        assert_eq!(again.as_ptr(), address, "the same memory, back");
        assert!(again.is_empty());
        assert!(
            buffers.take(1 << 20).capacity() >= 1 << 20,
            "none kept: a new one"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let mut family =
            Family::histogram_of("d_seconds", "D.", CHECK_DURATION.le, 0, &Buffers::default());
        let h = Histogram::new(&CHECK_DURATION);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(6));
        family.histogram(r#"s="a""#, &h);
        assert_eq!(
            text(family),
            "# HELP d_seconds D.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{le=\"0.001\",s=\"a\"} 0\n\
             d_seconds_bucket{le=\"0.01\",s=\"a\"} 1\n\
             d_seconds_bucket{le=\"0.1\",s=\"a\"} 1\n\
             d_seconds_bucket{le=\"1\",s=\"a\"} 1\n\
             d_seconds_bucket{le=\"5\",s=\"a\"} 1\n\
             d_seconds_bucket{le=\"+Inf\",s=\"a\"} 2\n\
             d_seconds_sum{s=\"a\"} 6.005\n\
             d_seconds_count{s=\"a\"} 2\n"
        );
    }

    #[test]
    fn sums_are_exact_decimal_seconds() {
        let mut family =
            Family::histogram_of("d_seconds", "D.", CHECK_DURATION.le, 0, &Buffers::default());
        for (nanos, written) in [
            (0, "0"),
            (1, "0.000000001"),
            (420_000, "0.00042"),
            (1_000_000_000, "1"),
            (12_050_000_000, "12.05"),
            (u64::MAX, "18446744073.709551615"),
        ] {
            family.buf.clear();
            family.seconds(nanos);
            assert_eq!(family.buf, format!("{written}\n").as_bytes());
        }
    }
}
