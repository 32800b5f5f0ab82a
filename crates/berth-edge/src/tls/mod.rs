//! TLS termination: the rustls configuration (TLS 1.2 and 1.3, forward-secret AEAD suites,
//! ALPN h2 and http/1.1), certificates chosen by SNI from a map that is swapped atomically,
//! certificate files watched for changes, and the development CA.
//!
//! - [`certs`]: loading and checking PEM files ([`load_pem_files`]).
//! - `resolver`: SNI → certificate, exact names, one-label wildcards and a default.
//! - `dev_ca`: the development CA under the data directory.
//! - `metrics`: handshakes, failures, reload failures, expiry.
//!
//! [`Tls::apply`] installs the certificates of a new spec (at start and on reload); a task
//! polls certificate files every [`FILE_POLL_INTERVAL`] and swaps in a changed certificate
//! once it loads and checks cleanly. A bad new file is logged and counted; the certificate in
//! use stays.

pub mod certs;
mod dev_ca;
pub mod metrics;
mod resolver;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self as provider_impl, cipher_suite};
use rustls::server::{ServerConfig, ServerSessionMemoryCache};
use rustls::{ProtocolVersion, SupportedCipherSuite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub use certs::{CertError, LoadedCert, load_pem_files};
pub use dev_ca::{CA_CERT_FILE, CA_KEY_FILE};

use crate::spec::{CertSource, CertificateSpec, HostPattern, TlsSpec};
use certs::{Fingerprint, now_unix};
use dev_ca::DevCa;
use metrics::{CertificateLabels, ExpiryCollector, HandshakeLabels, TlsMetrics};
use resolver::{CertMap, Resolver};

/// How often certificate files are checked for changes (size, mtime, inode).
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// ALPN protocols offered, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// TLS sessions remembered for resumption (TLS 1.2 ids and TLS 1.3 stateful tickets).
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

/// berth's one crypto provider (aws-lc-rs), with the suites above. Passed explicitly, so no
/// process-wide default provider is needed.
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
        .map(pattern_text)
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

fn pattern_text(h: &HostPattern) -> String {
    match h {
        HostPattern::Exact(n) => n.clone(),
        HostPattern::Wildcard(s) => format!("*{s}"),
        HostPattern::Any => "*".to_owned(),
    }
}

/// The edge's TLS state: the acceptor configuration, the certificates in use and what is
/// needed to refresh them.
pub struct Tls {
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
    pub(crate) metrics: Arc<TlsMetrics>,
    state: Mutex<State>,
    /// Port of the first TLS listener, for redirects; 0 while no TLS listener is bound.
    https_port: AtomicU32,
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    dev_ca: Option<Arc<DevCa>>,
}

struct Slot {
    hosts: Vec<HostPattern>,
    default: bool,
    current: Arc<LoadedCert>,
    kind: SlotKind,
}

enum SlotKind {
    Files {
        cert: PathBuf,
        key: PathBuf,
        /// The files' identity when last looked at, whether that load worked or not, so a
        /// bad file is reported once rather than at every poll.
        seen: Option<Fingerprint>,
        /// A stat error was already reported.
        missing: bool,
    },
    Dev,
}

impl Tls {
    /// Registers the TLS metrics and installs the certificates of `spec`.
    pub(crate) fn new(spec: &TlsSpec, registry: &mut Registry) -> Result<Arc<Tls>, TlsError> {
        let metrics = TlsMetrics::new(registry);
        let resolver = Arc::new(Resolver::new(metrics.clone()));
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
        let tls = Arc::new(Tls {
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            metrics,
            state: Mutex::new(State::default()),
            https_port: AtomicU32::new(0),
        });
        tls.apply(spec)?;
        Ok(tls)
    }

    /// Installs the certificates of a new spec. File certificates come loaded and checked
    /// from the config; development ones are issued here (and reused when their hosts did not
    /// change). On error nothing changes.
    pub(crate) fn apply(&self, spec: &TlsSpec) -> Result<(), TlsError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_unix();
        let mut slots = Vec::with_capacity(spec.certificates.len());
        for c in &spec.certificates {
            slots.push(self.slot(&mut state, spec, c, now)?);
        }
        state.slots = slots;
        self.install(&state);
        Ok(())
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
                loaded.clone(),
                SlotKind::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                    seen: loaded.fingerprint,
                    missing: false,
                },
            ),
            CertSource::Dev => {
                let reusable = state.slots.iter().find(|s| {
                    matches!(s.kind, SlotKind::Dev)
                        && s.hosts == c.hosts
                        && !needs_renewal(&s.current, now)
                });
                let current = match reusable {
                    Some(s) => s.current.clone(),
                    None => Arc::new(dev_ca(state, &spec.dev_ca_dir, now)?.issue(&c.hosts, now)?),
                };
                (current, SlotKind::Dev)
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
            let key = slot.current.key.clone();
            for host in &slot.hosts {
                match host {
                    HostPattern::Exact(h) => map.insert_exact(h, key.clone()),
                    HostPattern::Wildcard(s) => map.insert_wildcard(s, key.clone()),
                    HostPattern::Any => {}
                }
                map.expiry
                    .push((pattern_text(host), slot.current.not_after));
            }
            if slot.default {
                map.set_default(key);
            }
        }
        self.resolver.map.store(Arc::new(map));
    }

    /// Looks at every certificate file and reloads those that changed; renews development
    /// certificates that are due. Runs every [`FILE_POLL_INTERVAL`].
    fn poll(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_unix();
        let mut changed = false;
        let State { slots, dev_ca } = &mut *state;
        for slot in slots.iter_mut() {
            match &mut slot.kind {
                SlotKind::Files {
                    cert,
                    key,
                    seen,
                    missing,
                } => {
                    let fp = match Fingerprint::of(cert, key) {
                        Ok(fp) => {
                            *missing = false;
                            fp
                        }
                        Err(e) => {
                            if !*missing {
                                *missing = true;
                                tracing::error!(cert = %cert.display(), key = %key.display(), error = %e, "certificate file unreadable; the certificate in use stays");
                                self.reload_failed(&slot.hosts);
                            }
                            continue;
                        }
                    };
                    if *seen == Some(fp) {
                        continue;
                    }
                    *seen = Some(fp);
                    match load_pem_files(cert, key).and_then(|c| {
                        check_covers(&c, &slot.hosts).map(|()| c).map_err(|reason| {
                            CertError::Parse {
                                path: cert.clone(),
                                reason,
                            }
                        })
                    }) {
                        Ok(new) => {
                            tracing::info!(cert = %cert.display(), names = ?new.names, not_after = %certs::rfc3339(new.not_after), "certificate file changed; new certificate in use");
                            *seen = new.fingerprint;
                            slot.current = Arc::new(new);
                            changed = true;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "changed certificate file rejected; the certificate in use stays");
                            self.reload_failed(&slot.hosts);
                        }
                    }
                }
                SlotKind::Dev => {
                    if !needs_renewal(&slot.current, now) {
                        continue;
                    }
                    let issued = dev_ca
                        .as_ref()
                        .ok_or_else(|| TlsError::DevCa {
                            dir: PathBuf::new(),
                            reason: "not loaded".to_owned(),
                        })
                        .and_then(|ca| ca.issue(&slot.hosts, now));
                    match issued {
                        Ok(new) => {
                            slot.current = Arc::new(new);
                            changed = true;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "renewing a development certificate failed; the certificate in use stays");
                        }
                    }
                }
            }
        }
        if changed {
            self.install(&state);
        }
    }

    fn reload_failed(&self, hosts: &[HostPattern]) {
        let host = hosts.first().map(pattern_text).unwrap_or_default();
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
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        timeout: Duration,
        started: Instant,
    ) -> Option<TlsStream<TcpStream>> {
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
                    Some(_) => "other",
                    None => "none",
                };
                self.metrics
                    .handshakes
                    .get_or_create(&HandshakeLabels { version, alpn })
                    .inc();
                Some(tls)
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

fn dev_ca(state: &mut State, dir: &std::path::Path, now: i64) -> Result<Arc<DevCa>, TlsError> {
    if let Some(ca) = &state.dev_ca
        && ca.dir == dir
    {
        return Ok(ca.clone());
    }
    let ca = Arc::new(DevCa::load_or_create(dir, now)?);
    state.dev_ca = Some(ca.clone());
    Ok(ca)
}

/// A third of the lifetime left.
fn needs_renewal(cert: &LoadedCert, now: i64) -> bool {
    let lifetime = (cert.not_after - cert.not_before).max(0);
    cert.seconds_left(now) < lifetime / 3
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
