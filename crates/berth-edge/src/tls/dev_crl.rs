//! The development CA's certificate revocation list. Nothing is ever revoked, so the list is
//! empty; it exists because TLS scanners (testssl.sh) and some clients expect a leaf
//! certificate to name a revocation service. Its URL is in every development leaf
//! ([`crl_url`]) and the edge serves it itself at [`CRL_PATH`] for the development hosts.
//!
//! Kept as `ca.crl` (DER) next to the CA, re-signed when half of its validity has passed, so
//! a fetched copy is never stale while berth runs.

use std::fs;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rcgen::{CertificateRevocationListParams, KeyIdMethod, SerialNumber};

use super::TlsError;
use super::dev_ca::{BACKDATE, DevCa, datetime, write_new};
use crate::spec::HostPattern;

pub const CRL_FILE: &str = "ca.crl";
/// Where the edge serves the CRL, on the plain-HTTP and TLS listeners.
pub const CRL_PATH: &str = "/.well-known/berth/dev-ca.crl";
pub const CRL_CONTENT_TYPE: &str = "application/pkix-crl";
/// A week, re-signed after half of it: a client caches it until `next_update` at most, and
/// berth has days to publish the next one even if it was stopped for a while.
pub const CRL_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// The CRL is public and signed: anyone may read it, like `ca.pem`.
const CRL_MODE: u32 = 0o644;

/// A signed CRL as published.
#[derive(Debug, Clone)]
pub(crate) struct DevCrl {
    pub(crate) der: Bytes,
    pub(crate) this_update: i64,
    pub(crate) next_update: i64,
    /// CRL numbers must increase (RFC 5280 §5.2.3); the next one is this plus one.
    pub(crate) number: u64,
}

/// Whether a CRL valid from `this_update` to `next_update` must be re-signed at `now`: half
/// its validity has passed, or the clock is before its issue time (it was set back, and a
/// CRL from the future is refused by clients).
pub(crate) fn crl_due(this_update: i64, next_update: i64, now: i64) -> bool {
    let half = (next_update - this_update).max(0) / 2;
    now >= next_update - half || now < this_update
}

/// `http://<host>[:port]/.well-known/berth/dev-ca.crl` for a certificate's hosts: its first
/// exact name, or the domain of its first wildcard. `origin` is the scheme and optional port
/// of the listener that serves it ([`CrlOrigin`]).
pub(crate) fn crl_url(hosts: &[HostPattern], origin: &CrlOrigin) -> Option<String> {
    let host = hosts
        .iter()
        .find_map(|h| match h {
            HostPattern::Exact(n) => Some(n.as_str()),
            _ => None,
        })
        .or_else(|| {
            hosts.iter().find_map(|h| match h {
                HostPattern::Wildcard(s) => s.strip_prefix('.'),
                _ => None,
            })
        })?;
    let port = match origin.port {
        Some(p) => format!(":{p}"),
        None => String::new(),
    };
    Some(format!("{}://{host}{port}{CRL_PATH}", origin.scheme))
}

/// Which listener a CRL URL points at: the first plain-HTTP one (CRLs are fetched over plain
/// HTTP by convention, RFC 5280 §8, to avoid needing TLS to check TLS), or the first TLS one
/// when there is no plain listener. `port` is `None` for the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CrlOrigin {
    pub(crate) scheme: &'static str,
    pub(crate) port: Option<u16>,
}

impl CrlOrigin {
    pub(crate) fn new(plain: Option<u16>, tls: Option<u16>) -> CrlOrigin {
        let (scheme, port, default) = match (plain, tls) {
            (Some(p), _) => ("http", p, 80),
            (None, Some(p)) => ("https", p, 443),
            (None, None) => ("http", 80, 80),
        };
        // Port 0 means "any free port" and is not known here; the default port is a better
        // guess than a URL that can never work.
        CrlOrigin {
            scheme,
            port: (port != default && port != 0).then_some(port),
        }
    }
}

/// Whether the CRL is answered for `host`: a host one of `hosts` covers, or the domain of one
/// of its wildcards (the host [`crl_url`] may name).
pub(crate) fn serves_host(hosts: &[HostPattern], host: &str) -> bool {
    hosts.iter().any(|h| match h {
        HostPattern::Exact(n) => n == host,
        HostPattern::Wildcard(suffix) => {
            suffix.strip_prefix('.') == Some(host)
                || host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
        }
        HostPattern::Any => false,
    })
}

