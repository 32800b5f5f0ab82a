//! Certificates as the edge holds them: a rustls [`CertifiedKey`] plus what berth checks and
//! reports about it (names, validity, where it came from).

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::spec::HostPattern;

/// A certificate chain with its private key, checked: the key belongs to the leaf, the leaf is
/// valid now, and its DNS names are known.
pub struct LoadedCert {
    pub(crate) key: Arc<CertifiedKey>,
    /// DNS names of the leaf's subjectAltName, lower-case; wildcards as `*.example.com`.
    pub names: Vec<String>,
    /// Validity of the leaf, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// The files' identity when they were read, for change detection.
    pub(crate) fingerprint: Option<Fingerprint>,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("names", &self.names)
            .field("not_after", &rfc3339(self.not_after))
            .finish_non_exhaustive()
    }
}

/// What identifies a version of a certificate file and its key file without reading them:
/// size, modification time and inode of each (after following symlinks, so a `live/` link
/// switched to a new `archive/` file counts as a change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint([(u64, i64, i64, u64, u64); 2]);

impl Fingerprint {
    pub(crate) fn of(cert: &Path, key: &Path) -> io::Result<Fingerprint> {
        let one = |p: &Path| -> io::Result<(u64, i64, i64, u64, u64)> {
            let m = std::fs::metadata(p)?;
            Ok((m.len(), m.mtime(), m.mtime_nsec(), m.ino(), m.dev()))
        };
        Ok(Fingerprint([one(cert)?, one(key)?]))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (expected -----BEGIN PRIVATE KEY-----, RSA or EC)", path.display())]
    NoKey { path: PathBuf },
    #[error("{} is not valid PEM: {reason}", path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error("the private key in {} cannot be used: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("the private key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in {} cannot be parsed: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("the certificate in {} expired at {}", path.display(), rfc3339(*not_after))]
    Expired { path: PathBuf, not_after: i64 },
    #[error("the certificate in {} is not valid before {}", path.display(), rfc3339(*not_before))]
    NotYetValid { path: PathBuf, not_before: i64 },
    #[error("the certificate in {} is a CA certificate; give the server (leaf) certificate first, then its chain", path.display())]
    CaAsLeaf { path: PathBuf },
    #[error("the certificate in {}: {reason}", path.display())]
    Names { path: PathBuf, reason: String },
}

impl CertError {
    /// The file the problem is in: the key file for a key that is unreadable, unusable or
    /// does not match, the certificate file otherwise.
    pub fn path(&self) -> &Path {
        match self {
            CertError::Read { path, .. }
            | CertError::NoCertificate { path }
            | CertError::NoKey { path }
            | CertError::BadPem { path, .. }
            | CertError::Key { path, .. }
            | CertError::Parse { path, .. }
            | CertError::Expired { path, .. }
            | CertError::NotYetValid { path, .. }
            | CertError::CaAsLeaf { path }
            | CertError::Names { path, .. } => path,
            CertError::KeyMismatch { key, .. } => key,
        }
    }
}

/// Reads a PEM certificate chain (leaf first) and its PEM private key, and checks them.
pub fn load_pem_files(cert: &Path, key: &Path) -> Result<LoadedCert, CertError> {
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CertError::Read { path, source }
    };
    // Identity before contents: a file replaced after this point is seen as changed again.
    let fingerprint = Fingerprint::of(cert, key).map_err(|e| {
        let which = if std::fs::metadata(cert).is_err() {
            cert
        } else {
            key
        };
        CertError::Read {
            path: which.to_owned(),
            source: e,
        }
    })?;
    let cert_pem = std::fs::read(cert).map_err(read_err(cert))?;
    let key_pem = std::fs::read(key).map_err(read_err(key))?;
    let chain = parse_chain(&cert_pem, cert)?;
    let key_der = parse_key(&key_pem, key)?;
    let mut loaded = certified(chain, key_der, cert, key, now_unix())?;
    loaded.fingerprint = Some(fingerprint);
    Ok(loaded)
}

fn parse_chain(pem_bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = CertificateDer::pem_slice_iter(pem_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::BadPem {
            path: path.to_owned(),
            reason: pem_reason(&e),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn parse_key(pem_bytes: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem_bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => CertError::NoKey {
            path: path.to_owned(),
        },
        other => CertError::BadPem {
            path: path.to_owned(),
            reason: pem_reason(&other),
        },
    })
}

fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "malformed BEGIN line".to_owned(),
        pem::Error::Base64Decode(m) => format!("bad base64: {m}"),
        other => format!("{other:?}"),
    }
}

