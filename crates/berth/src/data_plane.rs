//! The data plane's own runtime. The edge (listeners, connections, health checks) runs on
//! threads of its own and the control plane (admin API, deploys, supervisor, store, scheduler)
//! on the main thread. With one runtime for both, a deploy's bookkeeping ran between
//! requests on the same worker and showed up in their latency; apart, the kernel schedules
//! the two like any two threads, and an overloaded edge cannot starve the admin API either.
//! The main thread then runs [`CONTROL_NICE`] steps nicer than the edge, so when the CPUs are
//! short the kernel gives them to requests first and a deploy proceeds in what is left.

use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// What the edge's tasks still running at exit get to finish (the edge has drained by then).
const STOP_GRACE: Duration = Duration::from_millis(200);

/// How much nicer than berth's own priority the control plane runs (see [`lower_control_priority`]).
/// At 10, with two CPUs saturated by wrk, bench/deploy.sh's p99 during 25 back-to-back deploys
/// went from 2.11x steady state (mean of 3 runs) to 1.38x, and the deploys took 3.5 s, not 3.4 s.
pub const CONTROL_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority by [`CONTROL_NICE`] (nice is per thread on Linux).
/// Called on the main thread once the edge's threads and the instance launcher exist: what the
/// main thread starts later inherits it (the store's workers, the blocking pool, log writers,
/// builds and hooks), what started before keeps berth's own priority (the edge, and the app
/// instances, which the launcher thread starts). Without permission it stays as it was.
pub fn lower_control_priority() {
    // SAFETY: plain syscalls on this thread's id.
    let (tid, current) = unsafe {
        let tid = libc::gettid() as libc::id_t;
        // -1 is also a valid priority; errno tells an error apart, and an error is harmless here.
        (tid, libc::getpriority(libc::PRIO_PROCESS, tid))
    };
    let target = (current + CONTROL_NICE).min(MAX_NICE);
    // SAFETY: as above. Raising one's own nice value needs no privilege.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, target) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower the control plane's CPU priority; deploys compete with requests at equal priority"
        );
    }
}

/// The lowest priority Linux has.
const MAX_NICE: i32 = 19;

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

    /// Ends the runtime and waits for its thread (as dropping it does). Call it outside any
    /// runtime.
    pub fn stop(self) {}
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
