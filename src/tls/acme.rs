//! Automatic certificates (ACME, RFC 8555, HTTP-01) with `instant-acme`.
//!
//! The domains come from the live route table: every domain of a service with `tls.acme` that
//! a TLS listener serves, one order per domain (as Caddy does, so one failing name never
//! blocks the others). Never for names HTTP-01 cannot prove or no public CA issues for:
//! wildcards (they need DNS-01), the catch-all, IP addresses, and special-use or private
//! suffixes (`.local`, `.localhost`, `.internal`, `.test`, ...).
//!
//! Certificates and the account key are kept in `acme.storage`, in a directory per CA (so a
//! switch from a staging CA to a production one never serves the staging certificates),
//! directories 0700 and files 0600, and reused at start, so a restart orders nothing while
//! they are good. A certificate is
//! renewed when it has less than `renew_before` left; a failed order is retried with backoff
//! (1 minute, doubling up to 12 hours) while the current certificate keeps serving, and the
//! error shows in `/api/routes` and in `berth_acme_orders_total{result="failure"}`.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use super::certs::{CertSource, Certificate};
use super::challenge::Challenges;
use super::store::CertStore;
use crate::config::{AcmeConfig, ListenerConfig};
use crate::metrics::Metrics;
use crate::table::live::LiveTable;
use crate::table::{serves, RouteTable};

/// The first retry after a failed order; each further failure doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(12 * 3600);
/// The longest one order may take, from the new order to the certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// The manager looks at its domains at least this often (clock changes, missed wake-ups).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Suffixes no public CA issues certificates for (RFC 6761, RFC 8375, RFC 9476, ICANN's
/// `.internal`).
const PRIVATE_SUFFIXES: &[&str] = &[
    "local",
    "localhost",
    "internal",
    "test",
    "example",
    "invalid",
    "onion",
    "alt",
    "home.arpa",
];

/// Why berth does not order a certificate for `domain`, if it does not.
pub fn not_orderable(domain: &str) -> Option<&'static str> {
    if domain == "*" || domain.starts_with("*.") {
        return Some("wildcard names need a DNS-01 challenge, which berth does not do");
    }
    let Some((_, tld)) = domain.rsplit_once('.') else {
        return Some("a single-label name is not a public domain");
    };
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return Some("an IP address is not a domain");
    }
    let private = PRIVATE_SUFFIXES.iter().any(|suffix| {
        domain == *suffix
            || domain
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.'))
    });
    private.then_some("no public CA issues certificates under this special-use suffix")
}

/// The domains berth should hold an ACME certificate for.
fn wanted(table: &RouteTable, listeners: &[ListenerConfig]) -> BTreeSet<String> {
    let mut domains = BTreeSet::new();
    for upstream in table.upstreams() {
        let on_tls = listeners
            .iter()
            .any(|l| l.tls.is_some() && serves(l, &upstream.spec, &upstream.policy));
        if !(upstream.policy.tls.acme && on_tls) {
            continue;
        }
        domains.extend(
            upstream
                .spec
                .domains
                .iter()
                .filter(|d| not_orderable(d).is_none())
                .cloned(),
        );
    }
    domains
}

/// What operators see of one domain's ACME state (`/api/routes`).
#[derive(Clone, Debug, Default)]
pub struct DomainStatus {
    pub last_error: Option<String>,
    pub last_attempt: Option<SystemTime>,
    /// When berth next orders (a renewal, or a retry after a failure).
    pub next_order: Option<SystemTime>,
}

/// The state of every domain the manager looks after, shared with the admin API.
#[derive(Default)]
pub struct AcmeStatus(Mutex<HashMap<String, DomainStatus>>);

