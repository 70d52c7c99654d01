//! The Prometheus protobuf exposition format (`io.prometheus.client.MetricFamily`, each message
//! length-delimited), written straight into buffers, one per metric family (see
//! [`super::family`]).
//!
//! A scraper asks for it with `Accept` (Prometheus: `scrape_protocols: [PrometheusProto]`, or
//! before 2.49 `--enable-feature=native-histograms`). It carries the same samples as the text
//! format in far fewer bytes: a family's name is written once instead of on every line, and a
//! histogram's labels once instead of on each bucket. That is what makes a `full` scrape of
//! 30,000 backends small enough to ship every 15 seconds.
//!
//! The messages are written by hand rather than built as `prometheus::proto` structs and
//! encoded: building them is the copy of every series the exposition exists to avoid. The
//! layout written here is checked against the `protobuf` crate's decoder in the tests.

use bytes::Bytes;

use super::buffers::Buffers;
use super::family::{Family, Kind, Value};
use super::label::LabelSet;
use super::series::{Histogram, MAX_BUCKETS};
use super::wire::{field_len, label_pair, label_pair_len, string_field, tag, varint, varint_len};

/// `MetricType` values.
fn type_code(kind: Kind) -> u8 {
    match kind {
        Kind::Counter => 0,
        Kind::Gauge => 1,
        Kind::Histogram(_) => 4,
    }
}

/// The bytes of a counter's or gauge's value field: tag, length 9, then the double.
const VALUE_FIELD_LEN: usize = 11;

/// One metric family in protobuf: the `MetricFamily` message's metrics, then (in
/// [`Family::finish`]) its length, name, help and type as a part sent before them.
pub struct ProtoFamily {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// The `metric` fields.
    body: Vec<u8>,
    /// A histogram message being made, to know its length before it is written.
    scratch: Vec<u8>,
}

impl ProtoFamily {
    fn metric_header(&mut self, len: usize) {
        self.body.push(tag::FAMILY_METRIC);
        varint(&mut self.body, len as u64);
    }
}

impl Family for ProtoFamily {
    fn new(
        name: &'static str,
        kind: Kind,
        help: &'static str,
        series: usize,
        labels: Option<&LabelSet>,
        buffers: &Buffers,
    ) -> Self {
        let each = match kind {
            Kind::Counter | Kind::Gauge => VALUE_FIELD_LEN,
            Kind::Histogram(buckets) => 16 + (buckets.le.len() + 1) * 13,
        };
        Self {
            name,
            help,
            kind,
            body: buffers.take(series * (labels.map_or(0, |l| l.proto.len()) + 8 + each)),
            scratch: Vec::new(),
        }
    }

    fn sample<T: Value>(&mut self, labels: &LabelSet, extra: &[(&str, &str)], value: T) {
        let extra_len: usize = extra
            .iter()
            .map(|(name, value)| field_len(label_pair_len(name, value)))
            .sum();
        self.metric_header(labels.proto.len() + extra_len + VALUE_FIELD_LEN);
        for (name, value) in extra {
            label_pair(&mut self.body, name, value);
        }
        self.body.extend_from_slice(&labels.proto);
        self.body.extend_from_slice(&[
            match self.kind {
                Kind::Gauge => tag::METRIC_GAUGE,
                _ => tag::METRIC_COUNTER,
            },
            9,
            tag::VALUE,
        ]);
        self.body.extend_from_slice(&value.as_f64().to_le_bytes());
    }

    /// Cumulative buckets, `+Inf` included, count and sum (in seconds).
    fn histogram(&mut self, labels: &LabelSet, histogram: &Histogram) {
        let mut buffer = [0; MAX_BUCKETS];
        let (counts, sum_nanos) = histogram.read_into(&mut buffer);
        let bounds = histogram.buckets.nanos.iter().map(|&n| seconds(n));
        let total: u64 = counts.iter().sum();
        let message = &mut self.scratch;
        message.clear();
        message.push(tag::HISTOGRAM_COUNT);
        varint(message, total);
        message.push(tag::HISTOGRAM_SUM);
        message.extend_from_slice(&seconds(sum_nanos).to_le_bytes());
        let mut cumulative = 0;
        for (count, bound) in counts.iter().zip(bounds.chain([f64::INFINITY])) {
            cumulative += count;
            message.push(tag::HISTOGRAM_BUCKET);
            varint(message, (1 + varint_len(cumulative) + 9) as u64);
            message.push(tag::BUCKET_COUNT);
            varint(message, cumulative);
            message.push(tag::BUCKET_BOUND);
            message.extend_from_slice(&bound.to_le_bytes());
        }
        let message_len = self.scratch.len();
        self.metric_header(labels.proto.len() + field_len(message_len));
        self.body.extend_from_slice(&labels.proto);
        self.body.push(tag::METRIC_HISTOGRAM);
        varint(&mut self.body, message_len as u64);
        self.body.extend_from_slice(&self.scratch);
    }

