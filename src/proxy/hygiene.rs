//! What berth refuses or normalises in a client's request before routing it, so that no
//! backend sees an ambiguous request, and nothing a client got wrong is counted against a
//! backend (Pingora's own checks of these run after routing, as backend failures).
//!
//! | request | berth |
//! | --- | --- |
//! | a target that is not a path, `*` (OPTIONS) or an `http(s)://` URL (`GET  /  HTTP/1.1`) | 400 |
//! | a transfer coding other than `chunked` (`gzip, chunked`) | 501, as nginx answers |
//! | a `Connection` option that is not a header name, names `Host`, or ten of them | 400 |
//! | `Connection: X-Forwarded-For` (or `-Proto`, `-Host`) | the header and option dropped (the client declared it hop-by-hop); berth sets its own |
//! | `Upgrade` without the `upgrade` connection option | `Upgrade` dropped: it is no upgrade request (RFC 9110, 7.8) |
//! | `Content-Length: 5, 5` (a list Pingora checked agrees) | `Content-Length: 5` |
//! | an absolute-form target (`GET http://a.test/x`) | routed by its authority, sent on as `GET /x` |

use http::{header, HeaderValue, Method};
use pingora_http::authority::{raw_target_authority, RawTargetAuthority};
use pingora_http::RequestHeader;

/// An answer berth gives instead of routing.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub body: &'static str,
}

/// Pingora refuses a request with this many `Connection` options (a bound on the work).
const MAX_CONNECTION_OPTIONS: usize = 10;

const FORWARDED: [&str; 3] = ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"];

/// Checks the client's request head and normalises it in place.
pub fn check(req: &mut RequestHeader) -> Result<(), Refusal> {
    check_target(req)?;
    check_transfer_coding(req)?;
    normalise_connection(req)?;
    normalise_content_length(req);
    Ok(())
}

/// The host a request is for: an absolute-form target's authority, the URI's (HTTP/2's
/// `:authority`), else `Host`. Pingora has already refused a `Host` that contradicts either.
pub fn request_host(req: &RequestHeader) -> Option<&[u8]> {
    if let RawTargetAuthority::Absolute { authority, .. } = raw_target_authority(req.raw_path()) {
        return Some(authority);
    }
    req.uri
        .host()
        .map(str::as_bytes)
        .or_else(|| req.headers.get(header::HOST).map(HeaderValue::as_bytes))
}

/// Rewrites an absolute-form target (`http://a.test/x?y`) to origin form (`/x?y`): backends
/// expect origin form from a gateway (RFC 9112, 3.2.1), and the scheme a client wrote is not
/// how it reached berth (`X-Forwarded-Proto` says that).
pub fn to_origin_form(req: &mut RequestHeader) {
    if matches!(
        raw_target_authority(req.raw_path()),
        RawTargetAuthority::Absolute { .. }
    ) {
        // For absolute form the URI holds only the path and query; setting it drops the raw
        // target.
        let uri = req.uri.clone();
        req.set_uri(uri);
    }
}

fn check_target(req: &RequestHeader) -> Result<(), Refusal> {
    let target = req.raw_path();
    if target.starts_with(b"/") || (target == b"*" && req.method == Method::OPTIONS) {
        return Ok(());
    }
    match raw_target_authority(target) {
        RawTargetAuthority::Absolute { scheme, .. }
            if scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https") =>
        {
            Ok(())
        }
        _ => Err(Refusal {
            status: 400,
            body: "berth: the request target is neither a path nor an http(s) URL\n",
        }),
    }
}

fn list_items(req: &RequestHeader, name: header::HeaderName) -> impl Iterator<Item = &[u8]> {
    req.headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

fn check_transfer_coding(req: &RequestHeader) -> Result<(), Refusal> {
    let mut codings = list_items(req, header::TRANSFER_ENCODING);
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(only), None) if only.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(Refusal {
            status: 501,
            body: "berth: only the chunked transfer coding is supported\n",
        }),
    }
}

