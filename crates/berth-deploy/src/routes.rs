//! How an app's running instances become edge routes: pure functions from the app's hosts,
//! health check and release pools to the edge's spec types, and the composition of the
//! file's routes with every app's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_config::app::{AppEdge, AppStatic};

use berth_edge::spec::{
    ActiveHealthSpec, EdgeSpec, ForceSpec, GroupSpec, HostPattern, Maintenance, PassiveHealthSpec,
    PoolSpec, RetryPolicy, RouteSpec, SecurityHeaders, StaticSpec, StatusMatch, StickySpec,
    UpstreamTimeouts, defaults,
};

use crate::AppKey;

/// What the edge needs to serve one app.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AppRoute {
    /// Validated host names (`app.example.com`, `*.example.com`).
    pub hosts: Vec<String>,
    pub health: Option<ActiveHealthSpec>,
    /// One pool per release that takes traffic, the newest first (sticky cohorts move to it
    /// as its weight grows).
    pub pools: Vec<PoolSpec>,
    /// Keep each user on one release (a cohort cookie) while two releases share traffic.
    pub sticky: bool,
    /// Serve the maintenance page instead (a pre-deploy hook is running).
    pub maintenance: bool,
    /// The app spec's `[edge]` policies and paths.
    pub edge: AppEdge,
    /// `[deploy] preview_hosts`: served by the first pool's release alone.
    pub preview_hosts: Vec<String>,
    /// The directories of the releases in `pools`, in the same order: static paths are
    /// looked up in each.
    pub release_dirs: Vec<PathBuf>,
}

/// Shown on an app's hosts while its pre-deploy hook runs with `maintenance = true`.
pub const MAINTENANCE_PAGE: &str = "<!doctype html><title>Down for maintenance</title>\
<h1>Down for maintenance</h1><p>We are updating this site and will be back in a moment.</p>\n";

/// The edge group (and route) name of an app: `app:<name>:<env>`. The colon cannot appear
/// in a name from the config file, so app routes never collide with file routes by name.
pub fn group_name(key: &AppKey) -> String {
    format!("app:{}:{}", key.app, key.env)
}

pub fn host_pattern(host: &str) -> HostPattern {
    match host {
        "*" => HostPattern::Any,
        h => match h.strip_prefix("*.") {
            Some(suffix) => HostPattern::Wildcard(format!(".{suffix}")),
            None => HostPattern::Exact(h.to_ascii_lowercase()),
        },
    }
}

/// The app's health check as the edge runs it.
pub fn edge_health(h: &berth_config::app::HealthSpec) -> ActiveHealthSpec {
    ActiveHealthSpec {
        path: h.path.clone(),
        interval: h.interval,
        timeout: h.timeout,
        healthy_threshold: h.healthy_threshold.max(1),
        unhealthy_threshold: h.unhealthy_threshold.max(1),
        expect: StatusMatch::Success,
    }
}

/// The routes and groups serving `route` for `key`: the app's route at `/` and one per
/// `[[edge.paths]]`, all to the app's group; then the same on the preview hosts, to a group
/// holding the newest release alone.
pub fn edge_parts(key: &AppKey, route: &AppRoute) -> (Vec<RouteSpec>, Vec<GroupSpec>) {
    let name = group_name(key);
    let group = GroupSpec {
        name: name.clone(),
        balance: Default::default(),
        sticky: route.sticky.then(|| StickySpec {
            cookie: defaults::STICKY_COOKIE.to_owned(),
            ttl: defaults::STICKY_TTL,
        }),
        force: ForceSpec::default(),
        health: route.health.clone(),
        passive: PassiveHealthSpec::default(),
        upstream_idle_timeout: defaults::UPSTREAM_IDLE_TIMEOUT,
        pools: route.pools.clone(),
    };
    let mut routes = routes_on(&route.hosts, &name, route);
    let mut groups = vec![group];
    if !route.preview_hosts.is_empty()
        && let Some(newest) = route.pools.first()
    {
        let preview = format!("{name}:preview");
        routes.extend(routes_on(&route.preview_hosts, &preview, route));
        let alone = PoolSpec {
            weight: defaults::POOL_WEIGHT,
            ..newest.clone()
        };
        groups.push(GroupSpec {
            name: preview,
            sticky: None,
            pools: vec![alone],
            ..groups[0].clone()
        });
    }
    (routes, groups)
}

