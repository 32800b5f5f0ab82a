//! One release of one app, running: every instance of every process type under the
//! supervisor, each row kept current in the store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_config::app::{AppSpec, ProcessSpec, StopSignal};
use berth_store::{NewInstance, ReleaseRecord, Store};
use berth_supervisor::{
    CommandSpec, LogConfig, Phase, ProbeSpec, ResourceLimits, RestartPolicy, RunSpec, Signal,
    Status, Supervised,
};
use serde::Serialize;

use crate::error::DeployError;
use crate::layout::Layout;
use crate::metrics::{AppMetrics, PhaseLabels, ProcessLabels};
use crate::secrets::SecretEnv;
use crate::{AppKey, lock};

/// An instance's log is rotated at this size.
pub const LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated log files kept per instance.
pub const LOG_KEEP: usize = 3;

/// One instance as `berth ps` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    pub release: String,
    pub process: String,
    pub instance: String,
    pub phase: Phase,
    pub pid: Option<i32>,
    pub port: Option<u16>,
    pub restarts: u32,
    /// Seconds since the current process started.
    pub uptime_s: Option<u64>,
    pub last_exit: Option<String>,
    pub error: Option<String>,
    pub limits_note: Option<String>,
}

struct Proc {
    process: String,
    instance: String,
    port: Option<u16>,
    sup: Mutex<Option<Supervised>>,
}

/// A release's instances. Shared (`Arc`) between the deployer and `berth ps`; stopping takes
/// each instance out, so a stopped run shows nothing.
pub struct ReleaseRun {
    pub release: ReleaseRecord,
    procs: Vec<Proc>,
}

fn signal(s: StopSignal) -> Signal {
    match s {
        StopSignal::Term => Signal::Term,
        StopSignal::Int => Signal::Int,
        StopSignal::Quit => Signal::Quit,
        StopSignal::Hup => Signal::Hup,
        StopSignal::Usr1 => Signal::Usr1,
        StopSignal::Usr2 => Signal::Usr2,
        StopSignal::Winch => Signal::Winch,
    }
}

/// The release an instance belongs to, and where things go.
struct Context<'a> {
    layout: &'a Layout,
    key: &'a AppKey,
    release: &'a ReleaseRecord,
    spec: &'a AppSpec,
    secrets: &'a SecretEnv,
}

fn run_spec(
    cx: &Context<'_>,
    process: &str,
    p: &ProcessSpec,
    instance: &str,
    port: Option<u16>,
) -> RunSpec {
    let Context {
        layout,
        key,
        release,
        spec,
        secrets,
    } = *cx;
    let root = Path::new(&release.artifact);
    let mut command = CommandSpec::shell(&p.command, root.join(&p.workdir));
    for (k, v) in p.environment(spec) {
        command = command.env(k, v);
    }
    // Secrets over the spec's variables: a name set in both takes the secret.
    for (k, v) in &secrets.values {
        command = command.env(k, v.as_str());
    }
    command = command
        .env(crate::layout::MARKER_ENV, layout.data_dir.as_os_str())
        .env("BERTH_APP", &key.app)
        .env("BERTH_ENV", &key.env)
        .env("BERTH_RELEASE_ID", &release.version)
        .env("BERTH_STATE_DIR", layout.state_dir(key).as_os_str())
        .env("BERTH_PROCESS", process);
    if let Some(port) = port {
        command = command.port(port);
    }
    let health = p
        .health
        .as_ref()
        .filter(|_| port.is_some())
        .map(|h| ProbeSpec {
            path: h.path.clone(),
            interval: h.interval,
            timeout: h.timeout,
            start_timeout: h.start_timeout,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
        });
    RunSpec {
        instance: instance.to_owned(),
        command,
        health,
        stop_signal: signal(p.stop_signal),
        stop_timeout: p.stop_timeout,
        restart: RestartPolicy {
            base: p.restart.backoff_base,
            cap: p.restart.backoff_cap,
            loop_exits: p.restart.crash_loop_exits,
            loop_window: p.restart.crash_loop_window,
            ..RestartPolicy::default()
        },
        limits: ResourceLimits {
            memory_bytes: p.limits.memory_bytes,
            cpu: p.limits.cpu,
            open_files: p.limits.open_files,
            processes: p.limits.processes,
        },
        log: LogConfig {
            dir: layout.logs_dir(key).join(&release.version),
            max_bytes: LOG_MAX_BYTES,
            keep: LOG_KEEP,
        },
    }
}

