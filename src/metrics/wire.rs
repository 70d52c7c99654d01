//! Protocol Buffers wire encoding of the pieces of Prometheus' client model that berth writes
//! by hand: field tags, varints and length-delimited fields. A leaf: both the protobuf
//! exposition ([`super::proto`]) and each series' pre-encoded labels ([`super::label`]) use it.

/// Field tags (field number << 3 | wire type) of the messages written here.
pub mod tag {
    /// `MetricFamily.name`, `.help` (length-delimited), `.type` (varint), `.metric`.
    pub const FAMILY_NAME: u8 = 0x0a;
    pub const FAMILY_HELP: u8 = 0x12;
    pub const FAMILY_TYPE: u8 = 0x18;
    pub const FAMILY_METRIC: u8 = 0x22;
    /// `Metric.label`, `.gauge`, `.counter`, `.histogram`.
    pub const METRIC_LABEL: u8 = 0x0a;
    pub const METRIC_GAUGE: u8 = 0x12;
    pub const METRIC_COUNTER: u8 = 0x1a;
    pub const METRIC_HISTOGRAM: u8 = 0x3a;
    /// `LabelPair.name`, `.value`.
    pub const LABEL_NAME: u8 = 0x0a;
    pub const LABEL_VALUE: u8 = 0x12;
    /// `Gauge.value` and `Counter.value` (a double).
    pub const VALUE: u8 = 0x09;
    /// `Histogram.sample_count`, `.sample_sum`, `.bucket`.
    pub const HISTOGRAM_COUNT: u8 = 0x08;
    pub const HISTOGRAM_SUM: u8 = 0x11;
    pub const HISTOGRAM_BUCKET: u8 = 0x1a;
    /// `Bucket.cumulative_count`, `.upper_bound`.
    pub const BUCKET_COUNT: u8 = 0x08;
    pub const BUCKET_BOUND: u8 = 0x11;
}

/// Appends one `Metric.label` field.
pub fn label_pair(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(tag::METRIC_LABEL);
    varint(out, label_pair_len(name, value) as u64);
    string_field(out, tag::LABEL_NAME, name.as_bytes());
    string_field(out, tag::LABEL_VALUE, value.as_bytes());
}

/// The encoded length of a `LabelPair` message (without its own tag and length).
pub fn label_pair_len(name: &str, value: &str) -> usize {
    field_len(name.len()) + field_len(value.len())
}

/// Appends a length-delimited field: tag, length, bytes.
pub fn string_field(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// A length-delimited field's bytes: tag, length, content.
pub fn field_len(content: usize) -> usize {
    1 + varint_len(content as u64) + content
}

/// Appends `value` as a base-128 varint.
pub fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The bytes [`varint`] writes for `value`, so a message's length can be written before it.
pub fn varint_len(value: u64) -> usize {
    (64 - value.max(1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_what_is_written() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
        }
    }
}
