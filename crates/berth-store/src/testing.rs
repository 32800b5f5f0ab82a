//! Test support, behind the `testing` cargo feature: a throwaway PostgreSQL 15 cluster,
//! [`TempPostgres`], so that the PostgreSQL variants of the store's tests and of the crates
//! built on it (the admin API) share one way of getting a database.
//!
//! One cluster per test binary, started on first use, with a fresh database per call.
//! It runs as the `postgres` OS user when the tests run as root (PostgreSQL refuses to run
//! as root), listens on 127.0.0.1 on a free port with its socket in its own directory, and
//! runs with fsync off. It is stopped when the test binary exits: an `atexit` hook sends
//! SIGQUIT (immediate shutdown) and removes the directory, and the server also gets SIGQUIT
//! from the kernel if the test binary dies without running exit hooks (PR_SET_PDEATHSIG).
//!
//! The server binaries are looked up in `/usr/lib/postgresql/15/bin` (Debian's
//! postgresql-15 package, which scripts/test installs) or in `$BERTH_PG_BIN`. When they are
//! missing the tests fail with a message saying so; they are never skipped.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Where Debian's postgresql-15 package puts the server binaries.
const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The test binary's PostgreSQL cluster.
#[derive(Debug)]
pub struct TempPostgres {
    port: u16,
}

static CLUSTER: OnceLock<Result<TempPostgres, String>> = OnceLock::new();
static SERVER_PID: AtomicI32 = AtomicI32::new(0);
static CLUSTER_DIR: OnceLock<PathBuf> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

fn bin_dir() -> PathBuf {
    std::env::var_os("BERTH_PG_BIN").map_or_else(|| PathBuf::from(DEFAULT_BIN), PathBuf::from)
}

impl TempPostgres {
    /// The cluster, started on first call (blocking while it starts). Panics (failing the
    /// test, never skipping it) when PostgreSQL is missing or does not start.
    pub fn get() -> &'static TempPostgres {
        match CLUSTER.get_or_init(start) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    /// The TCP port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates an empty database on the cluster (starting it on first use) and returns its
    /// URL, `postgres://berth@127.0.0.1:PORT/NAME`, for [`crate::Store::open`].
    pub async fn fresh_database() -> String {
        let port = tokio::task::spawn_blocking(|| TempPostgres::get().port)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        create_database(port).await
    }
}

async fn create_database(port: u16) -> String {
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = PgConnection::connect(&format!("postgres://berth@127.0.0.1:{port}/postgres"))
        .await
        .expect("connect to the test cluster");
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    admin.close().await.ok();
    format!("postgres://berth@127.0.0.1:{port}/{name}")
}

fn start() -> Result<TempPostgres, String> {
    let bin = bin_dir();
    for tool in ["initdb", "postgres", "pg_isready"] {
        if !bin.join(tool).exists() {
            return Err(format!(
                "PostgreSQL 15 is not installed ({} not found): the PostgreSQL variants of the \
                 tests need it. Run scripts/test, which installs it (Debian package \
                 postgresql-15), or set BERTH_PG_BIN to a directory holding initdb, postgres and \
                 pg_isready.",
                bin.join(tool).display()
            ));
        }
    }
    // SAFETY: geteuid has no preconditions.
    let owner = if unsafe { libc::geteuid() } == 0 {
        Some(postgres_user()?)
    } else {
        None
    };
    let dir = tempfile::Builder::new()
        .prefix("berth-pg-")
        .tempdir()
        .map_err(|e| format!("test cluster: creating a temporary directory: {e}"))?
        .keep();
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("test cluster: chown {} to postgres: {e}", dir.display()))?;
    }
    let _ = CLUSTER_DIR.set(dir.clone());
    // SAFETY: registering a plain extern "C" function; it only touches atomics, statics set
    // before it runs, and the file system.
    unsafe { libc::atexit(stop_at_exit) };

    let data = dir.join("data");
    let out = as_owner(Command::new(bin.join("initdb")), owner)
        .arg("-D")
        .arg(&data)
        .args([
            "-A",
            "trust",
            "-U",
            "berth",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("test cluster: running initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "test cluster: initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    // The kernel's parent-death signal fires when the *thread* that spawned the child ends,
    // and test threads end after each test; so spawn from a thread that lives as long as
    // the process.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("berth-test-postgres".into())
        .spawn(move || {
            let started = launch(&bin, &dir, &data, owner);
            let ok = started.is_ok();
            let _ = tx.send(started);
            if ok {
                loop {
                    std::thread::park();
                }
            }
        })
        .map_err(|e| format!("test cluster: spawning its thread: {e}"))?;
    rx.recv()
        .map_err(|_| "test cluster: its thread died".to_owned())?
}

fn launch(
    bin: &Path,
    dir: &Path,
    data: &Path,
    owner: Option<(u32, u32)>,
) -> Result<TempPostgres, String> {
    let log_path = dir.join("postgres.log");
    let mut last_error = String::new();
    // A port picked free can be taken before postgres binds it: try a few.
    for _ in 0..5 {
        let port = free_port()?;
        let log = File::create(&log_path).map_err(|e| format!("test cluster: log file: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("test cluster: log file: {e}"))?;
        let mut cmd = as_owner(Command::new(bin.join("postgres")), owner);
        cmd.arg("-D")
            .arg(data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec,
        // after the uid switch (which would otherwise clear the setting).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("test cluster: starting postgres: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last_error = format!(
                    "postgres exited ({status}): {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
                break;
            }
            let ready = Command::new(bin.join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "berth",
                    "-d",
                    "postgres",
                    "-p",
                ])
                .arg(port.to_string())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                SERVER_PID.store(child.id() as i32, Ordering::SeqCst);
                return Ok(TempPostgres { port });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "test cluster: postgres did not accept connections within 30 s: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(format!(
        "test cluster: postgres did not start: {last_error}"
    ))
}

fn as_owner(mut cmd: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        // std drops supplementary groups too when root switches uid.
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn postgres_user() -> Result<(u32, u32), String> {
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at once, before any
    // other call could reuse its static buffer (tests start the cluster once, under a lock).
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if pw.is_null() {
        return Err(
            "test cluster: running as root but there is no `postgres` OS user to run \
                    PostgreSQL as (the postgresql-15 package creates it); run scripts/test"
                .to_owned(),
        );
    }
    // SAFETY: non-null pointer returned by getpwnam.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("test cluster: finding a free port: {e}"))
}

extern "C" fn stop_at_exit() {
    let pid = SERVER_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: signalling and reaping our own child process.
        unsafe {
            libc::kill(pid, libc::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) == 0 {
                if Instant::now() > deadline {
                    libc::kill(pid, libc::SIGKILL);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    if let Some(dir) = CLUSTER_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Everything in a SQLite database's files (the main file and its WAL) as text, for tests
/// that scan raw storage for values that must never be stored, such as token secrets.
pub fn sqlite_file_text(path: &std::path::Path) -> String {
    let mut out = String::new();
    for suffix in ["", "-wal"] {
        let mut p = path.to_path_buf().into_os_string();
        p.push(suffix);
        if let Ok(bytes) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    out
}
