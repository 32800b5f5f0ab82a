//! The routing table: an immutable value built from an [`EdgeSpec`] and swapped atomically.
//! Instances, concurrency counters and metric handles are carried over between builds so a
//! reload keeps health history, warm connections and limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, Weak};

use crate::balance::SmoothWeighted;
use crate::metrics::{EdgeMetrics, RouteMetrics};
use crate::spec::{EdgeSpec, GroupSpec, HostPattern, RouteSpec};
use crate::upstream::{InstanceSettings, Upstream};

pub struct Table {
    exact: HashMap<String, Vec<usize>>,
    /// Longest suffix first, so `*.api.example.com` wins over `*.example.com`.
    wildcard: Vec<(String, Vec<usize>)>,
    any: Vec<usize>,
    pub routes: Vec<Route>,
    pub groups: Vec<Arc<Group>>,
}

pub struct Route {
    pub name: Arc<str>,
    pub spec: RouteSpec,
    pub group: Arc<Group>,
    pub in_flight: Arc<AtomicUsize>,
    /// Indexed like `group.pools`.
    pub metrics: Vec<RouteMetrics>,
    /// For answers given before a release was chosen (404, 413, 503...).
    pub edge_metrics: RouteMetrics,
}

pub struct Group {
    pub name: Arc<str>,
    pub spec: GroupSpec,
    pub pools: Vec<Pool>,
    pub weights: Vec<u32>,
    pub wrr: Mutex<SmoothWeighted>,
    pub rr: AtomicU64,
}

pub struct Pool {
    pub release: Arc<str>,
    pub weight: u32,
    pub instances: Vec<Arc<Upstream>>,
}

/// Released label used for answers the edge gives itself.
pub const EDGE_RELEASE: &str = "-";

/// State that outlives one table.
#[derive(Default)]
pub struct Carry {
    instances: Mutex<HashMap<(String, String, SocketAddr), Weak<Upstream>>>,
    route_in_flight: Mutex<HashMap<String, Weak<AtomicUsize>>>,
}

impl Table {
    pub fn build(spec: &EdgeSpec, carry: &Carry, metrics: &EdgeMetrics) -> Table {
        let groups: HashMap<&str, Arc<Group>> = spec
            .groups
            .iter()
            .map(|g| (g.name.as_str(), Arc::new(Group::build(g, carry, metrics))))
            .collect();
        let mut table = Table {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any: Vec::new(),
            routes: Vec::new(),
            groups: groups.values().cloned().collect(),
        };
        for route in &spec.routes {
            // Validation guarantees the group exists; a route without one is skipped rather
            // than trusted.
            let Some(group) = groups.get(route.group.as_str()) else {
                tracing::error!(route = %route.name, group = %route.group, "route names an unknown group; skipped");
                continue;
            };
            let idx = table.routes.len();
            for host in &route.hosts {
                match host {
                    HostPattern::Exact(h) => table.exact.entry(h.clone()).or_default().push(idx),
                    HostPattern::Wildcard(suffix) => {
                        match table.wildcard.iter_mut().find(|(s, _)| s == suffix) {
                            Some((_, list)) => list.push(idx),
                            None => table.wildcard.push((suffix.clone(), vec![idx])),
                        }
                    }
                    HostPattern::Any => table.any.push(idx),
                }
            }
            table.routes.push(Route {
                name: Arc::from(route.name.as_str()),
                in_flight: carry.route_counter(&route.name),
                metrics: group
                    .pools
                    .iter()
                    .map(|p| metrics.route(&route.name, &p.release))
                    .collect(),
                edge_metrics: metrics.route(&route.name, EDGE_RELEASE),
                group: group.clone(),
                spec: route.clone(),
            });
        }
        let by_prefix_len = |routes: &Vec<Route>, list: &mut Vec<usize>| {
            list.sort_by_key(|&i| std::cmp::Reverse(routes[i].spec.path_prefix.len()));
        };
        for list in table.exact.values_mut() {
            by_prefix_len(&table.routes, list);
        }
        for (_, list) in table.wildcard.iter_mut() {
            by_prefix_len(&table.routes, list);
        }
        let mut any = std::mem::take(&mut table.any);
        by_prefix_len(&table.routes, &mut any);
        table.any = any;
        table
            .wildcard
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        table
    }

