//! The routing table: an immutable value built from an [`EdgeSpec`] and swapped atomically.
//! Instances, concurrency counters and metric handles are carried over between builds so a
//! reload keeps health history, warm connections and limits.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, Weak};

use crate::balance::SmoothWeighted;
use prometheus_client::metrics::counter::Counter;

use crate::metrics::{EdgeMetrics, RateLimitLabels, RouteMetrics};
use crate::rate_limit::RateLimiter;
use crate::spec::{
    ClientLimits, EdgeSpec, Encoding, GroupSpec, HostPattern, RateLimitSpec, RouteSpec,
    TrustedProxies,
};
use crate::upstream::{InstanceSettings, Upstream};

pub struct Table {
    exact: HashMap<String, Vec<usize>>,
    /// Longest suffix first, so `*.api.example.com` wins over `*.example.com`.
    wildcard: Vec<(String, Vec<usize>)>,
    any: Vec<usize>,
    routes: Vec<Route>,
    groups: Vec<Arc<Group>>,
    /// Swapped in with the routes, so a request never pairs one spec's routes with another's
    /// limits.
    pub limits: ClientLimits,
    pub proxies: TrustedProxies,
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
    /// Indexed like `spec.policies.rate_limits`; carried over while a limit is unchanged.
    pub limiters: Vec<Arc<RateLimiter>>,
    /// Compressed responses per encoding the route offers, resolved here so a response does
    /// not look its counter up.
    pub compressed: Vec<(Encoding, Counter)>,
}

pub struct Group {
    pub name: Arc<str>,
    pub spec: GroupSpec,
    pub pools: Vec<Pool>,
    /// Indexed like `pools`.
    pub weights: Vec<u32>,
    pub wrr: Mutex<SmoothWeighted>,
    pub rr: AtomicU64,
}

pub struct Pool {
    pub release: Arc<str>,
    pub instances: Vec<Arc<Upstream>>,
}

/// Released label used for answers the edge gives itself.
pub const EDGE_RELEASE: &str = "-";

/// Values by key, held weakly: every live one, since a replaced value may still be in use.
type Registry<K, T> = Mutex<HashMap<K, Vec<Weak<T>>>>;

