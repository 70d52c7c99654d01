//! Which exposition format a scrape gets: the text format unless the scraper's `Accept`
//! prefers protobuf.

use http::HeaderValue;

/// The exposition formats a scraper can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The text format (0.0.4), what every scraper reads and what berth answers by default.
    Text,
    /// Length-delimited `io.prometheus.client.MetricFamily` messages: the same samples in a
    /// third (`full`) to a half (`service`) of the bytes.
    Proto,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::Proto => prometheus::PROTOBUF_FORMAT,
        }
    }

    /// The format `accept` prefers: protobuf when it is listed (with its `proto` and
    /// `encoding` as Prometheus sends them) at a quality no lower than any other type berth
    /// could answer with, else text.
    pub fn negotiate(accept: Option<&HeaderValue>) -> Format {
        let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
            return Format::Text;
        };
        let mut proto = 0.0;
        let mut text = 0.0;
        for range in accept.split(',') {
            let mut params = range.split(';').map(str::trim);
            let media_type = params.next().unwrap_or_default();
            let (mut quality, mut message, mut encoding) = (1.0, None, None);
            for (key, value) in params.filter_map(|p| p.split_once('=')) {
                let value = value.trim().trim_matches('"');
                let key = key.trim();
                if key.eq_ignore_ascii_case("q") {
                    quality = value.parse::<f32>().unwrap_or(0.0);
                } else if key.eq_ignore_ascii_case("proto") {
                    message = Some(value);
                } else if key.eq_ignore_ascii_case("encoding") {
                    encoding = Some(value);
                }
            }
            let is = |name: &str| media_type.eq_ignore_ascii_case(name);
            if is("application/vnd.google.protobuf") {
                if message == Some("io.prometheus.client.MetricFamily")
                    && encoding == Some("delimited")
                {
                    proto = f32::max(proto, quality);
                }
            } else if [
                "text/plain",
                "text/*",
                "*/*",
                "application/openmetrics-text",
            ]
            .into_iter()
            .any(is)
            {
                text = f32::max(text, quality);
            }
        }
        if proto > 0.0 && proto >= text {
            Format::Proto
        } else {
            Format::Text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_follows_what_the_scraper_accepts() {
        let protobuf = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";
        for (accept, format) in [
            (None, Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some("application/json"), Format::Text),
            (Some(protobuf), Format::Proto),
            // Prometheus 2.x without native histograms: text (berth answers 0.0.4).
            (Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), Format::Text),
            // Prometheus 2.x with `--enable-feature=native-histograms`.
            (Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), Format::Proto),
            // Prometheus 3 with `scrape_protocols: [PrometheusProto, PrometheusText0.0.4]`.
            (Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.3"), Format::Proto),
            // Protobuf preferred less than text, refused, or another message or encoding.
            (Some("text/plain;q=0.9, application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5"), Format::Text),
            (Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0"), Format::Text),
            (Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"), Format::Text),
            (Some("application/vnd.google.protobuf;proto=other.Message;encoding=delimited"), Format::Text),
            (Some("Application/Vnd.Google.Protobuf; proto=\"io.prometheus.client.MetricFamily\"; encoding=delimited"), Format::Proto),
        ] {
            let header = accept.map(|a| HeaderValue::from_str(a).unwrap());
            assert_eq!(Format::negotiate(header.as_ref()), format, "{accept:?}");
        }
        assert_eq!(
            Format::negotiate(Some(&HeaderValue::from_bytes(b"\xff").unwrap())),
            Format::Text
        );
    }
}
