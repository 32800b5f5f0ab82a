//! TLS metrics: handshakes by version and ALPN protocol, failures by reason, certificate
//! reload failures, and the time left on every certificate (computed at each scrape).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::certs::now_unix;
use super::resolver::Resolver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub version: &'static str,
    pub alpn: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcmeLabels {
    pub host: String,
    pub result: &'static str,
}

pub struct TlsMetrics {
    pub handshakes: Family<HandshakeLabels, Counter>,
    pub handshake_failures: Family<FailureLabels, Counter>,
    pub reload_failures: Family<CertificateLabels, Counter>,
    pub acme_orders: Family<AcmeLabels, Counter>,
}

impl TlsMetrics {
    pub(crate) fn new(registry: &mut Registry) -> Arc<TlsMetrics> {
        let m = TlsMetrics {
            handshakes: Family::default(),
            handshake_failures: Family::default(),
            reload_failures: Family::default(),
            acme_orders: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("berth");
        r.register(
            "tls_handshakes",
            "Completed TLS handshakes, by protocol version and negotiated ALPN protocol",
            m.handshakes.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by reason (unknown_sni, no_sni, bad_message, \
             incompatible, no_alpn, alert, timeout, eof, io, other)",
            m.handshake_failures.clone(),
        );
        r.register(
            "tls_certificate_reload_failures",
            "Changed certificate files that could not be loaded (the previous certificate \
             stays in use), by the first host of the certificate",
            m.reload_failures.clone(),
        );
        r.register(
            "acme_orders",
            "ACME orders by the first host of the certificate and result (issued, failed); \
             a failure keeps the certificate in use",
            m.acme_orders.clone(),
        );
        Arc::new(m)
    }

    pub(crate) fn failure(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&FailureLabels { reason })
            .inc();
    }
}

/// `berth_tls_certificate_expiry_seconds{host}`: seconds until the certificate served for a
/// host expires, from the certificates in use at the moment of the scrape.
#[derive(Debug)]
pub(crate) struct ExpiryCollector(pub(crate) Arc<Resolver>);

impl Collector for ExpiryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let map = self.0.map.load();
        if map.expiry.is_empty() {
            return Ok(());
        }
        let now = now_unix();
        let mut family = encoder.encode_descriptor(
            "tls_certificate_expiry_seconds",
            "Seconds until the certificate served for this host expires (negative once expired)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (host, not_after) in &map.expiry {
            let labels = CertificateLabels { host: host.clone() };
            let gauge = ConstGauge::new(not_after - now);
            gauge.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
