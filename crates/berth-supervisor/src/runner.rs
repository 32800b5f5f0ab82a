//! The run loop behind [`crate::Supervised`]: spawn, capture, probe, wait, back off, restart,
//! give up; and stop on request at any of those points.

use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::backoff::{Decision, RestartState};
use crate::launcher;
use crate::limits::Confinement;
use crate::output::{Capture, RotatingLog, capture};
use crate::probe::{self, ProbeTracker, Verdict};
use crate::process::{CommandSpec, Ending, Signal};
use crate::run::RunSpec;
use crate::status::{self, Phase, Status};
use crate::sweep::INSTANCE_ENV;

/// After an instance ends, how long to wait for the rest of its output. Pipes stay open
/// while a process that escaped the group holds them; the log keeps being written in the
/// background then, but the status should not wait for it.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// When the handle is dropped, the instance is SIGKILLed; this only bounds the reaping.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// How supervision was asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopKind {
    /// [`crate::Supervised::stop`]: the spec's signal and timeout.
    Graceful,
    /// The handle was dropped: nobody waits for a graceful stop, so SIGKILL.
    Dropped,
}

/// The receiving end of the handle's stop request, remembering it once seen so every later
/// `select!` sees it again at once.
#[derive(Debug)]
pub(crate) struct StopRequest {
    rx: oneshot::Receiver<()>,
    seen: Option<StopKind>,
}

impl StopRequest {
    pub(crate) fn new(rx: oneshot::Receiver<()>) -> Self {
        Self { rx, seen: None }
    }

    /// Cancel-safe: resolves when a stop is requested (or the handle dropped).
    async fn requested(&mut self) -> StopKind {
        if let Some(kind) = self.seen {
            return kind;
        }
        let kind = match (&mut self.rx).await {
            Ok(()) => StopKind::Graceful,
            Err(_) => StopKind::Dropped,
        };
        self.seen = Some(kind);
        kind
    }

    /// Whether a stop was requested already, without waiting.
    fn already(&mut self) -> bool {
        if self.seen.is_none() {
            self.seen = match self.rx.try_recv() {
                Ok(()) => Some(StopKind::Graceful),
                Err(oneshot::error::TryRecvError::Closed) => Some(StopKind::Dropped),
                Err(oneshot::error::TryRecvError::Empty) => None,
            };
        }
        self.seen.is_some()
    }
}

/// How one run of the instance ended.
enum RunEnd {
    /// Stop was requested; the instance is gone. Supervision ends.
    Stopped,
    /// It exited, failed to start, or never became healthy: the words for `error`.
    Failed(String),
}

/// The task behind [`crate::Supervised`]. Ends only after a stop request (or the handle
/// being dropped), with the instance gone and the status `Stopped`.
pub(crate) async fn supervise(spec: RunSpec, status: watch::Sender<Status>, mut stop: StopRequest) {
    let mut confinement = Confinement::prepare(&spec.instance, &spec.limits);
    status.send_modify(|s| s.limits_note.clone_from(&confinement.note));

    let mut command = spec.command.clone();
    command
        .env
        .insert(INSTANCE_ENV.into(), spec.instance.clone().into());

    if spec.health.is_some() && command.port.is_none() {
        // A caller's mistake, not the app's: restarting would not fix it.
        status.send_modify(|s| {
            s.phase = Phase::Failing;
            s.error = Some("a health probe is configured but the instance has no port".into());
        });
        stop.requested().await;
    } else {
        let mut restart = RestartState::new(spec.restart);
        let mut first = true;
        loop {
            // Not worth starting a process only to kill it (a handle dropped right away).
            if stop.already() {
                break;
            }
            if !first {
                status.send_modify(|s| s.restarts = s.restarts.saturating_add(1));
            }
            first = false;
            let run = Run {
                spec: &spec,
                command: &command,
                confinement: &confinement,
                status: &status,
            };
            let failure = match run.once(&mut stop, &mut restart).await {
                RunEnd::Stopped => break,
                RunEnd::Failed(error) => error,
            };
            match restart.on_exit(std::time::Instant::now()) {
                Decision::RestartAfter(delay) => {
                    status.send_modify(|s| {
                        s.phase = Phase::Backoff;
                        s.error = Some(failure);
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.requested() => break,
                    }
                }
                Decision::Failing => {
                    let policy = restart.policy();
                    let error = status::describe_crash_loop(
                        policy.loop_exits.max(1),
                        policy.loop_window,
                        &failure,
                    );
                    status.send_modify(|s| {
                        s.phase = Phase::Failing;
                        s.error = Some(error);
                    });
                    stop.requested().await;
                    break;
                }
            }
        }
    }

    if let Some(cgroup) = confinement.cgroup.take() {
        // Best effort: a cgroup that cannot be removed is empty (its processes were killed)
        // and costs nothing but a directory.
        let _ = cgroup.remove().await;
    }
    status.send_modify(|s| {
        s.phase = Phase::Stopped;
        s.pid = None;
        s.started = None;
    });
}

/// What one run needs, borrowed from the task.
struct Run<'a> {
    spec: &'a RunSpec,
    command: &'a CommandSpec,
    confinement: &'a Confinement,
    status: &'a watch::Sender<Status>,
}

