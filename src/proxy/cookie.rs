//! Finding one cookie in a request without allocating: the sticky-session lookup runs on every
//! request of a sticky service.

use http::header::GetAll;
use http::HeaderValue;

/// The value of the first cookie called `name` across all `Cookie` headers.
pub fn find_cookie<'a>(headers: GetAll<'a, HeaderValue>, name: &str) -> Option<&'a [u8]> {
    headers
        .into_iter()
        .find_map(|header| find_in_header(header.as_bytes(), name.as_bytes()))
}

/// Scans one `Cookie` header (`a=1; b=2`); tolerates missing spaces and quoted values.
pub fn find_in_header<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        if pair[..eq].trim_ascii() != name {
            return None;
        }
        let value = pair[eq + 1..].trim_ascii();
        Some(
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_named_cookie() {
        let h = b"a=1; CONTAINERID=abc123; b=2";
        assert_eq!(find_in_header(h, b"CONTAINERID"), Some(&b"abc123"[..]));
        assert_eq!(find_in_header(h, b"a"), Some(&b"1"[..]));
        assert_eq!(find_in_header(b"x=1;y=\"q\"", b"y"), Some(&b"q"[..]));
        assert_eq!(find_in_header(h, b"CONTAINER"), None);
        assert_eq!(find_in_header(b"CONTAINERIDX=1", b"CONTAINERID"), None);
        assert_eq!(find_in_header(b"", b"a"), None);
        assert_eq!(find_in_header(b";;=;a", b"a"), None);
    }

    #[test]
    fn looks_through_every_cookie_header() {
        let mut headers = http::HeaderMap::new();
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("cookie", HeaderValue::from_static("sid=xyz"));
        assert_eq!(
            find_cookie(headers.get_all("cookie"), "sid"),
            Some(&b"xyz"[..])
        );
        assert_eq!(find_cookie(headers.get_all("cookie"), "nope"), None);
    }
}
