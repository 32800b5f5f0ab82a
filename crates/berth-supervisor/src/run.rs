//! The public face of a supervised instance: what to run ([`RunSpec`]) and the handle to the
//! task that runs it ([`Supervised`]). The loop itself is in `runner.rs`.

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::backoff::RestartPolicy;
use crate::limits::ResourceLimits;
use crate::output::LogConfig;
use crate::probe::ProbeSpec;
use crate::process::{CommandSpec, Signal};
use crate::runner::{self, StopRequest};
use crate::status::{Phase, Status};

/// Everything needed to run, probe, restart and stop one instance.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// e.g. "web-1": names the log file and the status, and is exported as `BERTH_INSTANCE`.
    pub instance: String,
    /// What to run; `port` is also where the probe connects.
    pub command: CommandSpec,
    /// HTTP probe against `127.0.0.1:<command.port>`; `None` means alive is good enough.
    pub health: Option<ProbeSpec>,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub restart: RestartPolicy,
    pub limits: ResourceLimits,
    pub log: LogConfig,
}

/// A running supervisor for one instance: spawns it, captures its output, probes it,
/// restarts it with backoff, and gives up on a crash loop.
///
/// Dropping it without [`Supervised::stop`] SIGKILLs the instance's process group (and its
/// cgroup, if it has one) at once: no instance outlives its handle.
#[derive(Debug)]
pub struct Supervised {
    status: watch::Receiver<Status>,
    /// Sending asks for a graceful stop; dropping it (with `self`) asks for a kill.
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Starts supervising `spec` on a new tokio task; must be called inside a tokio runtime.
    /// Failures to start (a missing program, an unwritable log directory) show in
    /// [`Supervised::status`] as `Backoff` or `Failing` with `error` set.
    ///
    /// Processes are spawned by one long-lived launcher thread (`launcher.rs`), never by the
    /// runtime's workers: `PR_SET_PDEATHSIG` fires when the spawning *thread* exits, and a
    /// spawn blocks its thread until the child has exec'd.
    pub fn start(spec: RunSpec) -> Supervised {
        let (status_tx, status) = watch::channel(Status::new(&spec.instance, spec.command.port));
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(runner::supervise(
            spec,
            status_tx,
            StopRequest::new(stop_rx),
        ));
        Supervised { status, stop, task }
    }

    /// The latest status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Every status change, for callers that follow the instance (the deployer, the edge's
    /// registration).
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Waits until the instance is `Healthy` (or `Running`, when it has no probe). Returns
    /// the status as it was when giving up: on `Failing`, `Stopped`, or after `timeout`.
    /// `Backoff` is waited through: a restart may still come up within the timeout.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), Status> {
        wait_ready(self.status.clone(), timeout).await
    }

    /// Stops the instance gracefully (`stop_signal` to its group, `stop_timeout`, SIGKILL)
    /// and supervision with it: no restart follows. Prompt in every phase, including in the
    /// middle of a backoff delay. Returns the final status, `Stopped` with `last_exit`.
    pub async fn stop(self) -> Status {
        let Supervised { status, stop, task } = self;
        // An error means the task already ended, which only a panic in it can cause.
        let _ = stop.send(());
        let _ = task.await;
        status.borrow().clone()
    }
}

/// [`Supervised::wait_ready`] for a caller that holds only the instance's status channel
/// ([`Supervised::watch`]), e.g. while another task may stop the instance meanwhile.
pub async fn wait_ready(mut rx: watch::Receiver<Status>, timeout: Duration) -> Result<(), Status> {
    let settled = async {
        rx.wait_for(|s| {
            matches!(
                s.phase,
                Phase::Healthy | Phase::Running | Phase::Failing | Phase::Stopped
            )
        })
        .await
        .map(|s| s.clone())
    };
    match tokio::time::timeout(timeout, settled).await {
        Ok(Ok(status)) if matches!(status.phase, Phase::Healthy | Phase::Running) => Ok(()),
        Ok(Ok(status)) => Err(status),
        // Timed out, or the task is gone (it only ends once stopped).
        Ok(Err(_)) | Err(_) => Err(rx.borrow().clone()),
    }
}
