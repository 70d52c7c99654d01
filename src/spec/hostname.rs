//! Host names: validating the domains that sources declare, and normalising the host a request
//! names so both meet in the same form (lowercase, no port, no trailing dot).

/// The longest host name DNS allows; longer request hosts cannot match any route.
pub const MAX_HOST_LEN: usize = 253;

/// Checks and normalises a route domain: `example.com`, `*.example.com` (any subdomain, at any
/// depth, but not `example.com` itself) or `*` (every host no other route claims).
pub fn parse_domain_pattern(raw: &str) -> Result<String, String> {
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain == "*" {
        return Ok(domain);
    }
    let name = domain.strip_prefix("*.").unwrap_or(&domain);
    if name.is_empty() {
        return Err(format!("domain {raw:?} is empty"));
    }
    if name.len() > MAX_HOST_LEN {
        return Err(format!(
            "domain {raw:?} is longer than {MAX_HOST_LEN} characters"
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "domain {raw:?} has an empty or over-long (>63) label"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "domain {raw:?} contains {bad:?}; use letters, digits, '-', '_' and '.', \
                 optionally prefixed by \"*.\""
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "domain {raw:?} has a label that starts or ends with '-'"
            ));
        }
    }
    Ok(domain)
}

/// Normalises the host of a request (`Host` header or absolute-form authority) into `buf`:
/// strips the port and a trailing dot and lowercases. Returns `None` for a host no route can
/// match (empty, too long, or with bytes a domain cannot hold), which callers answer with 4xx.
///
/// Takes a caller-provided buffer so the hot path never allocates.
pub fn normalize_request_host<'a>(raw: &[u8], buf: &'a mut [u8; MAX_HOST_LEN]) -> Option<&'a str> {
    let host = strip_port(raw);
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return None;
    }
    let out = &mut buf[..host.len()];
    for (dst, &src) in out.iter_mut().zip(host) {
        if !(src.is_ascii_alphanumeric() || matches!(src, b'-' | b'_' | b'.' | b':' | b'[' | b']'))
        {
            return None;
        }
        *dst = src.to_ascii_lowercase();
    }
    // Every byte was checked to be ASCII above.
    std::str::from_utf8(out).ok()
}

/// `example.com:8080` -> `example.com`; `[::1]:8080` -> `[::1]`; a bare IPv6 literal is kept.
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) if host[..colon].contains(&b':') => host,
        Some(colon) => &host[..colon],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Option<String> {
        let mut buf = [0u8; MAX_HOST_LEN];
        normalize_request_host(raw.as_bytes(), &mut buf).map(str::to_owned)
    }

    #[test]
    fn request_hosts_are_lowercased_and_lose_port_and_trailing_dot() {
        assert_eq!(
            norm("API.Example.COM:8080").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(norm("example.com.").as_deref(), Some("example.com"));
        assert_eq!(norm("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(norm("::1").as_deref(), Some("::1"));
        assert_eq!(norm("10.0.0.1:80").as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn hostile_request_hosts_are_rejected() {
        assert_eq!(norm(""), None);
        assert_eq!(norm(":80"), None);
        assert_eq!(norm("a b"), None);
        assert_eq!(norm("évil.com"), None);
        assert_eq!(norm(&"a".repeat(300)), None);
    }

    #[test]
    fn domain_patterns() {
        assert_eq!(
            parse_domain_pattern("API.example.com").unwrap(),
            "api.example.com"
        );
        assert_eq!(
            parse_domain_pattern("*.example.com").unwrap(),
            "*.example.com"
        );
        assert_eq!(parse_domain_pattern("*").unwrap(), "*");
        assert_eq!(
            parse_domain_pattern("my_svc.local.").unwrap(),
            "my_svc.local"
        );
        for bad in [
            "",
            "a..b",
            "exa mple.com",
            "ex/ample",
            "-a.com",
            "a.*.com",
            "é.com",
        ] {
            assert!(
                parse_domain_pattern(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
