//! The apps' Prometheus metrics: restarts, crash loops, instances by phase, deploys.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessLabels {
    pub app: String,
    pub env: String,
    pub process: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub app: String,
    pub env: String,
    pub process: String,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeployLabels {
    pub app: String,
    pub env: String,
    pub result: &'static str,
}

/// Handles to the families; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AppMetrics {
    pub restarts: Family<ProcessLabels, Counter>,
    pub crash_loops: Family<ProcessLabels, Counter>,
    pub instances: Family<PhaseLabels, Gauge>,
    pub deploys: Family<DeployLabels, Counter>,
}

impl AppMetrics {
    pub fn register(registry: &mut Registry) -> AppMetrics {
        let m = AppMetrics::default();
        registry.register(
            "berth_app_restarts",
            "Instance restarts after an exit or a failed start, by app, environment and process",
            m.restarts.clone(),
        );
        registry.register(
            "berth_app_crash_loops",
            "Instances marked failing after too many exits in the crash-loop window",
            m.crash_loops.clone(),
        );
        registry.register(
            "berth_app_instances",
            "Instances by phase (starting, healthy, unhealthy, running, backoff, failing, stopping)",
            m.instances.clone(),
        );
        registry.register(
            "berth_app_deploys",
            "Deploys by result (succeeded, failed)",
            m.deploys.clone(),
        );
        m
    }
}
