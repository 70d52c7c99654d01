//! TLS termination: the certificates berth serves ([`store`]), how one is loaded and checked
//! ([`certs`]), certificates obtained and renewed over ACME ([`acme`]) with the HTTP-01
//! challenges they need ([`challenge`]), and the Pingora settings of a TLS listener.
//!
//! Pingora's rustls listener takes a certificate resolver (`TlsSettings::set_cert_resolver`):
//! each TLS listener gets an [`store::SniResolver`] over the one [`store::CertStore`], so a
//! reload or a renewal changes what the next handshake presents without restarting or
//! dropping a connection.

pub mod acme;
pub mod certs;
pub mod challenge;
pub mod store;

use std::sync::Arc;

use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::ALPN;

use crate::config::{Alpn, ListenerConfig, ListenerTls};
use crate::table::serves;
use crate::table::upstream::Upstream;
use acme::{AcmeStatus, DomainStatus};
use certs::Certificate;
use store::{CertStore, SniResolver};

/// Makes ring the process's default rustls crypto provider. Pingora installs it only when a
/// TLS listener starts, but the ACME client builds its rustls configuration from the default
/// provider, so it must exist first; with both on ring, one provider is compiled in.
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is what is wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The Pingora TLS settings of listener number `listener`.
pub fn listener_settings(
    tls: &ListenerTls,
    store: &Arc<CertStore>,
    listener: usize,
) -> TlsSettings {
    // The paths are unused: with a resolver set, `build()` never reads them.
    let mut settings =
        TlsSettings::intermediate("", "").expect("building TLS settings does not fail");
    settings.set_cert_resolver(Arc::new(SniResolver::new(
        Arc::clone(store),
        listener,
        tls.min_version,
    )));
    settings.set_alpn(match tls.alpn {
        Alpn::H2Http11 => ALPN::H2H1,
        Alpn::Http11 => ALPN::H1,
        Alpn::H2 => ALPN::H2,
    });
    settings
}

/// The TLS side of one domain of a service, for operators (`/api/routes`).
pub struct DomainTls<'a> {
    pub domain: &'a str,
    /// What the first TLS listener that serves the service presents for the domain.
    pub certificate: Option<Arc<Certificate>>,
    /// With `tls.acme`: the domain's ACME state, or why berth does not order for it.
    pub acme: Option<Result<DomainStatus, &'static str>>,
}

/// Answers what certificate each service's domains get.
pub struct TlsLookup {
    listeners: Vec<ListenerConfig>,
    store: Arc<CertStore>,
    acme: Option<Arc<AcmeStatus>>,
}

impl TlsLookup {
    pub fn new(
        listeners: Vec<ListenerConfig>,
        store: Arc<CertStore>,
        acme: Option<Arc<AcmeStatus>>,
    ) -> Self {
        Self {
            listeners,
            store,
            acme,
        }
    }

    /// Each domain of `upstream`; `None` when no TLS listener serves it.
    pub fn domains<'a>(&self, upstream: &'a Upstream) -> Option<Vec<DomainTls<'a>>> {
        let listener = self
            .listeners
            .iter()
            .position(|l| l.tls.is_some() && serves(l, &upstream.spec, &upstream.policy))?;
        let domains = upstream.spec.domains.iter().map(|domain| {
            // `*.example.com` resolves like a name in it; the catch-all like no SNI.
            let sni = (domain != "*").then_some(domain.as_str());
            let acme = match (&self.acme, upstream.policy.tls.acme) {
                (Some(status), true) => Some(match acme::not_orderable(domain) {
                    Some(why) => Err(why),
                    None => Ok(status.get(domain).unwrap_or_default()),
                }),
                _ => None,
            };
            DomainTls {
                domain,
                certificate: self.store.resolve(listener, sni),
                acme,
            }
        });
        Some(domains.collect())
    }
}
