//! A series' label pairs, escaped as the text format requires, built once when the series is
//! made so a scrape only copies them.

/// `name="value"` with the value escaped as the format requires (`\`, `"` and newlines).
pub fn label_pair(name: &str, value: &str) -> String {
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
    }
}
