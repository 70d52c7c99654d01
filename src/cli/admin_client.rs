//! The client side of the admin listener, for the commands that ask a running berth
//! (`berth healthcheck`, `berth routes`): one blocking HTTP/1.1 GET. The image has no curl, and
//! one request to our own listener needs no HTTP client stack.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::config::{reachable, AdminToken, Config};

/// A running berth's admin listener, and the token it wants for its API (from the config's
/// `admin.token_file`).
pub struct Admin {
    pub addr: SocketAddr,
    token: Option<AdminToken>,
}

/// The admin listener of the berth that runs the config at `path`, with its token.
pub fn from_config(path: &Path) -> Result<Admin, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let admin = config
        .admin
        .ok_or_else(|| format!("{}: the config has no admin listener", path.display()))?;
    Ok(Admin {
        addr: reachable(admin.address),
        token: admin.token,
    })
}

/// `host:port` or `http://host:port` as typed on a command line (no token: the listener's
/// `admin.allow` must let this host in).
pub fn parse_address(text: &str) -> Result<Admin, String> {
    let authority = text.strip_prefix("http://").unwrap_or(text);
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    authority
        .to_socket_addrs()
        .map_err(|e| format!("admin address {text:?}: {e}"))?
        .next()
        .map(|addr| Admin {
            addr: reachable(addr),
            token: None,
        })
        .ok_or_else(|| format!("admin address {text:?} resolves to nothing"))
}

/// A response: its status code and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET path` from the admin listener, with its token if it has one; `timeout` bounds the
/// connect and each read.
pub fn get(admin: &Admin, path: &str, timeout: Duration) -> Result<Reply, String> {
    let addr = admin.addr;
    let failed = |e: std::io::Error| format!("admin listener {addr}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(failed)?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    let authorization = admin
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {}\r\n", t.expose()))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: berth\r\n{authorization}Connection: close\r\n\r\n"
    )
    .map_err(failed)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(failed)?;
    parse(&raw).ok_or_else(|| format!("admin listener {addr}: not an HTTP response"))
}

/// Status and body of a `Connection: close` response; the admin listener always sends
/// `Content-Length`.
fn parse(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = raw[end + 4..].to_vec();
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok());
    if let Some(length) = length {
        if body.len() < length {
            return None;
        }
        body.truncate(length);
    }
    Some(Reply { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_and_honours_content_length() {
        let reply =
            parse(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nhello!").unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body, b"hello");
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_none(),
            "a cut-off body is an error, not a short document"
        );
        assert!(parse(b"garbage").is_none());
    }

    #[test]
    fn wildcard_and_typed_addresses_are_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9900".parse().unwrap()),
            "127.0.0.1:9900".parse().unwrap()
        );
        assert_eq!(
            parse_address("http://[::]:9900/").unwrap().addr,
            "[::1]:9900".parse().unwrap()
        );
        assert_eq!(
            parse_address("127.0.0.1:9900").unwrap().addr,
            "127.0.0.1:9900".parse().unwrap()
        );
        assert!(parse_address("no-port").is_err());
    }
}
