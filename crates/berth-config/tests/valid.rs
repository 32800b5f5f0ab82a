//! Valid files and the spec they produce.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use berth_config::{AccessLog, Config, DEFAULT_ADMIN_LISTEN, load, parse};
use berth_edge::spec::{
    ActiveHealthSpec, Balance, ClientLimits, ForceSpec, HeaderRules, HostPattern, Maintenance,
    PassiveHealthSpec, PoolSpec, RetryPolicy, SecurityHeaders, StatusMatch, StickySpec,
    UpstreamTimeouts, defaults,
};
use http::{HeaderName, HeaderValue, StatusCode};

const MINIMAL: &str = r#"
[server]
listen = ["127.0.0.1:8080"]

[[route]]
name = "web"
hosts = ["example.com"]
group = "web"

[group.web]
upstreams = ["127.0.0.1:9001"]
"#;

fn parse_ok(src: &str) -> Config {
    parse(src, Path::new("berth.toml")).unwrap_or_else(|err| panic!("{err}"))
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn header(name: &str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
        HeaderValue::from_str(value).expect("test header value"),
    )
}

const FULL: &str = r#"
[server]
listen = ["127.0.0.1:8080", "[::1]:8080"]
admin_listen = "0.0.0.0:9999"
allow_remote_admin = true
workers = 4
shutdown_timeout = "1m30s"
access_log = "logs/access.log"

[server.client]
header_timeout = "5s"
idle_timeout = "2m"
max_header_bytes = "32KiB"

[[route]]
name = "web"
hosts = ["App.Example.com", "*.example.com"]
path_prefix = "/"
group = "web"
max_body = "1MiB"
max_concurrent = 500
retry = { attempts = 2, budget = "5s" }
timeouts = { connect = "1s", response_header = "30s", total = "2m" }
security_headers = { hsts = "max-age=63072000", nosniff = false, frame_options = "off", referrer_policy = "no-referrer", csp = "default-src 'self'" }
request_headers = { set = { "X-Env" = "prod", "X-Team" = "web" }, remove = ["X-Debug"] }
response_headers = { set = { "Cache-Control" = "no-store" }, remove = ["Server"] }
maintenance = { enabled = true, retry_after = "5m", allow = ["10.0.0.0/8", "192.0.2.7", "::1"], page = "maintenance.html" }

[[route]]
name = "api"
hosts = ["*"]
path_prefix = "/api"
strip_prefix = true
group = "api"

[group.web]
balance = "round_robin"
sticky = { cookie = "cohort", ttl = "1d" }
force = { header = "X-Release", cookie = "release" }
upstream_idle_timeout = "1s"
health = { path = "/ready", interval = "5s", timeout = "2s", healthy_threshold = 3, unhealthy_threshold = 4, expect = [200, 204] }
passive = { consecutive_failures = 0, window_failures = 20, window = "30s", cool_off = "5s", max_cool_off = "1m" }

[[group.web.pool]]
release = "v2"
weight = 10
upstreams = ["127.0.0.1:9002"]

[[group.web.pool]]
release = "v1.0"
weight = 90
upstreams = ["127.0.0.1:9001", "[::1]:9001"]

[[group.web.pool]]
release = "next"
weight = 0

[group.api]
sticky = true
health = true
upstreams = ["127.0.0.1:9101", "localhost:9102"]
"#;

