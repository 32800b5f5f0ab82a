//! berth's admin API: HTTP JSON under `/api/v1`, served by the `berth` binary on its
//! loopback admin listener ([`serve_tcp`]) and on a Unix socket ([`serve_unix`]).
//!
//! Every request carries a bearer token (`Authorization: Bearer berth_…`); the health
//! endpoints are the binary's own and are not part of this router. What a request may do is
//! decided by the token's user's grants (`admin` ⊃ `deployer` ⊃ `viewer`, per environment or
//! on `*`), by where it comes from (an optional list of networks for admin and deployer
//! actions) and by how many failed authentications its address has had recently. Every
//! mutating request is audited: changes in the same transaction as the change, refusals
//! (`denied`) and failures (`error: CODE`) on their own. docs/api.md is the reference.
//!
//! The parts, a file each: `auth` (token → caller, throttling, auditing of attempts),
//! `policy` (who may do what from where), `throttle` (the pure failure limiter), `routes/`
//! (one file per resource, and the table of endpoints that the router and [`openapi()`] are
//! both built from), `error` (one error type, one JSON shape), `metrics`, `serve`
//! (listeners).

mod auth;
mod error;
mod metrics;
mod openapi;
mod policy;
mod routes;
mod serve;
mod throttle;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

pub use metrics::{ApiMetrics, register_metrics};
pub use openapi::openapi;
pub use serve::{UnixAdmin, serve_tcp, serve_unix};

/// Everything the API needs from the rest of berth.
#[derive(Clone)]
pub struct ApiState {
    pub store: berth_store::Store,
    pub policy: AccessPolicy,
    /// The key retention checkpoints are signed with (kept outside the database; at least
    /// [`berth_store::MIN_CHECKPOINT_KEY_LEN`] bytes).
    pub checkpoint_key: Arc<[u8]>,
    pub control: Arc<dyn Control>,
    pub metrics: ApiMetrics,
    /// Runs apps (deploy, ps, logs); `None` on a server that only proxies, where those
    /// endpoints answer 503.
    pub deployer: Option<Arc<berth_deploy::Deployer>>,
}

/// Who may do what from where, beyond roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Requests that need the admin or deployer role are refused (403 `network_denied`)
    /// from client addresses outside these networks. Empty: no restriction. Requests over
    /// the Unix socket count as inside.
    pub restricted_networks: Vec<ipnet::IpNet>,
    /// After this many failed authentications from one address within `failure_window`,
    /// every request from it gets 429 until the window has passed.
    pub max_auth_failures: u32,
    pub failure_window: Duration,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        AccessPolicy {
            restricted_networks: Vec::new(),
            max_auth_failures: 10,
            failure_window: Duration::from_secs(60),
        }
    }
}

/// What the API asks of the running server.
pub trait Control: Send + Sync + 'static {
    /// Re-reads and applies the configuration file: `Ok(warnings)` when applied, `Err` with
    /// the `file:line:col` diagnostics when refused (the old configuration keeps serving).
    fn reload(&self) -> BoxFuture<'static, Result<Vec<String>, String>>;
    /// The server's Prometheus metrics as OpenMetrics text.
    fn metrics(&self) -> String;
}

/// Where a request came from. [`serve_tcp`] and [`serve_unix`] insert it as a request
/// extension; code that serves [`router`] some other way must insert it too (requests
/// without it are refused with 500, never treated as local).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    Ip(IpAddr),
    /// The Unix socket: local, inside every restricted network, not throttled.
    Unix,
}

impl ClientSource {
    /// How the audit log names the source: the IP address, or `local`.
    pub(crate) fn audit_name(&self) -> String {
        match self {
            ClientSource::Ip(ip) => ip.to_canonical().to_string(),
            ClientSource::Unix => "local".to_owned(),
        }
    }
}

/// State shared by every request: the caller's [`ApiState`] and the limiter.
#[derive(Clone)]
pub(crate) struct Shared(Arc<SharedInner>);

pub(crate) struct SharedInner {
    pub api: ApiState,
    /// Held only for a map update, never across an await.
    pub limiter: Mutex<throttle::Limiter>,
}

impl std::ops::Deref for Shared {
    type Target = SharedInner;

    fn deref(&self) -> &SharedInner {
        &self.0
    }
}

/// The `/api/v1` routes. Serve it with [`serve_tcp`] / [`serve_unix`] (or insert a
/// [`ClientSource`] extension into every request yourself).
pub fn router(state: ApiState) -> axum::Router {
    let limiter = throttle::Limiter::new(
        state.policy.max_auth_failures,
        state.policy.failure_window,
        throttle::MAX_TRACKED_SOURCES,
    );
    routes::router(Shared(Arc::new(SharedInner {
        api: state,
        limiter: Mutex::new(limiter),
    })))
}
