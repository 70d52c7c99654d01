//! `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`: what berth tells a backend
//! about the client.
//!
//! Anyone can send these headers, so berth keeps what a request says only when it comes from
//! one of the listener's `trusted_proxies` (a load balancer in front of berth): then the peer
//! is appended to the `X-Forwarded-For` chain and the proxy's `X-Forwarded-Proto/Host` are kept.
//! From anyone else the three are replaced with what berth itself sees: the peer's address,
//! the listener's scheme and the request's host.

use std::fmt::Write;
use std::net::IpAddr;

use http::HeaderValue;
use pingora_error::Result;
use pingora_http::RequestHeader;

use crate::config::CidrList;

const FOR: &str = "x-forwarded-for";
const PROTO: &str = "x-forwarded-proto";
const HOST: &str = "x-forwarded-host";

/// How the client reached the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

/// One listener's forwarding rules.
pub struct Forwarding {
    trusted_proxies: CidrList,
    scheme: Scheme,
}

impl Forwarding {
    pub fn new(trusted_proxies: CidrList, scheme: Scheme) -> Forwarding {
        Forwarding {
            trusted_proxies,
            scheme,
        }
    }

    /// Sets the three headers on `req`, the request to the backend, which starts as a copy of
    /// the client's. `peer` is the connection's source address; `host` the request's host
    /// (`Host`, or `:authority` over HTTP/2).
    pub fn apply(
        &self,
        req: &mut RequestHeader,
        peer: Option<IpAddr>,
        host: Option<HeaderValue>,
    ) -> Result<()> {
        let peer = peer.map(|ip| ip.to_canonical());
        let trusted = peer.is_some_and(|ip| self.trusted_proxies.contains(ip));
        match peer {
            Some(ip) if trusted => {
                let chain = forwarded_for(req, ip);
                req.insert_header(FOR, chain)?;
            }
            Some(ip) => {
                req.insert_header(FOR, address_value(ip))?;
            }
            None => {
                req.remove_header(FOR);
            }
        }
        if !(trusted && req.headers.contains_key(PROTO)) {
            req.insert_header(PROTO, self.scheme.header_value())?;
        }
        if !(trusted && req.headers.contains_key(HOST)) {
            match host {
                Some(host) => {
                    req.insert_header(HOST, host)?;
                }
                None => {
                    req.remove_header(HOST);
                }
            }
        }
        Ok(())
    }
}

/// `ip` as a header value, formatted on the stack: `to_string` would allocate and grow a
/// `String` that the header value then copies again.
fn address_value(ip: IpAddr) -> HeaderValue {
    // The longest address text, an IPv6 address with an embedded IPv4 one, is 45 bytes.
    let mut buf = [0u8; 48];
    let mut rest = &mut buf[..];
    let _ = std::io::Write::write_fmt(&mut rest, format_args!("{ip}"));
    let len = 48 - rest.len();
    HeaderValue::from_bytes(&buf[..len]).expect("an IP address is a valid header value")
}

/// The client address appended to any `X-Forwarded-For` the request already carries.
fn forwarded_for(req: &RequestHeader, client: IpAddr) -> String {
    let mut value = String::with_capacity(64);
    for previous in req.headers.get_all(FOR) {
        if let Ok(previous) = previous.to_str() {
            value.push_str(previous);
            value.push_str(", ");
        }
    }
    let _ = write!(value, "{client}");
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    fn values(req: &RequestHeader, name: &str) -> Vec<String> {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    fn trusting(cidr: &str) -> Forwarding {
        let list: CidrList = serde_yaml_ng::from_str(&format!("[\"{cidr}\"]")).unwrap();
        Forwarding::new(list, Scheme::Http)
    }

    const CLAIMS: &[(&str, &str)] = &[
        ("X-Forwarded-For", "1.1.1.1"),
        ("X-Forwarded-For", "2.2.2.2, 3.3.3.3"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.test"),
    ];

    #[test]
    fn a_trusted_proxy_s_chain_is_appended_to_and_its_claims_kept() {
        let mut req = request(CLAIMS);
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        trusting("10.0.0.0/8")
            .apply(
                &mut req,
                Some(peer),
                Some(HeaderValue::from_static("a.test")),
            )
            .unwrap();
        assert_eq!(values(&req, FOR), ["1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3"]);
        assert_eq!(values(&req, PROTO), ["https"]);
        assert_eq!(values(&req, HOST), ["evil.test"]);
    }

    #[test]
    fn anyone_else_s_claims_are_replaced() {
        let mut req = request(CLAIMS);
        // An IPv4 client on an IPv6 socket is still the IPv4 address.
        let peer: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        Forwarding::new(CidrList::default(), Scheme::Https)
            .apply(
                &mut req,
                Some(peer),
                Some(HeaderValue::from_static("a.test")),
            )
            .unwrap();
        assert_eq!(values(&req, FOR), ["192.0.2.7"]);
        assert_eq!(values(&req, PROTO), ["https"]);
        assert_eq!(values(&req, HOST), ["a.test"]);
    }

    #[test]
    fn a_trusted_proxy_without_claims_gets_berth_s_view() {
        let mut req = request(&[]);
        trusting("127.0.0.1")
            .apply(&mut req, Some("127.0.0.1".parse().unwrap()), None)
            .unwrap();
        assert_eq!(values(&req, FOR), ["127.0.0.1"]);
        assert_eq!(values(&req, PROTO), ["http"]);
        assert!(values(&req, HOST).is_empty());
    }
}
