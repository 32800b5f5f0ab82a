//! berth's edge: the data plane every request goes through.
//!
//! [`Edge`] serves an [`spec::EdgeSpec`]: bind the listeners once, then [`Edge::apply`] any
//! number of new specs (file reloads, the supervisor adding instances, the deployer moving
//! weights) without dropping a request. Decision logic lives in [`balance`] and [`health`] and
//! is pure; the request lifecycle is in `proxy/`, a file per phase. TLS termination and
//! certificates are in [`tls`]. Route policies have a module each: `rate_limit`, `client_ip`
//! (trusted proxies), `proxy_protocol`, `compress` and `static_files`.

pub mod access_log;
pub mod balance;
mod body;
mod checker;
mod client_ip;
mod compress;
mod conn_watch;
pub mod error;
mod exchange;
mod headers;
pub mod health;
pub mod metrics;
mod proxy;
mod proxy_protocol;
mod rate_limit;
mod retire;
mod select;
mod server;
pub mod spec;
mod static_files;
pub mod stats;
mod table;
pub mod tls;
mod upstream;
mod warm;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::metrics::EdgeMetrics;
use crate::proxy::Shared;
use crate::server::Connections;
use crate::spec::EdgeSpec;
/// How a route's path prefix matches a request path; the config checks paths with it too.
pub use crate::table::prefix_matches;
use crate::table::{Carry, Table};
use crate::tls::{Tls, TlsError};
pub use crate::warm::{WARM_TIMEOUT, Warm};

/// Where access-log lines go.
pub enum AccessLogTarget {
    Off,
    Writer(Box<dyn Write + Send>),
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

pub struct Edge {
    shared: Arc<Shared>,
    carry: Carry,
    conns: Arc<Connections>,
    shutdown: watch::Sender<bool>,
    bound: Vec<SocketAddr>,
    bound_tls: Vec<SocketAddr>,
    /// The runtime the edge was built in: its listeners and health checks run there, whichever
    /// runtime later applies a table, so the control plane's work never runs between requests.
    runtime: tokio::runtime::Handle,
}

impl Edge {
    /// Builds the first routing table, installs the certificates and registers metrics. Must
    /// run inside the tokio runtime that is to carry the data plane: the listeners, health
    /// checks and the certificate watcher run there.
    /// Fails when a development certificate cannot be issued.
    pub fn new(
        spec: &EdgeSpec,
        registry: &mut Registry,
        log: AccessLogTarget,
    ) -> Result<Edge, EdgeError> {
        let metrics = EdgeMetrics::new(registry);
        let plain_port = spec.listeners.first().map(|a| a.port());
        let tls = Tls::new(&spec.tls, plain_port, registry)?;
        tls.spawn_watcher();
        let carry = Carry::default();
        let table = Table::build(spec, &carry, &metrics);
        let log = match log {
            AccessLogTarget::Off => AccessLog::off(metrics.clone()),
            AccessLogTarget::Writer(w) => AccessLog::to_writer(w, metrics.clone()),
        };
        let (shutdown, _) = watch::channel(false);
        let edge = Edge {
            shared: Arc::new(Shared {
                table: ArcSwap::from_pointee(table),
                metrics,
                log,
                tls,
            }),
            carry,
            conns: Arc::new(Connections::default()),
            shutdown,
            bound: Vec::new(),
            bound_tls: Vec::new(),
            runtime: tokio::runtime::Handle::current(),
        };
        edge.start_checkers();
        edge.retire_series();
        Ok(edge)
    }

    /// Binds every listener of the spec and starts accepting. Fails without serving anything
    /// if any address cannot be bound.
    pub async fn listen(&mut self, addrs: &[SocketAddr]) -> Result<Vec<SocketAddr>, EdgeError> {
        let local = self.bind(addrs, false).await?;
        self.bound = addrs.to_vec();
        Ok(local)
    }

    /// Binds the TLS listeners (`spec.tls.listeners`) and starts accepting; like
    /// [`Edge::listen`], all or nothing. Plain-HTTP requests are redirected to the first one.
    pub async fn listen_tls(&mut self, addrs: &[SocketAddr]) -> Result<Vec<SocketAddr>, EdgeError> {
        let local = self.bind(addrs, true).await?;
        if let Some(first) = local.first() {
            self.shared.tls.set_https_port(first.port());
        }
        self.bound_tls = addrs.to_vec();
        Ok(local)
    }

