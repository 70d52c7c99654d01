//! A raw-socket backend for hostile-input tests: a TCP server on loopback that records the exact
//! bytes every connection sends it and answers each request with a scripted response, including
//! the broken ones a real backend produces when it dies (short body, unterminated chunks).
//!
//! It parses just enough HTTP/1.1 to know where a request ends (head, then a `Content-Length`
//! or chunked body), so it can answer keep-alive and pipelined requests in order; the recording
//! is the raw bytes, never the parse.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the backend answers each request with.
#[derive(Clone, Debug)]
pub enum Script {
    /// `200 OK` with this body and a `Content-Length`; the connection is kept alive.
    Ok(Vec<u8>),
    /// A header announcing `Content-Length: declared`, then `sent` bytes of body, then close.
    ShortBody { declared: usize, sent: usize },
    /// A chunked `200`, `sent` bytes of body in chunks, then close without the last chunk.
    ChunkedThenClose { sent: usize },
    /// Waits `delay` before answering like [`Script::Ok`].
    Slow { delay: Duration, body: Vec<u8> },
    /// These exact bytes, then close if `close`.
    Raw { bytes: Vec<u8>, close: bool },
    /// `101 Switching Protocols`, then every byte that follows is sent back (a tunnel).
    Upgrade,
}

impl Script {
    pub fn ok(body: &str) -> Script {
        Script::Ok(body.as_bytes().to_vec())
    }
}

/// The body byte at offset `i` of a scripted body: a recognisable repeating alphabet, so a
/// test can tell backend bytes from anything berth writes.
pub fn body_byte(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

pub fn body_bytes(n: usize) -> Vec<u8> {
    (0..n).map(body_byte).collect()
}

/// One connection berth opened to the backend: every byte it sent, in order.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub bytes: Vec<u8>,
    /// Complete requests the backend parsed (and answered) on this connection.
    pub requests: usize,
}

pub struct RawBackend {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>>,
    stop: Arc<AtomicBool>,
}

impl RawBackend {
    pub fn start(script: Script) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let connections: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (conns, stop2) = (Arc::clone(&connections), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let record = Arc::new(Mutex::new(Recorded::default()));
                        conns.lock().unwrap().push(Arc::clone(&record));
                        let script = script.clone();
                        let stop3 = Arc::clone(&stop2);
                        std::thread::spawn(move || serve(stream, script, record, stop3));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return,
                }
            }
        });
        RawBackend {
            addr,
            connections,
            stop,
        }
    }

    /// Every connection's recording, in accept order (connections that sent nothing included).
    pub fn connections(&self) -> Vec<Recorded> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.lock().unwrap().clone())
            .collect()
    }

    /// All bytes the backend received, connections concatenated in accept order.
    pub fn received(&self) -> Vec<u8> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.bytes)
            .collect()
    }

    /// Complete requests the backend answered, over all connections.
    pub fn requests(&self) -> usize {
        self.connections().iter().map(|c| c.requests).sum()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut stream: TcpStream,
    script: Script,
    record: Arc<Mutex<Recorded>>,
    stop: Arc<AtomicBool>,
) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Answer every complete request already buffered, in order.
        while let Some(len) = request_len(&pending) {
            pending.drain(..len);
            record.lock().unwrap().requests += 1;
            if !answer(&mut stream, &script) {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            if matches!(script, Script::Upgrade) {
                return echo(stream, pending, &record);
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                record.lock().unwrap().bytes.extend_from_slice(&chunk[..n]);
                pending.extend_from_slice(&chunk[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Writes the scripted answer; `false` when the script closes the connection after it.
fn answer(stream: &mut TcpStream, script: &Script) -> bool {
    let ok = |stream: &mut TcpStream, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    };
    match script {
        Script::Ok(body) => {
            ok(stream, body);
            true
        }
        Script::Slow { delay, body } => {
            std::thread::sleep(*delay);
            ok(stream, body);
            true
        }
        Script::ShortBody { declared, sent } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body_bytes(*sent));
            let _ = stream.flush();
            // Let berth read what was sent before the FIN, as a crashing process would.
            std::thread::sleep(Duration::from_millis(50));
            false
        }
        Script::ChunkedThenClose { sent } => {
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            let body = body_bytes(*sent);
            for piece in body.chunks(250) {
                let _ = stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes());
                let _ = stream.write_all(piece);
                let _ = stream.write_all(b"\r\n");
            }
            let _ = stream.flush();
            std::thread::sleep(Duration::from_millis(50));
            false
        }
        Script::Raw { bytes, close } => {
            let _ = stream.write_all(bytes);
            let _ = stream.flush();
            !close
        }
        Script::Upgrade => {
            let _ = stream.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            );
            true
        }
    }
}

/// The tunnel after a 101: sends back what already followed the request, then everything
/// that comes, until the peer closes.
fn echo(mut stream: TcpStream, already: Vec<u8>, record: &Mutex<Recorded>) {
    let _ = stream.write_all(&already);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                record.lock().unwrap().bytes.extend_from_slice(&chunk[..n]);
                if stream.write_all(&chunk[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// The length of the first complete request in `buf` (head plus body), if it is complete.
/// A head it cannot frame (no or bad length) counts as a request without body.
pub fn request_len(buf: &[u8]) -> Option<usize> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .find_map(|line| line.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    if header("transfer-encoding:").is_some_and(|te| te.ends_with("chunked")) {
        return chunked_len(&buf[head_end..]).map(|n| head_end + n);
    }
    let length = header("content-length:")
        .and_then(|v| v.split(',').next().and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0usize);
    (buf.len() >= head_end + length).then_some(head_end + length)
}

/// Length of a complete chunked body at the start of `buf` (through the last chunk and the
/// empty trailer line).
fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = find(&buf[at..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&buf[at..at + line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at += line_end + 2;
        if size == 0 {
            // Trailers end with an empty line.
            let end = find(&buf[at..], b"\r\n")?;
            if end == 0 {
                return Some(at + 2);
            }
            let trailers_end = find(&buf[at..], b"\r\n\r\n")?;
            return Some(at + trailers_end + 4);
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        at += size + 2;
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