#[test]
fn full_config_produces_the_expected_spec() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("maintenance.html"), "<h1>back soon</h1>").expect("write page");
    let path = dir.path().join("berth.toml");
    fs::write(&path, FULL).expect("write config");
    let config = load(&path).unwrap_or_else(|err| panic!("{err}"));

    let server = &config.server;
    assert_eq!(server.admin_listen, addr("0.0.0.0:9999"));
    assert_eq!(server.workers, 4);
    assert_eq!(server.shutdown_timeout, Duration::from_secs(90));
    assert_eq!(
        server.access_log,
        AccessLog::File(dir.path().join("logs/access.log"))
    );

    let edge = &config.edge;
    assert_eq!(edge.listeners, [addr("127.0.0.1:8080"), addr("[::1]:8080")]);
    assert_eq!(
        edge.client,
        ClientLimits {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            max_header_bytes: 32 * 1024,
        }
    );

    let [web, api] = edge.routes.as_slice() else {
        panic!("expected two routes, got {:?}", edge.routes);
    };
    assert_eq!(web.name, "web");
    assert_eq!(
        web.hosts,
        [
            HostPattern::Exact("app.example.com".into()),
            HostPattern::Wildcard(".example.com".into()),
        ]
    );
    assert_eq!(web.path_prefix, "/");
    assert!(!web.strip_prefix);
    assert_eq!(web.group, "web");
    assert_eq!(web.max_body_bytes, 1024 * 1024);
    assert_eq!(web.max_concurrent, 500);
    assert_eq!(
        web.retry,
        RetryPolicy {
            attempts: 2,
            budget: Duration::from_secs(5),
        }
    );
    assert_eq!(
        web.timeouts,
        UpstreamTimeouts {
            connect: Duration::from_secs(1),
            response_header: Duration::from_secs(30),
            total: Duration::from_secs(120),
        }
    );
    assert_eq!(
        web.security,
        SecurityHeaders {
            hsts: Some(HeaderValue::from_static("max-age=63072000")),
            nosniff: false,
            frame_options: None,
            referrer_policy: Some(HeaderValue::from_static("no-referrer")),
            csp: Some(HeaderValue::from_static("default-src 'self'")),
        }
    );
    assert_eq!(
        web.request_headers,
        HeaderRules {
            set: vec![header("x-env", "prod"), header("x-team", "web")],
            remove: vec![HeaderName::from_static("x-debug")],
        }
    );
    assert_eq!(
        web.response_headers,
        HeaderRules {
            set: vec![header("cache-control", "no-store")],
            remove: vec![HeaderName::from_static("server")],
        }
    );
    assert_eq!(
        web.maintenance,
        Some(Maintenance {
            retry_after: Duration::from_secs(300),
            allow: vec![
                "10.0.0.0/8".parse().expect("net"),
                "192.0.2.7/32".parse().expect("net"),
                "::1/128".parse().expect("net"),
            ],
            page: "<h1>back soon</h1>".into(),
        })
    );

    assert_eq!(api.hosts, [HostPattern::Any]);
    assert_eq!(api.path_prefix, "/api");
    assert!(api.strip_prefix);
    assert_eq!(api.group, "api");

    let [web, api] = edge.groups.as_slice() else {
        panic!("expected two groups, got {:?}", edge.groups);
    };
    assert_eq!(web.name, "web", "groups keep file order");
    assert_eq!(web.balance, Balance::RoundRobin);
    assert_eq!(
        web.sticky,
        Some(StickySpec {
            cookie: "cohort".into(),
            ttl: Duration::from_secs(86_400),
        })
    );
    assert_eq!(
        web.force,
        ForceSpec {
            header: HeaderName::from_static("x-release"),
            cookie: "release".into(),
        }
    );
    assert_eq!(web.upstream_idle_timeout, Duration::from_secs(1));
    assert_eq!(
        web.health,
        Some(ActiveHealthSpec {
            path: "/ready".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 3,
            unhealthy_threshold: 4,
            expect: StatusMatch::Exact(vec![StatusCode::OK, StatusCode::NO_CONTENT]),
        })
    );
    assert_eq!(
        web.passive,
        PassiveHealthSpec {
            consecutive_failures: 0,
            window_failures: 20,
            window: Duration::from_secs(30),
            cool_off: Duration::from_secs(5),
            max_cool_off: Duration::from_secs(60),
        }
    );
    assert_eq!(
        web.pools,
        [
            PoolSpec {
                release: "v2".into(),
                weight: 10,
                upstreams: vec![addr("127.0.0.1:9002")],
            },
            PoolSpec {
                release: "v1.0".into(),
                weight: 90,
                upstreams: vec![addr("127.0.0.1:9001"), addr("[::1]:9001")],
            },
            PoolSpec {
                release: "next".into(),
                weight: 0,
                upstreams: vec![],
            },
        ]
    );

    assert_eq!(api.balance, Balance::P2cLeastOutstanding);
    assert_eq!(
        api.sticky,
        Some(StickySpec {
            cookie: defaults::STICKY_COOKIE.into(),
            ttl: defaults::STICKY_TTL,
        })
    );
    assert_eq!(api.health, Some(ActiveHealthSpec::default()));
    let [pool] = api.pools.as_slice() else {
        panic!("expected one pool, got {:?}", api.pools);
    };
    assert_eq!(pool.release, "default");
    assert_eq!(pool.weight, 100);
    // `localhost` resolves, and IPv4 is preferred when it resolves to both families.
    assert_eq!(
        pool.upstreams,
        [addr("127.0.0.1:9101"), addr("127.0.0.1:9102")]
    );
}

