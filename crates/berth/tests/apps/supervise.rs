//! The supervisor through the binary: restarts with backoff, crash loops, stop timeouts.

use std::time::Duration;

use crate::support::{PY_WEB, alive, app_dir, eventually, pids, spec, start};

/// A web instance plus a `worker` running `worker`, with fast backoff for tests.
fn app_with_worker(name: &str, worker: &str, extra: &str) -> tempfile::TempDir {
    app_dir(&[
        (
            "berth.toml",
            &spec(
                name,
                &format!(
                    "[processes.web]\ncommand = \"{PY_WEB}\"\n[processes.web.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\n\
                     [processes.worker]\ncommand = \"{worker}\"\nstop_timeout = \"1s\"\n{extra}\n"
                ),
            ),
        ),
        ("health", "ok\n"),
    ])
}

fn worker(ps: &serde_json::Value) -> &serde_json::Value {
    ps["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == "worker-1")
        .expect("worker-1 listed")
}

#[tokio::test]
async fn a_crashing_worker_is_restarted_with_backoff_then_marked_crash_looping() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    // Exits 3 after a second: a crash, again and again.
    let app = app_with_worker(
        "jobs",
        "echo worker up; sleep 1; echo dying >&2; exit 3",
        "[processes.worker.restart]\nbackoff_base = \"100ms\"\nbackoff_cap = \"400ms\"\n\
         crash_loop_exits = 4\ncrash_loop_window = \"60s\"",
    );
    b.deploy(app.path()).ok();
    let restarted = eventually(Duration::from_secs(20), || async {
        worker(&b.ps("jobs"))["restarts"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert!(restarted, "{}", b.ps("jobs"));
    let failing = eventually(Duration::from_secs(30), || async {
        worker(&b.ps("jobs"))["phase"] == "failing"
    })
    .await;
    let ps = b.ps("jobs");
    assert!(failing, "{ps}");
    let w = worker(&ps);
    let error = w["error"].as_str().unwrap_or_default();
    assert!(error.contains("crash loop"), "{w}");
    assert!(
        w["last_exit"].as_str().unwrap_or_default().contains('3'),
        "{w}"
    );
    // No more restarts once failing; the web instance is unaffected.
    let restarts = w["restarts"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        worker(&b.ps("jobs"))["restarts"].as_u64().unwrap(),
        restarts
    );
    assert_eq!(b.get("jobs.test", "/health").await.0, 200);
    // Counted in the metrics too.
    let metrics = crate::support::client()
        .get(format!("http://{}/api/v1/metrics", b.admin))
        .bearer_auth(b.token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in the metrics"))
    };
    let labels = "{app=\"jobs\",env=\"production\",process=\"worker\"";
    assert_eq!(
        sample(&format!("berth_app_crash_loops_total{labels}}}")),
        1.0
    );
    assert_eq!(
        sample(&format!("berth_app_restarts_total{labels}}}")),
        restarts as f64
    );
    assert_eq!(
        sample(&format!("berth_app_instances{labels},phase=\"failing\"}}")),
        1.0
    );
    // Every run's output is in the log, stderr included.
    let logs = b
        .cli(&["logs", "jobs", "--process", "worker"])
        .ok()
        .stdout
        .clone();
    assert!(
        logs.matches("worker-1 stdout worker up").count() >= 4,
        "{logs}"
    );
    assert!(logs.contains("worker-1 stderr dying"), "{logs}");
}

#[tokio::test]
async fn a_process_ignoring_its_stop_signal_is_killed_after_the_stop_timeout() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    // Ignores SIGTERM, and has a child of its own in the group.
    let stubborn = "trap '' TERM; sleep 1000 & while true; do sleep 1; done";
    let v1 = app_with_worker("stub", stubborn, "");
    b.deploy(v1.path()).ok();
    let ps = b.ps("stub");
    let worker_pid = worker(&ps)["pid"].as_i64().unwrap();
    let group = crate::support::descendants(worker_pid);
    assert!(!group.is_empty(), "the worker's children");
    // Deploying a new release stops the old one: TERM ignored, SIGKILL after 1 s.
    let v2 = app_with_worker("stub", "sleep 1000", "");
    std::fs::write(v2.path().join("v2"), "").unwrap();
    let started = std::time::Instant::now();
    b.deploy(v2.path()).ok();
    assert!(started.elapsed() < Duration::from_secs(30));
    let gone = eventually(Duration::from_secs(10), || async {
        !alive(worker_pid) && group.iter().all(|p| !alive(*p))
    })
    .await;
    assert!(gone, "the stubborn worker or its child survived");
    assert_eq!(pids(&b.ps("stub")).len(), 2);
}
