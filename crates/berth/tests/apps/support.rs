//! What the app tests share: a berth that runs apps, the CLI against it, app directories
//! written on the fly, and requests through the edge by host.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_testkit::{BerthProcess, free_addr};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_berth");

pub struct Berth {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub process: BerthProcess,
    /// Every CLI run against this berth: its arguments and what it printed (the leak scan
    /// reads them).
    pub transcript: std::sync::Mutex<Vec<(Vec<String>, Ran)>>,
}

fn config(listen: SocketAddr, admin: SocketAddr, data_dir: &Path, access_log: bool) -> String {
    let access_log = if access_log {
        data_dir.join("access.log").display().to_string()
    } else {
        "off".to_owned()
    };
    format!(
        "[server]\nlisten = [\"{listen}\"]\nadmin_listen = \"{admin}\"\ndata_dir = \"{}\"\n\
         workers = 2\nshutdown_timeout = \"10s\"\naccess_log = \"{access_log}\"\n",
        data_dir.display()
    )
}

/// A berth with no routes of its own, keeping its state in `data_dir`.
pub async fn start_in(data_dir: &Path) -> Berth {
    start_with(data_dir, &[]).await
}

/// [`start_in`] with these environment variables set for berth.
pub async fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Berth {
    launch(data_dir, env, false).await
}

/// [`start_with`], writing the edge's access log to `access.log` in the data directory.
#[allow(dead_code)]
pub async fn start_logged(data_dir: &Path, env: &[(&str, &str)]) -> Berth {
    launch(data_dir, env, true).await
}

