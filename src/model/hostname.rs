//! Host names: validating the domains that sources declare, and normalising the host a request
//! names so both meet in the same form (lowercase, no port, no trailing dot).

/// The longest host name DNS allows; longer request hosts cannot match any route.
pub const MAX_HOST_LEN: usize = 253;

/// Checks and normalises a route domain: `example.com`, `*.example.com` (any subdomain, at any
/// depth, but not `example.com` itself) or `*` (every host no other route claims).
pub fn parse_domain_pattern(raw: &str) -> Result<String, String> {
    // Problems quote the domain as trimmed, as every source reads it (a label splits and trims
    // its entries), so the same domain gets the same message wherever it was written.
    let raw = raw.trim();
    let domain = raw.trim_end_matches('.').to_ascii_lowercase();
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

/// Domain patterns (`*.local`, `app.corp`, `*`) that name a group of hosts, as the config's
/// `internal_domains` does: a route domain is in the set when every host it routes matches one
/// of the patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSet(Vec<String>);

impl Default for DomainSet {
    /// `*.local`: the mDNS suffix acsrouting deployments give services that only other
    /// containers should reach.
    fn default() -> Self {
        DomainSet(vec!["*.local".into()])
    }
}

impl DomainSet {
    /// Checks each pattern with [`parse_domain_pattern`]; the error names the pattern's index.
    pub fn parse<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<DomainSet, (usize, String)> {
        patterns
            .into_iter()
            .enumerate()
            .map(|(i, p)| parse_domain_pattern(p).map_err(|e| (i, e)))
            .collect::<Result<_, _>>()
            .map(DomainSet)
    }

    /// Whether every host the route domain `domain` (normalised, as sources produce it)
    /// matches is in the set.
    pub fn covers(&self, domain: &str) -> bool {
        self.0.iter().any(|pattern| pattern_covers(pattern, domain))
    }

    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

/// `*` covers everything; `*.s` covers `x.s`, `a.x.s` and the wildcards `*.s`, `*.x.s`; an
/// exact pattern covers only itself.
fn pattern_covers(pattern: &str, domain: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return pattern == domain;
    };
    let is_subdomain = |host: &str| {
        host.len() > suffix.len()
            && host.ends_with(suffix)
            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
    };
    match domain.strip_prefix("*.") {
        Some(parent) => parent == suffix || is_subdomain(parent),
        None => is_subdomain(domain),
    }
}

/// Normalises the host of a request (`Host` header or absolute-form authority) into `buf`:
/// strips the port and a trailing dot and lowercases. Returns `None` for a host no route can
/// match (empty, too long, or with bytes a domain cannot hold), which callers answer with 4xx.
///
/// Takes a caller-provided buffer so the hot path never allocates.
pub fn normalize_request_host<'a>(raw: &[u8], buf: &'a mut [u8; MAX_HOST_LEN]) -> Option<&'a str> {
    let host = strip_port(raw);
    let host = host.strip_suffix(b".").unwrap_or(host);
    // One trailing dot is the root label; a second would be an empty label.
    if host.is_empty() || host.len() > MAX_HOST_LEN || host.ends_with(b".") {
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
        assert_eq!(norm("a.."), None);
        assert_eq!(norm("."), None);
        assert_eq!(norm(":80"), None);
        assert_eq!(norm("a b"), None);
        assert_eq!(norm("évil.com"), None);
        assert_eq!(norm(&"a".repeat(300)), None);
    }

    #[test]
    fn domain_sets_cover_hosts_their_patterns_match() {
        let set = DomainSet::parse(["*.local", "app.corp"]).unwrap();
        for covered in ["a.local", "a.b.local", "*.local", "*.x.local", "app.corp"] {
            assert!(set.covers(covered), "{covered}");
        }
        for public in [
            "local",
            "a.localx",
            "xlocal",
            "*",
            "*.corp",
            "b.app.corp",
            "corp",
        ] {
            assert!(!set.covers(public), "{public}");
        }
        assert!(DomainSet::parse(["*"]).unwrap().covers("*"));
        assert_eq!(
            DomainSet::parse(["ok.test", "bad domain"]).unwrap_err().0,
            1
        );
        assert!(DomainSet::default().covers("restserver.local"));
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

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A route domain as sources write it: labels of letters, digits, `-` and `_`.
        fn domain() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,8}[a-zA-Z0-9_])?(\\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,8}[a-zA-Z0-9_])?){0,4}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            /// Any bytes: `None` or a host that is lowercase visible ASCII without a port or a
            /// trailing dot, and normalising it again changes nothing.
            #[test]
            fn any_request_host_normalises_to_a_fixed_point(
                raw in prop::collection::vec(any::<u8>(), 0..300),
            ) {
                let mut buf = [0u8; MAX_HOST_LEN];
                if let Some(host) = normalize_request_host(&raw, &mut buf) {
                    let host = host.to_owned();
                    prop_assert!(!host.is_empty() && host.len() <= MAX_HOST_LEN);
                    prop_assert!(host.bytes().all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()));
                    prop_assert!(!host.ends_with('.'));
                    let mut again = [0u8; MAX_HOST_LEN];
                    prop_assert_eq!(normalize_request_host(host.as_bytes(), &mut again), Some(host.as_str()));
                }
            }

            /// A request for a route's domain, in any case, with or without a port or the root
            /// dot, finds that domain.
            #[test]
            fn a_route_domain_is_what_its_requests_normalise_to(
                domain in domain(),
                port in proptest::option::of(1u16..),
                root_dot in any::<bool>(),
            ) {
                let route = parse_domain_pattern(&domain).unwrap();
                let mut request = domain.clone();
                if root_dot {
                    request.push('.');
                }
                if let Some(port) = port {
                    request.push_str(&format!(":{port}"));
                }
                let mut buf = [0u8; MAX_HOST_LEN];
                prop_assert_eq!(
                    normalize_request_host(request.as_bytes(), &mut buf),
                    Some(route.as_str())
                );
            }

            /// Pattern checking never panics, and what it accepts it accepts again unchanged.
            #[test]
            fn domain_patterns_are_stable(raw in "\\PC{0,40}") {
                if let Ok(domain) = parse_domain_pattern(&raw) {
                    prop_assert_eq!(parse_domain_pattern(&domain), Ok(domain.clone()));
                }
            }
        }
    }
}