#[test]
fn defaults_fill_everything_left_out() {
    let config = parse_ok(MINIMAL);
    assert_eq!(config.server.admin_listen, DEFAULT_ADMIN_LISTEN);
    assert_eq!(DEFAULT_ADMIN_LISTEN, addr("127.0.0.1:9180"));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(config.server.workers, cpus);
    assert_eq!(config.server.shutdown_timeout, defaults::SHUTDOWN_TIMEOUT);
    assert_eq!(config.server.access_log, AccessLog::Stdout);
    assert_eq!(config.edge.client, ClientLimits::default());

    let route = &config.edge.routes[0];
    assert_eq!(route.path_prefix, "/");
    assert!(!route.strip_prefix);
    assert_eq!(route.max_body_bytes, defaults::MAX_BODY_BYTES);
    assert_eq!(route.max_concurrent, defaults::MAX_CONCURRENT);
    assert_eq!(route.retry, RetryPolicy::default());
    assert_eq!(route.timeouts, UpstreamTimeouts::default());
    assert_eq!(
        route.security,
        SecurityHeaders {
            // Sent on TLS connections only.
            hsts: Some(HeaderValue::from_static(defaults::HSTS)),
            nosniff: true,
            frame_options: Some(HeaderValue::from_static("SAMEORIGIN")),
            referrer_policy: Some(HeaderValue::from_static("strict-origin-when-cross-origin")),
            csp: None,
        }
    );
    assert_eq!(route.request_headers, HeaderRules::default());
    assert_eq!(route.response_headers, HeaderRules::default());
    assert_eq!(route.maintenance, None);

    let group = &config.edge.groups[0];
    assert_eq!(group.balance, Balance::P2cLeastOutstanding);
    assert_eq!(group.sticky, None);
    assert_eq!(group.force, ForceSpec::default());
    assert_eq!(group.health, None);
    assert_eq!(group.passive, PassiveHealthSpec::default());
    assert_eq!(group.upstream_idle_timeout, defaults::UPSTREAM_IDLE_TIMEOUT);
}

#[test]
fn security_keys_left_out_of_a_table_keep_their_defaults() {
    let src = MINIMAL.replace(
        "group = \"web\"\n",
        "group = \"web\"\nsecurity_headers = { csp = \"default-src 'none'\" }\n",
    );
    let security = &parse_ok(&src).edge.routes[0].security;
    assert!(security.nosniff);
    assert_eq!(
        security.frame_options,
        Some(HeaderValue::from_static("SAMEORIGIN"))
    );
    assert_eq!(
        security.csp,
        Some(HeaderValue::from_static("default-src 'none'"))
    );
    assert_eq!(
        security.hsts,
        Some(HeaderValue::from_static(defaults::HSTS))
    );
}

#[test]
fn toggles_written_as_false_are_off() {
    let src = MINIMAL.replace(
        "[group.web]\n",
        "[group.web]\nsticky = false\nhealth = false\n",
    );
    let group = &parse_ok(&src).edge.groups[0];
    assert_eq!(group.sticky, None);
    assert_eq!(group.health, None);
}

#[test]
fn disabled_maintenance_is_none_and_the_built_in_page_is_used_otherwise() {
    let off = MINIMAL.replace(
        "group = \"web\"\n",
        "group = \"web\"\nmaintenance = { enabled = false, allow = [\"10.0.0.1\"] }\n",
    );
    assert_eq!(parse_ok(&off).edge.routes[0].maintenance, None);

    let on = MINIMAL.replace(
        "group = \"web\"\n",
        "group = \"web\"\nmaintenance = { enabled = true }\n",
    );
    let maintenance = parse_ok(&on).edge.routes[0]
        .maintenance
        .clone()
        .expect("maintenance on");
    assert_eq!(maintenance.retry_after, defaults::MAINTENANCE_RETRY_AFTER);
    assert!(maintenance.allow.is_empty());
    assert!(maintenance.page.contains("down for maintenance"));
}

#[test]
fn explicit_zero_workers_means_one_per_cpu_and_sizes_accept_plain_bytes() {
    let src = MINIMAL.replace(
        "listen = [\"127.0.0.1:8080\"]\n",
        "listen = [\"127.0.0.1:8080\"]\nworkers = 0\naccess_log = \"off\"\n\
         shutdown_timeout = \"0s\"\n[server.client]\nmax_header_bytes = 2048\n",
    );
    let config = parse_ok(&src);
    assert!(config.server.workers >= 1);
    assert_eq!(config.server.access_log, AccessLog::Off);
    assert_eq!(config.server.shutdown_timeout, Duration::ZERO);
    assert_eq!(config.edge.client.max_header_bytes, 2048);
}