impl Run<'_> {
    /// Starts the instance once and follows it until it ends, fails its start, or a stop is
    /// requested.
    async fn once(&self, stop: &mut StopRequest, restart: &mut RestartState) -> RunEnd {
        self.status.send_modify(|s| s.phase = Phase::Starting);
        // The log first: an instance whose output cannot be kept is not started.
        let log = match RotatingLog::open(&self.spec.log, &self.spec.instance) {
            Ok(log) => log,
            Err(e) => return RunEnd::Failed(e.to_string()),
        };
        let mut instance =
            match launcher::launch(self.command, self.confinement.child_setup()).await {
                Ok(instance) => instance,
                Err(e) => return RunEnd::Failed(e.to_string()),
            };
        let started = Instant::now();
        restart.on_start(started.into_std());

        // `spawn` always pipes both streams; a missing pipe is reported, not unwrapped.
        let capture = match instance.take_output() {
            Some((stdout, stderr)) => capture(stdout, stderr, log).map_err(|e| e.to_string()),
            None => Err("instance output pipes missing".to_owned()),
        };
        let capture = match capture {
            Ok(capture) => capture,
            Err(e) => {
                let _ = instance.stop(Signal::Kill, KILL_TIMEOUT).await;
                return RunEnd::Failed(e);
            }
        };

        let mut tracker = self
            .spec
            .health
            .as_ref()
            .map(|p| ProbeTracker::new(p, started.into_std()));
        self.status.send_modify(|s| {
            s.pid = Some(instance.pid());
            s.started = Some(SystemTime::now());
            s.phase = if tracker.is_some() {
                Phase::Starting
            } else {
                Phase::Running
            };
        });
        // Without a probe, a run that lasts as long as the backoff's idea of stable is the
        // only evidence that the previous failure is over; until then its error stays.
        let stable_at = started + self.spec.restart.stable_after;
        let mut stable_seen = tracker.is_some();

        // The first probe goes out at once, and while starting retries come soon
        // (`ProbeTracker::next_delay`): a fast app is healthy within milliseconds.
        let mut next_probe = started;
        loop {
            let deadline = tracker.as_ref().and_then(ProbeTracker::start_deadline);
            let start_timed_out = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let probed = async {
                match (&self.spec.health, self.command.port) {
                    (Some(spec), Some(port)) => {
                        tokio::time::sleep_until(next_probe).await;
                        let began = Instant::now();
                        (began, probe::check(port, &spec.path, spec.timeout).await)
                    }
                    _ => std::future::pending().await,
                }
            };
            let stable = async {
                if stable_seen {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep_until(stable_at).await;
            };
            tokio::select! {
                biased;
                kind = stop.requested() => {
                    self.status.send_modify(|s| s.phase = Phase::Stopping);
                    let (signal, timeout) = match kind {
                        StopKind::Graceful => (self.spec.stop_signal, self.spec.stop_timeout),
                        StopKind::Dropped => (Signal::Kill, KILL_TIMEOUT),
                    };
                    let ended = instance.stop(signal, timeout).await;
                    self.finish(capture).await;
                    self.ended(ended.as_ref().ok().copied());
                    return RunEnd::Stopped;
                }
                ended = instance.wait() => {
                    let tail = capture.tail();
                    self.finish(capture).await;
                    return RunEnd::Failed(match ended {
                        Ok(ending) => {
                            self.ended(Some(ending));
                            status::describe_exit(ending, &tail)
                        }
                        Err(e) => {
                            self.ended(None);
                            e.to_string()
                        }
                    });
                }
                () = start_timed_out => {
                    let start_timeout = self.spec.health.as_ref().map_or(Duration::ZERO, |p| p.start_timeout);
                    let mut error = format!(
                        "not healthy within {}",
                        humantime::format_duration(start_timeout)
                    );
                    if let Some(last) = tracker.as_ref().and_then(ProbeTracker::last_error) {
                        error.push_str(&format!("; last probe: {last}"));
                    }
                    let ended = instance.stop(self.spec.stop_signal, self.spec.stop_timeout).await;
                    let tail = capture.tail();
                    self.finish(capture).await;
                    self.ended(ended.as_ref().ok().copied());
                    return RunEnd::Failed(status::with_output(error, &tail.lines()));
                }
                () = stable => {
                    stable_seen = true;
                    self.status.send_if_modified(|s| s.error.take().is_some());
                }
                (began, result) = probed => {
                    if let (Some(spec), Some(tracker)) = (&self.spec.health, tracker.as_mut()) {
                        let verdict = tracker.record(result);
                        next_probe = began + tracker.next_delay(spec.interval);
                        let phase = match verdict {
                            Verdict::Starting => Phase::Starting,
                            Verdict::Healthy => Phase::Healthy,
                            Verdict::Unhealthy => Phase::Unhealthy,
                        };
                        self.status.send_if_modified(|s| {
                            let changed = s.phase != phase;
                            s.phase = phase;
                            if phase == Phase::Healthy && s.error.is_some() {
                                s.error = None;
                                return true;
                            }
                            changed
                        });
                    }
                }
            }
        }
    }

    /// Kills whatever the instance left in its cgroup, then waits (a little) for the rest of
    /// its output.
    async fn finish(&self, capture: Capture) {
        if let Some(cgroup) = &self.confinement.cgroup {
            let _ = cgroup.kill();
        }
        // A log write error ends only the log, not supervision.
        let _ = tokio::time::timeout(OUTPUT_GRACE, capture.finish()).await;
    }

    fn ended(&self, ending: Option<Ending>) {
        self.status.send_modify(|s| {
            if let Some(ending) = ending {
                s.last_exit = Some(status::describe_ending(ending));
                s.exit_code = match ending {
                    Ending::Exited { code } => Some(code),
                    Ending::Signaled { .. } | Ending::ForceKilled => None,
                };
            }
            s.pid = None;
            s.started = None;
        });
    }
}
