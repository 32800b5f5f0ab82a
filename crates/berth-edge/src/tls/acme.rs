//! ACME (RFC 8555) with instant-acme: the account, orders answered by the edge itself over
//! HTTP-01 (plain listeners) or TLS-ALPN-01 (TLS listeners, RFC 8737), and what is kept on disk.
//!
//! Under `AcmeSpec::state_dir`, one directory per CA (named after its host) holds
//! `account.json` (the account key) and `certs/<host>.pem` + `.key`, all 0600 in 0700
//! directories. A certificate found there at start is used at once, so a restart never orders
//! again. Scheduling (renewal at a third of the lifetime, jitter, backoff) is in `mod.rs`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, ExternalAccountKey, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::certs::{CertError, LoadedCert, certified, load_pem_files, now_unix};
use super::dev_ca::write_new;
use super::lock;
use crate::spec::{AcmeChallenge, AcmeSpec};

/// ALPN protocol of TLS-ALPN-01 validation connections.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Where HTTP-01 tokens are fetched.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
/// First wait after a failed order; doubled after each further failure up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(60);
pub const RETRY_MAX: Duration = Duration::from_secs(6 * 3600);
/// How long an order may take to become ready, and its certificate to be issued.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ACME order failed: {0}")]
    Order(String),
    #[error("the issued certificate was refused: {0}")]
    Cert(#[from] CertError),
    #[error("{0}")]
    Other(String),
}

/// Challenge answers while an order is pending: HTTP-01 tokens and TLS-ALPN-01 certificates.
#[derive(Default)]
pub(crate) struct Challenges {
    http: Mutex<HashMap<String, String>>,
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    pub(crate) fn http01(&self, token: &str) -> Option<String> {
        lock(&self.http).get(token).cloned()
    }

    pub(crate) fn alpn(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.alpn).get(host).cloned()
    }
}

/// Removes an order's challenge answers when the order is done, however it ends.
struct Registered<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
    hosts: Vec<String>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut http = lock(&self.challenges.http);
        for t in &self.tokens {
            http.remove(t);
        }
        let mut alpn = lock(&self.challenges.alpn);
        for h in &self.hosts {
            alpn.remove(h);
        }
    }
}

/// One account per CA, created on first use and kept on disk.
#[derive(Default)]
pub(crate) struct AcmeClient {
    account: tokio::sync::Mutex<Option<(AcmeSpec, Account)>>,
}

/// The directory for one CA's state: its host (and port) from the directory URL.
fn ca_dir(spec: &AcmeSpec) -> PathBuf {
    let authority = spec
        .directory
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_else(|| "ca".to_owned());
    let safe: String = authority
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    spec.state_dir.join(safe)
}

/// `certs/<first host>.pem` and `.key` for a certificate's hosts.
pub(crate) fn cert_paths(spec: &AcmeSpec, hosts: &[String]) -> (PathBuf, PathBuf) {
    let name = hosts.first().map_or("certificate", String::as_str);
    let dir = ca_dir(spec).join("certs");
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

fn private_dir(path: &Path) -> Result<(), AcmeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| AcmeError::Io {
            what: "creating",
            path: path.to_owned(),
            source,
        })
}

/// A certificate kept from an earlier run, if it is still valid and covers the hosts.
pub(crate) fn load_persisted(spec: &AcmeSpec, hosts: &[String]) -> Option<LoadedCert> {
    let (cert, key) = cert_paths(spec, hosts);
    if !cert.exists() {
        return None;
    }
    match load_pem_files(&cert, &key) {
        Ok(c)
            if hosts
                .iter()
                .all(|h| c.covers(&crate::spec::HostPattern::Exact(h.clone()))) =>
        {
            Some(c)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the stored ACME certificate");
            None
        }
    }
}

