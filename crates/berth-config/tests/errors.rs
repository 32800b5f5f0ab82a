//! Bad files: each problem is reported at the right line, column and field.

use std::fs;
use std::path::Path;

use berth_config::{Diagnostic, load, parse};

mod support;
use support::{BASE, assert_at, diagnostics, only, route_with};

#[track_caller]
fn assert_mentions(d: &Diagnostic, text: &str) {
    assert!(d.message.contains(text), "{text:?} not in {d}");
}

#[test]
fn base_is_valid() {
    parse(&route_with(""), Path::new("berth.toml")).unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn unknown_key() {
    let d = only(&route_with("colour = \"red\"\n"));
    assert_at(&d, 11, 1, "route[0].colour");
    assert_mentions(&d, "unknown field `colour`");
}

#[test]
fn unknown_key_in_an_inline_table() {
    let d = only(&route_with("retry = { attempts = 2, budgte = \"1s\" }\n"));
    assert_at(&d, 11, 25, "route[0].retry.budgte");
}

#[test]
fn wrong_type() {
    let d = only(&route_with("max_concurrent = \"lots\"\n"));
    assert_at(&d, 11, 18, "route[0].max_concurrent");
    assert_mentions(&d, "invalid type");
}

#[test]
fn wrong_type_for_a_duration_names_the_expected_form() {
    let d = only(&route_with("timeouts = { total = true }\n"));
    assert_at(&d, 11, 22, "route[0].timeouts.total");
    assert_mentions(&d, "duration string");
}

#[test]
fn missing_required_key() {
    let src = format!("{BASE}[[route]]\nhosts = [\"*\"]\ngroup = \"web\"\n");
    let d = only(&src);
    assert_at(&d, 7, 1, "route[0].name");
    assert_mentions(&d, "missing field `name`");
}

#[test]
fn syntax_error_has_a_position_but_no_field() {
    let d = only("[server]\nlisten = [\"127.0.0.1:8080\"\n");
    assert_eq!((d.line, d.field.as_str()), (2, ""), "{d}");
}

#[test]
fn bad_duration() {
    let d = only(&route_with("timeouts = { connect = \"3 seconds\" }\n"));
    assert_at(&d, 11, 24, "route[0].timeouts.connect");
    assert!(d.hint.is_some());
}

#[test]
fn duration_without_unit_gets_a_hint() {
    let d = only(&route_with("retry = { budget = 10 }\n"));
    assert_at(&d, 11, 20, "route[0].retry.budget");
    assert_mentions(&d, "no unit");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|hint| hint.contains("\"30s\""))
    );
}

#[test]
fn zero_timeout() {
    let d = only(&route_with("timeouts = { total = \"0s\" }\n"));
    assert_at(&d, 11, 22, "route[0].timeouts.total");
    assert_mentions(&d, "must be longer than zero");
}

#[test]
fn bad_size() {
    let d = only(&route_with("max_body = \"10 TB\"\n"));
    assert_at(&d, 11, 12, "route[0].max_body");
    assert_mentions(&d, "unknown size unit");
}

#[test]
fn header_limit_below_minimum() {
    let src =
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n[server.client]\nmax_header_bytes = \"1KB\"\n";
    let d = only(src);
    assert_at(&d, 4, 20, "server.client.max_header_bytes");
    assert_mentions(&d, "1000 bytes");
}

#[test]
fn unknown_group() {
    let src = format!("{BASE}[[route]]\nname = \"web\"\nhosts = [\"*\"]\ngroup = \"wbe\"\n");
    let d = only(&src);
    assert_at(&d, 10, 9, "route[0].group");
    assert_mentions(&d, "unknown group `wbe`");
    assert_eq!(d.hint.as_deref(), Some("known groups: web"));
}

#[test]
fn duplicate_route_host_and_prefix() {
    let second = "\n[[route]]\nname = \"www\"\nhosts = [\"www.example.com\", \"EXAMPLE.com\"]\ngroup = \"web\"\n";
    let d = only(&route_with(second));
    assert_at(&d, 14, 29, "route[1].hosts[1]");
    assert_mentions(&d, "already routed by route[0]");
}

#[test]
fn duplicate_route_name() {
    let second = "\n[[route]]\nname = \"web\"\nhosts = [\"*\"]\ngroup = \"web\"\n";
    let d = only(&route_with(second));
    assert_at(&d, 13, 8, "route[1].name");
    assert_mentions(&d, "already used by route[0]");
}

