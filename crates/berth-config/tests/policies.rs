//! Route policies and trusted proxies: what a valid file becomes, and where a bad one is
//! reported (line, column, field, hint).

use std::path::Path;
use std::time::Duration;

use berth_config::{Diagnostic, parse};

mod support;
use berth_edge::spec::{Encoding, RateKey, RateLimitKind};
use support::{BASE, ROUTE, assert_at, only, route_with};

#[track_caller]
fn hint_has(d: &Diagnostic, text: &str) {
    let hint = d.hint.as_deref().unwrap_or("");
    assert!(hint.contains(text), "{text:?} not in the hint of {d}");
}

#[test]
fn every_policy_parses_into_the_spec() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("files")).expect("mkdir");
    let src = format!(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\n\
         proxy_protocol = true\n\n[group.web]\nupstreams = [\"127.0.0.1:9001\"]\n\n{ROUTE}\
         allow = [\"192.168.0.0/16\"]\ndeny = [\"192.168.66.0/24\"]\n\
         rate_limit = {{ rate = \"10/s\", burst = 20, key = \"header:X-Api-Key\", max_keys = 5000 }}\n\
         auth_rate_limit = {{ paths = [\"/login\"], rate = \"5/m\" }}\n\
         compression = {{ algorithms = [\"zstd\", \"br\"], min_size = \"2KiB\" }}\n\
         static = {{ dir = \"files\", fallback = true, index = \"off\", max_age = \"5m\" }}\n"
    );
    let path = dir.path().join("berth.toml");
    let config = parse(&src, &path).unwrap_or_else(|e| panic!("{e}"));
    let edge = &config.edge;
    assert_eq!(edge.trusted_proxies.networks.len(), 2);
    assert!(edge.trusted_proxies.proxy_protocol);
    assert!(
        edge.trusted_proxies
            .trusts("192.0.2.7".parse().expect("ip"))
    );
    let p = &edge.routes[0].policies;
    let access = p.access.as_ref().expect("access lists");
    assert!(access.permits("192.168.1.1".parse().expect("ip")));
    assert!(!access.permits("192.168.66.1".parse().expect("ip")));
    assert!(!access.permits("10.0.0.1".parse().expect("ip")));
    let [route_limit, auth] = p.rate_limits.as_slice() else {
        panic!("two limits expected: {:?}", p.rate_limits);
    };
    assert_eq!(route_limit.kind, RateLimitKind::Route);
    assert_eq!(route_limit.rate.count, 10);
    assert_eq!(route_limit.rate.per, Duration::from_secs(1));
    assert_eq!(route_limit.burst, 20);
    assert_eq!(route_limit.max_keys, 5000);
    assert!(matches!(&route_limit.key, RateKey::Header(h) if h == "x-api-key"));
    assert_eq!(auth.kind, RateLimitKind::Auth);
    assert_eq!(auth.paths, ["/login"]);
    // The burst defaults to the rate's count.
    assert_eq!(auth.burst, 5);
    assert_eq!(auth.key, RateKey::ClientIp);
    let c = p.compression.as_ref().expect("compression");
    assert_eq!(c.algorithms, [Encoding::Zstd, Encoding::Brotli]);
    assert_eq!(c.min_size, 2048);
    let s = p.static_files.as_ref().expect("static");
    assert_eq!(
        s.roots,
        [dir.path().join("files").canonicalize().expect("canonical")]
    );
    assert!(s.fallback);
    assert_eq!(s.index, None);
    assert_eq!(s.max_age, Duration::from_secs(300));
}