/// The app's routes on `hosts` to group `name` (which also names them).
fn routes_on(hosts: &[String], name: &str, route: &AppRoute) -> Vec<RouteSpec> {
    let main = RouteSpec {
        name: name.to_owned(),
        hosts: hosts.iter().map(|h| host_pattern(h)).collect(),
        path_prefix: "/".to_owned(),
        strip_prefix: false,
        group: name.to_owned(),
        max_body_bytes: defaults::MAX_BODY_BYTES,
        max_concurrent: defaults::MAX_CONCURRENT,
        timeouts: UpstreamTimeouts::default(),
        retry: RetryPolicy::default(),
        security: SecurityHeaders::recommended(),
        request_headers: Default::default(),
        response_headers: Default::default(),
        maintenance: route.maintenance.then(|| Maintenance {
            retry_after: defaults::MAINTENANCE_RETRY_AFTER,
            allow: Vec::new(),
            page: MAINTENANCE_PAGE.to_owned(),
        }),
        // Redirects only where the edge has a certificate for the host (see berth_edge::tls).
        https_redirect: true,
        policies: route.edge.policies.clone(),
    };
    let mut routes = Vec::with_capacity(1 + route.edge.paths.len());
    for path in &route.edge.paths {
        let mut policies = path.policies.clone();
        policies.static_files = path.static_files.as_ref().and_then(|s| {
            let roots = static_roots(&route.release_dirs, s);
            (!roots.is_empty()).then(|| StaticSpec {
                roots,
                index: s.index.clone(),
                fallback: s.fallback,
                max_age: s.max_age,
            })
        });
        routes.push(RouteSpec {
            name: format!("{name}{}", path.prefix),
            path_prefix: path.prefix.clone(),
            policies,
            ..main.clone()
        });
    }
    routes.insert(0, main);
    routes
}

/// The static directory in each release that has it, canonical. One that a symlink takes out
/// of its release is left out: a release must not publish the server's other files.
pub fn static_roots(release_dirs: &[PathBuf], s: &AppStatic) -> Vec<PathBuf> {
    release_dirs
        .iter()
        .filter_map(|dir| static_root(dir, &s.dir).ok())
        .collect()
}

/// `rel` inside `release`, canonical, or why it cannot be served.
pub fn static_root(release: &Path, rel: &Path) -> Result<PathBuf, String> {
    let base = std::fs::canonicalize(release).map_err(|e| format!("{}: {e}", release.display()))?;
    let root = std::fs::canonicalize(base.join(rel))
        .map_err(|e| format!("{} is missing from the release ({e})", rel.display()))?;
    if !root.starts_with(&base) {
        return Err(format!(
            "{} leads out of the release (a symlink to {})",
            rel.display(),
            root.display()
        ));
    }
    if !root.is_dir() {
        return Err(format!("{} is not a directory", rel.display()));
    }
    Ok(root)
}

/// The file's spec with every app's route and group added.
pub fn compose(file: &EdgeSpec, apps: &BTreeMap<AppKey, AppRoute>) -> EdgeSpec {
    let mut spec = file.clone();
    for (key, route) in apps {
        let (r, g) = edge_parts(key, route);
        spec.routes.extend(r);
        spec.groups.extend(g);
    }
    spec
}

