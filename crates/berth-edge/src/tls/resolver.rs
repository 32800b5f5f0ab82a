//! SNI to certificate: an immutable map swapped atomically, like the routing table, so a new
//! certificate takes effect for the next handshake and never disturbs a connection.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::acme::{ACME_TLS_ALPN, Challenges};
use super::metrics::TlsMetrics;

/// One certificate per exact name and per wildcard suffix, plus the optional default.
#[derive(Default)]
pub(crate) struct CertMap {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after the wildcard's `*`: `.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// (host pattern as configured, notAfter) for the expiry metric.
    pub(crate) expiry: Vec<(String, i64)>,
}

impl CertMap {
    pub(crate) fn insert_exact(&mut self, host: &str, key: Arc<CertifiedKey>) {
        self.exact.insert(host.to_owned(), key);
    }

    pub(crate) fn insert_wildcard(&mut self, suffix: &str, key: Arc<CertifiedKey>) {
        self.wildcard.insert(suffix.to_owned(), key);
    }

    pub(crate) fn set_default(&mut self, key: Arc<CertifiedKey>) {
        self.default = Some(key);
    }

    /// The certificate for a name: exact first, then a wildcard for its first label. The
    /// default certificate is not considered.
    pub(crate) fn lookup(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        if let Some(k) = self.exact.get(name) {
            return Some(k);
        }
        let (label, suffix) = name.split_at(name.find('.')?);
        if !is_label(label) {
            return None;
        }
        self.wildcard.get(suffix)
    }
}

/// A DNS label as it may appear in a host covered by a wildcard certificate.
fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) struct Resolver {
    pub(crate) map: ArcSwap<CertMap>,
    metrics: Arc<TlsMetrics>,
    challenges: Arc<Challenges>,
}

impl Resolver {
    pub(crate) fn new(metrics: Arc<TlsMetrics>, challenges: Arc<Challenges>) -> Resolver {
        Resolver {
            map: ArcSwap::from_pointee(CertMap::default()),
            metrics,
            challenges,
        }
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls hands over the SNI already lower-cased (an IP address as no SNI at all), so
        // it is looked up as it is.
        let name = hello.server_name();
        // An ACME TLS-ALPN-01 validation gets the challenge certificate, or nothing.
        if hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
        {
            let found = self.challenges.alpn(name?);
            if found.is_none() {
                self.metrics.failure("unknown_sni");
            }
            return found;
        }
        let map = self.map.load();
        if let Some(found) = name.and_then(|n| map.lookup(n)).or(map.default.as_ref()) {
            return Some(found.clone());
        }
        // rustls then ends the handshake with a fatal alert.
        self.metrics.failure(if name.is_some() {
            "unknown_sni"
        } else {
            "no_sni"
        });
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::HostPattern;
    use crate::tls::dev_ca::DevCa;

    fn key() -> Arc<CertifiedKey> {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::tls::certs::now_unix();
        let ca = DevCa::load_or_create(dir.path(), now).unwrap();
        ca.issue(&[HostPattern::Exact("x.test".into())], None, now)
            .unwrap()
            .key
    }

    #[test]
    fn exact_names_win_and_wildcards_cover_one_valid_label() {
        let (exact, wild, default) = (key(), key(), key());
        let mut map = CertMap::default();
        map.insert_exact("a.example.com", exact.clone());
        map.insert_wildcard(".example.com", wild.clone());
        map.set_default(default);
        let is = |name: &str, k: &Arc<CertifiedKey>| {
            map.lookup(name).is_some_and(|found| Arc::ptr_eq(found, k))
        };
        assert!(is("a.example.com", &exact));
        assert!(is("b.example.com", &wild));
        assert!(map.lookup("a.b.example.com").is_none());
        assert!(map.lookup("example.com").is_none());
        // Only DNS label characters before the wildcard's suffix: a redirect built from the
        // host can never point elsewhere.
        assert!(map.lookup("evil/x.example.com").is_none());
        assert!(map.lookup(".example.com").is_none());
        // The default certificate is not a certificate *for* a name.
        assert!(map.lookup("other.test").is_none());
    }
}
