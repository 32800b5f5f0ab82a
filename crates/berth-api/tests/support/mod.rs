//! Shared by the integration tests: a store (SQLite file or PostgreSQL), the API served on
//! real sockets (one listener inside the restricted networks, one outside), users of every
//! role with tokens, and a small HTTP client.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::{AccessPolicy, ApiMetrics, ApiState, Control, register_metrics, router};
use berth_store::testing::TempPostgres;
use berth_store::{Actor, Grant, Store};
use futures_util::future::BoxFuture;
use prometheus_client::registry::Registry;
use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// 32 bytes, as berth generates for the retention checkpoint key.
pub const KEY: &[u8] = b"test checkpoint key, 32 bytes..!";

/// What `POST /reload` answers: `Ok(warnings)` or `Err(diagnostics)`.
#[derive(Default)]
pub struct FakeControl {
    pub next: Mutex<Option<Result<Vec<String>, String>>>,
    pub calls: Mutex<u32>,
}

impl Control for FakeControl {
    fn reload(&self) -> BoxFuture<'static, Result<Vec<String>, String>> {
        *self.calls.lock().unwrap() += 1;
        let answer = self.next.lock().unwrap().clone().unwrap_or(Ok(Vec::new()));
        Box::pin(async move { answer })
    }

    fn metrics(&self) -> String {
        "# TYPE fake_metric counter\nfake_metric_total 1\n# EOF\n".to_owned()
    }
}

/// The API on a TCP listener on 127.0.0.1.
pub struct Server {
    pub base: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(state: ApiState) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(berth_api::serve_tcp(listener, router(state), async move {
            let _ = rx.await;
        }));
        Server {
            base,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("serve_tcp");
        }
    }
}

/// A user with a token.
#[derive(Clone, Debug)]
pub struct Person {
    pub name: String,
    pub token: String,
}

pub struct Harness {
    pub store: Store,
    pub backend: Backend,
    pub url: String,
    pub sqlite_path: Option<PathBuf>,
    pub control: Arc<FakeControl>,
    pub metrics: ApiMetrics,
    pub registry: Registry,
    /// Restricted to 127.0.0.0/8: the test client is inside.
    pub inside: Server,
    /// Restricted to 10.0.0.0/8: the test client (127.0.0.1) is outside.
    pub outside: Server,
    pub client: reqwest::Client,
    _dir: Option<TempDir>,
}

pub fn policy(networks: &[&str], max_auth_failures: u32) -> AccessPolicy {
    AccessPolicy {
        restricted_networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
        max_auth_failures,
        failure_window: Duration::from_secs(60),
    }
}