/// RFC 9110, 5.6.2: the characters of a token (a header name).
fn is_token(item: &[u8]) -> bool {
    item.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn normalise_connection(req: &mut RequestHeader) -> Result<(), Refusal> {
    let mut upgrade = false;
    let mut forwarded = false;
    for (count, option) in list_items(req, header::CONNECTION).enumerate() {
        if count + 1 >= MAX_CONNECTION_OPTIONS || !is_token(option) {
            return Err(Refusal {
                status: 400,
                body: "berth: the Connection header is not a short list of header names\n",
            });
        }
        if option.eq_ignore_ascii_case(b"host") {
            return Err(Refusal {
                status: 400,
                body: "berth: the Connection header names Host\n",
            });
        }
        upgrade |= option.eq_ignore_ascii_case(b"upgrade");
        forwarded |= FORWARDED
            .iter()
            .any(|name| option.eq_ignore_ascii_case(name.as_bytes()));
    }
    if forwarded {
        let kept: Vec<String> = list_items(req, header::CONNECTION)
            .filter(|option| {
                !FORWARDED
                    .iter()
                    .any(|name| option.eq_ignore_ascii_case(name.as_bytes()))
            })
            .map(|option| String::from_utf8_lossy(option).into_owned())
            .collect();
        for name in FORWARDED {
            req.remove_header(name);
        }
        if kept.is_empty() {
            req.remove_header(&header::CONNECTION);
        } else {
            let value = HeaderValue::from_str(&kept.join(", ")).map_err(|_| Refusal {
                status: 400,
                body: "berth: the Connection header is not a short list of header names\n",
            })?;
            // Replacing a header that exists cannot fail.
            let _ = req.insert_header(header::CONNECTION, value);
        }
    }
    if !upgrade {
        req.remove_header(&header::UPGRADE);
    }
    Ok(())
}

fn normalise_content_length(req: &mut RequestHeader) {
    let mut values = req.headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return;
    };
    if values.next().is_none() && !first.as_bytes().contains(&b',') {
        return;
    }
    let one = first
        .as_bytes()
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default();
    if let Ok(one) = HeaderValue::from_bytes(one.trim_ascii()) {
        let _ = req.insert_header(header::CONTENT_LENGTH, one);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &[u8], headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target, None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    fn status(target: &[u8], headers: &[(&str, &str)]) -> Option<u16> {
        check(&mut request(target, headers)).err().map(|r| r.status)
    }

    #[test]
    fn targets_are_paths_or_http_urls() {
        assert_eq!(status(b"/a?b", &[]), None);
        assert_eq!(status(b"http://a.test/x", &[]), None);
        assert_eq!(status(b"HTTPS://a.test", &[]), None);
        assert_eq!(status(b"%20/%20", &[]), Some(400));
        assert_eq!(status(b"ftp://a.test/x", &[]), Some(400));
        assert_eq!(status(b"*", &[]), Some(400), "* is for OPTIONS only");
    }

    #[test]
    fn only_chunked_is_a_transfer_coding() {
        let te = |v| status(b"/", &[("Transfer-Encoding", v)]);
        assert_eq!(te("chunked"), None);
        assert_eq!(te("Chunked"), None);
        assert_eq!(te("gzip, chunked"), Some(501));
        assert_eq!(te("gzip"), Some(501));
    }

    #[test]
    fn connection_options_are_checked_and_forwarded_ones_dropped() {
        let mut req = request(
            b"/",
            &[
                ("X-Forwarded-For", "203.0.113.9"),
                ("Connection", "keep-alive, X-Forwarded-For"),
                ("X-Custom", "1"),
            ],
        );
        check(&mut req).unwrap();
        assert!(req.headers.get("x-forwarded-for").is_none());
        assert_eq!(req.headers["connection"], "keep-alive");
        let mut req = request(b"/", &[("Connection", "x-forwarded-proto")]);
        check(&mut req).unwrap();
        assert!(req.headers.get("connection").is_none());
        assert_eq!(status(b"/", &[("Connection", "Host")]), Some(400));
        assert_eq!(status(b"/", &[("Connection", ":authority")]), Some(400));
        assert_eq!(status(b"/", &[("Connection", "\"x\"")]), Some(400));
        let many = ["a"; 10].join(",");
        assert_eq!(status(b"/", &[("Connection", &many)]), Some(400));
    }

    #[test]
    fn upgrade_needs_the_upgrade_option() {
        let mut req = request(b"/", &[("Upgrade", "websocket")]);
        check(&mut req).unwrap();
        assert!(req.headers.get("upgrade").is_none());
        let mut req = request(b"/", &[("Upgrade", "websocket"), ("Connection", "Upgrade")]);
        check(&mut req).unwrap();
        assert_eq!(req.headers["upgrade"], "websocket");
    }

    #[test]
    fn an_agreeing_content_length_list_becomes_one_value() {
        let mut req = request(b"/", &[("Content-Length", "5, 5")]);
        check(&mut req).unwrap();
        assert_eq!(req.headers["content-length"], "5");
        let mut req = request(b"/", &[("Content-Length", "5"), ("Content-Length", "5")]);
        check(&mut req).unwrap();
        let all: Vec<_> = req.headers.get_all("content-length").iter().collect();
        assert_eq!(all, ["5"]);
    }

    #[test]
    fn absolute_form_is_routed_by_its_authority_and_sent_as_a_path() {
        let mut req = request(b"http://A.test:8080/x?y=1", &[("Host", "A.test:8080")]);
        assert_eq!(request_host(&req), Some(&b"A.test:8080"[..]));
        to_origin_form(&mut req);
        assert_eq!(req.raw_path(), b"/x?y=1");
        let req = request(b"/x", &[("Host", "b.test")]);
        assert_eq!(request_host(&req), Some(&b"b.test"[..]));
    }
}
