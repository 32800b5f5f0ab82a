//! Hot reconfiguration: SIGHUP and `berth reload`, invalid files refused, no request lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use berth_testkit::FakeUpstream;

use crate::common::{BIN, client, eventually, simple, start};

#[tokio::test]
async fn sighup_applies_a_new_route_table() {
    let a = FakeUpstream::start_named("a").await;
    let b = FakeUpstream::start_named("b").await;
    let env = start(&simple(&[a.addr()], "", "")).await;
    let c = client();
    let r = c.get(env.url("/")).send().await.unwrap();
    assert_eq!(r.headers()["x-upstream"], "a");
    env.write_body(&simple(&[b.addr()], "", ""));
    env.berth.signal(libc::SIGHUP).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            // A request that fails while the reload happens is tried again, not a panic.
            c.get(env.url("/"))
                .send()
                .await
                .is_ok_and(|r| r.headers()["x-upstream"] == "b")
        })
        .await
    );
    // The signal has no token behind it, but the reload is on record all the same.
    assert!(
        eventually(Duration::from_secs(5), || async {
            let log: serde_json::Value = env
                .api(reqwest::Method::GET, "/api/v1/audit?action=config.reload")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            log["entries"].as_array().is_some_and(|e| {
                e.iter().any(|x| {
                    x["actor"] == "system" && x["source"] == "signal:SIGHUP" && x["outcome"] == "ok"
                })
            })
        })
        .await
    );
}

#[tokio::test]
async fn invalid_file_is_refused_with_its_position_and_the_old_table_serves() {
    let a = FakeUpstream::start_named("a").await;
    let env = start(&simple(&[a.addr()], "", "")).await;
    // Line 11 of the file: server section (6 lines + blank) then the route.
    let broken = simple(&[a.addr()], "max_concurrnt = 5", "");
    env.write_body(&broken);
    // Without a token the server refuses to act at all.
    let out = std::process::Command::new(BIN)
        .args(["reload", "--admin", &env.admin.to_string()])
        .env("BERTH_CREDENTIALS", env.berth.dir().join("no-login.json"))
        .env_remove("BERTH_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("berth login"));

    let out = std::process::Command::new(BIN)
        .args(["reload", "--admin", &env.admin.to_string()])
        .env("BERTH_TOKEN", env.token())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = env.berth.config_path().display().to_string();
    assert!(stderr.contains(&format!("{path}:")), "{stderr}");
    assert!(stderr.contains("max_concurrnt"), "{stderr}");
    assert!(
        stderr.contains("running configuration keeps serving"),
        "{stderr}"
    );
    let r = client().get(env.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        env.metric("berth_config_reloads_total{result=\"refused\"}")
            .await,
        1.0
    );

    // Fixed again: `berth reload --config` finds the server through the file.
    env.write_body(&simple(&[a.addr()], "max_concurrent = 5", ""));
    let out = std::process::Command::new(BIN)
        .args(["reload", "--config"])
        .arg(env.berth.config_path())
        .env("BERTH_TOKEN", env.token())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.metric("berth_config_reloads_total{result=\"applied\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_hundred_reloads_under_load_fail_no_request() {
    let a = FakeUpstream::start_named("a").await;
    let b = FakeUpstream::start_named("b").await;
    let env = start(&simple(&[a.addr()], "", "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (c, url) = (client(), env.url("/"));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for i in 0..100 {
        let up = if i % 2 == 0 { b.addr() } else { a.addr() };
        env.write_body(&simple(&[up], "", ""));
        let r = env
            .api(reqwest::Method::POST, "/api/v1/reload")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "reload {i}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(ok > 100, "only {ok} requests ran during the reloads");
    assert!(a.request_count() > 0 && b.request_count() > 0);
    assert_eq!(
        env.metric("berth_config_reloads_total{result=\"applied\"}")
            .await,
        100.0
    );
    // Keep-alive connections survived every reload: listeners and connections are untouched.
    assert!(env.metric("berth_connections_total").await <= 16.0);
}
