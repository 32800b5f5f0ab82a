//! [`BerthProcess`]: runs the real `berth` binary for an end-to-end test and
//! makes sure it does not outlive the test.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tempfile::TempDir;
use tokio::io::AsyncRead;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::captured_output::{CapturedOutput, WaitError};
use crate::client::try_http_get;

/// How long the output readers get to drain after the process exits; a
/// grandchild still holding the pipe must not hang the test.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);
const READY_POLL: Duration = Duration::from_millis(50);
const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// A running `berth serve --config <tempdir>/berth.toml [args]`.
///
/// stdout and stderr are captured line by line in the background (set
/// `BERTH_TESTKIT_ECHO=1` to also see them live on stderr). The process runs in
/// its own process group with the temporary directory as working directory;
/// dropping the handle SIGKILLs that whole group, so neither berth nor the apps
/// it started (unless they left the group) outlive the test.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use berth_testkit::{BerthProcess, free_addr};
///
/// let admin = free_addr();
/// let mut berth = BerthProcess::builder("target/debug/berth")
///     .config_toml(format!("[admin]\nlisten = \"{admin}\"\n"))
///     .admin_addr(admin)
///     .env("RUST_LOG", "info")
///     .start()
///     .await?;
/// berth.wait_for_stdout(|l| l.contains("\"status\":200"), Duration::from_secs(5)).await?;
/// berth.write_config("# changed\n")?;
/// berth.signal(libc::SIGHUP)?;
/// let status = berth.stop(Duration::from_secs(10)).await;
/// assert!(status.success());
/// # Ok(())
/// # }
/// ```
pub struct BerthProcess {
    child: Child,
    pid: u32,
    exit: Option<ExitStatus>,
    admin_addr: Option<SocketAddr>,
    config_path: PathBuf,
    stdout: Arc<CapturedOutput>,
    stderr: Arc<CapturedOutput>,
    readers: Vec<JoinHandle<()>>,
    // Last, so the directory is removed after the process is killed.
    dir: TempDir,
}

/// Configures a [`BerthProcess`]; see [`BerthProcess::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .start().await to run berth"]
pub struct BerthProcessBuilder {
    bin: PathBuf,
    config: String,
    admin_addr: Option<SocketAddr>,
    ready_path: String,
    ready_timeout: Duration,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

/// Why [`BerthProcessBuilder::start`] failed. `Debug` prints the same report
/// as `Display`, captured output included, so `?` and `.unwrap()` in tests
/// show why berth did not come up.
#[non_exhaustive]
pub enum StartError {
    /// The temporary directory or config file could not be made.
    Setup(io::Error),
    Spawn {
        bin: PathBuf,
        source: io::Error,
    },
    /// berth exited before it was ready.
    Exited {
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    /// The admin address did not answer `GET /ready` with 200 in time.
    NotReady {
        waited: Duration,
        last_probe: String,
        stdout: String,
        stderr: String,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Setup(e) => write!(f, "cannot prepare berth's directory: {e}"),
            StartError::Spawn { bin, source } => {
                write!(f, "cannot spawn {}: {source}", bin.display())
            }
            StartError::Exited {
                status,
                stdout,
                stderr,
            } => write!(
                f,
                "berth exited before it was ready ({status})\n--- stderr ---\n{stderr}--- stdout ---\n{stdout}"
            ),
            StartError::NotReady {
                waited,
                last_probe,
                stdout,
                stderr,
            } => write!(
                f,
                "berth was not ready after {waited:?} (last probe: {last_probe})\n--- stderr ---\n{stderr}--- stdout ---\n{stdout}"
            ),
        }
    }
}

impl fmt::Debug for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Setup(e) | StartError::Spawn { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl BerthProcess {
    /// `bin` is the berth binary; in berth's own tests, `env!("CARGO_BIN_EXE_berth")`.
    pub fn builder(bin: impl AsRef<Path>) -> BerthProcessBuilder {
        BerthProcessBuilder {
            bin: bin.as_ref().to_path_buf(),
            config: String::new(),
            admin_addr: None,
            ready_path: "/ready".to_string(),
            ready_timeout: Duration::from_secs(20),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The temporary directory: berth's working directory and the config's home.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replaces the config file atomically (write a sibling, then rename), so
    /// berth never reads a half-written file.
    pub fn write_config(&self, toml: impl AsRef<str>) -> io::Result<()> {
        let tmp = self.dir.path().join(".berth.toml.writing");
        std::fs::write(&tmp, toml.as_ref())?;
        std::fs::rename(&tmp, &self.config_path)
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to berth itself, not its group.
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        let pid = libc::pid_t::try_from(self.pid)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: kill(2) has no memory-safety preconditions.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// stdout lines captured so far (access-log lines, one JSON object each).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lines()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lines()
    }

    /// stdout captured so far, newline-terminated lines.
    pub fn stdout_text(&self) -> String {
        self.stdout.text()
    }

    /// stderr captured so far, newline-terminated lines.
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// Waits for a stdout line matching `pred`, looking at lines already
    /// captured first, and returns it.
    pub async fn wait_for_stdout(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, WaitError> {
        self.stdout.wait_for(pred, timeout).await
    }

    /// Like [`wait_for_stdout`](Self::wait_for_stdout), on stderr.
    pub async fn wait_for_stderr(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, WaitError> {
        self.stderr.wait_for(pred, timeout).await
    }

    /// The exit status if berth has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits up to `timeout` for berth to exit by itself (nothing is sent).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Ok(status)) = tokio::time::timeout(timeout, self.child.wait()).await
        {
            self.exit = Some(status);
            self.drain_output().await;
        }
        self.exit
    }

    /// SIGTERM, then waits up to `timeout` for berth to exit; SIGKILLs the whole
    /// process group if it does not. Once it has exited, the output readers get
    /// a moment to collect the last lines. Calling it again returns the same status.
    ///
    /// # Panics
    /// If waiting on the child fails, which only happens when it was reaped
    /// behind tokio's back.
    pub async fn stop(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            self.drain_output().await;
            return status;
        }
        let _ = self.signal(libc::SIGTERM);
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.kill_group();
                self.child.wait().await
            }
        }
        .unwrap_or_else(|e| panic!("cannot wait for berth (pid {}): {e}", self.pid));
        self.exit = Some(status);
        self.drain_output().await;
        status
    }

