//! Retiring the metrics of releases that left the edge. Every deploy makes a new release, and
//! each (route, release) and (group, release, instance) has its own series; kept forever they
//! would grow `/metrics` and memory by a few dozen series per deploy for as long as berth runs.
//! A series goes once nothing has held it for [`RETIRE_AFTER`]: long enough for Prometheus to
//! scrape its final counts and for a deploy to read a finished release's numbers, short
//! enough that a week of deploys leaves nothing behind.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::metrics::EdgeMetrics;
use crate::table::Carry;

/// How long a series nothing holds any more stays exported.
pub const RETIRE_AFTER: Duration = Duration::from_secs(10 * 60);

/// When each key was last seen held; decides which keys go. Pure: the caller says what is
/// held and what time it is.
#[derive(Debug)]
pub struct Retirement<K> {
    unheld_since: HashMap<K, Instant>,
}

impl<K> Default for Retirement<K> {
    fn default() -> Self {
        Self {
            unheld_since: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Retirement<K> {
    /// Takes every key there is and whether something holds it now; returns the keys nothing
    /// has held for [`RETIRE_AFTER`], and forgets them.
    pub fn sweep(&mut self, keys: impl IntoIterator<Item = (K, bool)>, now: Instant) -> Vec<K> {
        let mut seen = HashMap::new();
        let mut due = Vec::new();
        for (key, held) in keys {
            if held {
                continue;
            }
            let since = self.unheld_since.get(&key).copied().unwrap_or(now);
            if now.saturating_duration_since(since) >= RETIRE_AFTER {
                due.push(key);
            } else {
                seen.insert(key, since);
            }
        }
        // Keys held again, or gone by other means, start afresh next time.
        self.unheld_since = seen;
        due
    }
}

/// The series' keys: a route's per-release counters, and an instance's.
pub type RouteKey = (String, String);
pub type InstanceKey = (String, String, SocketAddr);

/// Removes the series of routes' releases and of instances that nothing has held for
/// [`RETIRE_AFTER`]. Runs whenever a table is applied, after the swap.
pub(crate) fn sweep(metrics: &EdgeMetrics, carry: &Carry, now: Instant) {
    let routes = metrics.stats.held();
    let gone = lock(&metrics.retired_routes).sweep(routes, now);
    for (route, release) in gone {
        metrics.forget_route(&route, &release);
    }
    let live = carry.live_instances();
    let instances: Vec<_> = metrics
        .instance_keys()
        .into_iter()
        .map(|key| {
            let held = live.contains(&key);
            (key, held)
        })
        .collect();
    let gone = lock(&metrics.retired_instances).sweep(instances, now);
    for key in gone {
        metrics.forget_instance(&key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_goes_after_being_unheld_for_the_whole_period() {
        let t0 = Instant::now();
        let mut r = Retirement::default();
        assert!(r.sweep([("a", false), ("b", true)], t0).is_empty());
        let almost = t0 + RETIRE_AFTER - Duration::from_secs(1);
        assert!(r.sweep([("a", false), ("b", true)], almost).is_empty());
        assert_eq!(
            r.sweep([("a", false), ("b", true)], t0 + RETIRE_AFTER),
            ["a"]
        );
        // Gone means forgotten: a new series under the same key starts its own period.
        assert!(r.sweep([("a", false)], t0 + RETIRE_AFTER).is_empty());
    }

    #[test]
    fn being_held_again_restarts_the_period() {
        let t0 = Instant::now();
        let mut r = Retirement::default();
        r.sweep([("a", false)], t0);
        r.sweep([("a", true)], t0 + Duration::from_secs(300));
        r.sweep([("a", false)], t0 + Duration::from_secs(400));
        assert!(r.sweep([("a", false)], t0 + RETIRE_AFTER).is_empty());
        let later = t0 + Duration::from_secs(400) + RETIRE_AFTER;
        assert_eq!(r.sweep([("a", false)], later), ["a"]);
    }
}
