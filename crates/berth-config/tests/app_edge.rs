//! An app's `[edge]` policies: the server config's keys, checked the same way, with paths that
//! inherit what they do not set and static directories that must stay inside the release.

use std::path::Path;
use std::time::Duration;

use berth_config::Diagnostic;
use berth_config::app::{AppSpec, parse};
use berth_edge::spec::Encoding;

/// Lines 1-4: a valid spec with a host; keys appended start on line 5.
const APP: &str =
    "name = \"shop\"\nhosts = [\"shop.example.com\"]\n[processes.web]\ncommand = \"./server\"\n";

fn parse_ok(extra: &str) -> AppSpec {
    parse(&format!("{APP}{extra}"), Path::new("berth.toml")).unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn only(extra: &str) -> Diagnostic {
    match parse(&format!("{APP}{extra}"), Path::new("berth.toml")) {
        Ok(spec) => panic!("expected an error, got {spec:#?}"),
        Err(mut err) => {
            assert_eq!(err.diagnostics.len(), 1, "{err}");
            err.diagnostics.remove(0)
        }
    }
}

#[test]
fn no_edge_table_means_no_policies() {
    let spec = parse_ok("");
    assert_eq!(spec.edge, Default::default());
}

#[test]
fn paths_inherit_the_keys_they_do_not_set() {
    let spec = parse_ok(
        "[edge]\ncompression = true\nrate_limit = { rate = \"100/s\", burst = 200 }\n\
         auth_rate_limit = { paths = [\"/login\", \"/admin/login\"], rate = \"5/m\" }\n\
         [[edge.paths]]\nprefix = \"/admin\"\nallow = [\"10.0.0.0/8\"]\n\
         [[edge.paths]]\nprefix = \"/static/\"\ncompression = false\n\
         static = { dir = \"staticfiles\", max_age = \"1h\", fallback = true }\n",
    );
    let base = &spec.edge.policies;
    assert!(base.access.is_none());
    assert_eq!(base.rate_limits.len(), 2);
    assert_eq!(
        base.compression.as_ref().expect("compression").algorithms,
        [Encoding::Brotli, Encoding::Gzip]
    );
    let [admin, assets] = &spec.edge.paths[..] else {
        panic!("two paths: {:#?}", spec.edge.paths)
    };
    assert_eq!(admin.prefix, "/admin");
    let access = admin.policies.access.as_ref().expect("allow list");
    assert!(access.permits("10.1.2.3".parse().expect("ip")));
    assert!(!access.permits("192.0.2.1".parse().expect("ip")));
    // The route limit as it is; the auth limit for the paths under /admin only.
    assert_eq!(admin.policies.rate_limits[0], base.rate_limits[0]);
    assert_eq!(admin.policies.rate_limits[1].paths, ["/admin/login"]);
    assert_eq!(assets.policies.rate_limits, base.rate_limits[..1]);
    assert_eq!(admin.policies.compression, base.compression);
    assert!(admin.static_files.is_none());
    assert_eq!(assets.policies.compression, None);
    let s = assets.static_files.as_ref().expect("static");
    assert_eq!(s.dir, Path::new("staticfiles"));
    assert_eq!(s.max_age, Duration::from_secs(3600));
    assert!(s.fallback);
    // A stored spec reads back the same.
    let stored = serde_json::to_value(&spec).expect("json");
    let back: AppSpec = serde_json::from_value(stored).expect("back");
    assert_eq!(back, spec);
}

#[test]
fn a_spec_stored_before_edge_existed_reads_as_none() {
    let mut stored = serde_json::to_value(parse_ok("")).expect("json");
    stored.as_object_mut().expect("object").remove("edge");
    let back: AppSpec = serde_json::from_value(stored).expect("back");
    assert_eq!(back.edge, Default::default());
}

#[test]
fn a_static_dir_outside_the_release_is_refused() {
    for dir in ["/srv/static", "../shared", "a/../../b", ""] {
        let d = only(&format!(
            "[[edge.paths]]\nprefix = \"/static\"\nstatic = {{ dir = \"{dir}\" }}\n"
        ));
        assert_eq!(
            (d.line, d.field.as_str()),
            (7, "edge.paths[0].static.dir"),
            "{d}"
        );
        assert!(
            d.message.contains("not a directory inside the release"),
            "{d}"
        );
        assert!(
            d.hint
                .as_deref()
                .is_some_and(|h| h.contains("collectstatic")),
            "{d}"
        );
    }
}

#[test]
fn the_root_path_belongs_to_edge_itself() {
    let d = only("[[edge.paths]]\nprefix = \"/\"\ncompression = true\n");
    assert_eq!(
        (d.line, d.field.as_str()),
        (6, "edge.paths[0].prefix"),
        "{d}"
    );
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.contains("[edge] itself")),
        "{d}"
    );
    let d = only("[[edge.paths]]\nprefix = \"admin\"\n");
    assert_eq!(d.message, "`admin` is not a path under `/`");
}

#[test]
fn a_path_given_twice_is_refused() {
    let d = only("[[edge.paths]]\nprefix = \"/a\"\n[[edge.paths]]\nprefix = \"/a\"\n");
    assert_eq!(
        (d.line, d.field.as_str()),
        (8, "edge.paths[1].prefix"),
        "{d}"
    );
}

#[test]
fn bad_values_are_reported_with_the_server_configs_messages() {
    let d = only("[edge]\nrate_limit = { rate = \"10 per second\" }\n");
    assert_eq!(
        (d.line, d.field.as_str()),
        (6, "edge.rate_limit.rate"),
        "{d}"
    );
    let d = only("[edge]\nallow = [\"10.1.2.3/8\"]\n");
    assert_eq!((d.line, d.field.as_str()), (6, "edge.allow[0]"), "{d}");
}

#[test]
fn unknown_keys_are_refused_with_their_place() {
    let d = only("[edge]\ncompresion = true\n");
    assert_eq!((d.line, d.field.as_str()), (6, "edge.compresion"), "{d}");
    assert!(d.message.contains("unknown field"), "{d}");
}

#[test]
fn edge_without_hosts_is_refused() {
    let src =
        "name = \"worker\"\n[processes.web]\ncommand = \"./server\"\n[edge]\ncompression = true\n";
    let err = parse(src, Path::new("berth.toml")).expect_err("no hosts");
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    assert_eq!(err.diagnostics[0].field, "edge");
    assert!(err.diagnostics[0].message.contains("no hosts"), "{err}");
}