/// State that outlives one table.
#[derive(Default)]
pub struct Carry {
    instances: Registry<(String, String, SocketAddr), Upstream>,
    route_in_flight: Registry<String, AtomicUsize>,
    limiters: Registry<(String, &'static str), RateLimiter>,
}

impl Table {
    pub fn build(spec: &EdgeSpec, carry: &Carry, metrics: &EdgeMetrics) -> Table {
        let groups: HashMap<&str, Arc<Group>> = spec
            .groups
            .iter()
            .map(|g| (g.name.as_str(), Arc::new(Group::build(g, carry, metrics))))
            .collect();
        let no_group = Arc::new(Group::build(
            &GroupSpec {
                name: String::new(),
                balance: Default::default(),
                sticky: None,
                force: Default::default(),
                health: None,
                passive: Default::default(),
                upstream_idle_timeout: crate::spec::defaults::UPSTREAM_IDLE_TIMEOUT,
                pools: Vec::new(),
            },
            carry,
            metrics,
        ));
        let routes: Vec<Route> = spec
            .routes
            .iter()
            .filter_map(|route| {
                // Validation guarantees the group exists; a route without one is skipped
                // rather than trusted. A route served only from files has none.
                let static_only = route.group.is_empty() && route.policies.static_files.is_some();
                let group = if static_only {
                    Some(&no_group)
                } else {
                    groups.get(route.group.as_str())
                };
                let Some(group) = group else {
                    tracing::error!(route = %route.name, group = %route.group, "route names an unknown group; skipped");
                    return None;
                };
                Some(Route {
                    name: Arc::from(route.name.as_str()),
                    in_flight: carry.route_counter(&route.name),
                    metrics: group
                        .pools
                        .iter()
                        .map(|p| metrics.route(&route.name, &p.release))
                        .collect(),
                    edge_metrics: metrics.route(&route.name, EDGE_RELEASE),
                    limiters: route
                        .policies
                        .rate_limits
                        .iter()
                        .map(|limit| carry.limiter(&route.name, limit, metrics))
                        .collect(),
                    compressed: route
                        .policies
                        .compression
                        .iter()
                        .flat_map(|c| c.algorithms.iter())
                        .map(|&e| (e, metrics.compressed_counter(&route.name, e)))
                        .collect(),
                    group: group.clone(),
                    spec: route.clone(),
                })
            })
            .collect();
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: Vec<(String, Vec<usize>)> = Vec::new();
        let mut any = Vec::new();
        // Indexed longest prefix first (a stable sort keeps the file's order among equals), so
        // every host's list is already in the order `lookup` tries it.
        let mut by_prefix_len: Vec<usize> = (0..routes.len()).collect();
        by_prefix_len.sort_by_key(|&i| std::cmp::Reverse(routes[i].spec.path_prefix.len()));
        for idx in by_prefix_len {
            for host in &routes[idx].spec.hosts {
                match host {
                    HostPattern::Exact(h) => exact.entry(h.clone()).or_default().push(idx),
                    HostPattern::Wildcard(suffix) => {
                        match wildcard.iter_mut().find(|(s, _)| s == suffix) {
                            Some((_, list)) => list.push(idx),
                            None => wildcard.push((suffix.clone(), vec![idx])),
                        }
                    }
                    HostPattern::Any => any.push(idx),
                }
            }
        }
        wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Table {
            exact,
            wildcard,
            any,
            routes,
            groups: groups.into_values().collect(),
            limits: spec.client.clone(),
            proxies: spec.trusted_proxies.clone(),
        }
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

    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.iter()
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
                instances: p
                    .upstreams
                    .iter()
                    .map(|addr| carry.instance(&spec.name, &p.release, *addr, &settings, metrics))
                    .collect(),
            })
            .collect();
        let weights: Vec<u32> = spec.pools.iter().map(|p| p.weight).collect();
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
            .flat_map(|(_, held)| held.iter().filter_map(Weak::upgrade))
            .map(|u| u.in_flight())
            .sum()
    }

    /// Every instance some table or request still holds.
    pub(crate) fn live_instances(&self) -> HashSet<(String, String, SocketAddr)> {
        // Poisoned or not: an empty answer would retire every live instance's series.
        crate::lock(&self.instances)
            .iter()
            .filter(|(_, held)| held.iter().any(|w| w.strong_count() > 0))
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn instance(
        &self,
        group: &str,
        release: &str,
        addr: SocketAddr,
        settings: &InstanceSettings,
        metrics: &EdgeMetrics,
    ) -> Arc<Upstream> {
        carried(
            &self.instances,
            (group.to_owned(), release.to_owned(), addr),
            |existing| existing.settings == *settings,
            || Upstream::new(addr, group, release, settings.clone(), metrics),
        )
    }

    /// The same limiter, buckets and all, while the route's limit is unchanged; a new one
    /// (empty buckets) when it changed.
    fn limiter(
        &self,
        route: &str,
        spec: &RateLimitSpec,
        metrics: &EdgeMetrics,
    ) -> Arc<RateLimiter> {
        carried(
            &self.limiters,
            (route.to_owned(), spec.kind.label()),
            |existing| existing.spec == *spec,
            || {
                let gauge = metrics
                    .rate_limit_keys
                    .get_or_create(&RateLimitLabels {
                        route: route.to_owned(),
                        limit: spec.kind.label(),
                    })
                    .clone();
                RateLimiter::new(spec.clone(), gauge, std::time::Instant::now())
            },
        )
    }

    fn route_counter(&self, route: &str) -> Arc<AtomicUsize> {
        carried(
            &self.route_in_flight,
            route.to_owned(),
            |_| true,
            || AtomicUsize::new(0),
        )
    }
}

