//! A deploy from start to switch: health-gated, zero-downtime, recorded, idempotent.

use std::time::Duration;

use crate::support::{
    Berth, Load, eventually, keep_alive_web_app, nice_of, pids, start, user, web_app,
};

async fn version(b: &Berth, app: &str) -> (u16, String) {
    b.get(&format!("{app}.test"), "/version").await
}

#[tokio::test]
async fn deploy_serves_records_and_replaces_the_release() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    // Before the first deploy the host is unknown to the edge.
    assert_eq!(version(&b, "shop").await.0, 404);

    let v1 = web_app("shop", "v1", 2);
    let out = b.deploy(v1.path());
    out.ok();
    assert!(
        out.stdout.contains("deployed shop release r-"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("all instances ready"), "{}", out.stdout);
    assert_eq!(version(&b, "shop").await, (200, "v1".into()));

    let ps = b.ps("shop");
    let r1 = ps["release"].as_str().unwrap().to_owned();
    let instances = ps["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    for i in instances {
        assert_eq!(i["phase"], "healthy", "{i}");
        assert_eq!(i["release"], r1.as_str());
        assert!(
            i["port"].as_u64().is_some() && i["pid"].as_i64().is_some(),
            "{i}"
        );
        // berth's control plane runs nicer; its instances do not.
        let pid = i["pid"].as_i64().unwrap().to_string();
        assert_eq!(nice_of(&pid), nice_of("self"), "{i}");
    }
    let old_pids = pids(&ps);

    // The same content again is the same release: nothing restarts.
    let again = b.cli(&["deploy", &v1.path().to_string_lossy(), "--json"]);
    assert_eq!(again.ok().json()["unchanged"], true);
    assert_eq!(pids(&b.ps("shop")), old_pids);

    // A new version: while it deploys, requests keep being answered by one version or the
    // other, never an error.
    let v2 = web_app("shop", "v2", 2);
    let hammer = {
        let listen = b.listen;
        tokio::spawn(async move {
            let c = crate::support::client();
            let mut seen = Vec::new();
            for _ in 0..400 {
                let r = c
                    .get(format!("http://{listen}/version"))
                    .header("host", "shop.test")
                    .send()
                    .await;
                match r {
                    Ok(r) => seen.push((r.status().as_u16(), r.text().await.unwrap_or_default())),
                    Err(e) => seen.push((0, e.to_string())),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        })
    };
    let out = b.deploy(v2.path());
    out.ok();
    assert!(out.stdout.contains("drained"), "{}", out.stdout);
    let seen = hammer.await.unwrap();
    let bad: Vec<_> = seen
        .iter()
        .filter(|(s, body)| *s != 200 || (body != "v1" && body != "v2"))
        .collect();
    assert!(bad.is_empty(), "failed requests during the deploy: {bad:?}");
    assert_eq!(version(&b, "shop").await, (200, "v2".into()));

    // The old instances are gone; the new ones serve.
    let ps = b.ps("shop");
    assert_ne!(ps["release"].as_str().unwrap(), r1);
    assert!(
        old_pids.iter().all(|p| !crate::support::alive(*p)),
        "old instances still running"
    );

    // History: two releases (the new one active), two deployments with their steps.
    let rel = b.cli(&["releases", "shop", "--json"]).ok().json();
    let list = rel["releases"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["active"], true);
    assert_eq!(list[1]["release"], r1.as_str());
    assert!(
        list[0]["source"].as_str().unwrap().starts_with("upload:"),
        "{}",
        list[0]
    );
    let deps = b.cli(&["deploys", "shop", "--json"]).ok().json();
    let deps = deps["deployments"].as_array().unwrap();
    assert_eq!(deps.len(), 2);
    assert_eq!(deps[0]["state"], "succeeded");
    assert_eq!(deps[0]["previous_release"], r1.as_str());
    let steps: Vec<&str> = deps[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "start_instances",
            "health_gate",
            "switch",
            "drain",
            "stop_old"
        ]
    );

    // The audit log has the deploy with its actor.
    let audit = b.cli(&["audit", "list", "--json"]).ok().json();
    let entries = audit
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .expect("audit entries");
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "release.create",
        "deploy.start",
        "release.activate",
        "deploy.finish",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}

#[tokio::test]
async fn a_release_that_never_gets_healthy_is_stopped_and_the_old_one_keeps_serving() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    b.deploy(web_app("shop", "v1", 1).path()).ok();
    let before = pids(&b.ps("shop"));

    // v2 serves, but /health is missing (no `health` file): 404 forever.
    let v2 = web_app("shop", "v2", 1);
    std::fs::remove_file(v2.path().join("health")).unwrap();
    std::fs::write(
        v2.path().join("berth.toml"),
        std::fs::read_to_string(v2.path().join("berth.toml"))
            .unwrap()
            .replace("start_timeout = \"20s\"", "start_timeout = \"2s\"")
            .replace("timeout = \"30s\"", "timeout = \"4s\""),
    )
    .unwrap();
    let out = b.deploy(v2.path());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("did not become ready"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("keeps serving"), "{}", out.stderr);
    assert_eq!(b.get("shop.test", "/version").await, (200, "v1".into()));
    // Only v1's instance runs, the same process as before.
    let ps = b.ps("shop");
    assert_eq!(pids(&ps), before);
    let deps = b.cli(&["deploys", "shop", "--json"]).ok().json();
    assert_eq!(deps["deployments"][0]["state"], "failed");
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.ps("shop")["instances"].as_array().unwrap().len() == 1
        })
        .await
    );
}