impl DevCrl {
    /// The CRL stored next to the CA when it is this CA's, correctly signed and not due;
    /// otherwise a newly signed one, stored. A stored file that cannot be used is replaced:
    /// it is derived from the CA and holds nothing else.
    pub(crate) fn load_or_sign(ca: &DevCa, now: i64) -> Result<DevCrl, TlsError> {
        let path = ca.dir.join(CRL_FILE);
        let previous = match fs::read(&path) {
            Ok(der) => match parse(ca, der) {
                Ok(crl) => Some(crl),
                Err(reason) => {
                    tracing::warn!(crl = %path.display(), reason, "replacing the development CA's CRL");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(crl = %path.display(), error = %e, "cannot read the development CA's CRL; signing a new one");
                None
            }
        };
        match previous {
            Some(crl) if !crl_due(crl.this_update, crl.next_update, now) => Ok(crl),
            Some(crl) => sign(ca, crl.number.saturating_add(1), now),
            None => sign(ca, 1, now),
        }
    }

    /// A newly signed successor when this one is due.
    pub(crate) fn refreshed(&self, ca: &DevCa, now: i64) -> Option<Result<DevCrl, TlsError>> {
        crl_due(self.this_update, self.next_update, now)
            .then(|| sign(ca, self.number.saturating_add(1), now))
    }
}

/// Signs an empty CRL numbered `number` and stores it (temporary file, then rename).
fn sign(ca: &DevCa, number: u64, now: i64) -> Result<DevCrl, TlsError> {
    let err = |what: &str, e: &dyn std::fmt::Display| TlsError::DevCa {
        dir: ca.dir.clone(),
        reason: format!("{what}: {e}"),
    };
    let this_update = now - BACKDATE.as_secs() as i64;
    let next_update = now + CRL_LIFETIME.as_secs() as i64;
    let params = CertificateRevocationListParams {
        this_update: datetime(this_update),
        next_update: datetime(next_update),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: authority_key_id(ca),
    };
    let crl = params
        .signed_by(&ca.issuer)
        .map_err(|e| err("signing the CRL", &e))?;
    let der = Bytes::copy_from_slice(crl.der().as_ref());
    let path = ca.dir.join(CRL_FILE);
    write_new(&path, &der, CRL_MODE)
        .map_err(|e| err(&format!("writing {}", path.display()), &e))?;
    // The umask may have narrowed the mode the file was created with; the CRL is public.
    let _ = set_mode(&path, CRL_MODE);
    tracing::info!(crl = %path.display(), number, next_update = %super::certs::rfc3339(next_update), "development CA's CRL signed");
    Ok(DevCrl {
        der,
        this_update,
        next_update,
        number,
    })
}

/// The CA's own subject key identifier, so that the CRL's authority key identifier matches it
/// whatever method the CA was made with (rcgen would otherwise derive a new one).
fn authority_key_id(ca: &DevCa) -> KeyIdMethod {
    let ski = x509_parser::parse_x509_certificate(ca.cert.as_ref())
        .ok()
        .and_then(|(_, cert)| {
            cert.extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                        Some(k.0.to_vec())
                    }
                    _ => None,
                })
        });
    ski.map_or(KeyIdMethod::Sha256, KeyIdMethod::PreSpecified)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// A stored CRL, if it is this CA's: same issuer name and a signature by the CA's key.
