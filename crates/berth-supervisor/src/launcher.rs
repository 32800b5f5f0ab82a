//! Instances are started by one long-lived thread, not by the async worker that asks for them.
//!
//! A spawn blocks the calling thread until the child has exec'd: 1–3.5 ms per instance with
//! `fork`, measured with two CPUs under load (less without copying berth's memory, see
//! `spawn.rs`, but still until the child is scheduled and has exec'd). On the asking worker
//! that stalls every task of its runtime for the length of each start: when the edge shared
//! berth's one runtime, that was every request in flight (the p99 spikes of
//! `bench/deploy.sh`). This thread also keeps
//! berth's own CPU priority when the control plane lowers its own, so instances start at
//! berth's priority (see `crates/berth/src/data_plane.rs`). `spawn_blocking` is no answer:
//! `PR_SET_PDEATHSIG` fires when the *thread* that started the child exits, and the blocking
//! pool retires idle threads, which would kill healthy instances. This thread lives as long
//! as berth does.

use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::Result;
use crate::limits::ChildSetup;
use crate::process::{CommandSpec, Instance};

/// Name of the thread, as `ps -L` and debuggers show it.
const THREAD_NAME: &str = "berth-launcher";

/// One start: what to run, the runtime that watches for the instance's exit (its pidfd and
/// pipes are registered with that runtime's reactor), and where the answer goes.
struct Job {
    spec: CommandSpec,
    setup: Option<ChildSetup>,
    runtime: Handle,
    reply: oneshot::Sender<Result<Instance>>,
}

/// The launcher's queue, started on first use; `None` if the OS refused a thread.
fn queue() -> Option<&'static mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name(THREAD_NAME.to_owned())
                .spawn(move || {
                    for job in rx {
                        let _entered = job.runtime.enter();
                        let started = Instance::spawn_with(&job.spec, job.setup);
                        // The asker may have given up (its task was cancelled); then the
                        // instance is dropped here, which kills its group.
                        let _ = job.reply.send(started);
                    }
                });
            // Without the thread, instances start on the asking worker: correct, only slower.
            started.ok().map(|_| tx)
        })
        .as_ref()
}

/// Starts the launcher thread now rather than at the first instance, so it is created with
/// the calling thread's scheduling priority (instances inherit the launcher's).
pub fn start_launcher() {
    let _ = queue();
}

/// Starts an instance on the launcher thread and waits for it without blocking the caller's
/// thread. Must be called within a tokio runtime.
pub(crate) async fn launch(spec: &CommandSpec, setup: Option<ChildSetup>) -> Result<Instance> {
    let Some(queue) = queue() else {
        return Instance::spawn_with(spec, setup);
    };
    let (reply, answer) = oneshot::channel();
    let job = Job {
        spec: spec.clone(),
        setup,
        runtime: Handle::current(),
        reply,
    };
    match queue.send(job) {
        Ok(()) => match answer.await {
            Ok(started) => started,
            // The thread died while starting this instance (a panic); nothing was handed back.
            Err(_) => Err(crate::error::Error::Spawn {
                program: spec.name(),
                cwd: spec.cwd.clone(),
                source: std::io::Error::other("the launcher thread ended"),
            }),
        },
        // The thread is gone: start here rather than not at all.
        Err(mpsc::SendError(job)) => Instance::spawn_with(&job.spec, job.setup),
    }
}