    /// Host (lower-case, no port) and path to a route: the most specific host pattern that
    /// has a matching prefix, and within it the longest prefix.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Route> {
        let find = |list: &Vec<usize>| {
            list.iter()
                .map(|&i| &self.routes[i])
                .find(|r| prefix_matches(&r.spec.path_prefix, path))
        };
        if let Some(r) = self.exact.get(host).and_then(find) {
            return Some(r);
        }
        for (suffix, list) in &self.wildcard {
            if host.len() > suffix.len()
                && host.ends_with(suffix.as_str())
                && let Some(r) = find(list)
            {
                return Some(r);
            }
        }
        find(&self.any)
    }

    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.groups
            .iter()
            .flat_map(|g| g.pools.iter())
            .flat_map(|p| p.instances.iter())
    }
}

/// `/api` matches `/api`, `/api/` and `/api/x`, never `/apix`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

impl Group {
    fn build(spec: &GroupSpec, carry: &Carry, metrics: &EdgeMetrics) -> Group {
        let settings = InstanceSettings {
            active: spec.health.clone(),
            passive: spec.passive.clone(),
            idle_timeout: spec.upstream_idle_timeout,
        };
        let pools: Vec<Pool> = spec
            .pools
            .iter()
            .map(|p| Pool {
                release: Arc::from(p.release.as_str()),
                weight: p.weight,
                instances: p
                    .upstreams
                    .iter()
                    .map(|addr| carry.instance(&spec.name, &p.release, *addr, &settings, metrics))
                    .collect(),
            })
            .collect();
        let weights: Vec<u32> = pools.iter().map(|p| p.weight).collect();
        Group {
            name: Arc::from(spec.name.as_str()),
            spec: spec.clone(),
            wrr: Mutex::new(SmoothWeighted::new(&weights)),
            weights,
            pools,
            rr: AtomicU64::new(0),
        }
    }
}

impl Carry {
    /// Requests in flight to `release`'s instances in `group`, counting instances that the
    /// current table no longer has but that requests still hold.
    pub fn in_flight(&self, group: &str, release: &str) -> usize {
        let Ok(map) = self.instances.lock() else {
            return 0;
        };
        map.iter()
            .filter(|((g, r, _), _)| g == group && r == release)
            .filter_map(|(_, w)| w.upgrade())
            .map(|u| u.in_flight())
            .sum()
    }

    fn instance(
        &self,
        group: &str,
        release: &str,
        addr: SocketAddr,
        settings: &InstanceSettings,
        metrics: &EdgeMetrics,
    ) -> Arc<Upstream> {
        let key = (group.to_owned(), release.to_owned(), addr);
        let Ok(mut map) = self.instances.lock() else {
            return Arc::new(Upstream::new(
                addr,
                group,
                release,
                settings.clone(),
                metrics,
            ));
        };
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade)
            && existing.settings == *settings
        {
            return existing;
        }
        let fresh = Arc::new(Upstream::new(
            addr,
            group,
            release,
            settings.clone(),
            metrics,
        ));
        map.insert(key, Arc::downgrade(&fresh));
        fresh
    }

    fn route_counter(&self, route: &str) -> Arc<AtomicUsize> {
        let Ok(mut map) = self.route_in_flight.lock() else {
            return Arc::new(AtomicUsize::new(0));
        };
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(c) = map.get(route).and_then(Weak::upgrade) {
            return c;
        }
        let fresh = Arc::new(AtomicUsize::new(0));
        map.insert(route.to_owned(), Arc::downgrade(&fresh));
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(prefix_matches("/api/", "/api/v1"));
        assert!(prefix_matches("/api", "/api?x=1"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(!prefix_matches("/api", "/"));
    }
}
