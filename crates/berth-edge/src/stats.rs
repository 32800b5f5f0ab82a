//! Per-release request statistics the deployer reads to judge a canary: requests, server
//! errors and a latency histogram per (route, release).
//!
//! The server errors are the Prometheus 5xx counter itself (shared, not counted twice) and the
//! request count is the sum of the latency buckets. The buckets are finer than the Prometheus
//! histogram's around the limits people write, and are read with a handful of loads instead of
//! encoding text. Counters only grow, so a window is the difference of two [`StatsSnapshot`]s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// Upper bounds of the latency buckets, in milliseconds; one more bucket holds the rest.
/// Fine around the limits people write (100 ms to 2 s), coarse beyond.
pub const LATENCY_BOUNDS_MS: [u64; 20] = [
    1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 5000, 10000,
];
const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The live counters of one (route, release).
#[derive(Debug, Default)]
pub struct ReleaseStats {
    /// The route's 5xx counter for the release (see [`crate::metrics::EdgeMetrics::route`]).
    server_errors: Counter,
    latency: [AtomicU64; BUCKETS],
}

impl ReleaseStats {
    /// Stats whose server errors are `server_errors`, which the caller counts.
    pub(crate) fn counting_into(server_errors: Counter) -> ReleaseStats {
        ReleaseStats {
            server_errors,
            latency: Default::default(),
        }
    }

    /// Records one request.
    pub fn observe(&self, status: u16, seconds: f64) {
        if status >= 500 {
            self.server_errors.inc();
        }
        self.observe_latency(seconds);
    }

    /// Records one request's latency; its status was counted in the shared 5xx counter.
    pub(crate) fn observe_latency(&self, seconds: f64) {
        let ms = seconds * 1000.0;
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b as f64)
            .unwrap_or(BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let latency = self.latency.each_ref().map(|c| c.load(Ordering::Relaxed));
        StatsSnapshot {
            requests: latency.iter().sum(),
            server_errors: self.server_errors.get(),
            latency,
        }
    }
}

/// Counts at one moment, or over a window when taken as a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    /// Responses with a 5xx status, the edge's own included (an instance that cannot be
    /// reached is the release's fault too).
    pub server_errors: u64,
    /// Requests per latency bucket ([`LATENCY_BOUNDS_MS`]).
    pub latency: [u64; BUCKETS],
}

impl StatsSnapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let mut latency = [0; BUCKETS];
        for (i, l) in latency.iter_mut().enumerate() {
            *l = self.latency[i].saturating_sub(earlier.latency[i]);
        }
        StatsSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            server_errors: self.server_errors.saturating_sub(earlier.server_errors),
            latency,
        }
    }

    /// Adds another window's (or another source's) counts.
    pub fn add(&mut self, other: &StatsSnapshot) {
        self.requests += other.requests;
        self.server_errors += other.server_errors;
        for (i, l) in self.latency.iter_mut().enumerate() {
            *l += other.latency[i];
        }
    }

    /// Records one request, as [`ReleaseStats::observe`] does (for probes the deployer
    /// sends itself).
    pub fn observe(&mut self, status: u16, seconds: f64) {
        let live = ReleaseStats::default();
        live.observe(status, seconds);
        self.add(&live.snapshot());
    }

    /// Share of requests that failed with a 5xx, 0 when there were none.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.server_errors as f64 / self.requests as f64
        }
    }

    /// The `q` quantile (0..=1) of latency in milliseconds, interpolated inside its bucket;
    /// `None` without requests. The last bucket has no upper bound: its requests count as
    /// twice the last bound, which is enough to fail any limit written below it.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &count) in self.latency.iter().enumerate() {
            if count == 0 {
                continue;
            }
            if (seen + count) as f64 >= rank {
                let lower = if i == 0 {
                    0.0
                } else {
                    LATENCY_BOUNDS_MS[i - 1] as f64
                };
                let upper = LATENCY_BOUNDS_MS.get(i).map_or(lower * 2.0, |&b| b as f64);
                let within = (rank - seen as f64) / count as f64;
                return Some(lower + (upper - lower) * within);
            }
            seen += count;
        }
        None
    }
}

