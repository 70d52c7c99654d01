//! What the exposition writes, whatever the format: a metric family filled one series at a
//! time as the table is walked.
//!
//! The scrape walks tens of thousands of services and backends whose series sit in scattered
//! heap objects, and the formats want each family's samples together: one pass per family would
//! reload each series from memory once per family (cache misses were most of a scrape's time).
//! Each family therefore has its own buffer, a single pass appends to every family at once, and
//! the buffers are sent one after another. [`super::text`] writes the text format every
//! Prometheus reads; [`super::proto`] the protobuf one a scraper may ask for, the same samples
//! in a third to a half of the bytes.

use bytes::Bytes;

use super::buffers::Buffers;
use super::label::LabelSet;
use super::series::{Buckets, Histogram};

/// What a family holds, and for a histogram its bucket bounds.
#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram(&'static Buckets),
}

/// A sample's value: an integer, written as one in text and as a double in protobuf (exact
/// below 2^53, beyond any count or byte total berth reaches).
pub trait Value: itoa::Integer + TryInto<u8> + Copy {
    fn as_f64(self) -> f64;
}

impl Value for u64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Value for i64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}

/// One metric family being written in one exposition format.
pub trait Family: Sized {
    /// Starts the family, with room for about `series` samples (or histograms) labelled like
    /// `labels` taken from `buffers`, so the buffer is not copied while it grows.
    fn new(
        name: &'static str,
        kind: Kind,
        help: &'static str,
        series: usize,
        labels: Option<&LabelSet>,
        buffers: &Buffers,
    ) -> Self;

    /// One sample. `extra` label values must not need escaping (status codes, methods) and
    /// their names sort before the series' own, so the text form stays in Prometheus' order.
    fn sample<T: Value>(&mut self, labels: &LabelSet, extra: &[(&str, &str)], value: T);

    /// One histogram (the family must be a [`Kind::Histogram`] of the same buckets); `labels`
    /// must not be empty.
    fn histogram(&mut self, labels: &LabelSet, histogram: &Histogram);

    /// Appends the family's response body parts, in order; its buffer goes back to `buffers`
    /// once sent.
    fn finish(self, buffers: &Buffers, parts: &mut Vec<Bytes>);
}

/// Every length-delimited `MetricFamily` in `parts`, decoded by the `protobuf` crate: what a
/// protobuf scraper reads.
#[cfg(test)]
pub fn decode_proto(parts: &[Bytes]) -> Vec<prometheus::proto::MetricFamily> {
    let bytes = parts.concat();
    let mut input = protobuf::CodedInputStream::from_bytes(&bytes);
    let mut families = Vec::new();
    while !input.eof().unwrap() {
        families.push(input.read_message().unwrap());
    }
    families
}