/// Checks a chain and key that are already in DER form. `cert_path` and `key_path` only name
/// them in errors.
pub(crate) fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
    now: i64,
) -> Result<LoadedCert, CertError> {
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate {
            path: cert_path.to_owned(),
        });
    };
    let info = inspect(leaf).map_err(|reason| CertError::Parse {
        path: cert_path.to_owned(),
        reason,
    })?;
    if info.is_ca {
        return Err(CertError::CaAsLeaf {
            path: cert_path.to_owned(),
        });
    }
    let signing = super::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        Err(e) => {
            return Err(CertError::Key {
                path: key_path.to_owned(),
                reason: e.to_string(),
            });
        }
    }
    if info.not_after <= now {
        return Err(CertError::Expired {
            path: cert_path.to_owned(),
            not_after: info.not_after,
        });
    }
    if info.not_before > now {
        return Err(CertError::NotYetValid {
            path: cert_path.to_owned(),
            not_before: info.not_before,
        });
    }
    Ok(LoadedCert {
        key: Arc::new(key),
        names: info.names,
        not_before: info.not_before,
        not_after: info.not_after,
        fingerprint: None,
    })
}

struct LeafInfo {
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
    is_ca: bool,
}

fn inspect(der: &CertificateDer<'_>) -> Result<LeafInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let validity = cert.validity();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    Ok(LeafInfo {
        names,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        is_ca: cert.is_ca(),
    })
}

impl LoadedCert {
    /// Whether a TLS client would accept this certificate for `host`.
    pub fn covers(&self, host: &HostPattern) -> bool {
        match host {
            HostPattern::Exact(h) => self.names.iter().any(|n| name_matches(n, h)),
            // Only the same wildcard covers a wildcard.
            HostPattern::Wildcard(suffix) => self
                .names
                .iter()
                .any(|n| n.strip_prefix('*') == Some(suffix.as_str())),
            HostPattern::Any => false,
        }
    }

    /// Seconds from `now` until the leaf expires (negative once it has).
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after - now
    }

    /// When to renew: a third of the lifetime before expiry, minus `jitter` (0..1) of a tenth
    /// of it, so many certificates issued together do not all renew at the same moment.
    pub(crate) fn renew_at(&self, jitter: f64) -> i64 {
        let lifetime = (self.not_after - self.not_before).max(0);
        let spread = (lifetime as f64 / 10.0 * jitter.clamp(0.0, 1.0)) as i64;
        self.not_after - lifetime / 3 - spread
    }
}

/// RFC 6125 matching: exact, or a leading `*` standing for exactly one label.
fn name_matches(name: &str, host: &str) -> bool {
    if let Some(suffix) = name.strip_prefix('*') {
        return host
            .strip_suffix(suffix)
            .is_some_and(|label| !label.is_empty() && !label.contains('.'));
    }
    name == host
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(crate) fn rfc3339(unix: i64) -> String {
    let t = u64::try_from(unix).map_or(UNIX_EPOCH, |s| UNIX_EPOCH + Duration::from_secs(s));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_exactly_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
        assert!(name_matches("example.com", "example.com"));
        assert!(!name_matches("example.com", "www.example.com"));
    }

    #[test]
    fn renewal_is_due_a_third_before_expiry_less_up_to_a_tenth_of_jitter() {
        let dir = tempfile::tempdir().unwrap();
        let ca = super::super::dev_ca::DevCa::load_or_create(dir.path(), 1_000_000_000).unwrap();
        let cert = ca
            .issue(
                &[crate::spec::HostPattern::Exact("a.test".into())],
                None,
                1_000_000_000,
            )
            .unwrap();
        let lifetime = cert.not_after - cert.not_before;
        assert_eq!(cert.renew_at(0.0), cert.not_after - lifetime / 3);
        assert_eq!(
            cert.renew_at(1.0),
            cert.not_after - lifetime / 3 - lifetime / 10
        );
        assert_eq!(cert.renew_at(7.0), cert.renew_at(1.0), "jitter is clamped");
    }
}