#[tokio::test]
async fn permissions_and_logs() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    let app = web_app("blog", "v1", 1);
    // A viewer of production may look but not deploy.
    let vera = user(&b, "vera", &["viewer@production"]);
    let denied = b.cli_as(&vera, &["deploy", &app.path().to_string_lossy()]);
    assert_eq!(denied.code, 3, "{denied:?}");
    b.deploy(app.path()).ok();
    b.cli_as(&vera, &["ps", "blog"]).ok();
    // http.server logs each request on stderr; berth keeps them with a timestamp.
    assert_eq!(b.get("blog.test", "/version").await.0, 200);
    let found = eventually(Duration::from_secs(10), || async {
        let out = b.cli_as(
            &vera,
            &["logs", "blog", "--process", "web", "--since", "5m"],
        );
        out.code == 0
            && out
                .stdout
                .lines()
                .any(|l| l.contains("web-1 stderr") && l.contains("GET /version"))
    })
    .await;
    assert!(found, "{:?}", b.cli(&["logs", "blog"]));
    let other = b.cli_as(&vera, &["ps", "blog", "--env", "staging"]);
    assert_eq!(other.code, 3, "{other:?}");
}

#[tokio::test]
async fn one_deploy_per_app_at_a_time_and_old_releases_are_pruned() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    // Keep one release; the first build takes long enough for a second deploy to collide.
    let app = |version: &str, build: &str| {
        let dir = web_app("shop", version, 1);
        let toml = std::fs::read_to_string(dir.path().join("berth.toml")).unwrap();
        std::fs::write(
            dir.path().join("berth.toml"),
            format!("{toml}\n[release]\nkeep = 1\n\n[build]\ncommand = \"{build}\"\n"),
        )
        .unwrap();
        dir
    };
    let v1 = app("v1", "sleep 3");
    let first = {
        let (admin, token, path) = (b.admin, b.token(), v1.path().to_owned());
        tokio::task::spawn_blocking(move || {
            crate::shared::run_bounded(
                std::process::Command::new(crate::support::BIN)
                    .args(["deploy", &path.to_string_lossy()])
                    .env("BERTH_REMOTE", format!("http://{admin}"))
                    .env("BERTH_TOKEN", token)
                    .env(
                        "BERTH_CREDENTIALS",
                        "/nonexistent/berth-test-credentials.json",
                    ),
                Duration::from_secs(120),
            )
        })
    };
    // The first deploy holds the app's lock while it builds.
    let busy = eventually(Duration::from_secs(10), || async {
        b.cli(&["ps", "shop", "--json"])
            .stdout
            .contains("\"deploying\": true")
            || b.data_dir.join("apps/shop/releases").exists()
    })
    .await;
    assert!(busy, "the first deploy did not start");
    let second = b.deploy(app("v2", "true").path());
    assert_eq!(second.code, 4, "{second:?}");
    assert!(
        second.stderr.contains("already in progress"),
        "{}",
        second.stderr
    );
    let first = first.await.unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    // Now v2 goes through, and with keep = 1 v1's tree is pruned (v2 is active).
    let r1 = b.ps("shop")["release"].as_str().unwrap().to_owned();
    let out = b.cli(&[
        "deploy",
        &app("v2", "true").path().to_string_lossy(),
        "--json",
    ]);
    let report = out.ok().json();
    assert_eq!(report["pruned"], serde_json::json!([r1]));
    let releases = b.data_dir.join("apps/shop/releases");
    assert!(!releases.join(&r1).exists());
    assert!(releases.join(report["release"].as_str().unwrap()).is_dir());
    assert_eq!(b.get("shop.test", "/version").await, (200, "v2".into()));
}

/// Under steady keep-alive traffic, the edge opens connections to the new instances before
/// it switches to them, so the requests right after the switch do not each open one; the
/// journal says how many.
#[tokio::test]
async fn a_switch_under_traffic_finds_connections_to_the_new_release_open() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    b.deploy(keep_alive_web_app("kept", "v1", 2).path()).ok();
    assert_eq!(version(&b, "kept").await, (200, "v1".into()));

    let load = Load::start(&b, "kept.test", 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.deploy(keep_alive_web_app("kept", "v2", 2).path()).ok();
    let bad: Vec<_> = load
        .finish()
        .await
        .into_iter()
        .filter(|(s, _)| *s != 200)
        .collect();
    assert!(bad.is_empty(), "failed requests during the deploy: {bad:?}");
    assert_eq!(version(&b, "kept").await, (200, "v2".into()));

    let deps = b.cli(&["deploys", "kept", "--json"]).ok().json();
    let steps = deps["deployments"][0]["steps"].as_array().unwrap().clone();
    let switch = steps
        .iter()
        .find(|s| s["step"] == "switch")
        .expect("a switch step");
    // At least one per new instance: the four clients' connections, shared between two.
    let opened = switch["measurements"]["connections_opened"].as_u64();
    assert!(opened >= Some(2), "{switch}");
    assert!(
        switch["reason"].as_str().unwrap().contains("opened ahead"),
        "{switch}"
    );
}
