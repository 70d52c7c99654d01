//! Loading one certificate: a PEM chain and its private key, checked the way `berth check`
//! promises (readable PEM, a key rustls can sign with, the key matching the leaf, the leaf
//! valid now and naming at least one DNS name). Every error names the file it is about, so an
//! operator knows which of a dozen certificates to fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

/// Where a certificate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// A listener's `certificates` in the config file.
    File,
    /// Obtained by berth over ACME (kept in `acme.storage`).
    Acme,
}

impl CertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::File => "file",
            CertSource::Acme => "acme",
        }
    }
}

/// A checked certificate, ready to be served.
#[derive(Debug)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    /// The leaf's subjectAltName DNS names, lowercase; `*.example.com` for a wildcard.
    pub names: Vec<String>,
    pub not_after: SystemTime,
    pub source: CertSource,
    /// The chain's file.
    pub path: PathBuf,
}

impl Certificate {
    /// Reads and checks `cert` (the chain, leaf first) and `key`, as valid at `now`.
    pub fn load(
        cert: &Path,
        key: &Path,
        source: CertSource,
        now: SystemTime,
    ) -> Result<Certificate, String> {
        let chain = read_chain(cert)?;
        let key_der = read_key(key)?;
        // The provider Pingora's listener signs with (ring): a key it cannot use is refused
        // here, not at the first handshake.
        let signing_key = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| at(key, format!("unusable private key: {e}")))?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified.keys_match().map_err(|_| {
            at(
                key,
                format!(
                    "the private key does not match the certificate in {} (or that file does \
                     not start with the leaf certificate)",
                    cert.display()
                ),
            )
        })?;
        let (names, not_after) = leaf_facts(&certified.cert[0], cert, now)?;
        Ok(Certificate {
            key: Arc::new(certified),
            names,
            not_after,
            source,
            path: cert.to_owned(),
        })
    }

    /// Whether this certificate is valid for `name` (exact, or a wildcard one label up).
    pub fn covers(&self, name: &str) -> bool {
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(parent) => name
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => n == name,
        })
    }

    /// Seconds since the Unix epoch at which the certificate expires.
    pub fn not_after_unix(&self) -> i64 {
        unix_seconds(self.not_after)
    }
}

fn at(path: &Path, problem: impl std::fmt::Display) -> String {
    format!("{}: {problem}", path.display())
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| at(path, pem_problem("certificate", &e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(path, pem_problem("certificate", &e)))?;
    if chain.is_empty() {
        return Err(at(path, "no CERTIFICATE block (is it a PEM file?)"));
    }
    Ok(chain)
}

/// PKCS#8, SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`); the first key in the file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| at(path, pem_problem("key", &e)))
}

/// A PEM error in words (pki-types prints section markers as byte arrays).
fn pem_problem(what: &str, e: &pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read the {what} file: {e}"),
        pem::Error::NoItemsFound => format!("no PRIVATE KEY block (is it a PEM {what} file?)"),
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "truncated PEM: no \"-----END {}-----\" line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed PEM BEGIN line {:?}",
            String::from_utf8_lossy(line)
        ),
        other => format!("malformed PEM: {other}"),
    }
}

