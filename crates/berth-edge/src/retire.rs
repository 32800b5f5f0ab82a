//! Retiring the metrics of releases that left the edge. Every deploy makes a new release, and
//! each (route, release) and (group, release, instance) has its own series; kept forever they
//! would grow `/metrics` and memory by a few dozen series per deploy for as long as berth runs.
//! A series goes once nothing has held it for [`RETIRE_AFTER`]: long enough for Prometheus to
//! scrape its final counts and for a deploy to read a finished release's numbers, short
//! enough that a week of deploys leaves nothing behind.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::lock;
use crate::metrics::EdgeMetrics;
use crate::table::Carry;

/// How long a series nothing holds any more stays exported.
pub const RETIRE_AFTER: Duration = Duration::from_secs(10 * 60);

/// The keys seen held, and since when each is not; decides which keys go. Pure: the caller
/// says what is held and what time it is.
#[derive(Debug)]
pub struct Retirement<K> {
    /// `None` while held.
    known: HashMap<K, Option<Instant>>,
}

impl<K> Default for Retirement<K> {
    fn default() -> Self {
        Self {
            known: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Retirement<K> {
    /// Takes the keys something holds now. A key seen held before and not now starts its
    /// period; returns the keys nothing has held for [`RETIRE_AFTER`], and forgets them.
    pub fn sweep(&mut self, held: impl IntoIterator<Item = K>, now: Instant) -> Vec<K> {
        let held: HashSet<K> = held.into_iter().collect();
        let mut due = Vec::new();
        self.known.retain(|key, unheld_since| {
            if held.contains(key) {
                *unheld_since = None;
                return true;
            }
            let since = *unheld_since.get_or_insert(now);
            let keep = now.saturating_duration_since(since) < RETIRE_AFTER;
            if !keep {
                due.push(key.clone());
            }
            keep
        });
        for key in held {
            self.known.entry(key).or_insert(None);
        }
        due
    }
}

/// The series' keys: a route's per-release counters, and an instance's.
pub type RouteKey = (String, String);
pub type InstanceKey = (String, String, SocketAddr);

/// Removes the series of routes' releases and of instances that nothing has held for
/// [`RETIRE_AFTER`]. Runs whenever a table is built, after it is stored, so every key is seen
/// held once: by the stats a table's routes hold, and by the instances in [`Carry`].
pub(crate) fn sweep(metrics: &EdgeMetrics, carry: &Carry, now: Instant) {
    let routes = lock(&metrics.retired_routes).sweep(metrics.stats.held(), now);
    for (route, release) in routes {
        metrics.forget_route(&route, &release);
    }
    let instances = lock(&metrics.retired_instances).sweep(carry.live_instances(), now);
    for key in instances {
        metrics.forget_instance(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_goes_after_being_unheld_for_the_whole_period() {
        let t0 = Instant::now();
        let mut r = Retirement::default();
        assert!(r.sweep(["a", "b"], t0).is_empty());
        assert!(r.sweep(["b"], t0).is_empty());
        let almost = t0 + RETIRE_AFTER - Duration::from_secs(1);
        assert!(r.sweep(["b"], almost).is_empty());
        assert_eq!(r.sweep(["b"], t0 + RETIRE_AFTER), ["a"]);
        // Gone means forgotten: a new series under the same key starts its own period.
        assert!(r.sweep(["a"], t0 + RETIRE_AFTER).is_empty());
    }

    #[test]
    fn being_held_again_restarts_the_period() {
        let t0 = Instant::now();
        let mut r = Retirement::default();
        r.sweep(["a"], t0);
        r.sweep([], t0);
        r.sweep(["a"], t0 + Duration::from_secs(300));
        r.sweep([], t0 + Duration::from_secs(400));
        assert!(r.sweep([], t0 + RETIRE_AFTER).is_empty());
        let later = t0 + Duration::from_secs(400) + RETIRE_AFTER;
        assert_eq!(r.sweep([], later), ["a"]);
    }
}
