//! Writing the Prometheus text exposition format (version 0.0.4) straight into a buffer.

use std::io::Write;

use super::series::{Histogram, MAX_BUCKETS};

/// An exposition being written.
pub struct Exposition {
    buf: Vec<u8>,
}

impl Exposition {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
        }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Its samples must follow together.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
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
            self.buf.extend_from_slice(part.as_bytes());
        }
    }

    /// Writes `name` + `suffix` and the label set: `extra` first, then the pre-escaped
    /// `labels`, so callers that pass names in order get Prometheus's sorted form.
    fn start(&mut self, name: &str, suffix: &str, labels: &str, extra: &[(&str, &str)]) {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(suffix.as_bytes());
        if labels.is_empty() && extra.is_empty() {
            self.buf.push(b' ');
            return;
        }
        self.buf.push(b'{');
        for (i, (key, value)) in extra.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.buf.extend_from_slice(key.as_bytes());
            self.buf.extend_from_slice(b"=\"");
            self.buf.extend_from_slice(value.as_bytes());
            self.buf.push(b'"');
        }
        if !labels.is_empty() {
            if !extra.is_empty() {
                self.buf.push(b',');
            }
            self.buf.extend_from_slice(labels.as_bytes());
        }
        self.buf.extend_from_slice(b"} ");
    }

    fn end(&mut self, value: impl itoa::Integer) {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.buf.push(b'\n');
    }

    /// One integer sample. `labels` is pre-escaped (`a="x",b="y"`); `extra` values must not
    /// need escaping (status codes, methods, bucket bounds).
    pub fn sample(
        &mut self,
        name: &str,
        labels: &str,
        extra: &[(&str, &str)],
        value: impl itoa::Integer,
    ) {
        self.start(name, "", labels, extra);
        self.end(value);
    }

    /// Every line of one histogram: cumulative buckets, `+Inf`, sum and count.
    pub fn histogram(&mut self, name: &str, labels: &str, histogram: &Histogram) {
        let mut buffer = [0; MAX_BUCKETS];
        let (counts, sum) = histogram.read_into(&mut buffer);
        let mut cumulative = 0;
        for (le, count) in histogram.buckets.le.iter().zip(counts) {
            cumulative += count;
            self.start(name, "_bucket", labels, &[("le", le)]);
            self.end(cumulative);
        }
        cumulative += counts.last().copied().unwrap_or(0);
        self.start(name, "_bucket", labels, &[("le", "+Inf")]);
        self.end(cumulative);
        self.start(name, "_sum", labels, &[]);
        let _ = writeln!(self.buf, "{sum}");
        self.start(name, "_count", labels, &[]);
        self.end(cumulative);
    }

    /// Text written by another encoder (the process and control-plane families).
    pub fn append(&mut self, text: &[u8]) {
        self.buf.extend_from_slice(text);
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

    #[test]
    fn samples_and_histograms_are_well_formed() {
        let mut out = Exposition::with_capacity(0);
        out.family("x_total", "counter", "X.");
        out.sample("x_total", r#"s="a""#, &[("code", "200")], 3);
        out.sample("x_total", "", &[], 1);
        let h = Histogram::new(&CHECK_DURATION);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(6));
        out.histogram("d_seconds", r#"s="a""#, &h);
        let text = String::from_utf8(out.into_bytes()).unwrap();
        assert!(text.contains("# TYPE x_total counter\n"), "{text}");
        assert!(text.contains("x_total{code=\"200\",s=\"a\"} 3\n"), "{text}");
        assert!(text.contains("x_total 1\n"), "{text}");
        assert!(
            text.contains("d_seconds_bucket{le=\"0.01\",s=\"a\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_bucket{le=\"5\",s=\"a\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_bucket{le=\"+Inf\",s=\"a\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("d_seconds_sum{s=\"a\"} 6.005\n"), "{text}");
        assert!(text.contains("d_seconds_count{s=\"a\"} 2\n"), "{text}");
    }
}