/// Why `route` cannot be served next to the file's routes and the other apps' (a host that
/// is already served at `/`), or `None` when it can.
pub fn host_conflict(
    file: &EdgeSpec,
    apps: &BTreeMap<AppKey, AppRoute>,
    key: &AppKey,
    route: &AppRoute,
) -> Option<String> {
    for host in route.hosts.iter().chain(&route.preview_hosts) {
        let wanted = host_pattern(host);
        for r in &file.routes {
            if r.path_prefix == "/" && r.hosts.contains(&wanted) {
                return Some(format!(
                    "host {host} is already served by route {:?} in the server's config file; \
                     remove it there or give the app another host",
                    r.name
                ));
            }
        }
        for (other, r) in apps {
            let taken = r.hosts.iter().chain(&r.preview_hosts);
            if other != key && taken.map(|h| host_pattern(h)).any(|h| h == wanted) {
                return Some(format!(
                    "host {host} is already served by app {other}; give this app another host"
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// A file spec with one route, `site`, serving `taken.localhost` (or none).
    fn file_spec(with_route: bool) -> EdgeSpec {
        let server = "[server]\nlisten = [\"127.0.0.1:8080\"]\n";
        let routes = if with_route {
            "[[route]]\nname = \"site\"\nhosts = [\"taken.localhost\"]\ngroup = \"g\"\n\
             [group.g]\nupstreams = [\"127.0.0.1:9\"]\n"
        } else {
            ""
        };
        berth_config::parse(
            &format!("{server}{routes}"),
            std::path::Path::new("berth.toml"),
        )
        .expect("test config parses")
        .edge
    }

    fn key(app: &str) -> AppKey {
        AppKey::new("production", app)
    }

    fn route(hosts: &[&str], release: &str, port: u16) -> AppRoute {
        AppRoute {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            health: None,
            pools: vec![PoolSpec {
                release: release.into(),
                weight: 100,
                upstreams: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            }],
            ..AppRoute::default()
        }
    }

    #[test]
    fn hosts_become_patterns() {
        assert_eq!(host_pattern("*"), HostPattern::Any);
        assert_eq!(
            host_pattern("*.example.com"),
            HostPattern::Wildcard(".example.com".into())
        );
        assert_eq!(
            host_pattern("Shop.Example.com"),
            HostPattern::Exact("shop.example.com".into())
        );
    }

    #[test]
    fn compose_adds_one_route_and_group_per_app_after_the_files() {
        let file = file_spec(false);
        let mut apps = BTreeMap::new();
        apps.insert(
            key("shop"),
            route(&["shop.localhost"], "r-000000000001", 4001),
        );
        apps.insert(
            key("blog"),
            route(&["*.blog.localhost"], "r-000000000002", 4002),
        );
        let spec = compose(&file, &apps);
        let names: Vec<&str> = spec.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["app:blog:production", "app:shop:production"]);
        assert_eq!(spec.routes[1].group, spec.groups[1].name);
        assert_eq!(spec.groups[1].pools[0].release, "r-000000000001");
        assert_eq!(
            spec.routes[0].hosts,
            [HostPattern::Wildcard(".blog.localhost".into())]
        );
    }

    fn static_path(prefix: &str, dir: &str) -> berth_config::app::AppPath {
        berth_config::app::AppPath {
            prefix: prefix.into(),
            policies: Default::default(),
            static_files: Some(AppStatic {
                dir: dir.into(),
                index: None,
                fallback: true,
                max_age: std::time::Duration::from_secs(60),
            }),
        }
    }

    #[test]
    fn edge_paths_become_longer_routes_to_the_apps_group_with_every_releases_static_copy() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (new, old, bare) = (
            tmp.path().join("new"),
            tmp.path().join("old"),
            tmp.path().join("bare"),
        );
        for dir in [&new, &old] {
            std::fs::create_dir_all(dir.join("staticfiles")).expect("mkdir");
        }
        std::fs::create_dir_all(&bare).expect("mkdir");
        let mut r = route(&["shop.localhost"], "r-new", 4001);
        r.edge.paths = vec![
            static_path("/static/", "staticfiles"),
            berth_config::app::AppPath {
                prefix: "/admin".into(),
                policies: berth_edge::spec::RoutePolicies {
                    compression: Some(Default::default()),
                    ..Default::default()
                },
                static_files: None,
            },
        ];
        // The release without the directory is skipped, not an error.
        r.release_dirs = vec![new.clone(), bare, old.clone()];
        let (routes, groups) = edge_parts(&key("shop"), &r);
        let group = &groups[0];
        let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "app:shop:production",
                "app:shop:production/static/",
                "app:shop:production/admin"
            ]
        );
        assert!(routes.iter().all(|r| r.group == group.name));
        assert!(routes.iter().all(|r| r.hosts == routes[0].hosts));
        let s = routes[1].policies.static_files.as_ref().expect("static");
        let canonical = |d: &Path| d.join("staticfiles").canonicalize().expect("canonical");
        assert_eq!(s.roots, [canonical(&new), canonical(&old)]);
        assert!(s.fallback);
        assert!(routes[2].policies.static_files.is_none());
        assert!(routes[2].policies.compression.is_some());
        assert!(routes[0].policies.compression.is_none());
    }

    #[test]
    fn preview_hosts_reach_the_newest_release_alone() {
        let mut r = route(&["shop.localhost"], "r-new", 4001);
        r.pools[0].weight = 0;
        r.pools.push(PoolSpec {
            release: "r-old".into(),
            weight: 100,
            upstreams: vec![SocketAddr::from(([127, 0, 0, 1], 4002))],
        });
        r.sticky = true;
        r.preview_hosts = vec!["preview.shop.localhost".into()];
        let (routes, groups) = edge_parts(&key("shop"), &r);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].name, "app:shop:production:preview");
        assert_eq!(
            routes[1].hosts,
            [HostPattern::Exact("preview.shop.localhost".into())]
        );
        assert_eq!(routes[1].group, groups[1].name);
        assert_eq!(groups[1].pools.len(), 1);
        assert_eq!(groups[1].pools[0].release, "r-new");
        assert_eq!(groups[1].pools[0].weight, 100);
        assert_eq!(groups[1].sticky, None);
        // The app's own group is untouched.
        assert_eq!(groups[0].pools, r.pools);

        // Another app cannot take the preview host.
        let file = file_spec(false);
        let mut apps = BTreeMap::new();
        apps.insert(key("shop"), r);
        let blog = route(&["preview.shop.localhost"], "r-b", 4003);
        let msg = host_conflict(&file, &apps, &key("blog"), &blog).unwrap();
        assert!(msg.contains("app shop/production"), "{msg}");
    }

    #[test]
    fn a_static_dir_that_leaves_its_release_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let release = tmp.path().join("r");
        std::fs::create_dir_all(&release).expect("mkdir");
        std::os::unix::fs::symlink("/etc", release.join("staticfiles")).expect("symlink");
        std::fs::write(release.join("file"), "x").expect("write");
        let why = static_root(&release, Path::new("staticfiles")).unwrap_err();
        assert!(why.contains("leads out of the release"), "{why}");
        let why = static_root(&release, Path::new("missing")).unwrap_err();
        assert!(why.contains("missing from the release"), "{why}");
        let why = static_root(&release, Path::new("file")).unwrap_err();
        assert!(why.contains("not a directory"), "{why}");
        let s = static_path("/static", "staticfiles");
        assert!(static_roots(&[release], s.static_files.as_ref().expect("static")).is_empty());
    }

    #[test]
    fn a_host_served_elsewhere_is_a_conflict() {
        let file = file_spec(true);
        let mut apps = BTreeMap::new();
        apps.insert(key("blog"), route(&["blog.localhost"], "r-1", 4002));
        let shop = key("shop");
        let msg = host_conflict(&file, &apps, &shop, &route(&["taken.localhost"], "r", 1)).unwrap();
        assert!(msg.contains("route \"site\""), "{msg}");
        let msg = host_conflict(&file, &apps, &shop, &route(&["blog.localhost"], "r", 1)).unwrap();
        assert!(msg.contains("app blog/production"), "{msg}");
        assert_eq!(
            host_conflict(&file, &apps, &shop, &route(&["shop.localhost"], "r", 1)),
            None
        );
        // An app redeploying keeps its own hosts.
        assert_eq!(
            host_conflict(
                &file,
                &apps,
                &key("blog"),
                &route(&["blog.localhost"], "r", 1)
            ),
            None
        );
    }
}
