//! examples/plans: one app spec (or two) for each deployment plan in the shared seeds. They
//! must stay valid as the format grows, and say what their comments claim.

use std::path::{Path, PathBuf};

use berth_config::app::{AppSpec, Strategy, parse};

fn plans() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plans")
}

fn load(rel: &str) -> AppSpec {
    let path = plans().join(rel).join("berth.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&text, &path).unwrap_or_else(|e| panic!("{e}"))
}

/// Every berth.toml under examples/plans, found by walking it.
fn every_spec(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("examples/plans") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            every_spec(&path, out);
        } else if path.file_name().is_some_and(|n| n == "berth.toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_plan_example_is_a_valid_app_spec() {
    let mut found = Vec::new();
    every_spec(&plans(), &mut found);
    assert_eq!(found.len(), 7, "{found:?}");
    for path in found {
        let text = std::fs::read_to_string(&path).expect("read");
        if let Err(e) = parse(&text, &path) {
            panic!("{e}");
        }
    }
}

#[test]
fn the_fastapi_plan_keeps_dev_uat_and_prod_apart() {
    let spec = load("mapping-fastapi");
    assert_eq!(spec.rollout.strategy, Strategy::Canary);
    let dev = spec.for_environment("dev");
    assert_eq!(dev.hosts, ["mapping-dev.college.example"]);
    assert_eq!(dev.rollout.strategy, Strategy::Rolling);
    assert_eq!(dev.env["APP_ENV"], "dev");
    assert_eq!(spec.for_environment("uat").env["APP_ENV"], "uat");
    let admin = &spec.edge.paths[0];
    assert_eq!(admin.prefix, "/admin");
    assert!(
        !admin
            .policies
            .access
            .as_ref()
            .expect("allow list")
            .permits("203.0.113.9".parse().expect("ip"))
    );
}

#[test]
fn the_django_plan_migrates_under_maintenance_and_serves_collectstatic() {
    let spec = load("django-ops");
    let hook = spec.rollout.pre_deploy.as_ref().expect("migrate hook");
    assert!(hook.command.contains("migrate") && hook.maintenance);
    assert!(
        spec.build
            .as_ref()
            .is_some_and(|b| b.command.contains("collectstatic"))
    );
    let assets = spec.edge.paths[0].static_files.as_ref().expect("static");
    assert_eq!(assets.dir, Path::new("staticfiles"));
    assert_eq!(
        spec.processes.keys().collect::<Vec<_>>(),
        ["beat", "web", "worker"]
    );
    assert_eq!(spec.rollout.smoke.len(), 2);
}

#[test]
fn the_scale_out_plan_previews_and_keeps_the_old_release_warm() {
    let spec = load("scale-out");
    assert_eq!(spec.rollout.strategy, Strategy::BlueGreen);
    assert_eq!(spec.rollout.preview_hosts, ["preview.platform.example.com"]);
    assert_eq!(
        spec.rollout.keep_warm_for(Strategy::BlueGreen).as_secs(),
        30 * 60
    );
}

#[test]
fn the_plans_server_config_is_valid_and_uses_acme() {
    let path = plans().join("server.toml");
    let text = std::fs::read_to_string(&path).expect("server.toml");
    let config = berth_config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.edge.routes.len(), 0, "apps bring their own routes");
    assert_eq!(config.edge.tls.certificates.len(), 2);
}