#[test]
fn policies_are_off_unless_configured() {
    let config = parse(&route_with(""), Path::new("berth.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.edge.routes[0].policies, Default::default());
    assert_eq!(config.edge.trusted_proxies, Default::default());
    let config = parse(&route_with("compression = true\n"), Path::new("berth.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let c = config.edge.routes[0]
        .policies
        .compression
        .as_ref()
        .expect("on");
    // zstd only when asked for.
    assert_eq!(c.algorithms, [Encoding::Brotli, Encoding::Gzip]);
}

#[test]
fn a_static_route_needs_no_group_unless_it_falls_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("files")).expect("mkdir");
    let path = dir.path().join("berth.toml");
    let src = format!(
        "{BASE}[[route]]\nname = \"files\"\nhosts = [\"*\"]\nstatic = {{ dir = \"files\" }}\n"
    );
    let config = parse(&src, &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.edge.routes[0].group, "");
    let src = format!(
        "{BASE}[[route]]\nname = \"files\"\nhosts = [\"*\"]\nstatic = {{ dir = \"files\", fallback = true }}\n"
    );
    let err = parse(&src, &path).expect_err("fallback without a group");
    let [d] = err.diagnostics.as_slice() else {
        panic!("{err}");
    };
    assert_at(d, 10, 10, "route[0].static");
    hint_has(d, "group");
    let src = format!("{BASE}[[route]]\nname = \"nothing\"\nhosts = [\"*\"]\n");
    let d = only(&src);
    assert_eq!(d.field, "route[0]");
    assert!(d.message.contains("missing field `group`"), "{d}");
    hint_has(&d, "static");
}

#[test]
fn cidrs_with_host_bits_and_non_addresses_are_errors_with_hints() {
    let d = only(&route_with("allow = [\"10.0.0.0/8\", \"10.1.2.3/8\"]\n"));
    assert_at(&d, 11, 24, "route[0].allow[1]");
    assert!(d.message.contains("host bits"), "{d}");
    hint_has(&d, "\"10.0.0.0/8\"");
    hint_has(&d, "\"10.1.2.3\"");
    let d = only(&route_with("deny = [\"office\"]\n"));
    assert_at(&d, 11, 9, "route[0].deny[0]");
    hint_has(&d, "not resolved");
    let src = "[server]\nlisten = [\"127.0.0.1:8080\"]\ntrusted_proxies = [\"10.0.0.0/33\"]\n";
    let d = only(src);
    assert_at(&d, 3, 20, "server.trusted_proxies[0]");
}

#[test]
fn proxy_protocol_needs_trusted_proxies() {
    let src = "[server]\nlisten = [\"127.0.0.1:8080\"]\nproxy_protocol = true\n";
    let d = only(src);
    assert_at(&d, 3, 18, "server.proxy_protocol");
    hint_has(&d, "trusted_proxies");
}

#[test]
fn bad_rates_keys_and_auth_paths() {
    let d = only(&route_with("rate_limit = { rate = \"10/w\" }\n"));
    assert_at(&d, 11, 23, "route[0].rate_limit.rate");
    assert!(d.message.contains("unknown unit `w`"), "{d}");
    hint_has(&d, "\"10/s\"");
    let d = only(&route_with(
        "rate_limit = { rate = \"10/s\", key = \"cookie:session\" }\n",
    ));
    assert_at(&d, 11, 37, "route[0].rate_limit.key");
    hint_has(&d, "header:X-Api-Key");
    let d = only(&route_with("rate_limit = { rate = \"10/s\", burst = 0 }\n"));
    assert_at(&d, 11, 39, "route[0].rate_limit.burst");
    let d = only(&route_with(
        "rate_limit = { rate = \"10/s\", max_keys = 3 }\n",
    ));
    assert_at(&d, 11, 42, "route[0].rate_limit.max_keys");
    let src = format!(
        "{BASE}[[route]]\nname = \"api\"\nhosts = [\"*\"]\npath_prefix = \"/api\"\ngroup = \"web\"\n\
         auth_rate_limit = {{ paths = [\"/login\"], rate = \"5/m\" }}\n"
    );
    let d = only(&src);
    assert_at(&d, 12, 30, "route[0].auth_rate_limit.paths[0]");
    assert!(
        d.message
            .contains("outside this route's path_prefix `/api`"),
        "{d}"
    );
    hint_has(&d, "\"/api/login\"");
    let d = only(&route_with(
        "auth_rate_limit = { paths = [], rate = \"5/m\" }\n",
    ));
    assert_at(&d, 11, 29, "route[0].auth_rate_limit.paths");
}

#[test]
fn bad_compression_and_static_settings() {
    let d = only(&route_with(
        "compression = { algorithms = [\"gzip\", \"deflate\"] }\n",
    ));
    assert_at(&d, 11, 39, "route[0].compression.algorithms[1]");
    hint_has(&d, "br, gzip, zstd");
    let d = only(&route_with(
        "compression = { algorithms = [\"gzip\", \"gzip\"] }\n",
    ));
    assert_at(&d, 11, 39, "route[0].compression.algorithms[1]");
    let d = only(&route_with("static = { dir = \"no-such-dir\" }\n"));
    assert_at(&d, 11, 18, "route[0].static.dir");
    assert!(d.message.contains("no-such-dir"), "{d}");
    hint_has(&d, "config file's directory");
    let d = only(&route_with("static = { dir = \"/\", index = \"../x\" }\n"));
    assert_at(&d, 11, 31, "route[0].static.index");
    // A file is not a directory.
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let d = only(&route_with(&format!(
        "static = {{ dir = \"{}\" }}\n",
        file.path().display()
    )));
    assert!(d.message.contains("is not a directory"), "{d}");
    let d = only(&route_with("static = { dir = \"/\", listing = true }\n"));
    assert!(d.message.contains("listing"), "{d}");
}