/// The live value registered under `key` that `reusable` accepts, else a new one registered
/// beside the others. Values a replaced table's requests still hold stay registered until
/// nobody holds them, so [`Carry::in_flight`] still counts them (a reload that changes an
/// instance's health settings must not make a drain end early). Entries nobody holds any
/// more are dropped on the way. A poisoned registry carries nothing over rather than failing
/// the build.
fn carried<K: Eq + Hash, T>(
    registry: &Registry<K, T>,
    key: K,
    reusable: impl Fn(&T) -> bool,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    let Ok(mut map) = registry.lock() else {
        return Arc::new(make());
    };
    map.retain(|_, held| {
        held.retain(|w| w.strong_count() > 0);
        !held.is_empty()
    });
    let held = map.entry(key).or_default();
    if let Some(existing) = held
        .iter()
        .filter_map(Weak::upgrade)
        .find(|existing| reusable(existing))
    {
        return existing;
    }
    let fresh = Arc::new(make());
    held.push(Arc::downgrade(&fresh));
    fresh
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::spec::{ClientLimits, GroupSpec, defaults};

    /// A reload that changes an instance's settings makes a new instance; requests still on
    /// the old one must go on counting, or a drain would end while they run.
    #[test]
    fn in_flight_counts_instances_replaced_by_a_reload() {
        let metrics = EdgeMetrics::new(&mut Registry::default());
        let carry = Carry::default();
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let settings = |idle: u64| InstanceSettings {
            active: None,
            passive: Default::default(),
            idle_timeout: std::time::Duration::from_secs(idle),
        };
        let old = carry.instance("g", "r1", addr, &settings(1), &metrics);
        let _request = old.begin();
        let new = carry.instance("g", "r1", addr, &settings(2), &metrics);
        assert!(!Arc::ptr_eq(&old, &new));
        assert_eq!(carry.in_flight("g", "r1"), 1);
        // The same settings again reuse the live instance rather than adding a third.
        let again = carry.instance("g", "r1", addr, &settings(2), &metrics);
        assert!(Arc::ptr_eq(&again, &new));
        assert_eq!(carry.in_flight("g", "r2"), 0);
        drop(_request);
        assert_eq!(carry.in_flight("g", "r1"), 0);
    }

    fn route(name: &str, hosts: &[HostPattern], prefix: &str) -> RouteSpec {
        RouteSpec {
            hosts: hosts.to_vec(),
            path_prefix: prefix.to_owned(),
            ..RouteSpec::to_group(name, "g")
        }
    }

    fn table(routes: Vec<RouteSpec>) -> Table {
        let metrics = EdgeMetrics::new(&mut Registry::default());
        Table::build(&edge_spec(routes), &Carry::default(), &metrics)
    }

    fn edge_spec(routes: Vec<RouteSpec>) -> EdgeSpec {
        let group = GroupSpec::one_pool("g", defaults::RELEASE, Vec::new());
        EdgeSpec {
            listeners: Vec::new(),
            tls: Default::default(),
            client: ClientLimits::default(),
            trusted_proxies: Default::default(),
            routes,
            groups: vec![group],
        }
    }

    /// Buckets are state a reload must keep, or a client could reset its limit by waiting
    /// for any deploy.
    #[test]
    fn rate_limiters_are_carried_over_while_their_limit_is_unchanged() {
        use crate::spec::{Rate, RateKey, RateLimitKind};
        let metrics = EdgeMetrics::new(&mut Registry::default());
        let carry = Carry::default();
        let limited = |burst| {
            let mut r = route("r", &[HostPattern::Any], "/");
            r.policies.rate_limits = vec![RateLimitSpec {
                kind: RateLimitKind::Route,
                paths: Vec::new(),
                rate: Rate {
                    count: 1,
                    per: std::time::Duration::from_secs(60),
                },
                burst,
                key: RateKey::ClientIp,
                max_keys: 1000,
            }];
            edge_spec(vec![r])
        };
        let first = Table::build(&limited(5), &carry, &metrics);
        let again = Table::build(&limited(5), &carry, &metrics);
        let old = &first.lookup("h", "/").expect("route").limiters[0];
        let same = &again.lookup("h", "/").expect("route").limiters[0];
        assert!(Arc::ptr_eq(old, same));
        let changed = Table::build(&limited(6), &carry, &metrics);
        let new = &changed.lookup("h", "/").expect("route").limiters[0];
        assert!(!Arc::ptr_eq(old, new));
        assert_eq!(new.spec.burst, 6);
    }

    /// Each deploy makes a new release with its own series; once no table or request holds
    /// an old release for `RETIRE_AFTER`, its series leave `/metrics` (and memory).
    #[test]
    fn series_of_releases_nothing_holds_are_retired() {
        use crate::retire::{RETIRE_AFTER, sweep};
        let mut registry = Registry::default();
        let metrics = EdgeMetrics::new(&mut registry);
        let carry = Carry::default();
        let spec_of = |release: &str| {
            let mut spec = edge_spec(vec![route("web", &[HostPattern::Any], "/")]);
            spec.groups[0].pools[0].release = release.to_owned();
            spec.groups[0].pools[0].upstreams = vec![SocketAddr::from(([127, 0, 0, 1], 9))];
            spec
        };
        let text = |registry: &Registry| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
            out
        };
        let t0 = std::time::Instant::now();
        let first = Table::build(&spec_of("r1"), &carry, &metrics);
        // A request still on the first table keeps it (and r1) alive.
        let held = first.lookup("h", "/").expect("route");
        let request = (
            held.metrics[0].clone(),
            held.group.pools[0].instances[0].clone(),
        );
        drop(first);
        let _second = Table::build(&spec_of("r2"), &carry, &metrics);
        sweep(&metrics, &carry, t0);
        sweep(&metrics, &carry, t0 + RETIRE_AFTER * 2);
        assert!(
            text(&registry).contains(r#"release="r1""#),
            "held by a request"
        );
        drop(request);
        sweep(&metrics, &carry, t0 + RETIRE_AFTER * 2);
        assert!(
            text(&registry).contains(r#"release="r1""#),
            "kept for a while"
        );
        assert!(metrics.stats.snapshot("web", "r1").is_some());
        sweep(&metrics, &carry, t0 + RETIRE_AFTER * 3);
        let after = text(&registry);
        assert!(!after.contains(r#"release="r1""#), "{after}");
        assert!(metrics.stats.snapshot("web", "r1").is_none());
        assert!(
            after.contains(r#"berth_requests_total{route="web",release="r2""#),
            "{after}"
        );
        assert!(
            after.contains(r#"berth_upstream_healthy{group="g",release="r2""#),
            "{after}"
        );
    }

    #[test]
    fn a_static_only_route_is_kept_without_a_group() {
        let mut files = route("files", &[HostPattern::Any], "/static");
        files.group = String::new();
        files.policies.static_files = Some(crate::spec::StaticSpec {
            roots: vec!["/".into()],
            index: None,
            fallback: false,
            max_age: std::time::Duration::ZERO,
        });
        let t = table(vec![files]);
        let r = t.lookup("h", "/static/x").expect("static route");
        assert!(r.group.pools.is_empty());
    }

    fn routed<'t>(t: &'t Table, host: &str, path: &str) -> Option<&'t str> {
        t.lookup(host, path).map(|r| &*r.name)
    }

    #[test]
    fn lookup_prefers_host_specificity_then_prefix_length_then_file_order() {
        use HostPattern::{Any, Exact, Wildcard};
        let t = table(vec![
            route("any", &[Any], "/"),
            route("site", &[Exact("a.test".into())], "/"),
            route("site-api", &[Exact("a.test".into())], "/api"),
            route("site-api-again", &[Exact("a.test".into())], "/api"),
            route("wild-docs", &[Wildcard(".test".into())], "/docs"),
            route("deep-wild", &[Wildcard(".b.test".into())], "/"),
        ]);
        assert_eq!(routed(&t, "a.test", "/api/x"), Some("site-api"));
        assert_eq!(routed(&t, "a.test", "/other"), Some("site"));
        // A host pattern without a matching prefix falls through to the less specific ones.
        assert_eq!(routed(&t, "x.b.test", "/docs"), Some("deep-wild"));
        assert_eq!(routed(&t, "c.test", "/docs"), Some("wild-docs"));
        assert_eq!(routed(&t, "c.test", "/"), Some("any"));
        // A wildcard needs at least one label in front of its suffix.
        assert_eq!(routed(&t, "b.test", "/"), Some("any"));
    }

    #[test]
    fn routes_naming_an_unknown_group_are_skipped() {
        let mut orphan = route("orphan", &[HostPattern::Any], "/");
        orphan.group = "missing".to_owned();
        let t = table(vec![orphan, route("kept", &[HostPattern::Any], "/x")]);
        assert_eq!(routed(&t, "h", "/x"), Some("kept"));
        assert_eq!(routed(&t, "h", "/"), None);
    }

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