impl AcmeClient {
    async fn account(&self, spec: &AcmeSpec) -> Result<Account, AcmeError> {
        let mut cached = self.account.lock().await;
        if let Some((s, a)) = &*cached
            && s.directory == spec.directory
            && s.ca_cert == spec.ca_cert
            && s.eab == spec.eab
        {
            return Ok(a.clone());
        }
        let builder = || match &spec.ca_cert {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        };
        let dir = ca_dir(spec);
        let path = dir.join("account.json");
        let account = match fs::read(&path) {
            Ok(bytes) => {
                let creds = serde_json::from_slice(&bytes)
                    .map_err(|e| AcmeError::Other(format!("{}: {e}", path.display())))?;
                builder()?.from_credentials(creds).await?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let contact: Vec<&str> = spec.contact.iter().map(String::as_str).collect();
                let eab = spec
                    .eab
                    .as_ref()
                    .map(|e| ExternalAccountKey::new(e.kid.clone(), &e.hmac_key));
                let (account, creds) = builder()?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        spec.directory.clone(),
                        eab.as_ref(),
                    )
                    .await?;
                private_dir(&dir)?;
                let json = serde_json::to_vec_pretty(&creds)
                    .map_err(|e| AcmeError::Other(e.to_string()))?;
                write_new(&path, &json, 0o600).map_err(|source| AcmeError::Io {
                    what: "writing",
                    path: path.clone(),
                    source,
                })?;
                tracing::info!(directory = %spec.directory, account = %path.display(), "ACME account created");
                account
            }
            Err(source) => {
                return Err(AcmeError::Io {
                    what: "reading",
                    path,
                    source,
                });
            }
        };
        *cached = Some((spec.clone(), account.clone()));
        Ok(account)
    }

    /// Orders a certificate for `hosts`, answers its challenges, and stores the result.
    pub(crate) async fn issue(
        &self,
        spec: &AcmeSpec,
        hosts: &[String],
        challenges: &Challenges,
    ) -> Result<LoadedCert, AcmeError> {
        let account = self.account(spec).await?;
        let ids: Vec<Identifier> = hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let kind = match spec.challenge {
            AcmeChallenge::Http01 => ChallengeType::Http01,
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut registered = Registered {
            challenges,
            tokens: Vec::new(),
            hosts: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            let host = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Order(format!(
                        "authorization for {host} is {other:?}"
                    )));
                }
            }
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                AcmeError::Order(format!("the CA offers no {kind:?} challenge for {host}"))
            })?;
            let key_auth = challenge.key_authorization();
            match spec.challenge {
                AcmeChallenge::Http01 => {
                    lock(&challenges.http)
                        .insert(challenge.token.clone(), key_auth.as_str().to_owned());
                    registered.tokens.push(challenge.token.clone());
                }
                AcmeChallenge::TlsAlpn01 => {
                    let cert = alpn_certificate(&host, key_auth.digest().as_ref())?;
                    lock(&challenges.alpn).insert(host.clone(), cert);
                    registered.hosts.push(host);
                }
            }
            challenge.set_ready().await?;
        }
        let retry = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retry).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Order(order_problems(&mut order, status).await));
        }
        drop(registered);
        let key = KeyPair::generate().map_err(|e| AcmeError::Other(e.to_string()))?;
        let csr = CertificateParams::new(hosts.to_vec())
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| AcmeError::Other(format!("making the CSR: {e}")))?;
        order.finalize_csr(csr.der()).await?;
        let chain_pem = order.poll_certificate(&retry).await?;
        let (cert_path, key_path) = cert_paths(spec, hosts);
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AcmeError::Other(format!("the CA sent a bad PEM chain: {e:?}")))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let loaded = certified(chain, key_der, &cert_path, &key_path, now_unix())?;
        persist(&cert_path, &key_path, &chain_pem, &key.serialize_pem())?;
        Ok(loaded)
    }
}

/// What went wrong with an order that did not become ready: the errors of its challenges.
async fn order_problems(order: &mut instant_acme::Order, status: OrderStatus) -> String {
    let mut problems = Vec::new();
    if let Some(p) = &order.state().error {
        problems.push(p.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        let host = authz.identifier().to_string();
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                problems.push(format!("{host}: {p}"));
            }
        }
    }
    if problems.is_empty() {
        format!("order is {status:?}")
    } else {
        format!("order is {status:?}: {}", problems.join("; "))
    }
}

fn persist(cert: &Path, key: &Path, chain_pem: &str, key_pem: &str) -> Result<(), AcmeError> {
    if let Some(dir) = cert.parent() {
        private_dir(dir)?;
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AcmeError::Io {
            what: "writing",
            path,
            source,
        }
    };
    write_new(key, key_pem.as_bytes(), 0o600).map_err(io(key))?;
    write_new(cert, chain_pem.as_bytes(), 0o600).map_err(io(cert))
}

/// RFC 8737: a self-signed certificate for `host` with the critical acmeIdentifier extension
/// holding the SHA-256 of the key authorization.
fn alpn_certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let err = |e: rcgen::Error| AcmeError::Other(format!("TLS-ALPN-01 certificate: {e}"));
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(err)?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(err)?;
    let signing = super::provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .map_err(|e| AcmeError::Other(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// Wait before the next try after `failures` failed orders in a row (at least one).
pub(crate) fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_MIN.saturating_mul(1 << doublings).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_minute_to_six_hours() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(5), Duration::from_secs(960));
        assert_eq!(backoff(12), RETRY_MAX);
        assert_eq!(backoff(1000), RETRY_MAX);
    }

    #[test]
    fn ca_state_is_kept_per_directory_host() {
        let spec = AcmeSpec {
            directory: "https://127.0.0.1:14000/dir".into(),
            state_dir: PathBuf::from("/d"),
            ..AcmeSpec::default()
        };
        assert_eq!(ca_dir(&spec), PathBuf::from("/d/127.0.0.1_14000"));
        let (c, k) = cert_paths(&spec, &["a.test".into()]);
        assert_eq!(c, PathBuf::from("/d/127.0.0.1_14000/certs/a.test.pem"));
        assert_eq!(k, PathBuf::from("/d/127.0.0.1_14000/certs/a.test.key"));
        assert_eq!(
            ca_dir(&AcmeSpec {
                state_dir: PathBuf::from("/d"),
                ..AcmeSpec::default()
            }),
            PathBuf::from("/d/acme-v02.api.letsencrypt.org")
        );
    }
}
