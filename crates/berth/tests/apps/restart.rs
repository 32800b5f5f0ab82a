//! berth itself dying and coming back: no orphans, state restored.

use std::time::Duration;

use crate::support::{
    PY_WEB, alive, app_dir, descendants, eventually, pids, spec, start, start_in,
};

#[tokio::test]
async fn after_kill_9_no_instance_survives_and_a_new_berth_brings_the_app_back() {
    let keep = tempfile::tempdir().unwrap();
    let mut b = start(&keep).await;
    // Two web instances, and a worker whose shell starts a child of its own: the kind of
    // grandchild that the parent-death signal (sent to direct children only) misses.
    let app = app_dir(&[
        (
            "berth.toml",
            &spec(
                "shop",
                &format!(
                    "[processes.web]\ncommand = \"{PY_WEB}\"\ninstances = 2\n\
                     [processes.web.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\n\
                     [processes.worker]\ncommand = \"sleep 1000 & wait\"\n"
                ),
            ),
        ),
        ("health", "ok\n"),
        ("version", "v1"),
    ]);
    b.deploy(app.path()).ok();
    let ps = b.ps("shop");
    let release = ps["release"].as_str().unwrap().to_owned();
    let direct: Vec<i64> = pids(&ps);
    let mut grandchildren = Vec::new();
    for p in &direct {
        grandchildren.extend(descendants(*p));
    }
    assert_eq!(direct.len(), 3);
    assert!(!grandchildren.is_empty(), "the worker's sleep");

    b.process.signal(libc::SIGKILL).unwrap();
    b.process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("berth died");
    // The kernel kills every direct child with berth.
    let direct_gone = eventually(Duration::from_secs(10), || async {
        direct.iter().all(|p| !alive(*p))
    })
    .await;
    let left: Vec<_> = direct.iter().filter(|p| alive(**p)).collect();
    assert!(direct_gone, "instances outlived berth: {left:?}");

    // A new berth on the same data directory starts the active release again.
    let b2 = start_in(&b.data_dir).await;
    let back = eventually(Duration::from_secs(30), || async {
        b2.get("shop.test", "/version").await == (200, "v1".to_owned())
    })
    .await;
    assert!(back, "the app did not come back");
    let ps = b2.ps("shop");
    assert_eq!(ps["release"], release.as_str());
    let new = pids(&ps);
    assert_eq!(new.len(), 3);
    assert!(
        new.iter().all(|p| !direct.contains(p)),
        "nothing old was adopted"
    );
    // What escaped the parent-death signal was found by its marker and killed at start.
    let swept = eventually(Duration::from_secs(10), || async {
        grandchildren.iter().all(|p| !alive(*p))
    })
    .await;
    assert!(
        swept,
        "grandchildren of the killed berth survived its successor's start"
    );
    let deps = b2.cli(&["deploys", "shop", "--json"]).ok().json();
    assert_eq!(deps["deployments"][0]["state"], "succeeded");
}

#[tokio::test]
async fn sigterm_stops_the_apps_with_berth() {
    let keep = tempfile::tempdir().unwrap();
    let mut b = start(&keep).await;
    b.deploy(crate::support::web_app("shop", "v1", 1).path())
        .ok();
    let running = pids(&b.ps("shop"));
    let status = b.process.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    assert!(running.iter().all(|p| !alive(*p)));
    let log = b.process.stderr_text();
    assert!(log.contains("apps stopped"), "{log}");
}