/// The leaf's DNS names and expiry; refuses a leaf that is not valid at `now` or names no host.
fn leaf_facts(
    leaf: &CertificateDer<'_>,
    path: &Path,
    now: SystemTime,
) -> Result<(Vec<String>, SystemTime), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
        at(
            path,
            format!("the first certificate is not valid X.509: {e}"),
        )
    })?;
    let validity = parsed.validity();
    let now_unix = unix_seconds(now);
    if now_unix > validity.not_after.timestamp() {
        return Err(at(
            path,
            format!("the certificate expired on {}", validity.not_after),
        ));
    }
    if now_unix < validity.not_before.timestamp() {
        return Err(at(
            path,
            format!(
                "the certificate is not valid before {}",
                validity.not_before
            ),
        ));
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                let dns = dns.trim_end_matches('.').to_ascii_lowercase();
                if !names.contains(&dns) {
                    names.push(dns);
                }
            }
        }
    }
    if names.is_empty() {
        return Err(at(
            path,
            "the certificate names no DNS name in subjectAltName (clients ignore the CN)",
        ));
    }
    let not_after = UNIX_EPOCH + Duration::from_secs(validity.not_after.timestamp().max(0) as u64);
    Ok((names, not_after))
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, CertifiedIssuer, KeyPair};

    /// A CA and leaves it signs, written as PEM files into a temporary directory.
    pub(crate) struct TestPki {
        pub dir: tempfile::TempDir,
        ca: CertifiedIssuer<'static, KeyPair>,
    }

    impl TestPki {
        pub(crate) fn new() -> TestPki {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            TestPki {
                dir: tempfile::tempdir().unwrap(),
                ca,
            }
        }

        /// Writes `<file>.crt` and `<file>.key` for `names`, valid from `from` to `to` days
        /// from now; returns their paths.
        pub(crate) fn leaf(
            &self,
            file: &str,
            names: &[&str],
            from: i64,
            to: i64,
        ) -> (PathBuf, PathBuf) {
            let mut params =
                CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .unwrap();
            let today = time::OffsetDateTime::now_utc();
            params.not_before = today + time::Duration::days(from);
            params.not_after = today + time::Duration::days(to);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            let (crt, key_path) = (
                self.path(&format!("{file}.crt")),
                self.path(&format!("{file}.key")),
            );
            std::fs::write(&crt, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            (crt, key_path)
        }

        pub(crate) fn path(&self, file: &str) -> PathBuf {
            self.dir.path().join(file)
        }
    }

    fn load(cert: &Path, key: &Path) -> Result<Certificate, String> {
        Certificate::load(cert, key, CertSource::File, SystemTime::now())
    }

    #[test]
    fn a_good_pair_loads_with_its_names() {
        let pki = TestPki::new();
        let (crt, key) = pki.leaf("a", &["A.example.com", "*.example.org"], -1, 90);
        let cert = load(&crt, &key).unwrap();
        assert_eq!(cert.names, ["a.example.com", "*.example.org"]);
        assert!(cert.covers("a.example.com"));
        assert!(cert.covers("www.example.org"));
        assert!(
            !cert.covers("a.b.example.org"),
            "a wildcard covers one label"
        );
        assert!(!cert.covers("example.org"));
        assert!(cert.not_after > SystemTime::now() + Duration::from_secs(89 * 86400));
    }

    #[test]
    fn every_problem_names_its_file() {
        let pki = TestPki::new();
        let (a_crt, a_key) = pki.leaf("a", &["a.test"], -1, 90);
        let (_, b_key) = pki.leaf("b", &["b.test"], -1, 90);
        let (old_crt, old_key) = pki.leaf("old", &["old.test"], -90, -1);
        let (new_crt, new_key) = pki.leaf("new", &["new.test"], 2, 90);
        let not_pem = pki.path("not.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let truncated = pki.path("truncated.crt");
        let text = std::fs::read_to_string(&a_crt).unwrap();
        std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
        let missing = pki.path("missing.crt");

        let cases: [(&Path, &Path, &Path, &str); 7] = [
            (&a_crt, &b_key, &b_key, "does not match the certificate in"),
            (&old_crt, &old_key, &old_crt, "expired on"),
            (&new_crt, &new_key, &new_crt, "not valid before"),
            (&not_pem, &a_key, &not_pem, "no CERTIFICATE block"),
            (&a_crt, &not_pem, &not_pem, "no PRIVATE KEY block"),
            (
                &truncated,
                &a_key,
                &truncated,
                "truncated PEM: no \"-----END CERTIFICATE-----\"",
            ),
            (
                &missing,
                &a_key,
                &missing,
                "cannot read the certificate file",
            ),
        ];
        for (crt, key, named, problem) in cases {
            let err = load(crt, key).unwrap_err();
            assert!(
                err.starts_with(&format!("{}: ", named.display())) && err.contains(problem),
                "{err}"
            );
        }
    }
}