    async fn bind(&self, addrs: &[SocketAddr], tls: bool) -> Result<Vec<SocketAddr>, EdgeError> {
        let mut listeners = Vec::new();
        for addr in addrs {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| EdgeError::Bind {
                    addr: *addr,
                    source,
                })?;
            listeners.push(l);
        }
        let mut local = Vec::new();
        for l in listeners {
            local.push(l.local_addr().unwrap_or_else(|_| addrs[local.len()]));
            self.runtime.spawn(server::accept_loop(
                l,
                self.shared.clone(),
                self.conns.clone(),
                self.shutdown.subscribe(),
                tls,
            ));
        }
        Ok(local)
    }

    /// Swaps in a new routing table and new certificates. Requests in flight finish on the
    /// table they started on and connections keep the certificate they were opened with;
    /// listeners stay as they are (a changed listener list needs a restart, and is reported).
    pub fn apply(&self, spec: &EdgeSpec) -> ApplyReport {
        let mut warnings = Vec::new();
        if let Err(e) = self.shared.tls.apply(&spec.tls) {
            tracing::error!(error = %e, "certificates not updated; the ones in use stay");
            warnings.push(format!(
                "certificates not updated, the ones in use stay: {e}"
            ));
        }
        let table = Table::build(spec, &self.carry, &self.shared.metrics);
        self.shared.table.store(Arc::new(table));
        self.start_checkers();
        self.retire_series();
        ApplyReport {
            listeners_changed: (!self.bound.is_empty() && spec.listeners != self.bound)
                || (!self.bound_tls.is_empty() && spec.tls.listeners != self.bound_tls),
            warnings,
        }
    }

    /// Opens connections to the instances `spec` would send traffic to, as many as each one's
    /// share of the connections its group's requests used in the last second, so the requests
    /// right after the switch find them idle instead of each opening one. Apply `spec` while the returned [`Warm`]
    /// is held: its instances, and their connections, are carried into that table. Waits at
    /// most `timeout`; the connections run on the edge's runtime whichever runtime awaits.
    pub fn warm(
        &self,
        spec: &EdgeSpec,
        timeout: Duration,
    ) -> impl Future<Output = Warm> + Send + 'static {
        let next = Arc::new(Table::build(spec, &self.carry, &self.shared.metrics));
        let plan = warm::plan(&self.shared.table.load(), &next);
        let opening = (!plan.is_empty()).then(|| self.runtime.spawn(warm::open(plan, timeout)));
        async move {
            let opened = match opening {
                Some(task) => task.await.unwrap_or(0),
                None => 0,
            };
            Warm::new(next, opened)
        }
    }

    /// After a table is stored: series of releases nothing has held for a while go.
    fn retire_series(&self) {
        retire::sweep(&self.shared.metrics, &self.carry, std::time::Instant::now());
    }

    fn start_checkers(&self) {
        let table = self.shared.table.load();
        for up in table.upstreams() {
            if let Some(active) = &up.settings.active
                && up.claim_checker()
            {
                checker::spawn(&self.runtime, up, active.clone());
            }
        }
    }

    /// Requests in flight to `release`'s instances in `group`, including those a new table
    /// dropped: a deploy waits for this to reach zero before it stops the old processes.
    pub fn in_flight(&self, group: &str, release: &str) -> usize {
        self.carry.in_flight(group, release)
    }

    /// Requests, server errors and latency of `release` on `route` since berth started
    /// (`None` before the route has served that release).
    pub fn release_stats(&self, route: &str, release: &str) -> Option<stats::StatsSnapshot> {
        self.shared.metrics.stats.snapshot(route, release)
    }

    pub fn open_connections(&self) -> usize {
        self.conns.live()
    }

    /// Stops accepting, asks every connection to finish its in-flight requests and close, and
    /// waits up to `timeout`. Returns true when every connection closed in time.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(timeout, self.conns.wait_closed())
            .await
            .is_ok()
    }
}

/// What [`Edge::apply`] could not do live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub listeners_changed: bool,
    /// Parts of the spec that were not applied, for the operator.
    pub warnings: Vec<String>,
}

/// A poisoned lock is still used: a panic in one task must not stop the edge from serving,
/// reloading certificates or keeping its metrics.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
