//! Choosing a release pool and an instance for one request. The choices themselves are the
//! pure functions in [`crate::balance`]; this applies them to live health and load.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::HeaderMap;

use crate::balance;
use crate::headers::cookie;
use crate::spec::Balance;
use crate::table::{Group, Pool};
use crate::upstream::Upstream;

pub struct Choice<'g> {
    pub pool: usize,
    pub upstream: &'g Arc<Upstream>,
    /// Every instance of the chosen pool was down, so one was used anyway.
    pub fail_open: bool,
}

/// How the release for a request is fixed before any instance is chosen.
pub struct ReleasePick {
    /// Forced by header or cookie.
    pub forced: Option<usize>,
    /// Sticky cohort of this client, and whether it is new (the response must set the cookie).
    pub cohort: Option<(u32, bool)>,
}

pub fn release_pick(group: &Group, headers: &HeaderMap) -> ReleasePick {
    let force = &group.spec.force;
    let wanted = headers
        .get(&force.header)
        .and_then(|v| v.to_str().ok())
        .or_else(|| cookie(headers, &force.cookie));
    let forced = wanted.and_then(|w| group.pools.iter().position(|p| &*p.release == w));
    let cohort = group.spec.sticky.as_ref().map(|s| {
        match cookie(headers, &s.cookie).and_then(balance::parse_cohort) {
            Some(c) => (c, false),
            None => (balance::random_cohort(&mut rand::rng()), true),
        }
    });
    ReleasePick { forced, cohort }
}

fn pool_has_available(pool: &Pool, now: Instant) -> bool {
    pool.instances.iter().any(|u| u.is_available(now))
}

/// Picks an instance, avoiding `avoid` (instances already tried for this request) while any
/// other is available.
pub fn choose<'g>(
    group: &'g Group,
    pick: &ReleasePick,
    avoid: &[&Arc<Upstream>],
    now: Instant,
) -> Option<Choice<'g>> {
    let pool = choose_pool(group, pick, now)?;
    let instances = &group.pools[pool].instances;
    let usable =
        |u: &Arc<Upstream>| u.is_available(now) && !avoid.iter().any(|a| Arc::ptr_eq(a, u));
    let mut candidates: Vec<usize> = (0..instances.len())
        .filter(|&i| usable(&instances[i]))
        .collect();
    if candidates.is_empty() {
        candidates = (0..instances.len())
            .filter(|&i| instances[i].is_available(now))
            .collect();
    }
    let fail_open = candidates.is_empty();
    if fail_open {
        candidates = (0..instances.len()).collect();
    }
    let idx = match group.spec.balance {
        Balance::P2cLeastOutstanding => {
            balance::p2c(&candidates, |i| instances[i].in_flight(), &mut rand::rng())
        }
        Balance::RoundRobin => {
            balance::round_robin(&candidates, group.rr.fetch_add(1, Ordering::Relaxed))
        }
    }?;
    Some(Choice {
        pool,
        upstream: &instances[idx],
        fail_open,
    })
}

fn choose_pool(group: &Group, pick: &ReleasePick, now: Instant) -> Option<usize> {
    if let Some(forced) = pick.forced
        && !group.pools[forced].instances.is_empty()
    {
        return Some(forced);
    }
    if group.pools.len() == 1 {
        return (!group.pools[0].instances.is_empty()).then_some(0);
    }
    let healthy = |i: usize| pool_has_available(&group.pools[i], now);
    let populated = |i: usize| !group.pools[i].instances.is_empty();
    if let Some((cohort, _)) = pick.cohort {
        return balance::cohort_pool(cohort, &group.weights, healthy)
            .or_else(|| balance::cohort_pool(cohort, &group.weights, populated));
    }
    let Ok(mut wrr) = group.wrr.lock() else {
        return None;
    };
    wrr.pick(healthy).or_else(|| wrr.pick(populated))
}