fn row_state(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting | Phase::Backoff => "starting",
        Phase::Healthy | Phase::Running => "healthy",
        Phase::Unhealthy => "unhealthy",
        Phase::Failing => "failed",
        Phase::Stopping => "draining",
        Phase::Stopped => "stopped",
    }
}

impl ReleaseRun {
    /// Starts every instance of every process type. Fails (stopping what it started) only
    /// when berth itself cannot: no free port, no log directory, the store.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        store: &Store,
        layout: &Layout,
        metrics: &AppMetrics,
        key: &AppKey,
        release: ReleaseRecord,
        spec: AppSpec,
        secrets: &SecretEnv,
        deployment: Option<i64>,
    ) -> Result<Arc<ReleaseRun>, DeployError> {
        let logs = layout.logs_dir(key).join(&release.version);
        std::fs::create_dir_all(&logs).map_err(|e| {
            DeployError::Internal(format!(
                "cannot create log directory {}: {e}",
                logs.display()
            ))
        })?;
        let state = layout.state_dir(key);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state)
            .map_err(|e| {
                DeployError::Internal(format!(
                    "cannot create the state directory {}: {e}",
                    state.display()
                ))
            })?;
        let mut procs = Vec::new();
        for (process, p) in &spec.processes {
            for n in 1..=p.instances {
                let instance = format!("{process}-{n}");
                let port = if p.http {
                    Some(berth_supervisor::allocate_port().map_err(|e| {
                        DeployError::Internal(format!("cannot allocate a port for {instance}: {e}"))
                    })?)
                } else {
                    None
                };
                let cx = Context {
                    layout,
                    key,
                    release: &release,
                    spec: &spec,
                    secrets,
                };
                let rs = run_spec(&cx, process, p, &instance, port);
                let sup = Supervised::start(rs);
                let address = port.map(|p| format!("127.0.0.1:{p}")).unwrap_or_default();
                let row = store
                    .insert_instance(&NewInstance {
                        release: &release,
                        deployment,
                        process,
                        name: &instance,
                        address: &address,
                        pid: sup.status().pid,
                        state: "starting",
                    })
                    .await;
                let row = match row {
                    Ok(id) => Some(id),
                    Err(e) => {
                        // The instance runs either way; only its history row is missing.
                        tracing::error!(error = %e, %instance, "could not record the instance");
                        None
                    }
                };
                let labels = ProcessLabels {
                    app: key.app.clone(),
                    env: key.env.clone(),
                    process: process.clone(),
                };
                tokio::spawn(track(
                    store.clone(),
                    row,
                    sup.watch(),
                    metrics.clone(),
                    labels,
                ));
                procs.push(Proc {
                    process: process.clone(),
                    instance,
                    port,
                    sup: Mutex::new(Some(sup)),
                });
            }
        }
        Ok(Arc::new(ReleaseRun { release, procs }))
    }

    /// Waits until every instance is ready (healthy, or running when it has no probe).
    /// `Err` says which instance is not, and why, with its last output.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        for p in &self.procs {
            let waiting = lock(&p.sup).as_ref().map(|s| s.watch());
            let Some(rx) = waiting else {
                return Err(format!("{} was stopped", p.instance));
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Err(st) = berth_supervisor::wait_ready(rx, left).await {
                let what = if matches!(st.phase, Phase::Failing | Phase::Stopped) {
                    "failed".to_owned()
                } else {
                    format!("not ready within {}", humantime::format_duration(timeout))
                };
                return Err(describe(&p.instance, &st, &what));
            }
        }
        Ok(())
    }

    /// Addresses of the instances the edge sends traffic to.
    pub fn web_addrs(&self) -> Vec<SocketAddr> {
        self.procs
            .iter()
            .filter_map(|p| p.port)
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect()
    }

    /// Stops every instance at once (each: stop signal, its stop timeout, SIGKILL), and
    /// waits for all of them.
    pub async fn stop(&self) {
        let mut stops = Vec::new();
        for p in &self.procs {
            let sup = lock(&p.sup).take();
            if let Some(sup) = sup {
                stops.push(tokio::spawn(sup.stop()));
            }
        }
        for s in stops {
            if let Ok(status) = s.await {
                tracing::info!(
                    instance = %status.instance,
                    last_exit = status.last_exit.as_deref().unwrap_or("-"),
                    "instance stopped"
                );
            }
        }
    }

    pub fn views(&self) -> Vec<InstanceView> {
        let now = SystemTime::now();
        self.procs
            .iter()
            .filter_map(|p| {
                let st = lock(&p.sup).as_ref()?.status();
                Some(InstanceView {
                    release: self.release.version.clone(),
                    process: p.process.clone(),
                    instance: p.instance.clone(),
                    phase: st.phase,
                    pid: st.pid,
                    port: p.port,
                    restarts: st.restarts,
                    uptime_s: st
                        .started
                        .and_then(|s| now.duration_since(s).ok())
                        .map(|d| d.as_secs()),
                    last_exit: st.last_exit,
                    error: st.error,
                    limits_note: st.limits_note,
                })
            })
            .collect()
    }

    /// Restarts of all instances so far, and how many are not ready now (analysis reads
    /// the difference of the first between two windows).
    pub fn health(&self) -> (u32, usize) {
        let mut restarts = 0;
        let mut unready = 0;
        for p in &self.procs {
            if let Some(st) = lock(&p.sup).as_ref().map(|s| s.status()) {
                restarts += st.restarts;
                if !matches!(st.phase, Phase::Healthy | Phase::Running) {
                    unready += 1;
                }
            }
        }
        (restarts, unready)
    }

    /// Process types and instance counts, for messages.
    pub fn shape(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for p in &self.procs {
            *out.entry(p.process.clone()).or_default() += 1;
        }
        out
    }
}

