//! The API's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Why an authentication failed, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is malformed, unknown, revoked, or whose user was removed.
    Invalid,
    /// Refused without looking at the token: the address is throttled.
    Throttled,
}

impl AuthFailure {
    fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
            AuthFailure::Throttled => "throttled",
        }
    }
}

/// Handles on the API's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    auth_failures: Family<ReasonLabels, Counter>,
}

impl ApiMetrics {
    pub(crate) fn auth_failure(&self, why: AuthFailure) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: why.label(),
            })
            .inc();
    }
}

/// Registers `berth_api_auth_failures_total{reason="missing|invalid|throttled"}` and returns
/// the handles for [`crate::ApiState::metrics`].
pub fn register_metrics(registry: &mut Registry) -> ApiMetrics {
    let auth_failures = Family::<ReasonLabels, Counter>::default();
    // Every reason is exported from the start (at 0), so a rate() over it has a baseline
    // and an alert on it does not wait for the first failure to exist.
    for why in [
        AuthFailure::Missing,
        AuthFailure::Invalid,
        AuthFailure::Throttled,
    ] {
        let _ = auth_failures.get_or_create(&ReasonLabels {
            reason: why.label(),
        });
    }
    registry.register(
        "berth_api_auth_failures",
        "Failed authentications at the admin API, by reason (missing, invalid, throttled)",
        auth_failures.clone(),
    );
    ApiMetrics { auth_failures }
}