impl AcmeStatus {
    pub fn get(&self, domain: &str) -> Option<DomainStatus> {
        self.lock().get(domain).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DomainStatus>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One domain as the manager tracks it.
struct Domain {
    cert: Option<Arc<Certificate>>,
    failures: u32,
    /// No order before this (backoff after a failure).
    retry_at: Instant,
}

/// The background service that obtains and renews certificates.
pub struct AcmeManager {
    config: AcmeConfig,
    listeners: Vec<ListenerConfig>,
    live: Arc<LiveTable>,
    store: Arc<CertStore>,
    challenges: Arc<Challenges>,
    status: Arc<AcmeStatus>,
    metrics: Arc<Metrics>,
}

impl AcmeManager {
    pub fn new(
        config: AcmeConfig,
        listeners: Vec<ListenerConfig>,
        live: Arc<LiveTable>,
        store: Arc<CertStore>,
        challenges: Arc<Challenges>,
        status: Arc<AcmeStatus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.acme_enabled();
        Self {
            config,
            listeners,
            live,
            store,
            challenges,
            status,
            metrics,
        }
    }

    /// Where this CA's account and certificates are kept.
    fn ca_storage(&self) -> PathBuf {
        self.config
            .storage
            .join(ca_directory_name(&self.config.directory))
    }

    fn paths(&self, domain: &str) -> (PathBuf, PathBuf) {
        let storage = self.ca_storage();
        (
            storage.join(format!("{domain}.crt")),
            storage.join(format!("{domain}.key")),
        )
    }

    /// The certificate kept in storage for `domain`, if it is still good.
    fn stored(&self, domain: &str) -> Option<Arc<Certificate>> {
        let (cert, key) = self.paths(domain);
        if !cert.exists() {
            return None;
        }
        match Certificate::load(&cert, &key, CertSource::Acme, SystemTime::now()) {
            Ok(loaded) => {
                tracing::info!(
                    domain,
                    expires = %humantime::format_rfc3339_seconds(loaded.not_after),
                    "ACME certificate loaded from storage"
                );
                Some(Arc::new(loaded))
            }
            Err(e) => {
                tracing::warn!(
                    domain,
                    "ACME certificate in storage is not usable, ordering a new one: {e}"
                );
                None
            }
        }
    }

    /// When `domain` is next due for an order.
    fn due(&self, domain: &Domain) -> Instant {
        let renew = domain.cert.as_ref().map_or(Instant::now(), |cert| {
            let renew_at = cert.not_after - self.config.renew_before;
            let wait = renew_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            Instant::now() + wait
        });
        renew.max(domain.retry_at)
    }

    /// Orders for every wanted domain that is due; returns when to look again.
    async fn round(
        &self,
        domains: &mut HashMap<String, Domain>,
        account: &mut Option<Account>,
    ) -> Instant {
        let wanted = wanted(&self.live.load_full(), &self.listeners);
        domains.retain(|name, _| {
            let keep = wanted.contains(name);
            if !keep {
                self.store.set_acme(name, None);
                self.status.lock().remove(name);
            }
            keep
        });
        let mut wake = Instant::now() + MAX_SLEEP;
        for name in wanted {
            let domain = domains.entry(name.clone()).or_insert_with(|| {
                let cert = self.stored(&name);
                if let Some(cert) = &cert {
                    self.store.set_acme(&name, Some(Arc::clone(cert)));
                }
                Domain {
                    cert,
                    failures: 0,
                    retry_at: Instant::now(),
                }
            });
            if self.due(domain) <= Instant::now() {
                self.order(&name, domain, account).await;
            }
            let next = self.due(domain);
            self.status.lock().entry(name).or_default().next_order =
                Some(SystemTime::now() + next.saturating_duration_since(Instant::now()));
            wake = wake.min(next);
        }
        wake
    }

    /// Orders a certificate for `name` and installs it, or records the failure.
    async fn order(&self, name: &str, domain: &mut Domain, account: &mut Option<Account>) {
        let started = Instant::now();
        tracing::info!(
            domain = name,
            renewal = domain.cert.is_some(),
            "ACME order started"
        );
        let result = match tokio::time::timeout(ORDER_TIMEOUT, self.obtain(name, account)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no certificate within {ORDER_TIMEOUT:?}")),
        };
        let mut status = self.status.lock();
        let status = status.entry(name.to_owned()).or_default();
        status.last_attempt = Some(SystemTime::now());
        match result {
            Ok(cert) => {
                tracing::info!(
                    domain = name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    expires = %humantime::format_rfc3339_seconds(cert.not_after),
                    "ACME certificate installed"
                );
                self.store.set_acme(name, Some(Arc::clone(&cert)));
                self.metrics.acme_order(true);
                domain.cert = Some(cert);
                domain.failures = 0;
                status.last_error = None;
            }
            Err(e) => {
                domain.failures += 1;
                let backoff = FIRST_RETRY
                    .saturating_mul(1 << (domain.failures - 1).min(16))
                    .min(MAX_RETRY);
                domain.retry_at = Instant::now() + backoff;
                tracing::warn!(
                    domain = name,
                    retry_in = ?backoff,
                    "ACME order failed; {}: {e}",
                    if domain.cert.is_some() {
                        "the current certificate keeps serving"
                    } else {
                        "no certificate for this domain yet"
                    }
                );
                self.metrics.acme_order(false);
                status.last_error = Some(e);
            }
        }
    }

    async fn obtain(
        &self,
        name: &str,
        account: &mut Option<Account>,
    ) -> Result<Arc<Certificate>, String> {
        private_dir(&self.config.storage)?;
        private_dir(&self.ca_storage())?;
        let account = match account {
            Some(account) => account,
            None => account.insert(self.account().await?),
        };
        let identifiers = [Identifier::Dns(name.to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let mut tokens = Vec::new();
        let authorized = self.authorize(&mut order, name, &mut tokens).await;
        // Polls sleep their first delay before looking: short, since a CA that validated at
        // once (as pebble does, and Let's Encrypt often) is then not kept waiting for.
        let polls = RetryPolicy::new()
            .initial_delay(Duration::from_millis(50))
            .backoff(1.5)
            .timeout(Duration::from_secs(60));
        let ready = match authorized {
            Ok(()) => order
                .poll_ready(&polls)
                .await
                .map_err(|e| format!("validation: {e}")),
            Err(e) => Err(e),
        };
        for token in &tokens {
            self.challenges.remove(token);
        }
        match ready? {
            OrderStatus::Ready => {}
            status => return Err(format!("the order is {status:?}, not ready")),
        }
        // A fresh ECDSA P-256 key and its CSR (instant-acme's rcgen feature).
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain_pem = match order.certificate().await {
            Ok(Some(chain)) => chain,
            _ => order
                .poll_certificate(&polls)
                .await
                .map_err(|e| format!("certificate: {e}"))?,
        };
        let (cert_path, key_path) = self.paths(name);
        // The key first: a reader that sees the new chain also finds its key.
        write_private(&key_path, key_pem.as_bytes())?;
        write_private(&cert_path, chain_pem.as_bytes())?;
        Certificate::load(&cert_path, &key_path, CertSource::Acme, SystemTime::now()).map(Arc::new)
    }

    /// Publishes the HTTP-01 answer of every pending authorization and tells the CA it is
    /// ready; `tokens` collects what was published.
    async fn authorize(
        &self,
        order: &mut instant_acme::Order,
        name: &str,
        tokens: &mut Vec<String>,
    ) -> Result<(), String> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                // The CA remembers an earlier validation.
                AuthorizationStatus::Valid => continue,
                status => return Err(format!("the authorization for {name} is {status:?}")),
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| format!("the CA offers no http-01 challenge for {name}"))?;
            // Published before `set_ready`: the CA may fetch it at once.
            self.challenges.insert(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_owned(),
            );
            tokens.push(challenge.token.clone());
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge: {e}"))?;
        }
        Ok(())
    }

    /// The stored account at this CA, or a new one (then stored).
    async fn account(&self) -> Result<Account, String> {
        let builder = || {
            match &self.config.ca_certificate {
                Some(ca) => Account::builder_with_root(ca),
                None => Account::builder(),
            }
            .map_err(|e| format!("ACME HTTP client: {e}"))
        };
        let path = self.ca_storage().join("account.json");
        if let Ok(text) = fs::read(&path) {
            let credentials: AccountCredentials =
                serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            return builder()?
                .from_credentials(credentials)
                .await
                .map_err(|e| format!("account from {}: {e}", path.display()));
        }
        let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await
            .map_err(|e| format!("account at {}: {e}", self.config.directory))?;
        // The credentials hold the account's private key.
        let json = serde_json::to_vec_pretty(&credentials).expect("credentials serialize");
        write_private(&path, &json)?;
        tracing::info!(directory = %self.config.directory, "ACME account created");
        Ok(account)
    }
}

#[async_trait]
impl BackgroundService for AcmeManager {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut domains = HashMap::new();
        let mut account = None;
        loop {
            // Registered before the round so a table published during it still wakes us.
            let table_changed = self.live.changed.notified();
            let wake = self.round(&mut domains, &mut account).await;
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = table_changed => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The directory name of a CA's files: its directory URL without the scheme, every character
/// but letters, digits, `.` and `-` replaced (`acme-v02.api.letsencrypt.org-directory`).
fn ca_directory_name(directory: &str) -> String {
    let url = directory.strip_prefix("https://").unwrap_or(directory);
    let name: String = url
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.trim_matches('-').to_owned()
}

/// Creates `dir` (and parents) and makes it 0700: it holds private keys.
fn private_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Writes `data` to `path` with mode 0600, through a temporary file and a rename, so a crash
/// never leaves half a key behind.
fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_a_public_ca_can_validate_over_http_are_ordered() {
        for domain in ["example.com", "a.b.example.org", "notlocal.com"] {
            assert_eq!(not_orderable(domain), None, "{domain}");
        }
        for domain in [
            "*",
            "*.example.com",
            "restserver.local",
            "localhost",
            "app.localhost",
            "db.internal",
            "a.test",
            "10.0.0.1",
            "intranet",
            "router.home.arpa",
            "shop.example",
        ] {
            assert!(not_orderable(domain).is_some(), "{domain}");
        }
    }

    #[test]
    fn each_ca_gets_its_own_directory() {
        assert_eq!(
            ca_directory_name("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org-directory"
        );
        assert_eq!(
            ca_directory_name("https://127.0.0.1:14000/dir"),
            "127.0.0.1-14000-dir"
        );
    }

    #[test]
    fn private_files_are_0600_in_a_0700_directory() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("acme");
        private_dir(&storage).unwrap();
        let key = storage.join("a.example.com.key");
        write_private(&key, b"secret").unwrap();
        write_private(&key, b"replaced").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&storage), 0o700);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(fs::read(&key).unwrap(), b"replaced");
        assert!(!storage.join("a.example.com.key.tmp").exists());
    }
}