#[test]
fn bad_cidr() {
    let d = only(&route_with(
        "maintenance = { enabled = true, allow = [\"10.0.0.0/8\", \"10.0.0.0/33\"] }\n",
    ));
    assert_at(&d, 11, 56, "route[0].maintenance.allow[1]");
    assert_mentions(&d, "10.0.0.0/33");
}

#[test]
fn missing_maintenance_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berth.toml");
    let src = route_with("maintenance = { enabled = false, page = \"gone.html\" }\n");
    fs::write(&path, src).expect("write config");
    let err = load(&path).expect_err("missing page");
    let [d] = err.diagnostics.as_slice() else {
        panic!("expected one diagnostic: {err}");
    };
    assert_at(d, 11, 41, "route[0].maintenance.page");
    assert_eq!(d.file, path);
    assert_mentions(d, &dir.path().join("gone.html").display().to_string());
}

#[test]
fn non_loopback_admin() {
    let src = "[server]\nlisten = [\"0.0.0.0:8080\"]\nadmin_listen = \"0.0.0.0:9180\"\n";
    let d = only(src);
    assert_at(&d, 3, 16, "server.admin_listen");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|hint| hint.contains("loopback"))
    );

    let allowed = format!("{src}allow_remote_admin = true\n");
    parse(&allowed, Path::new("berth.toml")).unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn duplicate_and_empty_listen() {
    let d = only("[server]\nlisten = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\n");
    assert_at(&d, 2, 29, "server.listen[1]");
    let d = only("[server]\nlisten = []\n");
    assert_at(&d, 2, 10, "server.listen");
}

