//! The edge's Prometheus metrics. The handles every answered request touches are resolved once
//! per routing-table build (see [`RouteMetrics`]), so a request that goes through without a
//! retry or an error hashes no label set; rejections, upstream errors, retries and fail-open
//! still look theirs up.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::retire::{InstanceKey, Retirement, RouteKey};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub release: String,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub route: String,
    pub release: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub route: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub group: String,
    pub release: String,
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    pub route: String,
    /// `route` or `auth`.
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EncodingLabels {
    pub route: String,
    pub encoding: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s: covers both fast APIs and slow report pages.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct EdgeMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: HistogramFamily<LatencyLabels>,
    pub rejections: Family<ReasonLabels, Counter>,
    pub upstream_errors: Family<ReasonLabels, Counter>,
    pub retries: Family<RouteLabels, Counter>,
    pub fail_open: Family<GroupLabels, Counter>,
    pub upstream_healthy: Family<UpstreamLabels, Gauge>,
    pub ejections: Family<UpstreamLabels, Counter>,
    pub health_checks_failed: Family<UpstreamLabels, Counter>,
    pub open_connections: Gauge,
    pub connections: Counter,
    pub connection_errors: Family<KindLabels, Counter>,
    pub open_upgrades: Gauge,
    pub access_log_dropped: Counter,
    /// Per (route, release) latency buckets and the 5xx counter, cheap to read back (canary
    /// analysis).
    pub stats: crate::stats::StatsRegistry,
    pub rate_limit_keys: Family<RateLimitLabels, Gauge>,
    pub compressed: Family<EncodingLabels, Counter>,
    pub(crate) retired_routes: Mutex<Retirement<RouteKey>>,
    pub(crate) retired_instances: Mutex<Retirement<InstanceKey>>,
}

