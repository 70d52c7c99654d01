//! The certificates berth serves, and the SNI resolver each TLS listener hands to rustls.
//!
//! Two sets: each listener's certificates from the config file (replaced whole when the file
//! reloads) and the ACME certificates (one per domain, available to every TLS listener).
//! Both sit behind an `ArcSwap`: a reload or a renewal builds a new set and swaps it in, the
//! next handshake sees it, and connections that already finished their handshake keep the
//! certificate they were given, so nothing is dropped.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, SupportedCipherSuite};

use super::certs::{CertSource, Certificate};
use crate::config::{Config, ConfigError, ListenerConfig, TlsVersion};
use crate::metrics::Metrics;

/// One listener's certificates by name.
#[derive(Debug, Default)]
pub struct CertMap {
    exact: HashMap<String, Arc<Certificate>>,
    /// `*.example.com` is kept under `example.com`.
    wildcard: HashMap<String, Arc<Certificate>>,
    default: Option<Arc<Certificate>>,
    all: Vec<Arc<Certificate>>,
}

impl CertMap {
    /// Adds every name of `cert`; a name an earlier certificate claimed stays with it (the
    /// config's order decides, and the operator is told).
    fn add(&mut self, cert: Certificate) {
        let cert = Arc::new(cert);
        for name in &cert.names {
            let (map, key) = match name.strip_prefix("*.") {
                Some(parent) => (&mut self.wildcard, parent),
                None => (&mut self.exact, name.as_str()),
            };
            match map.get(key) {
                Some(first) => tracing::warn!(
                    "{} and {} both claim {name}; the first is served",
                    first.path.display(),
                    cert.path.display()
                ),
                None => {
                    map.insert(key.to_owned(), Arc::clone(&cert));
                }
            }
        }
        self.all.push(cert);
    }

    /// How many certificates the listener has.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// An exact name, then a wildcard one label up (`a.example.com` -> `*.example.com`, as
    /// clients match them).
    fn named(&self, name: &str) -> Option<&Arc<Certificate>> {
        self.exact.get(name).or_else(|| {
            name.split_once('.')
                .and_then(|(_, parent)| self.wildcard.get(parent))
        })
    }
}

/// Reads the certificates `config` gives each of `running` (the listeners bound at start,
/// matched by name), checked as [`Certificate::load`] says: one map per running listener,
/// empty for a plain one. `file` names the config in errors.
pub fn load_listener_certificates(
    config: &Config,
    running: &[ListenerConfig],
    file: &Path,
) -> Result<Vec<CertMap>, ConfigError> {
    let now = SystemTime::now();
    let mut maps = Vec::with_capacity(running.len());
    for listener in running {
        let mut map = CertMap::default();
        let configured = config
            .listeners
            .iter()
            .enumerate()
            .find(|(_, l)| l.name == listener.name && listener.tls.is_some());
        if let Some((i, Some(tls))) = configured.map(|(i, l)| (i, l.tls.as_ref())) {
            for (c, files) in tls.certificates.iter().enumerate() {
                let cert = Certificate::load(&files.cert, &files.key, CertSource::File, now)
                    .map_err(|problem| {
                        ConfigError::at(
                            file,
                            format!("listeners[{i}].tls.certificates[{c}]"),
                            problem,
                        )
                    })?;
                map.add(cert);
            }
            if let Some(name) = &tls.default_certificate {
                let cert = match name.strip_prefix("*.") {
                    Some(parent) => map.wildcard.get(parent),
                    None => map.named(name),
                };
                map.default = Some(Arc::clone(cert.ok_or_else(|| {
                    ConfigError::at(
                        file,
                        format!("listeners[{i}].tls.default_certificate"),
                        format!("no certificate of this listener is valid for {name}"),
                    )
                })?));
            }
        }
        maps.push(map);
    }
    Ok(maps)
}