    async fn drain_output(&mut self) {
        let deadline = Instant::now() + DRAIN_LIMIT;
        for reader in &mut self.readers {
            // A handle that has yielded its output must not be polled again.
            if !reader.is_finished() {
                let _ = tokio::time::timeout_at(deadline, reader).await;
            }
        }
    }

    fn kill_group(&self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill(2) has no memory-safety preconditions. The group
            // id is berth's pid, set at spawn with process_group(0).
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        // Always the whole group: berth may be gone while apps it spawned live on.
        self.kill_group();
        let _ = self.child.start_kill();
        for reader in &self.readers {
            reader.abort();
        }
    }
}

impl fmt::Debug for BerthProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BerthProcess")
            .field("pid", &self.pid)
            .field("exit", &self.exit)
            .field("admin_addr", &self.admin_addr)
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl BerthProcessBuilder {
    /// Written to `<tempdir>/berth.toml` before berth starts.
    pub fn config_toml(mut self, toml: impl Into<String>) -> Self {
        self.config = toml.into();
        self
    }

    /// Where readiness is polled (`GET http://addr/ready` until 200). Without
    /// it, [`start`](Self::start) returns as soon as the process is spawned.
    pub fn admin_addr(mut self, addr: SocketAddr) -> Self {
        self.admin_addr = Some(addr);
        self
    }

    /// Defaults to `/ready`.
    pub fn ready_path(mut self, path: impl Into<String>) -> Self {
        self.ready_path = path.into();
        self
    }

    /// Defaults to 20 s.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Appended after `serve --config <path>`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Spawns berth and, with an admin address, waits until it is ready.
    pub async fn start(self) -> Result<BerthProcess, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .map_err(StartError::Setup)?;
        let config_path = dir.path().join("berth.toml");
        std::fs::write(&config_path, &self.config).map_err(StartError::Setup)?;

        let mut command = Command::new(&self.bin);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so Drop can kill berth's children with it.
            .process_group(0)
            .kill_on_drop(true);
        default_signals(&mut command);
        let mut child = command.spawn().map_err(|source| StartError::Spawn {
            bin: self.bin.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let mut readers = Vec::new();
        let stdout = capture("stdout", child.stdout.take(), &mut readers);
        let stderr = capture("stderr", child.stderr.take(), &mut readers);
        let mut berth = BerthProcess {
            child,
            pid,
            exit: None,
            admin_addr: self.admin_addr,
            config_path,
            stdout,
            stderr,
            readers,
            dir,
        };
        if let Some(admin) = self.admin_addr {
            berth
                .wait_ready(admin, &self.ready_path, self.ready_timeout)
                .await?;
        }
        Ok(berth)
    }
}

/// Starts reading `pipe`, keeping its reader task in `readers` so it can be drained and
/// aborted; a pipe that was not set up reads as empty.
fn capture(
    stream: &'static str,
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    readers: &mut Vec<JoinHandle<()>>,
) -> Arc<CapturedOutput> {
    match pipe {
        Some(pipe) => {
            let (out, task) = CapturedOutput::spawn(stream, pipe);
            readers.push(task);
            out
        }
        None => CapturedOutput::spawn(stream, tokio::io::empty()).0,
    }
}

impl BerthProcess {
    async fn wait_ready(
        &mut self,
        admin: SocketAddr,
        path: &str,
        limit: Duration,
    ) -> Result<(), StartError> {
        let deadline = Instant::now() + limit;
        let host = admin.to_string();
        loop {
            if let Some(status) = self.try_wait() {
                self.drain_output().await;
                return Err(StartError::Exited {
                    status,
                    stdout: self.stdout_text(),
                    stderr: self.stderr_text(),
                });
            }
            // Bounded per probe, so one hung connection does not use up the wait.
            let probe_deadline = deadline.min(Instant::now() + PROBE_LIMIT);
            let probe =
                tokio::time::timeout_at(probe_deadline, try_http_get(admin, path, &host)).await;
            let last_probe = match probe {
                Ok(Ok((StatusCode::OK, _, _))) => return Ok(()),
                Ok(Ok((status, _, body))) => {
                    format!("{status} {}", String::from_utf8_lossy(&body).trim())
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {PROBE_LIMIT:?}"),
            };
            if Instant::now() >= deadline {
                self.kill_group();
                let _ = self.child.wait().await;
                self.drain_output().await;
                return Err(StartError::NotReady {
                    waited: limit,
                    last_probe,
                    stdout: self.stdout_text(),
                    stderr: self.stderr_text(),
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

/// berth under test starts with the signals tests send at their default action, whatever the
/// test runner ignores: a runner started under `nohup` ignores SIGHUP, and a shell standing in
/// for berth could then not trap it (POSIX keeps signals ignored on entry ignored).
fn default_signals(command: &mut Command) {
    // SAFETY: `signal` is async-signal-safe, and nothing is allocated after the fork.
    unsafe {
        command.pre_exec(|| {
            for signal in [
                libc::SIGHUP,
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGTERM,
                libc::SIGUSR1,
                libc::SIGUSR2,
            ] {
                libc::signal(signal, libc::SIG_DFL);
            }
            Ok(())
        });
    }
}