/// Response classes the request counter is labelled with.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl EdgeMetrics {
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = EdgeMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            rejections: Family::default(),
            upstream_errors: Family::default(),
            retries: Family::default(),
            fail_open: Family::default(),
            upstream_healthy: Family::default(),
            ejections: Family::default(),
            health_checks_failed: Family::default(),
            open_connections: Gauge::default(),
            connections: Counter::default(),
            connection_errors: Family::default(),
            stats: Default::default(),
            open_upgrades: Gauge::default(),
            access_log_dropped: Counter::default(),
            rate_limit_keys: Family::default(),
            compressed: Family::default(),
            retired_routes: Mutex::default(),
            retired_instances: Mutex::default(),
        };
        let r = registry.sub_registry_with_prefix("berth");
        r.register(
            "requests",
            "Requests answered, by route, release and status class",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request to the end of the response body, by route and release",
            m.latency.clone(),
        );
        r.register(
            "rejections",
            "Requests refused by the edge itself (403, 404, 413, 429, 431, 503...), by reason",
            m.rejections.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed upstream attempts, by route and kind",
            m.upstream_errors.clone(),
        );
        r.register(
            "retries",
            "Upstream attempts after the first",
            m.retries.clone(),
        );
        r.register(
            "fail_open",
            "Requests sent to an unhealthy instance because every instance was down",
            m.fail_open.clone(),
        );
        r.register(
            "upstream_healthy",
            "1 when the instance takes traffic (passes checks, not ejected), else 0",
            m.upstream_healthy.clone(),
        );
        r.register(
            "upstream_ejections",
            "Passive-health ejections of an instance",
            m.ejections.clone(),
        );
        r.register(
            "health_checks_failed",
            "Active health checks that failed",
            m.health_checks_failed.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open now",
            m.open_connections.clone(),
        );
        r.register(
            "connections",
            "Client connections accepted",
            m.connections.clone(),
        );
        r.register(
            "connection_errors",
            "Client connections closed on an error (header timeout, bad request, reset)",
            m.connection_errors.clone(),
        );
        r.register(
            "open_upgrades",
            "Upgraded (WebSocket) tunnels open now",
            m.open_upgrades.clone(),
        );
        r.register(
            "access_log_dropped",
            "Access-log lines dropped because the writer fell behind",
            m.access_log_dropped.clone(),
        );
        r.register(
            "rate_limit_keys",
            "Clients (or header keys) a rate limit remembers now; bounded by its max_keys",
            m.rate_limit_keys.clone(),
        );
        r.register(
            "compressed_responses",
            "Responses compressed by the edge, by route and encoding",
            m.compressed.clone(),
        );
        Arc::new(m)
    }

    pub fn route(&self, route: &str, release: &str) -> RouteMetrics {
        let class = |status| {
            self.requests.get_or_create_owned(&RequestLabels {
                route: route.to_owned(),
                release: release.to_owned(),
                status,
            })
        };
        let by_class = STATUS_CLASSES.map(class);
        let stats = self.stats.get_or_create(route, release, &by_class[4]);
        RouteMetrics(Arc::new(RouteMetricsInner {
            by_class,
            latency: self.latency.get_or_create_owned(&LatencyLabels {
                route: route.to_owned(),
                release: release.to_owned(),
            }),
            stats,
        }))
    }

    /// Removes the series of `route`'s `release` (its requests, latency and stats).
    pub(crate) fn forget_route(&self, route: &str, release: &str) {
        for status in STATUS_CLASSES {
            self.requests.remove(&RequestLabels {
                route: route.to_owned(),
                release: release.to_owned(),
                status,
            });
        }
        self.latency.remove(&LatencyLabels {
            route: route.to_owned(),
            release: release.to_owned(),
        });
        self.stats.remove(route, release);
    }

    /// The series of one instance: its health gauge, ejections and failed checks.
    pub(crate) fn instance(&self, group: &str, release: &str, addr: SocketAddr) -> InstanceSeries {
        let labels = upstream_labels(group, release, addr);
        InstanceSeries {
            healthy: self.upstream_healthy.get_or_create_owned(&labels),
            ejections: self.ejections.get_or_create_owned(&labels),
            checks_failed: self.health_checks_failed.get_or_create_owned(&labels),
        }
    }

    pub(crate) fn forget_instance(&self, (group, release, addr): &InstanceKey) {
        let labels = upstream_labels(group, release, *addr);
        self.upstream_healthy.remove(&labels);
        self.ejections.remove(&labels);
        self.health_checks_failed.remove(&labels);
    }

    /// The counter of `route`'s responses compressed with `encoding`.
    pub fn compressed_counter(&self, route: &str, encoding: crate::spec::Encoding) -> Counter {
        self.compressed.get_or_create_owned(&EncodingLabels {
            route: route.to_owned(),
            encoding: encoding.token(),
        })
    }

    pub fn upstream_error(&self, route: &str, reason: &'static str) {
        self.upstream_errors
            .get_or_create(&ReasonLabels {
                route: route.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn reject(&self, route: &str, reason: &'static str) {
        self.rejections
            .get_or_create(&ReasonLabels {
                route: route.to_owned(),
                reason,
            })
            .inc();
    }
}

/// Pre-resolved request counters and latency histogram for one (route, release). One `Arc`,
/// so handing it to a request costs one reference count, not six.
#[derive(Clone)]
pub struct RouteMetrics(Arc<RouteMetricsInner>);

struct RouteMetricsInner {
    by_class: [Counter; 5],
    latency: Histogram,
    stats: Arc<crate::stats::ReleaseStats>,
}

impl RouteMetrics {
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0.by_class[class].inc();
        self.0.latency.observe(seconds);
        self.0.stats.observe_latency(seconds);
    }
}

fn upstream_labels(group: &str, release: &str, addr: SocketAddr) -> UpstreamLabels {
    UpstreamLabels {
        group: group.to_owned(),
        release: release.to_owned(),
        upstream: addr.to_string(),
    }
}

/// One instance's series, resolved once when the instance is made.
pub(crate) struct InstanceSeries {
    pub healthy: Gauge,
    pub ejections: Counter,
    pub checks_failed: Counter,
}
