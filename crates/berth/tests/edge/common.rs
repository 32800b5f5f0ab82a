//! What every edge test needs: ports, a config around a route table, a started berth and a
//! few clients.

use std::net::SocketAddr;
use std::time::Duration;

use berth_testkit::{BerthProcess, free_addr};

pub const BIN: &str = env!("CARGO_BIN_EXE_berth");

pub struct Env {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub berth: BerthProcess,
}

/// Edge worker threads in every test's berth, unless a test asks for another number.
const WORKERS: usize = 2;

pub fn server_section(listen: SocketAddr, admin: SocketAddr, extra: &str) -> String {
    server_section_workers(listen, admin, WORKERS, extra)
}

fn server_section_workers(
    listen: SocketAddr,
    admin: SocketAddr,
    workers: usize,
    extra: &str,
) -> String {
    format!(
        "[server]\nlisten = [\"{listen}\"]\nadmin_listen = \"{admin}\"\ndata_dir = \"data\"\nworkers = {workers}\nshutdown_timeout = \"10s\"\n{extra}\n"
    )
}

/// A single route `app` for every host, to a group `app` with these upstreams.
pub fn simple(upstreams: &[SocketAddr], route_extra: &str, group_extra: &str) -> String {
    let ups: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[route]]\nname = \"app\"\nhosts = [\"*\"]\ngroup = \"app\"\n{route_extra}\n\n[group.app]\nupstreams = [{}]\n{group_extra}\n",
        ups.join(", ")
    )
}

pub async fn start(body: &str) -> Env {
    start_with(body, "").await
}

pub async fn start_with(body: &str, server_extra: &str) -> Env {
    start_with_args(body, server_extra, &[]).await
}

pub async fn start_with_args(body: &str, server_extra: &str, args: &[String]) -> Env {
    start_full(body, server_extra, args, WORKERS).await
}

pub async fn start_workers(body: &str, workers: usize) -> Env {
    start_full(body, "", &[], workers).await
}

async fn start_full(body: &str, server_extra: &str, args: &[String], workers: usize) -> Env {
    // A free port can be taken by a parallel test between being picked and being bound;
    // only that case is retried, with new ports.
    let mut last = String::new();
    for _ in 0..3 {
        let listen = free_addr();
        let admin = free_addr();
        let toml = format!(
            "{}{}",
            server_section_workers(listen, admin, workers, server_extra),
            body
        );
        match BerthProcess::builder(BIN)
            .config_toml(toml)
            .admin_addr(admin)
            .args(args)
            .start()
            .await
        {
            Ok(berth) => {
                return Env {
                    listen,
                    admin,
                    berth,
                };
            }
            Err(e) => {
                last = format!("{e:?}");
                if !last.contains("cannot listen on") {
                    break;
                }
            }
        }
    }
    panic!("berth did not start: {last}");
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// Rewrites the config (same listeners) with a new route table.
    pub fn write_body(&self, body: &str) {
        let toml = format!("{}{}", server_section(self.listen, self.admin, ""), body);
        self.berth.write_config(toml).expect("config written");
    }

    /// The first admin's token, written by berth into its data directory at bootstrap.
    pub fn token(&self) -> String {
        let path = self.berth.dir().join("data").join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// An admin API request with the admin token.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        client()
            .request(method, format!("http://{}{path}", self.admin))
            .bearer_auth(self.token())
    }

    pub async fn metrics(&self) -> String {
        let r = self
            .api(reqwest::Method::GET, "/api/v1/metrics")
            .send()
            .await
            .expect("metrics answer");
        assert_eq!(r.status(), 200, "metrics need a token");
        r.text().await.expect("metrics text")
    }

    /// Sum of every sample whose line starts with `prefix` (a name plus optional labels).
    pub async fn metric(&self, prefix: &str) -> f64 {
        metric_sum(&self.metrics().await, prefix)
    }

    /// `berth_rejections_total` for `route` and `reason`.
    pub async fn rejections(&self, route: &str, reason: &str) -> f64 {
        self.metric(&format!(
            "berth_rejections_total{{route=\"{route}\",reason=\"{reason}\"}}"
        ))
        .await
    }

    /// A GET of `path` through the edge with these headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = client().get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("answer")
    }

    pub async fn access_log(&self, min_lines: usize) -> Vec<serde_json::Value> {
        eventually(Duration::from_secs(5), || async {
            self.berth.stdout_lines().len() >= min_lines
        })
        .await;
        self.berth
            .stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

pub fn client() -> reqwest::Client {
    crate::shared::client(Duration::from_secs(20))
}

pub use crate::shared::eventually;

/// An address where nothing listens: tests bind only 127.0.0.1, so 127.0.0.2 stays refused
/// even if another test takes the port on 127.0.0.1.
pub fn dead_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 2], berth_testkit::free_port()))
}