impl Harness {
    /// A fresh store and two servers on it. `max_auth_failures` applies to both.
    pub async fn new(backend: Backend, max_auth_failures: u32) -> Harness {
        let (store, url, sqlite_path, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("berth.db");
                let url = format!("sqlite://{}", path.display());
                let store = Store::open(&url).await.expect("open SQLite store");
                (store, url, Some(path), Some(dir))
            }
            Backend::Postgres => {
                let url = TempPostgres::fresh_database().await;
                let store = Store::open(&url).await.expect("open PostgreSQL store");
                (store, url, None, None)
            }
        };
        let mut registry = Registry::default();
        let metrics = register_metrics(&mut registry);
        let control = Arc::new(FakeControl::default());
        let state = |networks: &[&str]| ApiState {
            store: store.clone(),
            policy: policy(networks, max_auth_failures),
            checkpoint_key: Arc::from(KEY),
            control: control.clone(),
            deployer: None,
            metrics: metrics.clone(),
        };
        let inside = Server::start(state(&["127.0.0.0/8"])).await;
        let outside = Server::start(state(&["10.0.0.0/8"])).await;
        Harness {
            store,
            backend,
            url,
            sqlite_path,
            control,
            metrics,
            registry,
            inside,
            outside,
            client: client(),
            _dir: dir,
        }
    }

    /// The API state the harness's servers use, with another policy (for serving it some
    /// other way).
    pub fn state(&self, policy: AccessPolicy) -> ApiState {
        ApiState {
            store: self.store.clone(),
            policy,
            checkpoint_key: Arc::from(KEY),
            control: self.control.clone(),
            deployer: None,
            metrics: self.metrics.clone(),
        }
    }

    /// Adds a user with `grants` and a token for it (as berth itself, bypassing the API).
    pub async fn person(&self, name: &str, grants: &[&str]) -> Person {
        let grants: Vec<Grant> = grants.iter().map(|g| g.parse().unwrap()).collect();
        self.store
            .add_user(&Actor::system(), name, &grants)
            .await
            .expect("add user");
        let (_, token) = self
            .store
            .create_token(&Actor::system(), name, "test")
            .await
            .expect("create token");
        Person {
            name: name.to_owned(),
            token,
        }
    }

    /// Requests with `token` (or none) to the server inside the restricted networks.
    pub fn inside_as<'a>(&'a self, token: Option<&'a str>) -> As<'a> {
        As::new(&self.client, &self.inside.base, token)
    }

    /// Requests with `token` (or none) to the server outside the restricted networks.
    pub fn outside_as<'a>(&'a self, token: Option<&'a str>) -> As<'a> {
        As::new(&self.client, &self.outside.base, token)
    }

    pub async fn admin(&self) -> Person {
        self.person("root", &["admin@*"]).await
    }

    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    /// Every column of every audit row as text, read with SQL of its own (not through the
    /// store), plus for SQLite the raw bytes of the database and WAL files.
    pub async fn raw_audit_dump(&self) -> String {
        use sqlx::Connection as _;
        let sql = "SELECT CAST(seq AS TEXT) || '|' || CAST(time_ms AS TEXT) || '|' || actor \
                   || '|' || role || '|' || source || '|' || action || '|' || target || '|' \
                   || params || '|' || outcome || '|' || prev_hash || '|' || hash \
                   FROM audit_log ORDER BY seq";
        let rows: Vec<String> = match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
        };
        let mut out = rows.join("\n");
        if let Some(path) = &self.sqlite_path {
            out.push_str(&berth_store::testing::sqlite_file_text(path));
        }
        out
    }

    /// Runs raw SQL on the store's database (for tampering).
    pub async fn exec(&self, sql: &'static str) {
        use sqlx::Connection as _;
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    pub async fn stop(self) {
        self.inside.stop().await;
        self.outside.stop().await;
        self.store.close().await;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An answer: status, JSON body (`Null` when empty), headers.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// On a 400, the request field at fault.
    pub fn field(&self) -> Option<&str> {
        self.body["field"].as_str()
    }
}

/// One caller of one server: requests to `base` with `token` as bearer token (or none).
#[derive(Clone, Copy)]
pub struct As<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    token: Option<&'a str>,
}

impl<'a> As<'a> {
    pub fn new(client: &'a reqwest::Client, base: &'a str, token: Option<&'a str>) -> As<'a> {
        As {
            client,
            base,
            token,
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        call(self.client, self.base, method, path, self.token, body).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    /// `POST` with `body` as JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `POST` without a body.
    pub async fn post_empty(&self, path: &str) -> Answer {
        self.send(Method::POST, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None).await
    }
}

/// Sends one request to `base` + `path`, with `token` as bearer token and `body` as JSON.
pub async fn call(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = if bytes.is_empty() {
        Value::Null
    } else if !is_json {
        // Metrics are text; everything else must be JSON.
        Value::String(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("non-JSON answer ({e}): {}", String::from_utf8_lossy(&bytes))
        })
    };
    Answer {
        status,
        body,
        headers,
    }
}

/// The value of `berth_api_auth_failures_total{reason}` in `text`.
pub fn auth_failures(text: &str, reason: &str) -> u64 {
    let prefix = format!("berth_api_auth_failures_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}
