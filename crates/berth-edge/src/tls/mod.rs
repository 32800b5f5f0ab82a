//! TLS termination: the rustls configuration (TLS 1.2 and 1.3, forward-secret AEAD suites,
//! ALPN h2 and http/1.1), certificates chosen by SNI from a map that is swapped atomically,
//! certificate files watched for changes, and the development CA.
//!
//! - [`certs`]: loading and checking PEM files ([`load_pem_files`]).
//! - `resolver`: SNI → certificate, exact names, one-label wildcards and a default.
//! - `dev_ca`: the development CA under the data directory.
//! - `dev_crl`: its (empty) revocation list, named by its leaves and served by the edge.
//! - [`acme`]: certificates from an ACME CA, HTTP-01 and TLS-ALPN-01 answered by the edge;
//!   one task per certificate orders it when missing and renews it when a third of its
//!   lifetime is left (with jitter), backing off after failures. A failure never removes the
//!   certificate in use.
//! - `metrics`: handshakes, failures, reload failures, expiry.
//!
//! [`Tls::apply`] installs the certificates of a new spec (at start and on reload); a task
//! polls certificate files every [`FILE_POLL_INTERVAL`] and swaps in a changed certificate
//! once it loads and checks cleanly. A bad new file is logged and counted; the certificate in
//! use stays.

pub mod acme;
pub mod certs;
mod dev_ca;
mod dev_crl;
pub mod metrics;
mod resolver;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use prometheus_client::registry::Registry;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self as provider_impl, cipher_suite};
use rustls::server::{ServerConfig, ServerSessionMemoryCache};
use rustls::{ProtocolVersion, SupportedCipherSuite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub use certs::{CertError, LoadedCert, load_pem_files};
pub use dev_ca::{CA_CERT_FILE, CA_KEY_FILE};
pub use dev_crl::{CRL_CONTENT_TYPE, CRL_FILE, CRL_PATH};

use crate::lock;
use crate::spec::{AcmeSpec, CertSource, CertificateSpec, HostPattern, TlsSpec};
use acme::{ACME_TLS_ALPN, AcmeClient, Challenges};
use certs::{Fingerprint, now_unix};
use dev_ca::DevCa;
use dev_crl::{CrlOrigin, DevCrl, crl_url, serves_host};
use metrics::{AcmeLabels, CertificateLabels, ExpiryCollector, HandshakeLabels, TlsMetrics};
use resolver::{CertMap, Resolver};

/// After a failed attempt to re-sign the development CRL, how long before the next one (the
/// poll runs every 2 seconds; the CRL stays valid for days).
const CRL_RETRY: i64 = 60;
/// How often certificate files are checked for changes (size, mtime, inode).
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// ALPN protocols offered, in order of preference. `acme-tls/1` is only chosen by ACME
/// validators (which offer nothing else), and such connections are closed after the handshake.
pub const ALPN: [&[u8]; 3] = [b"h2", b"http/1.1", ACME_TLS_ALPN];
/// TLS 1.2 sessions remembered by id, for clients that resume without tickets (with the
/// ticketer set, TLS 1.3 and ticket-capable TLS 1.2 clients resume from a ticket instead).
const SESSION_CACHE: usize = 4096;

/// Forward-secret AEAD suites only: every TLS 1.3 suite, and ECDHE with AES-GCM or
/// ChaCha20-Poly1305 for TLS 1.2. No CBC, no RSA key exchange.
pub const CIPHER_SUITES: [SupportedCipherSuite; 9] = [
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("development CA in {}: {reason}", dir.display())]
    DevCa { dir: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// berth's one crypto provider (aws-lc-rs), with the suites above, passed explicitly to the
/// listeners' configuration (the process-wide default, installed in [`Tls::new`], has rustls's
/// default suites).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: CIPHER_SUITES.to_vec(),
                ..provider_impl::default_provider()
            })
        })
        .clone()
}