fn parse(ca: &DevCa, der: Vec<u8>) -> Result<DevCrl, String> {
    let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| e.to_string())?;
    let (_, ca_cert) =
        x509_parser::parse_x509_certificate(ca.cert.as_ref()).map_err(|e| e.to_string())?;
    if crl.issuer().as_raw() != ca_cert.subject().as_raw() {
        return Err("issued by another CA".to_owned());
    }
    crl.verify_signature(ca_cert.public_key())
        .map_err(|e| format!("signature: {e}"))?;
    let next_update = crl.next_update().ok_or("no nextUpdate")?.timestamp();
    let number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or("no CRL number")?;
    let this_update = crl.last_update().timestamp();
    drop(crl);
    Ok(DevCrl {
        der: Bytes::from(der),
        this_update,
        next_update,
        number,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::now_unix;

    const DAY: i64 = 24 * 3600;

    #[test]
    fn a_crl_is_re_signed_once_half_its_validity_has_passed() {
        let issued = 1_000_000_000;
        let next = issued + 7 * DAY;
        assert!(!crl_due(issued, next, issued));
        assert!(!crl_due(issued, next, issued + 3 * DAY));
        assert!(crl_due(issued, next, issued + 7 * DAY / 2), "half gone");
        assert!(crl_due(issued, next, next + 1), "expired");
        assert!(crl_due(issued, next, issued - 60), "clock set back");
        assert!(crl_due(issued, issued, issued), "no validity at all");
    }

    #[test]
    fn the_url_names_the_first_host_and_the_serving_listener() {
        let hosts = [
            HostPattern::Wildcard(".app.test".into()),
            HostPattern::Exact("www.app.test".into()),
        ];
        let plain = CrlOrigin::new(Some(80), Some(443));
        assert_eq!(
            crl_url(&hosts, &plain).as_deref(),
            Some("http://www.app.test/.well-known/berth/dev-ca.crl")
        );
        let dev = CrlOrigin::new(Some(8080), Some(8443));
        assert_eq!(
            crl_url(&hosts[..1], &dev).as_deref(),
            Some("http://app.test:8080/.well-known/berth/dev-ca.crl")
        );
        let tls_only = CrlOrigin::new(None, Some(8443));
        assert_eq!(
            crl_url(&hosts[1..], &tls_only).as_deref(),
            Some("https://www.app.test:8443/.well-known/berth/dev-ca.crl")
        );
        assert_eq!(CrlOrigin::new(Some(0), None).port, None);
        assert_eq!(crl_url(&[HostPattern::Any], &plain), None);
    }

    #[test]
    fn the_crl_is_served_only_for_development_hosts() {
        let hosts = [HostPattern::Wildcard(".app.test".into())];
        assert!(serves_host(&hosts, "app.test"));
        assert!(serves_host(&hosts, "a.app.test"));
        assert!(!serves_host(&hosts, "a.b.app.test"));
        assert!(!serves_host(&hosts, "other.test"));
        assert!(!serves_host(&[HostPattern::Any], "other.test"));
    }

    #[test]
    fn the_crl_is_stored_reused_and_replaced_with_a_higher_number() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        let ca = DevCa::load_or_create(dir.path(), now).unwrap();
        let first = DevCrl::load_or_sign(&ca, now).unwrap();
        assert_eq!(first.number, 1);
        assert_eq!(first.next_update, now + CRL_LIFETIME.as_secs() as i64);
        let path = dir.path().join(CRL_FILE);
        assert_eq!(fs::read(&path).unwrap(), first.der);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);

        // A restart reuses it, also with the CA loaded from its files.
        let ca = DevCa::load_or_create(dir.path(), now).unwrap();
        let again = DevCrl::load_or_sign(&ca, now + 60).unwrap();
        assert_eq!(again.der, first.der);
        assert!(again.refreshed(&ca, now + 60).is_none());

        let later = now + CRL_LIFETIME.as_secs() as i64 / 2;
        let next = again.refreshed(&ca, later).unwrap().unwrap();
        assert_eq!(next.number, 2);
        assert_eq!(next.next_update, later + CRL_LIFETIME.as_secs() as i64);
        assert_eq!(fs::read(&path).unwrap(), next.der);

        // A CRL of another CA (the CA was recreated) is replaced, numbered from 1 again.
        let other = tempfile::tempdir().unwrap();
        let other_ca = DevCa::load_or_create(other.path(), now).unwrap();
        DevCrl::load_or_sign(&other_ca, now).unwrap();
        fs::copy(other.path().join(CRL_FILE), &path).unwrap();
        let replaced = DevCrl::load_or_sign(&ca, now).unwrap();
        assert_eq!(replaced.number, 1);
        assert_ne!(
            fs::read(&path).unwrap(),
            fs::read(other.path().join(CRL_FILE)).unwrap()
        );

        // So is garbage.
        fs::write(&path, b"not a CRL").unwrap();
        assert_eq!(DevCrl::load_or_sign(&ca, now).unwrap().number, 1);
    }
}
