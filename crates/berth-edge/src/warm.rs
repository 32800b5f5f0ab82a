//! Connections opened to instances before a table that sends them traffic is applied.
//!
//! Without them, a switch to a new release makes every client connection's next request wait
//! for a fresh upstream connection, all at once, on the edge's thread, while the new
//! instances accept their first connections. Measured in bench/RESULTS.md: about 70 connects
//! per deploy under 64 keep-alive clients, against 10 per second in steady state. So before a
//! deploy switches, the edge opens as many connections to each new instance as its share of
//! the connections its group's requests use now, and the switch finds them idle in the pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::spec::defaults;
use crate::table::Table;
use crate::upstream::Upstream;

/// How long a deploy waits for connections to its new instances before it switches anyway
/// (the requests then connect themselves, as without warming).
pub const WARM_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection counts towards a group's demand when a request used it this recently: the
/// connections in use over the last second approach the peak concurrency, where the pool's
/// size only remembers the highest there ever was.
const RECENT_USE: Duration = Duration::from_secs(1);

/// Connections opened ahead of a table. The table's instances are carried into the next
/// [`crate::Edge::apply`] only while something holds them, so hold this until then.
pub struct Warm {
    _table: Arc<Table>,
    opened: usize,
}

impl Warm {
    pub(crate) fn new(table: Arc<Table>, opened: usize) -> Warm {
        Warm {
            _table: table,
            opened,
        }
    }

    /// Connections opened and now idle in the new instances' pools.
    pub fn opened(&self) -> usize {
        self.opened
    }
}

/// Connections each instance of each pool should hold: `demand` (the connections the group's
/// requests used lately, see [`plan`]) shared by weight, then evenly between a pool's instances, rounded up
/// so every instance that takes traffic gets one. Indexed like `weights` and `sizes`.
pub(crate) fn per_instance(demand: usize, weights: &[u32], sizes: &[usize]) -> Vec<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    weights
        .iter()
        .zip(sizes)
        .map(|(&weight, &size)| {
            if total == 0 || size == 0 || weight == 0 {
                return 0;
            }
            let share = demand as u64 * u64::from(weight);
            let per = share.div_ceil(total).div_ceil(size as u64);
            (per as usize).min(defaults::UPSTREAM_MAX_IDLE_PER_INSTANCE)
        })
        .collect()
}

/// The connections to open: for each instance of `next`, what its share of the connections
/// its group's requests use now (in `current`) is short of what it holds already. Only
/// groups whose pools change are looked at (another app's deploy leaves this one's alone),
/// and a group new to the table has no demand yet.
pub(crate) fn plan(current: &Table, next: &Table) -> Vec<(Arc<Upstream>, usize)> {
    let now = Instant::now();
    let mut out = Vec::new();
    for group in next.groups() {
        let Some(serving) = current
            .groups()
            .find(|g| g.name == group.name && g.spec.pools != group.spec.pools)
        else {
            continue;
        };
        let demand: usize = serving
            .pools
            .iter()
            .flat_map(|p| p.instances.iter())
            .map(|u| u.connections_used(now, RECENT_USE))
            .sum();
        let sizes: Vec<usize> = group.pools.iter().map(|p| p.instances.len()).collect();
        let targets = per_instance(demand, &group.weights, &sizes);
        for (pool, target) in group.pools.iter().zip(targets) {
            for up in &pool.instances {
                let short = target.saturating_sub(up.connections(now));
                if short > 0 {
                    out.push((up.clone(), short));
                }
            }
        }
    }
    out
}

/// Opens the planned connections at once and pools them; gives up on those still
/// connecting after `timeout`. Returns how many were opened.
pub(crate) async fn open(plan: Vec<(Arc<Upstream>, usize)>, timeout: Duration) -> usize {
    let mut connects: FuturesUnordered<_> = plan
        .into_iter()
        .flat_map(|(up, n)| std::iter::repeat_n(up, n))
        .map(|up| async move { up.open_idle(timeout).await })
        .collect();
    let mut opened = 0;
    let all = async {
        while let Some(ok) = connects.next().await {
            opened += usize::from(ok);
        }
    };
    let _ = tokio::time::timeout(timeout, all).await;
    opened
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_gives_each_new_instance_its_share_of_the_connections() {
        // Rolling: all of 64 connections to two instances.
        assert_eq!(per_instance(64, &[100], &[2]), [32]);
        // An odd split rounds up, so no instance is left a connection short.
        assert_eq!(per_instance(65, &[100], &[2]), [33]);
        // Canary at 10%: 6.4 of 64 to the canary's two instances, 57.6 to the stable's.
        assert_eq!(per_instance(64, &[10, 90], &[2, 2]), [4, 29]);
        // Blue-green before promotion: the preview pool takes no traffic.
        assert_eq!(per_instance(64, &[0, 100], &[2, 2]), [0, 32]);
    }

    #[test]
    fn nothing_is_opened_without_traffic_or_instances() {
        assert_eq!(per_instance(0, &[100], &[2]), [0]);
        assert_eq!(per_instance(64, &[100], &[0]), [0]);
        assert_eq!(per_instance(64, &[0], &[2]), [0]);
        assert_eq!(per_instance(64, &[], &[]), Vec::<usize>::new());
    }

    #[test]
    fn no_instance_is_given_more_than_its_pool_keeps_idle() {
        assert_eq!(
            per_instance(10_000, &[100], &[1]),
            [defaults::UPSTREAM_MAX_IDLE_PER_INSTANCE]
        );
    }
}
