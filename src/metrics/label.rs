//! A series' label pairs, written in both exposition formats once, when the series is made, so
//! a scrape of either format only copies them.

use super::wire;

/// One series' labels as the text format writes them (`a="x",b="y"`, escaped) and as the
/// protobuf format does (`Metric.label` fields).
pub struct LabelSet {
    pub text: Box<str>,
    pub proto: Box<[u8]>,
}

impl LabelSet {
    /// `pairs` in the order given: callers list names sorted, as Prometheus keeps them.
    pub fn new(pairs: &[(&str, &str)]) -> Self {
        let text: Vec<String> = pairs
            .iter()
            .map(|(name, value)| label_pair(name, value))
            .collect();
        let mut encoded = Vec::new();
        for (name, value) in pairs {
            wire::label_pair(&mut encoded, name, value);
        }
        Self {
            text: text.join(",").into(),
            proto: encoded.into(),
        }
    }
}

/// `name="value"` with the value escaped as the text format requires (`\`, `"` and newlines).
fn label_pair(name: &str, value: &str) -> String {
    let mut out = String::with_capacity(name.len() + value.len() + 3);
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_pair("n", r#"a"b\c"#), r#"n="a\"b\\c""#);
        assert_eq!(label_pair("n", "a\nb"), r#"n="a\nb""#);
        assert_eq!(
            &*LabelSet::new(&[("a", "x"), ("b", "\"")]).text,
            r#"a="x",b="\"""#
        );
        assert_eq!(&*LabelSet::new(&[]).text, "");
    }
}