#[test]
fn both_upstreams_and_pools() {
    let src = "[server]
listen = [\"127.0.0.1:8080\"]

[group.web]
upstreams = [\"127.0.0.1:9001\"]

[[group.web.pool]]
release = \"stable\"
upstreams = [\"127.0.0.1:9002\"]
";
    let d = only(src);
    assert_at(&d, 5, 13, "group.web.upstreams");
    assert_mentions(&d, "not both");
}

#[test]
fn neither_upstreams_nor_pools() {
    let d = only("[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[group.web]\nbalance = \"p2c\"\n");
    assert_at(&d, 4, 1, "group.web");
}

#[test]
fn all_zero_weights() {
    let src = "[server]
listen = [\"127.0.0.1:8080\"]

[group.web]

[[group.web.pool]]
release = \"blue\"
weight = 0
upstreams = [\"127.0.0.1:9001\"]

[[group.web.pool]]
release = \"green\"
weight = 0
";
    let d = only(src);
    assert_at(&d, 8, 10, "group.web.pool[0].weight");
    assert_mentions(&d, "weight 0");
}

#[test]
fn weight_out_of_range_and_duplicate_release() {
    let src = "[server]
listen = [\"127.0.0.1:8080\"]

[group.web]

[[group.web.pool]]
release = \"blue\"
weight = 2000000

[[group.web.pool]]
release = \"blue\"
";
    let all = diagnostics(src);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_at(&all[0], 8, 10, "group.web.pool[0].weight");
    assert_at(&all[1], 11, 11, "group.web.pool[1].release");
}

#[test]
fn upstream_without_port() {
    let src = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[group.web]\nupstreams = [\"127.0.0.1\"]\n";
    let d = only(src);
    assert_at(&d, 4, 14, "group.web.upstreams[0]");
    assert_mentions(&d, "no port");
}

#[test]
fn bad_host_patterns() {
    let src = format!(
        "{BASE}[[route]]\nname = \"web\"\nhosts = [\"example.com:8080\", \"app.*.com\"]\ngroup = \"web\"\n"
    );
    let all = diagnostics(&src);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_at(&all[0], 9, 10, "route[0].hosts[0]");
    assert_mentions(&all[0], "port");
    assert_at(&all[1], 9, 30, "route[0].hosts[1]");
    assert_mentions(&all[1], "`*`");
}

#[test]
fn hop_by_hop_and_host_headers() {
    let src = route_with(
        "request_headers = { set = { \"Connection\" = \"close\", \"Host\" = \"x\" }, remove = [\"Keep-Alive\"] }\n",
    );
    let all = diagnostics(&src);
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_at(&all[0], 11, 29, "route[0].request_headers.set.Connection");
    assert_mentions(&all[0], "hop-by-hop");
    assert_at(&all[1], 11, 53, "route[0].request_headers.set.Host");
    assert_mentions(&all[1], "Host");
    assert_at(&all[2], 11, 79, "route[0].request_headers.remove[0]");
    assert_mentions(&all[2], "hop-by-hop");
}

#[test]
fn repeated_header_differing_in_case() {
    let d = only(&route_with(
        "response_headers = { set = { \"X-Frame\" = \"a\" }, remove = [\"x-frame\"] }\n",
    ));
    assert_at(&d, 11, 59, "route[0].response_headers.remove[0]");
}

#[test]
fn health_timeout_not_below_interval() {
    let src = "[server]
listen = [\"127.0.0.1:8080\"]
[group.web]
upstreams = []
health = { interval = \"1s\", timeout = \"1s\" }
";
    let d = only(src);
    assert_at(&d, 5, 39, "group.web.health.timeout");
    assert_mentions(&d, "must be shorter than the interval");
}

#[test]
fn health_interval_not_above_the_default_timeout_points_at_the_interval() {
    let src = "[server]
listen = [\"127.0.0.1:8080\"]
[group.web]
upstreams = []
health = { interval = \"1s\" }
";
    let d = only(src);
    assert_at(&d, 5, 23, "group.web.health.interval");
    assert_mentions(
        &d,
        "the timeout (1s) must be shorter than the interval (1s)",
    );
}

#[test]
fn max_cool_off_below_cool_off() {
    let base = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[group.web]\nupstreams = []\n";
    // Only `cool_off` given: it is the one above the default cap.
    let d = only(&format!("{base}passive = {{ cool_off = \"10m\" }}\n"));
    assert_at(&d, 5, 24, "group.web.passive.cool_off");
    assert_mentions(&d, "max_cool_off (300s) is shorter than cool_off (600s)");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.contains("at least cool_off"))
    );
    // Both given: the cap is the one to fix.
    let d = only(&format!(
        "{base}passive = {{ cool_off = \"10s\", max_cool_off = \"5s\" }}\n"
    ));
    assert_at(&d, 5, 46, "group.web.passive.max_cool_off");
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let src = "[server]
listen = [\"127.0.0.1:8080\"]
admin_listen = \"10.0.0.1:9180\"

[[route]]
name = \"Web\"
hosts = [\"*\"]
group = \"nope\"

[group.web]
upstreams = [\"127.0.0.1\"]
";
    let fields: Vec<(usize, String)> = diagnostics(src)
        .into_iter()
        .map(|d| (d.line, d.field))
        .collect();
    assert_eq!(
        fields,
        [
            (3, "server.admin_listen".to_owned()),
            (6, "route[0].name".to_owned()),
            (8, "route[0].group".to_owned()),
            (11, "group.web.upstreams[0]".to_owned()),
        ]
    );
}

#[test]
fn display_names_file_line_column_and_field() {
    let src = format!("{BASE}[[route]]\nname = \"web\"\nhosts = [\"*\"]\ngroup = \"wbe\"\n");
    let err = parse(&src, Path::new("conf/berth.toml")).expect_err("unknown group");
    assert_eq!(
        err.to_string(),
        "conf/berth.toml:10:9: route[0].group: unknown group `wbe`\n  hint: known groups: web"
    );
}

#[test]
fn unreadable_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.toml");
    let err = load(&path).expect_err("no file");
    let [d] = err.diagnostics.as_slice() else {
        panic!("expected one diagnostic: {err}");
    };
    assert_eq!((d.line, d.column), (0, 0));
    assert_eq!(d.file, path);
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", path.display()))
    );
}

#[test]
fn bad_server_state_settings() {
    let src = "[server]
listen = [\"127.0.0.1:8080\"]
data_dir = \"\"
database_url = \"mysql://root:hunter2@db/berth\"
admin_networks = [\"10.0.0.0/8\", \"office\"]
";
    let all = diagnostics(src);
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_at(&all[0], 3, 12, "server.data_dir");
    assert_mentions(&all[0], "empty path");
    assert_at(&all[1], 4, 16, "server.database_url");
    assert_mentions(&all[1], "not a sqlite: or postgres:// URL");
    // The URL may carry a password: the diagnostic never repeats it.
    assert!(!all[1].to_string().contains("hunter2"), "{}", all[1]);
    assert_at(&all[2], 5, 33, "server.admin_networks[1]");
    assert_mentions(&all[2], "`office`");
}
