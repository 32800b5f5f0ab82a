//! The data plane's own runtime. The edge (listeners, connections, health checks) runs on
//! threads of its own and the control plane (admin API, deploys, supervisor, store, scheduler)
//! on the main thread. With one runtime for both, a deploy's bookkeeping ran between
//! requests on the same worker and showed up in their latency; apart, the kernel schedules
//! the two like any two threads, and an overloaded edge cannot starve the admin API either.

use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// What the edge's tasks still running at exit get to finish (the edge has drained by then).
const STOP_GRACE: Duration = Duration::from_millis(200);

/// The edge's runtime, driven by a `berth-edge` thread until [`DataPlane::stop`] (or drop).
pub struct DataPlane {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DataPlane {
    /// `workers` threads serve the edge: one is a current-thread runtime (the cheapest per
    /// request), more a work-stealing one.
    pub fn start(workers: usize) -> anyhow::Result<Self> {
        let mut builder = if workers <= 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(workers).thread_name("berth-edge");
            b
        };
        let runtime = builder
            .enable_all()
            .build()
            .context("starting the edge's runtime")?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("berth-edge".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(STOP_GRACE);
            })
            .context("starting the edge's thread")?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Ends the runtime and waits for its thread. Call it outside any runtime.
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.end();
    }
}