/// Every (route, release)'s stats, created when a routing table is built and kept across
/// tables, so a reload does not reset a canary's window.
#[derive(Debug, Default)]
pub struct StatsRegistry(Mutex<HashMap<(String, String), Arc<ReleaseStats>>>);

impl StatsRegistry {
    /// The stats of (`route`, `release`), made on first use with the route's 5xx counter for
    /// the release.
    pub fn get_or_create(
        &self,
        route: &str,
        release: &str,
        server_errors: &Counter,
    ) -> Arc<ReleaseStats> {
        let mut map = crate::lock(&self.0);
        map.entry((route.to_owned(), release.to_owned()))
            .or_insert_with(|| Arc::new(ReleaseStats::counting_into(server_errors.clone())))
            .clone()
    }

    pub fn snapshot(&self, route: &str, release: &str) -> Option<StatsSnapshot> {
        let map = crate::lock(&self.0);
        map.get(&(route.to_owned(), release.to_owned()))
            .map(|s| s.snapshot())
    }

    /// The (route, release) pairs whose stats a routing table or a request still holds.
    pub(crate) fn held(&self) -> Vec<(String, String)> {
        let map = crate::lock(&self.0);
        map.iter()
            .filter(|(_, stats)| Arc::strong_count(stats) > 1)
            .map(|(key, _)| key.clone())
            .collect()
    }

    pub(crate) fn remove(&self, route: &str, release: &str) {
        let mut map = crate::lock(&self.0);
        map.remove(&(route.to_owned(), release.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(samples: &[(u16, f64)]) -> StatsSnapshot {
        let live = ReleaseStats::default();
        for &(status, s) in samples {
            live.observe(status, s);
        }
        live.snapshot()
    }

    #[test]
    fn counts_requests_errors_and_buckets() {
        let s = window(&[(200, 0.004), (503, 0.2), (404, 0.0005)]);
        assert_eq!(s.requests, 3);
        assert_eq!(s.server_errors, 1);
        assert_eq!(s.latency[0], 1, "0.5 ms is in the 1 ms bucket");
        assert_eq!(s.latency[2], 1, "4 ms is in the 5 ms bucket");
        assert_eq!(s.latency[10], 1, "200 ms is in the 200 ms bucket");
        assert!((s.error_rate() - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots() {
        let live = ReleaseStats::default();
        live.observe(200, 0.01);
        let before = live.snapshot();
        live.observe(500, 0.01);
        live.observe(200, 0.01);
        let w = live.snapshot().since(&before);
        assert_eq!((w.requests, w.server_errors), (2, 1));
        assert_eq!(w.latency.iter().sum::<u64>(), 2);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 100 requests at 40 ms: all in the (30, 50] bucket.
        let s = window(&[(200, 0.04); 100]);
        let p50 = s.latency_quantile_ms(0.5).expect("requests");
        assert!((p50 - 40.0).abs() < 0.01, "p50 {p50}");
        let p99 = s.latency_quantile_ms(0.99).expect("requests");
        assert!(p99 > 49.0 && p99 <= 50.0, "p99 {p99}");
        // One slow request in a hundred moves p99 only when it is the 99th.
        let mut samples = vec![(200, 0.01); 98];
        samples.extend([(200, 0.9), (200, 0.9)]);
        let p99 = window(&samples)
            .latency_quantile_ms(0.99)
            .expect("requests");
        assert!(p99 > 750.0 && p99 <= 1000.0, "p99 {p99}");
        assert_eq!(StatsSnapshot::default().latency_quantile_ms(0.99), None);
    }

    #[test]
    fn beyond_the_last_bound_counts_as_twice_it() {
        let s = window(&[(200, 60.0)]);
        let p = s.latency_quantile_ms(1.0).expect("requests");
        assert!(p > 10_000.0 && p <= 20_000.0, "{p}");
    }

    #[test]
    fn the_registry_keeps_stats_across_lookups() {
        let reg = StatsRegistry::default();
        let errors = Counter::default();
        reg.get_or_create("r", "v1", &errors).observe(200, 0.001);
        assert_eq!(reg.get_or_create("r", "v1", &errors).snapshot().requests, 1);
        assert_eq!(reg.snapshot("r", "v2"), None);
    }
}