fn describe(instance: &str, st: &Status, what: &str) -> String {
    let mut msg = format!("instance {instance} {what}");
    if let Some(e) = &st.error {
        msg.push_str(": ");
        msg.push_str(e);
    } else if let Some(x) = &st.last_exit {
        msg.push_str(": ");
        msg.push_str(x);
    }
    msg
}

/// Mirrors an instance's phase and pid into its store row and its counts into the metrics,
/// until it stops.
async fn track(
    store: Store,
    row: Option<i64>,
    mut rx: tokio::sync::watch::Receiver<Status>,
    metrics: AppMetrics,
    labels: ProcessLabels,
) {
    let phase_labels = |phase: Phase| PhaseLabels {
        app: labels.app.clone(),
        env: labels.env.clone(),
        process: labels.process.clone(),
        phase: phase.as_str(),
    };
    let mut last: Option<(&'static str, Option<i32>)> = None;
    let mut last_phase: Option<Phase> = None;
    let mut restarts = 0u32;
    loop {
        let st = rx.borrow_and_update().clone();
        if st.restarts > restarts {
            metrics
                .restarts
                .get_or_create(&labels)
                .inc_by(u64::from(st.restarts - restarts));
            restarts = st.restarts;
        }
        if last_phase != Some(st.phase) {
            if let Some(p) = last_phase {
                metrics.instances.get_or_create(&phase_labels(p)).dec();
            }
            if st.phase != Phase::Stopped {
                metrics
                    .instances
                    .get_or_create(&phase_labels(st.phase))
                    .inc();
            }
            if st.phase == Phase::Failing {
                metrics.crash_loops.get_or_create(&labels).inc();
            }
            last_phase = Some(st.phase);
        }
        let now = (row_state(st.phase), st.pid);
        if let Some(row) = row
            && last != Some(now)
        {
            let stopped = (st.phase == Phase::Stopped).then_some(st.exit_code);
            if let Err(e) = store.update_instance(row, now.0, st.pid, stopped).await {
                tracing::warn!(error = %e, row, "could not update the instance row");
            }
            last = Some(now);
        }
        if st.phase == Phase::Stopped {
            return;
        }
        if rx.changed().await.is_err() {
            // The instance is gone without a last word: take it out of the phase counts.
            if let Some(p) = last_phase {
                metrics.instances.get_or_create(&phase_labels(p)).dec();
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_config::app;
    use berth_supervisor::backoff;

    /// The app spec's defaults are written in berth-config (which does not depend on the
    /// supervisor); an app that leaves `[restart]` out must get the supervisor's policy.
    #[test]
    fn restart_defaults_agree_with_the_supervisor() {
        assert_eq!(app::DEFAULT_BACKOFF_BASE, backoff::DEFAULT_BASE);
        assert_eq!(app::DEFAULT_BACKOFF_CAP, backoff::DEFAULT_CAP);
        assert_eq!(app::DEFAULT_CRASH_LOOP_EXITS, backoff::DEFAULT_LOOP_EXITS);
        assert_eq!(app::DEFAULT_CRASH_LOOP_WINDOW, backoff::DEFAULT_LOOP_WINDOW);
    }
}
