//! TLS for the tests: certificates made here with rcgen (ECDSA P-256, like the benchmark's),
//! and a rustls client that shows what berth negotiated (certificate, version, ALPN).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, CertifiedIssuer, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A test CA that writes certificates and keys as PEM files into a directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "berth test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
        };
        std::fs::write(pki.path("ca.crt"), pki.ca.pem()).unwrap();
        pki
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// Writes `<file>.crt` and `<file>.key`: a leaf for `names` whose common name is `cn`,
    /// valid from `from` to `to` days from now. Returns the two paths.
    pub fn leaf(
        &self,
        file: &str,
        cn: &str,
        names: &[&str],
        from: i64,
        to: i64,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(to);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (crt, key_path) = (
            self.path(&format!("{file}.crt")),
            self.path(&format!("{file}.key")),
        );
        write_atomically(&crt, cert.pem().as_bytes());
        write_atomically(&key_path, key.serialize_pem().as_bytes());
        (crt, key_path)
    }
}

/// Replaces a file in one step, as deploy tools do (berth never reads half a file).
pub fn write_atomically(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("writing");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Trusts the CA certificates in the PEM file `ca`.
pub fn roots(ca: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_file_iter(ca).unwrap() {
        let cert: CertificateDer = cert.unwrap();
        roots.add(cert).unwrap();
    }
    roots
}

/// How a test client connects.
pub struct Hello<'a> {
    /// The SNI; `None` sends none.
    pub sni: Option<&'a str>,
    /// Check the certificate against the CA and this name; `None` accepts any certificate
    /// (to see which one berth presents when it cannot match).
    pub verify_as: Option<&'a str>,
    pub versions: &'a [&'static SupportedProtocolVersion],
    pub alpn: &'a [&'a [u8]],
}

impl<'a> Hello<'a> {
    /// SNI `name`, verified, any version, HTTP/1.1.
    pub fn sni(name: &'a str) -> Hello<'a> {
        Hello {
            sni: Some(name),
            verify_as: Some(name),
            versions: rustls::ALL_VERSIONS,
            alpn: &[b"http/1.1"],
        }
    }

    /// `sni` (or none), accepting whatever certificate berth presents.
    pub fn unverified(sni: Option<&'a str>) -> Hello<'a> {
        Hello {
            sni,
            verify_as: None,
            versions: rustls::ALL_VERSIONS,
            alpn: &[b"http/1.1"],
        }
    }
}

/// Accepts any certificate (the handshake's signatures are still checked).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A finished handshake.
pub struct Tls {
    pub stream: BufReader<TlsStream<TcpStream>>,
}

impl Tls {
    pub async fn connect(
        addr: SocketAddr,
        ca: &Path,
        hello: Hello<'_>,
    ) -> Result<Tls, std::io::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(hello.versions)
            .unwrap();
        let mut config = match hello.verify_as {
            Some(_) => builder.with_root_certificates(roots(ca)),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
        }
        .with_no_client_auth();
        config.alpn_protocols = hello.alpn.iter().map(|p| p.to_vec()).collect();
        config.enable_sni = hello.sni.is_some();
        // Without SNI rustls still wants a name: it is only used for checking.
        let name = hello.verify_as.or(hello.sni).unwrap_or("no-sni.invalid");
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let tcp = TcpStream::connect(addr).await?;
        let stream = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        Ok(Tls {
            stream: BufReader::new(stream),
        })
    }

    fn connection(&self) -> &rustls::ClientConnection {
        self.stream.get_ref().get_ref().1
    }

    /// The leaf certificate berth presented (DER).
    pub fn leaf_der(&self) -> Vec<u8> {
        self.connection().peer_certificates().unwrap()[0].to_vec()
    }

    /// The common name of the certificate berth presented.
    pub fn served_cn(&self) -> String {
        let leaf = &self.connection().peer_certificates().unwrap()[0];
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        cn.as_str().unwrap().to_owned()
    }

    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.connection().protocol_version()
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.connection().alpn_protocol().map(<[u8]>::to_vec)
    }

    /// One HTTP/1.1 GET on this connection (kept alive): status, lowercase headers, body.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
    ) -> std::io::Result<(u16, Vec<(String, String)>, String)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut status_line = String::new();
        if self.stream.read_line(&mut status_line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// The TLS alert a refused handshake ended with, if that is how it failed.
pub fn alert(error: &std::io::Error) -> Option<rustls::AlertDescription> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// `curl` with `args` (plus `-sS -v --max-time 10`); returns whether it succeeded and its
/// whole output (the verbose trace on stderr included).
pub fn curl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-v", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// An HTTP/2 connection over TLS (ALPN h2) to `addr` for `sni`, with the CA in `ca`.
pub async fn h2_connect(
    addr: SocketAddr,
    ca: &Path,
    sni: &str,
) -> h2::client::SendRequest<bytes::Bytes> {
    let tls = Tls::connect(
        addr,
        ca,
        Hello {
            alpn: &[b"h2"],
            ..Hello::sni(sni)
        },
    )
    .await
    .unwrap();
    assert_eq!(tls.alpn().as_deref(), Some(&b"h2"[..]));
    let (send, connection) = h2::client::handshake(tls.stream.into_inner())
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// What an HTTP/2 exchange returned.
pub struct H2Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub trailers: Option<http::HeaderMap>,
}

/// A GET of `uri` (absolute: `https://host/path`) on an HTTP/2 connection.
pub async fn h2_get(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    uri: &str,
) -> Result<H2Reply, h2::Error> {
    let request = http::Request::get(uri).body(()).unwrap();
    let mut ready = send.clone().ready().await?;
    let (response, _) = ready.send_request(request, true)?;
    let response = response.await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?;
    *send = ready;
    Ok(H2Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        trailers,
    })
}