/// Checks that `cert` is valid for every host in `hosts`; the error lists what is missing.
pub fn check_covers(cert: &LoadedCert, hosts: &[HostPattern]) -> Result<(), String> {
    let missing: Vec<String> = hosts
        .iter()
        .filter(|h| !cert.covers(h))
        .map(HostPattern::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names = if cert.names.is_empty() {
        "none".to_owned()
    } else {
        cert.names.join(", ")
    };
    Err(format!(
        "the certificate is not valid for {} (its names: {names})",
        missing.join(", ")
    ))
}

/// The edge's TLS state: the acceptor configuration, the certificates in use and what is
/// needed to refresh them.
pub struct Tls {
    me: Weak<Tls>,
    resolver: Arc<Resolver>,
    challenges: Arc<Challenges>,
    acme: AcmeClient,
    acceptor: TlsAcceptor,
    pub(crate) metrics: Arc<TlsMetrics>,
    state: Mutex<State>,
    /// Port of the first TLS listener, for redirects; 0 while no TLS listener is bound.
    https_port: AtomicU32,
    /// The listener development leaves point their CRL URL at (listeners never change).
    crl_origin: CrlOrigin,
    /// The development CRL and the hosts it is served for; none without `dev` certificates.
    crl: ArcSwapOption<PublishedCrl>,
}

struct PublishedCrl {
    der: Bytes,
    hosts: Vec<HostPattern>,
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    dev_ca: Option<Arc<DevCa>>,
    /// The CRL of `dev_ca`, once a `dev` certificate is configured.
    dev_crl: Option<DevCrl>,
    /// No new attempt to re-sign the CRL before this time (after a failure).
    crl_retry_at: i64,
    /// One renewal task per ACME certificate, by [`SlotKind::Acme::task`].
    acme_tasks: HashMap<String, tokio::task::AbortHandle>,
}

struct Slot {
    hosts: Vec<HostPattern>,
    default: bool,
    /// `None` only for an ACME certificate not issued yet.
    current: Option<Arc<LoadedCert>>,
    kind: SlotKind,
}

enum SlotKind {
    Files(WatchedFiles),
    Dev {
        /// The CRL URL in the certificate: a certificate naming another one is reissued.
        crl_url: Option<String>,
    },
    Acme {
        /// Hosts and ACME settings: a change makes it another certificate (and task).
        task: String,
    },
}

struct WatchedFiles {
    cert: PathBuf,
    key: PathBuf,
    /// The files' identity when last looked at, whether that load worked or not, so a bad
    /// file is reported once rather than at every poll.
    seen: Option<Fingerprint>,
    /// A stat error was already reported.
    missing: bool,
}

impl Tls {
    /// Registers the TLS metrics and installs the certificates of `spec`. `plain_port` is the
    /// port of the first plain-HTTP listener, where development certificates say their CRL is.
    pub(crate) fn new(
        spec: &TlsSpec,
        plain_port: Option<u16>,
        registry: &mut Registry,
    ) -> Result<Arc<Tls>, TlsError> {
        // For libraries that ask rustls for the process default (instant-acme's HTTP client);
        // berth's own configurations name the provider. Fails only when one is installed.
        let _ = CryptoProvider::install_default(provider_impl::default_provider());
        let metrics = TlsMetrics::new(registry);
        let challenges = Arc::new(Challenges::default());
        let resolver = Arc::new(Resolver::new(metrics.clone(), challenges.clone()));
        registry
            .sub_registry_with_prefix("berth")
            .register_collector(Box::new(ExpiryCollector(resolver.clone())));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        config.ignore_client_order = true;
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        config.ticketer = provider_impl::Ticketer::new()?;
        let tls = Arc::new_cyclic(|me| Tls {
            me: me.clone(),
            resolver,
            challenges,
            acme: AcmeClient::default(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            metrics,
            state: Mutex::new(State::default()),
            https_port: AtomicU32::new(0),
            crl_origin: CrlOrigin::new(plain_port, spec.listeners.first().map(|a| a.port())),
            crl: ArcSwapOption::empty(),
        });
        tls.apply(spec)?;
        Ok(tls)
    }

    /// Installs the certificates of a new spec. File certificates come loaded and checked
    /// from the config; development ones are issued here (and reused when their hosts did not
    /// change). On error nothing changes.
    pub(crate) fn apply(&self, spec: &TlsSpec) -> Result<(), TlsError> {
        let mut state = lock(&self.state);
        let now = now_unix();
        let mut slots = Vec::with_capacity(spec.certificates.len());
        for c in &spec.certificates {
            slots.push(self.slot(&mut state, spec, c, now)?);
        }
        let any_dev = slots.iter().any(|s| matches!(s.kind, SlotKind::Dev { .. }));
        if any_dev
            && state.dev_crl.is_none()
            && let Some(ca) = state.dev_ca.clone()
        {
            state.dev_crl = Some(DevCrl::load_or_sign(&ca, now)?);
        }
        state.slots = slots;
        self.install(&state);
        self.publish_crl(&state);
        self.reconcile_acme(&mut state, &spec.acme);
        Ok(())
    }

    /// Starts a task for each new ACME certificate and stops those no longer configured.
    fn reconcile_acme(&self, state: &mut State, spec: &AcmeSpec) {
        let wanted: Vec<(String, Vec<String>)> = state
            .slots
            .iter()
            .filter_map(|s| match &s.kind {
                SlotKind::Acme { task } => Some((task.clone(), exact_names(&s.hosts))),
                _ => None,
            })
            .collect();
        state.acme_tasks.retain(|task, handle| {
            let keep = wanted.iter().any(|(t, _)| t == task);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (task, hosts) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                state.acme_tasks.entry(task.clone())
            {
                slot.insert(self.spawn_acme(task, hosts, spec.clone()));
            }
        }
    }

    /// Orders the certificate when it is missing and renews it when due; after a failure,
    /// waits [`acme::backoff`] and tries again. The certificate in use is only ever replaced
    /// by a newly issued one.
    fn spawn_acme(
        &self,
        task: String,
        hosts: Vec<String>,
        spec: AcmeSpec,
    ) -> tokio::task::AbortHandle {
        let weak = self.me.clone();
        tokio::spawn(async move {
            let jitter: f64 = rand::random();
            let host = hosts.first().cloned().unwrap_or_default();
            let mut failures = 0u32;
            loop {
                let Some(wait) = weak.upgrade().map(|t| t.acme_wait(&task, jitter)) else {
                    return;
                };
                tokio::time::sleep(wait).await;
                let Some(tls) = weak.upgrade() else { return };
                match tls.acme.issue(&spec, &hosts, &tls.challenges).await {
                    Ok(cert) => {
                        failures = 0;
                        tracing::info!(hosts = ?hosts, not_after = %certs::rfc3339(cert.not_after), "ACME certificate issued");
                        tls.acme_result(&host, "issued");
                        tls.acme_installed(&task, cert);
                    }
                    Err(e) => {
                        failures += 1;
                        let retry = acme::backoff(failures);
                        tracing::error!(hosts = ?hosts, error = %e, retry_in_s = retry.as_secs(), failures, "ACME order failed; the certificate in use (if any) stays");
                        tls.acme_result(&host, "failed");
                        drop(tls);
                        tokio::time::sleep(retry).await;
                    }
                }
            }
        })
        .abort_handle()
    }

    fn acme_result(&self, host: &str, result: &'static str) {
        self.metrics
            .acme_orders
            .get_or_create(&AcmeLabels {
                host: host.to_owned(),
                result,
            })
            .inc();
    }

    /// How long until the ACME certificate of `task` is due: now when there is none.
    fn acme_wait(&self, task: &str, jitter: f64) -> Duration {
        let state = lock(&self.state);
        let current = state.slots.iter().find_map(|s| match &s.kind {
            SlotKind::Acme { task: t } if t == task => Some(s.current.clone()),
            _ => None,
        });
        match current.flatten() {
            Some(c) => {
                let secs = c.renew_at(jitter) - now_unix();
                Duration::from_secs(u64::try_from(secs).unwrap_or(0))
            }
            None => Duration::ZERO,
        }
    }

    fn acme_installed(&self, task: &str, cert: LoadedCert) {
        let mut state = lock(&self.state);
        let cert = Arc::new(cert);
        for slot in &mut state.slots {
            if matches!(&slot.kind, SlotKind::Acme { task: t } if t == task) {
                slot.current = Some(cert.clone());
            }
        }
        self.install(&state);
    }

    /// The key authorization for an HTTP-01 token of a pending order.
    pub(crate) fn http01(&self, token: &str) -> Option<String> {
        self.challenges.http01(token)
    }

    fn slot(
        &self,
        state: &mut State,
        spec: &TlsSpec,
        c: &CertificateSpec,
        now: i64,
    ) -> Result<Slot, TlsError> {
        let (current, kind) = match &c.source {
            CertSource::Files { cert, key, loaded } => (
                Some(loaded.clone()),
                SlotKind::Files(WatchedFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    seen: loaded.fingerprint,
                    missing: false,
                }),
            ),
            CertSource::Dev => {
                let url = crl_url(&c.hosts, &self.crl_origin);
                let reusable = state
                    .slots
                    .iter()
                    .find_map(|s| match (&s.current, &s.kind) {
                        (Some(cur), SlotKind::Dev { crl_url })
                            if s.hosts == c.hosts
                                && *crl_url == url
                                && !needs_renewal(cur, now) =>
                        {
                            Some(cur.clone())
                        }
                        _ => None,
                    });
                let current = match reusable {
                    Some(cur) => cur,
                    None => Arc::new(dev_ca(state, &spec.dev_ca_dir, now)?.issue(
                        &c.hosts,
                        url.as_deref(),
                        now,
                    )?),
                };
                (Some(current), SlotKind::Dev { crl_url: url })
            }
            CertSource::Acme => {
                let names = exact_names(&c.hosts);
                // Any change of the ACME settings restarts the certificate's task with them
                // (the EAB key is not in the Debug form; changing only it needs a restart).
                let task = format!("{}|{:?}", names.join(","), spec.acme);
                let kept = state.slots.iter().find_map(|s| match &s.kind {
                    SlotKind::Acme { task: t } if *t == task => s.current.clone(),
                    _ => None,
                });
                let current =
                    kept.or_else(|| acme::load_persisted(&spec.acme, &names).map(Arc::new));
                (current, SlotKind::Acme { task })
            }
        };
        Ok(Slot {
            hosts: c.hosts.clone(),
            default: c.default,
            current,
            kind,
        })
    }

    /// Builds the SNI map from the slots and swaps it in.
    fn install(&self, state: &State) {
        let mut map = CertMap::default();
        for slot in &state.slots {
            let Some(current) = &slot.current else {
                continue;
            };
            let key = current.key.clone();
            for host in &slot.hosts {
                match host {
                    HostPattern::Exact(h) => map.insert_exact(h, key.clone()),
                    HostPattern::Wildcard(s) => map.insert_wildcard(s, key.clone()),
                    HostPattern::Any => {}
                }
                map.expiry.push((host.to_string(), current.not_after));
            }
            if slot.default {
                map.set_default(key);
            }
        }
        self.resolver.map.store(Arc::new(map));
    }

    /// Publishes the development CRL for the hosts of the `dev` certificates, or nothing
    /// when there are none.
    fn publish_crl(&self, state: &State) {
        let hosts: Vec<HostPattern> = state
            .slots
            .iter()
            .filter(|s| matches!(s.kind, SlotKind::Dev { .. }))
            .flat_map(|s| s.hosts.iter().cloned())
            .collect();
        let published = match &state.dev_crl {
            Some(crl) if !hosts.is_empty() => Some(Arc::new(PublishedCrl {
                der: crl.der.clone(),
                hosts,
            })),
            _ => None,
        };
        self.crl.store(published);
    }

    /// The development CRL (DER), when `host` has a development certificate.
    pub(crate) fn dev_crl(&self, host: &str) -> Option<Bytes> {
        let crl = self.crl.load();
        let crl = crl.as_ref()?;
        serves_host(&crl.hosts, host).then(|| crl.der.clone())
    }

    /// Looks at every certificate file and reloads those that changed; renews development
    /// certificates and the development CRL when due. Runs every [`FILE_POLL_INTERVAL`].
    fn poll(&self) {
        let mut state = lock(&self.state);
        let now = now_unix();
        let State { slots, dev_ca, .. } = &mut *state;
        let mut changed = false;
        for slot in slots.iter_mut() {
            changed |= match &mut slot.kind {
                SlotKind::Files(files) => self.reload_files(files, &slot.hosts, &mut slot.current),
                SlotKind::Dev { crl_url } => {
                    let url = crl_url.clone();
                    renew_dev(slot, dev_ca.as_deref(), url.as_deref(), now)
                }
                SlotKind::Acme { .. } => false,
            };
        }
        if changed {
            self.install(&state);
        }
        if refresh_crl(&mut state, now) {
            self.publish_crl(&state);
        }
    }

    /// Reloads a file certificate whose files changed; whether a new certificate is in use.
    fn reload_files(
        &self,
        files: &mut WatchedFiles,
        hosts: &[HostPattern],
        current: &mut Option<Arc<LoadedCert>>,
    ) -> bool {
        let WatchedFiles {
            cert,
            key,
            seen,
            missing,
        } = files;
        let fp = match Fingerprint::of(cert, key) {
            Ok(fp) => fp,
            Err(e) => {
                if !*missing {
                    *missing = true;
                    tracing::error!(cert = %cert.display(), key = %key.display(), error = %e, "certificate file unreadable; the certificate in use stays");
                    self.reload_failed(hosts);
                }
                return false;
            }
        };
        *missing = false;
        if *seen == Some(fp) {
            return false;
        }
        *seen = Some(fp);
        let loaded = load_pem_files(cert, key).and_then(|c| {
            check_covers(&c, hosts)
                .map(|()| c)
                .map_err(|reason| CertError::Names {
                    path: cert.clone(),
                    reason,
                })
        });
        match loaded {
            Ok(new) => {
                tracing::info!(cert = %cert.display(), names = ?new.names, not_after = %certs::rfc3339(new.not_after), "certificate file changed; new certificate in use");
                *seen = new.fingerprint;
                *current = Some(Arc::new(new));
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "changed certificate file rejected; the certificate in use stays");
                self.reload_failed(hosts);
                false
            }
        }
    }

    fn reload_failed(&self, hosts: &[HostPattern]) {
        let host = hosts
            .first()
            .map(HostPattern::to_string)
            .unwrap_or_default();
        self.metrics
            .reload_failures
            .get_or_create(&CertificateLabels { host })
            .inc();
    }

    /// Polls certificate files until the edge is dropped.
    pub(crate) fn spawn_watcher(self: &Arc<Self>) {
        let weak: Weak<Tls> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FILE_POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tls) = weak.upgrade() else { return };
                // File reads and key generation are blocking work.
                let _ = tokio::task::spawn_blocking(move || tls.poll()).await;
            }
        });
    }

    pub(crate) fn set_https_port(&self, port: u16) {
        let _ = self.https_port.compare_exchange(
            0,
            u32::from(port),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Where to redirect a plain-HTTP request for `host`: the HTTPS port, when a TLS listener
    /// is up and a certificate (not merely the default one) covers the host.
    pub(crate) fn redirect_port(&self, host: &str) -> Option<u16> {
        let port = u16::try_from(self.https_port.load(Ordering::Acquire)).ok()?;
        if port == 0 {
            return None;
        }
        self.resolver.map.load().lookup(host).map(|_| port)
    }

    /// The TLS handshake, bounded by `timeout`. Failures are counted by reason and the
    /// connection is dropped.
    pub(crate) async fn handshake<S>(
        &self,
        stream: S,
        timeout: Duration,
        started: Instant,
    ) -> Option<TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let (_, conn) = tls.get_ref();
                let version = match conn.protocol_version() {
                    Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
                    Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
                    _ => "other",
                };
                let alpn = match conn.alpn_protocol() {
                    Some(b"h2") => "h2",
                    Some(b"http/1.1") => "http/1.1",
                    Some(ACME_TLS_ALPN) => "acme-tls/1",
                    Some(_) => "other",
                    None => "none",
                };
                self.metrics
                    .handshakes
                    .get_or_create(&HandshakeLabels { version, alpn })
                    .inc();
                // A TLS-ALPN-01 validation only needs the handshake (RFC 8737 §3).
                (alpn != "acme-tls/1").then_some(tls)
            }
            Ok(Err(e)) => {
                if let Some(reason) = failure_reason(&e) {
                    self.metrics.failure(reason);
                }
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.metrics.failure("timeout");
                None
            }
        }
    }
}