/// Every certificate berth serves; shared by all TLS listeners, the file source (reloads) and
/// the ACME manager (renewals).
pub struct CertStore {
    /// Indexed like the config's listeners.
    files: ArcSwap<Vec<CertMap>>,
    /// By domain.
    acme: ArcSwap<HashMap<String, Arc<Certificate>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl CertStore {
    pub fn new(files: Vec<CertMap>, metrics: Arc<Metrics>) -> Arc<CertStore> {
        let store = CertStore {
            files: ArcSwap::from_pointee(files),
            acme: ArcSwap::default(),
            metrics,
        };
        store.publish_expiry();
        Arc::new(store)
    }

    /// Replaces the config file's certificates (a reload that loaded them all).
    pub fn set_files(&self, files: Vec<CertMap>) {
        self.files.store(Arc::new(files));
        self.publish_expiry();
    }

    /// Serves `cert` for `domain` on every TLS listener, or stops serving one (`None`).
    pub fn set_acme(&self, domain: &str, cert: Option<Arc<Certificate>>) {
        let mut acme = HashMap::clone(&self.acme.load());
        match cert {
            Some(cert) => acme.insert(domain.to_owned(), cert),
            None => acme.remove(domain),
        };
        self.acme.store(Arc::new(acme));
        self.publish_expiry();
    }

    /// The ACME certificate berth serves for `domain`, if any.
    pub fn acme(&self, domain: &str) -> Option<Arc<Certificate>> {
        self.acme.load().get(domain).cloned()
    }

    /// What `listener` presents to a client that sent `sni`: the listener's own certificate for
    /// the exact name, then an ACME one, then the listener's wildcard, then its default.
    pub fn resolve(&self, listener: usize, sni: Option<&str>) -> Option<Arc<Certificate>> {
        let files = self.files.load();
        let map = files.get(listener)?;
        if let Some(name) = sni {
            if let Some(cert) = map.exact.get(name) {
                return Some(Arc::clone(cert));
            }
            if let Some(cert) = self.acme.load().get(name) {
                return Some(Arc::clone(cert));
            }
            if let Some(cert) = name
                .split_once('.')
                .and_then(|(_, parent)| map.wildcard.get(parent))
            {
                return Some(Arc::clone(cert));
            }
        }
        map.default.clone()
    }

    /// The soonest expiry of every name berth holds a certificate for, as
    /// `berth_tls_certificate_expiry_timestamp_seconds{domain}`.
    fn publish_expiry(&self) {
        let mut soonest: HashMap<&str, i64> = HashMap::new();
        let files = self.files.load();
        let acme = self.acme.load();
        let certs = files
            .iter()
            .flat_map(|map| map.all.iter())
            .chain(acme.values());
        for cert in certs {
            for name in &cert.names {
                let expiry = soonest.entry(name).or_insert(i64::MAX);
                *expiry = (*expiry).min(cert.not_after_unix());
            }
        }
        self.metrics.certificate_expiry(soonest);
    }
}

/// What one TLS listener gives rustls to choose a certificate with, once per full handshake.
pub struct SniResolver {
    store: Arc<CertStore>,
    listener: usize,
    /// For `min_version: "1.3"`: the TLS 1.3 suites of the provider; see [`Self::resolve`].
    tls13_suites: Option<Vec<CipherSuite>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl SniResolver {
    pub fn new(store: Arc<CertStore>, listener: usize, min_version: TlsVersion) -> Self {
        let tls13_suites = (min_version == TlsVersion::Tls13).then(|| {
            rustls::crypto::ring::default_provider()
                .cipher_suites
                .iter()
                .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
                .map(|s| s.suite())
                .collect()
        });
        SniResolver {
            store,
            listener,
            tls13_suites,
        }
    }
}

impl ResolvesServerCert for SniResolver {
    /// rustls calls this after it has chosen the protocol version (1.3 whenever the client
    /// offers it) and before the cipher suite. `None` aborts the handshake with an
    /// `access_denied` alert.
    ///
    /// Minimum version 1.3: Pingora 0.9.1's `TlsSettings::build()` fixes every listener's
    /// versions at 1.2 and 1.3 and takes no `ServerConfig` of ours, so the version cannot be
    /// restricted where rustls negotiates it. A client that offers no TLS 1.3 cipher suite
    /// cannot speak 1.3, so it is refused here; one that offers 1.3 suites but negotiates
    /// 1.2 anyway gets a 403 from the proxy (`crate::proxy`). The upstream fix is a
    /// `TlsSettings` setter for the protocol versions (or listeners that take a prepared
    /// `ServerConfig`), which would also give such clients the proper `protocol_version`
    /// alert.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(tls13) = &self.tls13_suites {
            if !hello.cipher_suites().iter().any(|s| tls13.contains(s)) {
                return None;
            }
        }
        self.store
            .resolve(self.listener, hello.server_name())
            .map(|cert| Arc::clone(&cert.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::tests::TestPki;

    fn config(listeners: &str) -> Config {
        Config::parse(listeners, Path::new("test.yaml")).unwrap()
    }

    #[test]
    fn exact_then_acme_then_wildcard_then_default() {
        let pki = TestPki::new();
        let (a, a_key) = pki.leaf("a", &["a.test"], -1, 30);
        let (w, w_key) = pki.leaf("w", &["*.wild.test", "fallback.test"], -1, 60);
        let config = config(&format!(
            "listeners:\n  - name: public\n    address: \"127.0.0.1:1\"\n    tls:\n      \
             certificates:\n        - {{cert: {a}, key: {ak}}}\n        - {{cert: {w}, key: {wk}}}\n      \
             default_certificate: fallback.test\n  - name: plain\n    address: \"127.0.0.1:2\"\n",
            a = a.display(),
            ak = a_key.display(),
            w = w.display(),
            wk = w_key.display()
        ));
        let maps =
            load_listener_certificates(&config, &config.listeners, Path::new("test.yaml")).unwrap();
        let store = CertStore::new(maps, Metrics::new());
        let served = |sni: Option<&str>| store.resolve(0, sni).map(|c| c.path.clone());
        assert_eq!(served(Some("a.test")), Some(a.clone()));
        assert_eq!(served(Some("x.wild.test")), Some(w.clone()));
        assert_eq!(served(Some("x.y.wild.test")), Some(w.clone()), "default");
        assert_eq!(served(None), Some(w.clone()), "no SNI: default");
        assert!(store.resolve(1, Some("a.test")).is_none(), "plain listener");

        let (acme, acme_key) = pki.leaf("acme", &["x.wild.test", "a.test"], -1, 10);
        let acme =
            Certificate::load(&acme, &acme_key, CertSource::Acme, SystemTime::now()).unwrap();
        store.set_acme("x.wild.test", Some(Arc::new(acme)));
        assert_eq!(
            store.resolve(0, Some("x.wild.test")).unwrap().source,
            CertSource::Acme,
            "ACME's exact name beats the listener's wildcard"
        );
        assert_eq!(
            served(Some("a.test")),
            Some(a),
            "the listener's exact name beats ACME"
        );
        store.set_acme("x.wild.test", None);
        assert_eq!(served(Some("x.wild.test")), Some(w));
    }

    #[test]
    fn a_default_no_certificate_covers_is_refused() {
        let pki = TestPki::new();
        let (a, a_key) = pki.leaf("a", &["a.test"], -1, 30);
        let config = config(&format!(
            "listeners:\n  - name: public\n    address: \"127.0.0.1:1\"\n    tls:\n      \
             certificates: [{{cert: {}, key: {}}}]\n      default_certificate: b.test\n",
            a.display(),
            a_key.display()
        ));
        let err = load_listener_certificates(&config, &config.listeners, Path::new("test.yaml"))
            .unwrap_err();
        assert_eq!(err.key_path, "listeners[0].tls.default_certificate");
        assert!(err.message.contains("b.test"), "{err}");
    }
}