#[test]
fn a_group_no_route_uses_is_fine_and_routes_are_optional() {
    let src = "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[group.spare]\nupstreams = []\n";
    let config = parse_ok(src);
    assert!(config.edge.routes.is_empty());
    assert_eq!(config.edge.groups[0].name, "spare");
    assert!(config.edge.groups[0].pools[0].upstreams.is_empty());
}

#[test]
fn the_same_host_may_be_routed_under_different_prefixes() {
    let src = format!(
        "{MINIMAL}\n[[route]]\nname = \"api\"\nhosts = [\"EXAMPLE.com\"]\npath_prefix = \"/api\"\ngroup = \"web\"\n"
    );
    assert_eq!(parse_ok(&src).edge.routes.len(), 2);
}

/// The complete example in docs/config.md must stay a valid config.
#[test]
fn documented_example_is_valid() {
    let docs = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md"))
        .expect("docs/config.md");
    let example = docs
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.starts_with("# berth.toml"))
        .expect("a ```toml block starting with `# berth.toml` in docs/config.md");
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("maintenance.html"), "<p>down</p>").expect("write page");
    fs::create_dir_all(dir.path().join("staticfiles")).expect("static dir");
    let certs = dir.path().join("certs/example.com");
    fs::create_dir_all(&certs).expect("certs dir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["example.com".into(), "*.example.com".into()])
        .and_then(|p| p.self_signed(&key))
        .expect("certificate");
    fs::write(certs.join("fullchain.pem"), cert.pem()).expect("write cert");
    fs::write(certs.join("privkey.pem"), key.serialize_pem()).expect("write key");
    let path = dir.path().join("berth.toml");
    fs::write(&path, example).expect("write config");
    if let Err(err) = load(&path) {
        panic!("docs example does not load:\n{err}");
    }
}

#[test]
fn server_state_paths_start_from_the_config_files_directory() {
    let src = "[server]\nlisten = [\"127.0.0.1:8080\"]\ndata_dir = \"state\"\n\
               admin_socket = \"run/admin.sock\"\naccess_log = \"logs/access.log\"\n\
               admin_networks = [\"10.1.2.3/16\", \"192.0.2.7\"]\naudit_retention = \"30d\"\n";
    let config = parse(src, Path::new("/etc/berth/berth.toml")).unwrap_or_else(|e| panic!("{e}"));
    let server = &config.server;
    assert_eq!(server.data_dir, Path::new("/etc/berth/state"));
    assert_eq!(
        server.admin_socket.as_deref(),
        Some(Path::new("/etc/berth/run/admin.sock"))
    );
    assert_eq!(
        server.access_log,
        AccessLog::File("/etc/berth/logs/access.log".into())
    );
    assert_eq!(
        server.database_url,
        "sqlite:///etc/berth/state/berth.db?mode=rwc"
    );
    let nets: Vec<String> = server
        .admin_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["10.1.0.0/16", "192.0.2.7/32"]);
    assert_eq!(server.audit_retention, Duration::from_secs(30 * 86_400));
}

#[test]
fn server_state_defaults_and_off() {
    let config = parse_ok(MINIMAL);
    let server = &config.server;
    assert_eq!(server.data_dir, Path::new(berth_config::DEFAULT_DATA_DIR));
    assert_eq!(
        server.admin_socket.as_deref(),
        Some(Path::new("/var/lib/berth/berth.sock"))
    );
    assert_eq!(
        server.database_url,
        "sqlite:///var/lib/berth/berth.db?mode=rwc"
    );
    assert!(server.admin_networks.is_empty());
    assert_eq!(
        server.audit_retention,
        berth_config::DEFAULT_AUDIT_RETENTION
    );
    assert_eq!(
        berth_config::DEFAULT_AUDIT_RETENTION,
        Duration::from_secs(365 * 86_400)
    );

    let src = MINIMAL.replace(
        "listen = [\"127.0.0.1:8080\"]\n",
        "listen = [\"127.0.0.1:8080\"]\nadmin_socket = \"off\"\n\
         database_url = \"postgres://berth@db/berth\"\n",
    );
    let config = parse_ok(&src);
    assert_eq!(config.server.admin_socket, None);
    assert_eq!(config.server.database_url, "postgres://berth@db/berth");
}
