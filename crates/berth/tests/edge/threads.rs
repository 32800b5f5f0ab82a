//! The data plane on threads of its own: `server.workers` threads named `berth-edge` carry
//! the edge, apart from the main thread that carries the control plane, so a deploy's work
//! never runs between requests; the main thread runs at a lower CPU priority, the edge and
//! the instance launcher at berth's own.

use berth_testkit::FakeUpstream;

use crate::common::{client, simple, start_workers};

/// Name and nice value of each of berth's threads, the main thread first.
fn threads(pid: u32) -> Vec<(String, i32)> {
    let mut tasks: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc")
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tasks.sort_unstable();
    tasks
        .into_iter()
        // A thread that ended meanwhile is skipped.
        .filter_map(|tid| crate::shared::name_and_nice(&format!("/proc/{pid}/task/{tid}/stat")))
        .collect()
}

fn names(threads: &[(String, i32)]) -> Vec<&str> {
    threads.iter().map(|(n, _)| n.as_str()).collect()
}

async fn edge_threads(workers: usize) -> Vec<(String, i32)> {
    let up = FakeUpstream::start_named("a").await;
    let env = start_workers(&simple(&[up.addr()], "", ""), workers).await;
    let r = client().get(env.url("/")).send().await.expect("proxied");
    assert_eq!(r.status(), 200);
    threads(env.berth.pid())
}

#[tokio::test]
async fn one_worker_is_one_edge_thread_beside_the_main_thread() {
    let threads = edge_threads(1).await;
    let edge: Vec<_> = threads.iter().filter(|(n, _)| n == "berth-edge").collect();
    assert_eq!(edge.len(), 1, "{:?}", names(&threads));
    assert_eq!(threads[0].0, "berth", "the main thread comes first");
}

#[tokio::test]
async fn more_workers_are_that_many_edge_threads_and_their_driver() {
    let threads = edge_threads(3).await;
    let edge = threads.iter().filter(|(n, _)| n == "berth-edge").count();
    // Three workers and the thread that drives the runtime; the runtime's blocking pool
    // (certificate polls, file reads) takes the same name, so there may be more.
    let workers_and_driver = 3 + 1;
    assert!(edge >= workers_and_driver, "{:?}", names(&threads));
}

#[tokio::test]
async fn the_control_plane_runs_nicer_than_the_edge_and_the_launcher() {
    let threads = edge_threads(2).await;
    let nice_of = |name: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, nice)| *nice)
            .collect()
    };
    let edge = nice_of("berth-edge");
    let base = edge[0];
    assert!(edge.iter().all(|n| *n == base), "{threads:?}");
    assert_eq!(
        nice_of("berth-launcher"),
        [base],
        "instances inherit it: {threads:?}"
    );
    assert_eq!(
        threads[0].1,
        (base + 10).min(19),
        "the main thread: {threads:?}"
    );
}
