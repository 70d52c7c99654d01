//! The Prometheus text exposition format (version 0.0.4), written straight into buffers, one
//! per metric family (see [`super::family`]).

use bytes::Bytes;

use super::buffers::Buffers;
use super::family::{Family, Kind, Value};
use super::label::LabelSet;
use super::series::{Histogram, MAX_BUCKETS};

/// One metric family's text: its `# HELP` and `# TYPE` lines, then its samples.
pub struct TextFamily {
    buf: Vec<u8>,
    /// `name{`, written before every labelled sample.
    open: Box<str>,
    /// The bare name, for a sample without labels.
    name: &'static str,
    /// A histogram's `name_bucket{le="<bound>",` per bound, then `+Inf`: a bucket line is
    /// then this, the series' labels and the count.
    bucket_prefixes: Vec<Box<str>>,
}

impl TextFamily {
    /// The sample's value and the line's end. Single digits, most values of an idle or
    /// lightly used fleet (every empty histogram bucket), skip the formatter and its copy.
    fn end<T: Value>(&mut self, value: T) {
        match value.try_into() {
            Ok(digit) if digit < 10 => self.buf.extend_from_slice(&[b'0' + digit, b'\n']),
            _ => {
                self.buf
                    .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
                self.buf.push(b'\n');
            }
        }
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
}

impl Family for TextFamily {
    fn new(
        name: &'static str,
        kind: Kind,
        help: &'static str,
        series: usize,
        labels: Option<&LabelSet>,
        buffers: &Buffers,
    ) -> Self {
        let (kind_name, lines_each, bucket_prefixes) = match kind {
            Kind::Counter => ("counter", 1, Vec::new()),
            Kind::Gauge => ("gauge", 1, Vec::new()),
            Kind::Histogram(buckets) => (
                "histogram",
                buckets.le.len() + 3,
                buckets
                    .le
                    .iter()
                    .chain(&["+Inf"])
                    .map(|bound| format!("{name}_bucket{{le=\"{bound}\",").into())
                    .collect(),
            ),
        };
        let labels = labels.map_or(0, |l| l.text.len());
        let expected = series * lines_each * (name.len() + labels + 32);
        let mut buf = buffers.take(expected + help.len() + 2 * name.len() + 32);
        for part in [
            "# HELP ",
            name,
            " ",
            help,
            "\n# TYPE ",
            name,
            " ",
            kind_name,
            "\n",
        ] {
            buf.extend_from_slice(part.as_bytes());
        }
        Self {
            buf,
            open: format!("{name}{{").into(),
            name,
            bucket_prefixes,
        }
    }

    fn sample<T: Value>(&mut self, labels: &LabelSet, extra: &[(&str, &str)], value: T) {
        let labels = &*labels.text;
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

    /// Cumulative buckets, `+Inf`, sum and count.
    fn histogram(&mut self, labels: &LabelSet, histogram: &Histogram) {
        debug_assert_eq!(self.bucket_prefixes.len(), histogram.buckets.le.len() + 1);
        let labels = &*labels.text;
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

    fn finish(self, buffers: &Buffers, parts: &mut Vec<Bytes>) {
        parts.push(buffers.body(self.buf));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::series::CHECK_DURATION;

    fn text(family: TextFamily) -> String {
        String::from_utf8(family.buf).unwrap()
    }

    fn s(value: &str) -> LabelSet {
        LabelSet::new(&[("s", value)])
    }

    fn family(name: &'static str, kind: Kind, help: &'static str) -> TextFamily {
        TextFamily::new(name, kind, help, 0, None, &Buffers::default())
    }

    #[test]
    fn samples_are_well_formed() {
        let mut family = family("x_total", Kind::Counter, "X.");
        family.sample(&s("a"), &[("code", "200")], 3u64);
        family.sample(&s("b"), &[], 2u64);
        family.sample(&LabelSet::new(&[]), &[("code", "500")], 4u64);
        family.sample(&LabelSet::new(&[]), &[], 1u64);
        family.sample(&s("c"), &[], 10u64);
        family.sample(&s("d"), &[], u64::MAX);
        family.sample(&s("e"), &[], -3i64);
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
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let mut family = family("d_seconds", Kind::Histogram(&CHECK_DURATION), "D.");
        let h = Histogram::new(&CHECK_DURATION);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(6));
        family.histogram(&s("a"), &h);
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
        let mut family = family("d_seconds", Kind::Histogram(&CHECK_DURATION), "D.");
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
