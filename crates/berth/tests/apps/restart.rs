//! berth itself dying and coming back: no orphans, state restored.

use std::time::Duration;

use crate::support::{
    PY_WEB, alive, app_dir, descendants, eventually, pids, spec, start, start_in,
};

/// An app with two web instances and a worker whose shell starts a child of its own: the
/// kind of grandchild that the parent-death signal (sent to direct children only) misses.
/// Returns the release, the instances' pids and their descendants'.
fn deploy_with_grandchild(b: &crate::support::Berth) -> (String, Vec<i64>, Vec<i64>) {
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
    (release, direct, grandchildren)
}

/// The guard process `berth serve` started (`berth __guard`).
fn guard_of(berth_pid: u32) -> i64 {
    let guards: Vec<i64> = descendants(i64::from(berth_pid))
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .split(|&b| b == 0)
                .any(|arg| arg == b"__guard")
        })
        .collect();
    assert_eq!(guards.len(), 1, "one guard process: {guards:?}");
    guards[0]
}

async fn kill_9(b: &mut crate::support::Berth) {
    b.process.signal(libc::SIGKILL).unwrap();
    b.process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("berth died");
}

async fn all_gone(pids: &[i64]) -> bool {
    eventually(Duration::from_secs(10), || async {
        pids.iter().all(|p| !alive(*p))
    })
    .await
}

#[tokio::test]
async fn after_kill_9_no_instance_survives_and_a_new_berth_brings_the_app_back() {
    let keep = tempfile::tempdir().unwrap();
    let mut b = start(&keep).await;
    let (release, direct, grandchildren) = deploy_with_grandchild(&b);
    let guard = guard_of(b.process.pid());

    kill_9(&mut b).await;
    // The kernel kills every direct child with berth; the guard, woken by its pipe's end,
    // kills what they started, before any new berth runs.
    assert!(
        all_gone(&direct).await,
        "instances outlived berth: {direct:?}"
    );
    assert!(
        all_gone(&grandchildren).await,
        "grandchildren outlived berth: {grandchildren:?}"
    );
    assert!(all_gone(&[guard]).await, "the guard exits after its sweep");

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
    let deps = b2.cli(&["deploys", "shop", "--json"]).ok().json();
    assert_eq!(deps["deployments"][0]["state"], "succeeded");
}

#[tokio::test]
async fn without_its_guard_what_a_killed_berth_left_is_swept_by_the_next_start() {
    let keep = tempfile::tempdir().unwrap();
    let mut b = start(&keep).await;
    let (_, direct, grandchildren) = deploy_with_grandchild(&b);
    // SAFETY: plain syscall on a pid this test found as berth's child.
    unsafe { libc::kill(guard_of(b.process.pid()) as i32, libc::SIGKILL) };
    kill_9(&mut b).await;
    assert!(
        all_gone(&direct).await,
        "the parent-death signal still works"
    );
    assert!(
        grandchildren.iter().all(|p| alive(*p)),
        "with no guard, the grandchildren run on until a berth starts"
    );

    let b2 = start_in(&b.data_dir).await;
    assert!(
        all_gone(&grandchildren).await,
        "grandchildren of the killed berth survived its successor's start"
    );
    let log = b2.process.stderr_text();
    assert!(
        log.contains("killed processes left by a previous berth"),
        "{log}"
    );
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
