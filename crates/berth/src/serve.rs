//! `berth serve`: one process running the edge and the admin listener, reloading on SIGHUP
//! or an admin request, draining on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use berth_config::{AccessLog, Config};
use berth_edge::{AccessLogTarget, Edge};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Mutex;

use crate::admin;
use crate::cli::{LogFormat, ServeArgs};
use crate::data_plane::DataPlane;
use crate::state;

/// How long `berth serve`, once the apps are stopped, lets the admin listeners finish the
/// responses their stop signal ended.
const ADMIN_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    let path = args.config.config;
    let mut config = match berth_config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(crate::client::exit::BAD_INPUT));
        }
    };
    if let Some(url) = args.database_url {
        config.server.database_url = url;
    }
    let key = take_master_key_env(&config.server.data_dir);
    crate::guard::start();
    let data_plane = DataPlane::start(config.server.workers)?;
    // Instances inherit the launcher's priority: it starts before the main thread lowers its own.
    berth_supervisor::start_launcher();
    crate::data_plane::lower_control_priority();
    // The control plane: one thread is plenty, and it keeps the edge's threads to itself.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = control.block_on(serve(path, config, key, data_plane.handle().clone()));
    drop(control);
    data_plane.stop();
    result
}

/// Where the secrets' master key comes from, and `BERTH_MASTER_KEY`'s value.
pub struct KeyConfig {
    source: berth_secrets::KeySource,
    env_value: Option<zeroize::Zeroizing<String>>,
}

