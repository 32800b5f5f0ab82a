//! The data plane on threads of its own: `server.workers` threads named `berth-edge` carry
//! the edge, apart from the main thread that carries the control plane, so a deploy's work
//! never runs between requests.

use berth_testkit::FakeUpstream;

use crate::common::{client, simple, start_workers};

/// Names of berth's threads, one per thread.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc") {
        let comm = task.expect("task").path().join("comm");
        if let Ok(name) = std::fs::read_to_string(comm) {
            names.push(name.trim().to_owned());
        }
    }
    names
}

async fn edge_threads(workers: usize) -> (usize, Vec<String>) {
    let up = FakeUpstream::start_named("a").await;
    let env = start_workers(&simple(&[up.addr()], "", ""), workers).await;
    let r = client().get(env.url("/")).send().await.expect("proxied");
    assert_eq!(r.status(), 200);
    let names = thread_names(env.berth.pid());
    let edge = names.iter().filter(|n| *n == "berth-edge").count();
    (edge, names)
}

#[tokio::test]
async fn one_worker_is_one_edge_thread_beside_the_main_thread() {
    let (edge, names) = edge_threads(1).await;
    assert_eq!(edge, 1, "{names:?}");
    assert_eq!(names.first().map(String::as_str), Some("berth"), "{names:?}");
}

#[tokio::test]
async fn more_workers_are_that_many_edge_threads_and_their_driver() {
    let (edge, names) = edge_threads(3).await;
    assert_eq!(edge, 3 + 1, "{names:?}");
}