    fn finish(self, buffers: &Buffers, parts: &mut Vec<Bytes>) {
        let mut fields = Vec::with_capacity(self.name.len() + self.help.len() + 8);
        string_field(&mut fields, tag::FAMILY_NAME, self.name.as_bytes());
        string_field(&mut fields, tag::FAMILY_HELP, self.help.as_bytes());
        fields.extend_from_slice(&[tag::FAMILY_TYPE, type_code(self.kind)]);
        let mut head = Vec::with_capacity(fields.len() + 10);
        varint(&mut head, (fields.len() + self.body.len()) as u64);
        head.extend_from_slice(&fields);
        parts.push(head.into());
        parts.push(buffers.body(self.body));
    }
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus::proto::{MetricFamily, MetricType};

    use super::*;
    use crate::metrics::family::decode_proto as decode;
    use crate::metrics::series::CHECK_DURATION;

    fn finish(family: ProtoFamily) -> Vec<MetricFamily> {
        let mut parts = Vec::new();
        family.finish(&Buffers::default(), &mut parts);
        decode(&parts)
    }

    fn new(kind: Kind) -> ProtoFamily {
        ProtoFamily::new("x", kind, "X.", 0, None, &Buffers::default())
    }

    fn pairs(metric: &prometheus::proto::Metric) -> Vec<(String, String)> {
        metric
            .label
            .iter()
            .map(|l| (l.name().to_owned(), l.value().to_owned()))
            .collect()
    }

    #[test]
    fn counters_and_gauges_decode_with_their_labels_and_values() {
        let mut counters = new(Kind::Counter);
        let labels = LabelSet::new(&[
            ("server", "10.0.0.1:80"),
            ("service", "a \"quoted\\\" name\nwith a newline"),
        ]);
        counters.sample(&labels, &[("code", "200")], 3u64);
        counters.sample(&labels, &[], u64::from(u32::MAX) * 1000);
        let families = finish(counters);
        assert_eq!(families.len(), 1);
        let family = &families[0];
        assert_eq!(
            (family.name(), family.help(), family.type_()),
            ("x", "X.", MetricType::COUNTER)
        );
        let metrics = &family.metric;
        assert_eq!(
            pairs(&metrics[0]),
            [
                ("code".to_owned(), "200".to_owned()),
                ("server".to_owned(), "10.0.0.1:80".to_owned()),
                (
                    "service".to_owned(),
                    "a \"quoted\\\" name\nwith a newline".to_owned()
                ),
            ]
        );
        assert_eq!(metrics[0].counter.value(), 3.0);
        assert_eq!(metrics[1].counter.value(), 4_294_967_295_000.0);

        let mut gauges = new(Kind::Gauge);
        gauges.sample(&LabelSet::new(&[]), &[], -2i64);
        let family = &finish(gauges)[0];
        assert_eq!(family.type_(), MetricType::GAUGE);
        assert!(family.metric[0].label.is_empty());
        assert_eq!(family.metric[0].gauge.value(), -2.0);
    }

    #[test]
    fn histograms_decode_cumulative_with_inf_count_and_sum() {
        let mut family = new(Kind::Histogram(&CHECK_DURATION));
        let h = Histogram::new(&CHECK_DURATION);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(6));
        for _ in 0..200 {
            h.observe(Duration::from_micros(10));
        }
        family.histogram(&LabelSet::new(&[("s", "a")]), &h);
        let decoded = &finish(family)[0];
        assert_eq!(decoded.type_(), MetricType::HISTOGRAM);
        let metric = &decoded.metric[0];
        assert_eq!(pairs(metric), [("s".to_owned(), "a".to_owned())]);
        let histogram = &metric.histogram;
        assert_eq!(histogram.sample_count(), 202);
        assert!((histogram.sample_sum() - 6.007).abs() < 1e-9);
        let buckets: Vec<(f64, u64)> = histogram
            .bucket
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        assert_eq!(
            buckets,
            [
                (0.001, 200),
                (0.01, 201),
                (0.1, 201),
                (1.0, 201),
                (5.0, 201),
                (f64::INFINITY, 202)
            ]
        );
    }

    proptest::proptest! {
        /// Any label value (Docker labels are hostile) decodes to itself.
        #[test]
        fn any_label_value_decodes_to_itself(
            first in ".*",
            second in "[\\\\\"\n a-z]*",
        ) {
            let mut family = new(Kind::Gauge);
            family.sample(&LabelSet::new(&[("a", &first), ("b", &second)]), &[], 1u64);
            let decoded = &finish(family)[0];
            let expected = [("a".to_owned(), first), ("b".to_owned(), second)];
            proptest::prop_assert_eq!(pairs(&decoded.metric[0]), expected);
        }
    }
}