/// Reads the master key settings from the environment and takes `BERTH_MASTER_KEY` out of
/// it, so no app instance or build command (which inherit berth's environment) ever sees it.
/// Runs before the runtime starts any thread: changing the environment is only sound then.
fn take_master_key_env(data_dir: &std::path::Path) -> KeyConfig {
    let env_value = std::env::var(berth_secrets::ENV_KEY)
        .ok()
        .map(zeroize::Zeroizing::new);
    if std::env::var_os(berth_secrets::ENV_KEY).is_some() {
        // SAFETY: berth is still single-threaded here (no runtime, no other thread yet).
        unsafe { std::env::remove_var(berth_secrets::ENV_KEY) };
    }
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let key_file = std::env::var_os(berth_secrets::ENV_KEY_FILE).map(PathBuf::from);
    let source = berth_secrets::KeySource::locate(
        env_value.is_some(),
        credentials.as_deref(),
        key_file.as_deref(),
        data_dir,
    );
    KeyConfig { source, env_value }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn access_log_target(cfg: &AccessLog) -> anyhow::Result<AccessLogTarget> {
    Ok(match cfg {
        AccessLog::Off => AccessLogTarget::Off,
        AccessLog::Stdout => AccessLogTarget::Writer(Box::new(std::io::stdout())),
        AccessLog::File(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening access log {}", p.display()))?;
            AccessLogTarget::Writer(Box::new(f))
        }
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// What the admin listener and the signal handlers share.
pub struct Server {
    pub path: PathBuf,
    pub edge: Edge,
    pub registry: Registry,
    /// The configuration in force; reloads are serialised on this lock.
    pub current: Mutex<Config>,
    /// The routing table's two halves: the file's and the apps'.
    pub routes: crate::apps_edge::Routes,
    reloads: Family<ResultLabels, Counter>,
}

pub enum ReloadOutcome {
    Applied { warnings: Vec<String> },
    Refused(String),
}

impl Server {
    pub async fn reload(&self) -> ReloadOutcome {
        let mut current = self.current.lock().await;
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || berth_config::load(&path)).await;
        let next = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.reloads
                    .get_or_create(&ResultLabels { result: "refused" })
                    .inc();
                tracing::error!("reload refused, the running configuration stays:\n{e}");
                return ReloadOutcome::Refused(e.to_string());
            }
            Err(e) => return ReloadOutcome::Refused(format!("reload task failed: {e}")),
        };
        let mut warnings = self.routes.set_file(next.edge.clone());
        let report = self.routes.apply(&self.edge);
        if report.listeners_changed {
            warnings.push("server.listen or server.tls_listen changed: listeners are never re-bound live; restart berth to apply it".to_owned());
        }
        warnings.extend(report.warnings);
        // --database-url may override the file; that is not a change in the file.
        let mut file_server = next.server.clone();
        file_server.database_url = current.server.database_url.clone();
        if file_server != current.server {
            warnings.push("other [server] settings (admin_listen, workers, access_log, shutdown_timeout) apply at the next restart".to_owned());
        }
        for w in &warnings {
            tracing::warn!("{w}");
        }
        self.reloads
            .get_or_create(&ResultLabels { result: "applied" })
            .inc();
        tracing::info!(
            routes = next.edge.routes.len(),
            groups = next.edge.groups.len(),
            "configuration reloaded"
        );
        // The [server] section that is running stays; only the edge part was applied.
        let server = current.server.clone();
        *current = next;
        current.server = server;
        ReloadOutcome::Applied { warnings }
    }
}

type Started = Result<(Edge, Vec<std::net::SocketAddr>), berth_edge::EdgeError>;

/// Builds the edge (routing table, certificates) and binds its plain and TLS listeners, on
/// the data plane's runtime, where its tasks then run; the registry goes there and back.
async fn start_edge(
    data_plane: &tokio::runtime::Handle,
    spec: berth_edge::spec::EdgeSpec,
    mut registry: Registry,
    log: AccessLogTarget,
) -> anyhow::Result<(Started, Registry)> {
    data_plane
        .spawn(async move {
            let started = async {
                let mut edge = Edge::new(&spec, &mut registry, log)?;
                let mut bound = edge.listen(&spec.listeners).await?;
                bound.extend(edge.listen_tls(&spec.tls.listeners).await?);
                Ok((edge, bound))
            }
            .await;
            (started, registry)
        })
        .await
        .context("starting the edge")
}

async fn serve(
    path: PathBuf,
    config: Config,
    key: KeyConfig,
    data_plane: tokio::runtime::Handle,
) -> anyhow::Result<ExitCode> {
    // State first: a store that cannot be opened must stop berth before it takes traffic.
    let state = match state::open(&config.server).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth: {e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut registry = Registry::default();
    let reloads = Family::<ResultLabels, Counter>::default();
    registry.register(
        "berth_config_reloads",
        "Configuration reloads, by result (applied, refused)",
        reloads.clone(),
    );
    let api_metrics = berth_api::register_metrics(&mut registry);
    let app_metrics = berth_deploy::AppMetrics::register(&mut registry);
    let log = access_log_target(&config.server.access_log)?;
    let (started, registry) = start_edge(&data_plane, config.edge.clone(), registry, log).await?;
    let (edge, bound) = match started {
        Ok(b) => b,
        Err(e) => {
            eprintln!("berth: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let admin_listener = tokio::net::TcpListener::bind(config.server.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on server.admin_listen {} (is another process using the port?)",
                config.server.admin_listen
            )
        })?;
    let shutdown_timeout = config.server.shutdown_timeout;
    let admin_socket = config.server.admin_socket.clone();
    let audit_retention = config.server.audit_retention;
    let policy = berth_api::AccessPolicy {
        restricted_networks: config.server.admin_networks.clone(),
        ..Default::default()
    };
    tracing::info!(
        listen = ?bound,
        admin = %config.server.admin_listen,
        data_dir = %config.server.data_dir.display(),
        store = state.store.dialect(),
        routes = config.edge.routes.len(),
        "berth is serving"
    );
    let data_dir = config.server.data_dir.clone();
    let server = Arc::new(Server {
        path,
        edge,
        registry,
        routes: crate::apps_edge::Routes::new(config.edge.clone()),
        current: Mutex::new(config),
        reloads,
    });
    let vault = berth_deploy::Vault::open(state.store.clone(), key.source, key.env_value).await;
    match vault.status().await {
        Ok(k) => {
            tracing::info!(key_id = %k.key_id, source = %k.source, created = k.created, "secrets: master key loaded")
        }
        // berth still serves (apps without secrets too); every secrets action says why.
        Err(e) => tracing::error!("{e}"),
    }
    let deployer = berth_deploy::Deployer::new(
        state.store.clone(),
        berth_deploy::Layout { data_dir },
        Arc::new(crate::apps_edge::EdgePublisher(server.clone())),
        app_metrics,
        vault,
    );
    // Apps come back before the admin API answers, so a deploy cannot race the restore.
    match deployer.restore().await {
        Ok(r) => tracing::info!(
            apps = r.apps.len(),
            killed_stale = r.killed.len(),
            lost_instances = r.lost_instances,
            interrupted_deployments = r.interrupted_deployments,
            "apps restored"
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not restore apps; they start with the next deploy")
        }
    }
    let audit_store = state.store.clone();
    tokio::spawn(state::audit_retention(
        state.store.clone(),
        state.checkpoint_key.clone(),
        audit_retention,
    ));
    let api = berth_api::router(berth_api::ApiState {
        store: state.store,
        policy,
        checkpoint_key: state.checkpoint_key,
        control: Arc::new(admin::Control(server.clone())),
        metrics: api_metrics,
        deployer: Some(deployer.clone()),
    });
    let app = admin::router(api);
    let (admin_stop, _) = tokio::sync::watch::channel(false);
    let stopped = |rx: tokio::sync::watch::Receiver<bool>| async move {
        let mut rx = rx;
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut admin_tasks = Vec::new();
    // The socket first: once the TCP listener answers /ready, both are there.
    if let Some(sock) = admin_socket {
        match berth_api::UnixAdmin::bind(&sock) {
            Ok(unix) => {
                let (unix_app, rx) = (app.clone(), admin_stop.subscribe());
                admin_tasks.push(tokio::spawn(async move {
                    if let Err(e) = unix.serve(unix_app, stopped(rx)).await {
                        tracing::error!(socket = %sock.display(), error = %e, "admin socket failed");
                    }
                }));
            }
            Err(e) => {
                tracing::error!(socket = %sock.display(), error = %e, "admin socket failed")
            }
        }
    }
    let tcp = berth_api::serve_tcp(admin_listener, app, stopped(admin_stop.subscribe()));
    admin_tasks.push(tokio::spawn(async move {
        if let Err(e) = tcp.await {
            tracing::error!(error = %e, "admin listener failed");
        }
    }));

    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: re-reading {}", server.path.display());
                let outcome = server.reload().await;
                audit_signal_reload(&audit_store, &outcome).await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(
        open_connections = server.edge.open_connections(),
        timeout_s = shutdown_timeout.as_secs_f64(),
        "shutting down: draining in-flight requests"
    );
    let _ = admin_stop.send(true);
    if server.edge.shutdown(shutdown_timeout).await {
        tracing::info!("drained; stopping apps");
    } else {
        tracing::warn!(
            open_connections = server.edge.open_connections(),
            "shutdown timeout reached; closing remaining connections"
        );
    }
    // After the edge: no request can reach an instance any more.
    deployer.shutdown().await;
    // The admin listeners stopped with the edge and told their streams (deployment events,
    // followed logs) to end; let them close those cleanly rather than cut them at exit. A
    // request that is still waiting (a deploy's answer) is not waited for beyond the grace.
    let grace = tokio::time::Instant::now() + ADMIN_CLOSE_GRACE;
    for task in admin_tasks {
        let _ = tokio::time::timeout_at(grace, task).await;
    }
    tracing::info!("apps stopped; exiting");
    Ok(ExitCode::SUCCESS)
}

/// A reload by signal has no token behind it, but it still changed what runs: it is recorded
/// as the system acting on a local signal, like reloads through the API are.
async fn audit_signal_reload(store: &berth_store::Store, outcome: &ReloadOutcome) {
    let actor = berth_store::Actor::new("system", "system", "signal:SIGHUP");
    let entry = match outcome {
        ReloadOutcome::Applied { warnings } => berth_store::NewAuditEntry::new(
            &actor,
            "config.reload",
            "config",
            serde_json::json!({ "warnings": warnings.len() }),
        ),
        ReloadOutcome::Refused(_) => berth_store::NewAuditEntry::new(
            &actor,
            "config.reload",
            "config",
            serde_json::json!({}),
        )
        .with_outcome("error: invalid_config"),
    };
    if let Err(e) = store.audit_record(entry).await {
        tracing::error!(error = %e, "could not record the SIGHUP reload in the audit log");
    }
}