/// The exact names of a certificate's hosts (ACME certificates have no wildcards).
fn exact_names(hosts: &[HostPattern]) -> Vec<String> {
    hosts
        .iter()
        .filter_map(|h| match h {
            HostPattern::Exact(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn dev_ca(state: &mut State, dir: &std::path::Path, now: i64) -> Result<Arc<DevCa>, TlsError> {
    if let Some(ca) = &state.dev_ca
        && ca.dir == dir
    {
        return Ok(ca.clone());
    }
    let ca = Arc::new(DevCa::load_or_create(dir, now)?);
    state.dev_ca = Some(ca.clone());
    // The CRL belongs to the CA it was signed by.
    state.dev_crl = None;
    Ok(ca)
}

/// A third of the lifetime left (the ACME rule without jitter).
fn needs_renewal(cert: &LoadedCert, now: i64) -> bool {
    now > cert.renew_at(0.0)
}

/// Re-signs the development CRL when it is due; whether a new one is in use. A failure is
/// logged and tried again after [`CRL_RETRY`]; the current CRL stays valid meanwhile.
fn refresh_crl(state: &mut State, now: i64) -> bool {
    let (Some(ca), Some(crl)) = (&state.dev_ca, &state.dev_crl) else {
        return false;
    };
    if now < state.crl_retry_at {
        return false;
    }
    match crl.refreshed(ca, now) {
        None => false,
        Some(Ok(new)) => {
            state.dev_crl = Some(new);
            true
        }
        Some(Err(e)) => {
            state.crl_retry_at = now + CRL_RETRY;
            tracing::error!(error = %e, next_update = %certs::rfc3339(crl.next_update), "re-signing the development CRL failed; the current one is served until its nextUpdate");
            false
        }
    }
}

/// Reissues a development certificate that is due; whether a new certificate is in use.
fn renew_dev(slot: &mut Slot, ca: Option<&DevCa>, crl_url: Option<&str>, now: i64) -> bool {
    if slot
        .current
        .as_ref()
        .is_some_and(|c| !needs_renewal(c, now))
    {
        return false;
    }
    // A `dev` slot is only made once the CA is loaded (see `Tls::slot`).
    let Some(ca) = ca else { return false };
    match ca.issue(&slot.hosts, crl_url, now) {
        Ok(new) => {
            slot.current = Some(Arc::new(new));
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "renewing a development certificate failed; the certificate in use stays");
            false
        }
    }
}

/// The metric label for a failed handshake, or `None` when the resolver already counted it.
fn failure_reason(e: &std::io::Error) -> Option<&'static str> {
    use rustls::Error as E;
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return Some(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "eof",
            _ => "io",
        });
    };
    Some(match tls {
        E::General(m) if m.contains("no server certificate") => return None,
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::DecryptError => "bad_message",
        E::PeerIncompatible(_) => "incompatible",
        E::NoApplicationProtocol => "no_alpn",
        E::AlertReceived(_) => "alert",
        _ => "other",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_certificate_is_reissued_once_a_third_of_its_lifetime_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        let ca = DevCa::load_or_create(dir.path(), now).unwrap();
        let hosts = vec![HostPattern::Exact("a.test".into())];
        let life = dev_ca::LEAF_LIFETIME.as_secs() as i64;
        let issued_at = |t| Some(Arc::new(ca.issue(&hosts, None, t).unwrap()));
        let mut slot = Slot {
            hosts: hosts.clone(),
            default: false,
            current: issued_at(now - life / 2),
            kind: SlotKind::Dev { crl_url: None },
        };
        assert!(
            !renew_dev(&mut slot, Some(&ca), None, now),
            "half its life left"
        );
        slot.current = issued_at(now - life * 3 / 4);
        assert!(renew_dev(&mut slot, Some(&ca), None, now), "a quarter left");
        let renewed = slot.current.as_ref().unwrap();
        assert_eq!(renewed.seconds_left(now), life);
    }

    #[test]
    fn the_dev_crl_is_re_signed_by_the_poll_when_due_and_a_failure_waits_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        let ca = Arc::new(DevCa::load_or_create(dir.path(), now).unwrap());
        let crl = DevCrl::load_or_sign(&ca, now).unwrap();
        let due = crl.next_update - (crl.next_update - crl.this_update) / 2;
        let mut state = State {
            dev_ca: Some(ca),
            dev_crl: Some(crl),
            ..State::default()
        };
        assert!(!refresh_crl(&mut state, due - 60), "not yet due");

        // The new file cannot replace the old one (a non-empty directory there, which stops
        // root too): the old CRL stays and the next attempt waits a minute.
        let path = dir.path().join(dev_crl::CRL_FILE);
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), b"x").unwrap();
        assert!(!refresh_crl(&mut state, due));
        assert_eq!(state.dev_crl.as_ref().unwrap().number, 1);
        assert_eq!(state.crl_retry_at, due + CRL_RETRY);
        std::fs::remove_dir_all(&path).unwrap();
        assert!(!refresh_crl(&mut state, due + 1), "waits for the retry");
        assert!(refresh_crl(&mut state, due + CRL_RETRY));
        assert_eq!(state.dev_crl.as_ref().unwrap().number, 2);
        assert!(path.is_file());
    }
}