async fn launch(data_dir: &Path, env: &[(&str, &str)], access_log: bool) -> Berth {
    let mut last = String::new();
    for _ in 0..3 {
        let (listen, admin) = (free_addr(), free_addr());
        let mut builder = BerthProcess::builder(BIN)
            .config_toml(config(listen, admin, data_dir, access_log))
            .admin_addr(admin)
            .ready_timeout(Duration::from_secs(60));
        for (k, v) in env {
            builder = builder.env(*k, *v);
        }
        match builder.start().await {
            Ok(process) => {
                return Berth {
                    listen,
                    admin,
                    data_dir: data_dir.to_owned(),
                    process,
                    transcript: Default::default(),
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

/// A berth with a fresh data directory (inside `keep`, which the caller holds).
pub async fn start(keep: &tempfile::TempDir) -> Berth {
    start_in(&keep.path().join("data")).await
}

/// What a CLI run printed.
#[derive(Debug, Clone)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs the CLI against the berth whose admin API is at `admin`, with `token` and `input` on
/// its standard input (none: /dev/null).
pub fn run_cli(admin: SocketAddr, token: &str, args: &[&str], input: Option<&[u8]>) -> Ran {
    let mut cmd = cli_command(admin, token, args);
    // Deploys build and wait for health: generous, but a hang still fails.
    let limit = Duration::from_secs(180);
    let out = match input {
        None => crate::shared::run_bounded(&mut cmd, limit),
        Some(bytes) => crate::shared::run_bounded_with_input(&mut cmd, bytes, limit),
    };
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The CLI with these arguments against the berth whose admin API is at `admin`, as the
/// holder of `token` (and no saved login), not started.
pub fn cli_command(admin: SocketAddr, token: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("BERTH_REMOTE", format!("http://{admin}"))
        .env("BERTH_TOKEN", token)
        .env(
            "BERTH_CREDENTIALS",
            "/nonexistent/berth-test-credentials.json",
        );
    cmd
}

/// A user of `b` with these grants, and a token for it.
pub fn user(b: &Berth, name: &str, grants: &[&str]) -> String {
    let mut args = vec!["users", "add", name];
    for g in grants {
        args.push("--grant");
        args.push(g);
    }
    b.cli(&args).ok();
    let t = b
        .cli(&["tokens", "create", "--user", name, "--json"])
        .ok()
        .json();
    t["token"].as_str().unwrap().to_owned()
}

impl Berth {
    pub fn token(&self) -> String {
        let path = self.data_dir.join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// Runs the CLI against this berth with `token`.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Ran {
        self.cli_input(token, args, None)
    }

    /// Runs the CLI against this berth with `token`, `input` on its standard input (none:
    /// /dev/null).
    pub fn cli_input(&self, token: &str, args: &[&str], input: Option<&[u8]>) -> Ran {
        let ran = run_cli(self.admin, token, args, input);
        self.transcript
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((args.iter().map(|a| a.to_string()).collect(), ran.clone()));
        ran
    }

    /// Runs the CLI against this berth as its first admin.
    pub fn cli(&self, args: &[&str]) -> Ran {
        self.cli_as(&self.token(), args)
    }

    pub fn deploy(&self, dir: &Path) -> Ran {
        self.cli(&["deploy", &dir.to_string_lossy()])
    }

    pub fn ps(&self, app: &str) -> Value {
        self.cli(&["ps", app, "--json"]).ok().json()
    }

    /// A GET through the edge with this Host header: (status, body).
    pub async fn get(&self, host: &str, path: &str) -> (u16, String) {
        let r = client()
            .get(format!("http://{}{path}", self.listen))
            .header("host", host)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"));
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }
}

pub fn client() -> reqwest::Client {
    crate::shared::client(Duration::from_secs(60))
}

/// An app directory with these files (paths relative to it).
pub fn app_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(dir.path(), files);
    dir
}

pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("dirs");
        }
        std::fs::write(&p, text).expect("file written");
    }
}

/// A web server in one line of Python (stdlib only): serves the app directory's files, so
/// a file named `health` makes `/health` answer 200 and `version` says which release this is.
pub const PY_WEB: &str = "exec python3 -m http.server $PORT --bind 127.0.0.1";

/// A `berth.toml` for app `name` on host `<name>.test` with these extra lines.
pub fn spec(name: &str, processes: &str) -> String {
    format!(
        "name = \"{name}\"\nhosts = [\"{name}.test\"]\n\n[deploy]\ntimeout = \"30s\"\ndrain_timeout = \"5s\"\n\n{processes}\n"
    )
}

/// A static web app: `instances` web processes answering `/version` with `version`.
pub fn web_app(name: &str, version: &str, instances: u32) -> tempfile::TempDir {
    static_app(name, version, instances, PY_WEB, &[])
}

/// [`web_app`] served over HTTP/1.1 keep-alive (the one-line server is HTTP/1.0: the edge
/// cannot keep a connection to it).
pub fn keep_alive_web_app(name: &str, version: &str, instances: u32) -> tempfile::TempDir {
    const SERVER: &str = "import http.server, os\n\
        class H(http.server.SimpleHTTPRequestHandler):\n    protocol_version = 'HTTP/1.1'\n\
        http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n";
    static_app(
        name,
        version,
        instances,
        "exec python3 serve.py",
        &[("serve.py", SERVER)],
    )
}

fn static_app(
    name: &str,
    version: &str,
    instances: u32,
    command: &str,
    extra: &[(&str, &str)],
) -> tempfile::TempDir {
    let toml = spec(
        name,
        &format!(
            "[processes.web]\ncommand = \"{command}\"\ninstances = {instances}\n\
             stop_timeout = \"5s\"\n[processes.web.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\
             start_timeout = \"20s\"\n"
        ),
    );
    let mut files = vec![
        ("berth.toml", toml.as_str()),
        ("health", "ok\n"),
        ("version", version),
    ];
    files.extend_from_slice(extra);
    app_dir(&files)
}

pub use crate::shared::eventually;

/// A process's nice value; `"self"` for this test's own.
pub fn nice_of(pid: &str) -> i32 {
    crate::shared::name_and_nice(&format!("/proc/{pid}/stat"))
        .expect("the process is there")
        .1
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    state != Some("Z")
}

/// The pids of an app's instances as `berth ps` reports them.
pub fn pids(ps: &Value) -> Vec<i64> {
    ps["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["pid"].as_i64())
        .collect()
}

/// Every descendant of `pid` (children, grandchildren, …), from /proc.
pub fn descendants(pid: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            break;
        };
        for e in entries.flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<i64>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().nth(1))
                .and_then(|s| s.parse::<i64>().ok());
            if ppid == Some(p) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// Requests to `/version` through the edge for `host`, from `clients` keep-alive clients at
/// about 150 a second each, until [`Load::finish`]: (status, body) of each, 0 for an error.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(u16, String)>>>,
}

impl Load {
    pub fn start(b: &Berth, host: &str, clients: usize) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (flag, listen, host) = (stop.clone(), b.listen, host.to_owned());
                tokio::spawn(async move {
                    let c = client();
                    let mut seen = Vec::new();
                    while !flag.load(Ordering::Relaxed) {
                        let r = c
                            .get(format!("http://{listen}/version"))
                            .header("host", &host)
                            .send()
                            .await;
                        seen.push(match r {
                            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                            Err(e) => (0, e.to_string()),
                        });
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    seen
                })
            })
            .collect();
        Load { stop, tasks }
    }

    pub async fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut seen = Vec::new();
        for task in self.tasks {
            seen.extend(task.await.expect("load task"));
        }
        seen
    }
}
