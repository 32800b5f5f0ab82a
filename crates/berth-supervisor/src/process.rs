//! One running instance of an app process: spawned in its own process group, stopped as a
//! group.
//!
//! Why a group: apps are often shell wrappers or pre-forking servers, and signalling only the
//! leader leaves their children running. Why `PR_SET_PDEATHSIG`: if berth itself is
//! `kill -9`ed it cannot clean up, so the kernel kills the instance for it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::{ChildStderr, ChildStdout};

use crate::error::{Error, Result};
use crate::limits::ChildSetup;

/// What to run for one instance.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// Added to berth's own environment (which the app inherits).
    pub env: BTreeMap<OsString, OsString>,
    /// Exported as `PORT`, the port the instance must listen on; overrides `env`.
    pub port: Option<u16>,
    /// Set by [`CommandSpec::shell`] for a command of plain words: those words, exec'd
    /// instead of `program` and `args` when the first names a program.
    pub(crate) direct: Option<Vec<OsString>>,
}

impl CommandSpec {
    pub fn new(program: impl Into<OsString>, cwd: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: cwd.into(),
            env: BTreeMap::new(),
            port: None,
            direct: None,
        }
    }

    /// `command` as `/bin/sh -c` runs it. A command of plain words (no quotes, variables,
    /// globs, redirections or operators) is exec'd without the shell, which runs the same
    /// program with the same arguments (see `direct.rs`); if its program cannot be found or
    /// is a script without `#!`, the shell runs it after all, and says what it says.
    pub fn shell(command: &str, cwd: impl Into<PathBuf>) -> Self {
        let mut spec = Self::new("/bin/sh", cwd).arg("-c").arg(command);
        spec.direct = crate::direct::plain_words(command)
            .map(|words| words.into_iter().map(OsString::from).collect());
        spec
    }

    /// What errors call it: the words of a command run without the shell, else the program.
    pub(crate) fn name(&self) -> String {
        match &self.direct {
            Some(words) => words.join(std::ffi::OsStr::new(" ")),
            None => self.program.clone(),
        }
        .to_string_lossy()
        .into_owned()
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
}

/// Signals berth sends to instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
    Quit,
    Hup,
    Usr1,
    Usr2,
    Winch,
    Kill,
}

impl Signal {
    pub fn as_raw(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
            Signal::Quit => libc::SIGQUIT,
            Signal::Hup => libc::SIGHUP,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
            Signal::Winch => libc::SIGWINCH,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// How an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited {
        code: i32,
    },
    /// Killed by a signal it did not survive (including one berth sent in time).
    Signaled {
        signal: i32,
    },
    /// Still running when the stop timeout ran out, so berth SIGKILLed the group.
    ForceKilled,
}

impl Ending {
    fn from_status(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Ending::Exited { code },
            (None, Some(signal)) => Ending::Signaled { signal },
            // Unreachable on Linux for a terminated child; report it as a failure rather
            // than panic.
            (None, None) => Ending::Exited { code: -1 },
        }
    }
}

/// A spawned instance. Dropping it SIGKILLs its group if it was not reaped yet, so a
/// forgotten handle never leaks processes.
#[derive(Debug)]
pub struct Instance {
    pid: i32,
    /// Readable once the leader has exited; it is then reaped with `waitpid`.
    exit: AsyncFd<OwnedFd>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// Set once the leader is reaped; from then on its pid may be reused, so only the final
    /// sweep right after reaping may still signal the group.
    ended: Option<Ending>,
}

impl Instance {
    /// Starts the instance with stdout and stderr piped (see [`Instance::take_output`]).
    /// Must be called within a tokio runtime, which then watches for its exit.
    ///
    /// Call this from a thread that lives as long as the instance should (a runtime worker,
    /// not `spawn_blocking`): the kernel delivers `PR_SET_PDEATHSIG` when the *thread* that
    /// started the child exits, not only when berth does.
    pub fn spawn(spec: &CommandSpec) -> Result<Instance> {
        Self::spawn_with(spec, None)
    }

    /// [`Instance::spawn`], additionally applying resource limits (cgroup membership,
    /// rlimits) in the child before it execs, so not even its first instruction runs
    /// unconfined.
    pub(crate) fn spawn_with(spec: &CommandSpec, setup: Option<ChildSetup>) -> Result<Instance> {
        let spawn_error = |source| Error::Spawn {
            program: spec.name(),
            cwd: spec.cwd.clone(),
            source,
        };
        if !spec.cwd.is_dir() {
            return Err(Error::MissingWorkingDir {
                program: spec.name(),
                cwd: spec.cwd.clone(),
            });
        }
        let spawned = crate::spawn::spawn(spec, setup.as_ref()).map_err(spawn_error)?;
        let pid = spawned.pid;
        // From here on a failure must not leave the child running unwatched.
        let watched = (|| {
            Ok::<_, io::Error>((
                watch(spawned.pidfd)?,
                ChildStdout::from_std(std::process::ChildStdout::from(spawned.stdout))?,
                ChildStderr::from_std(std::process::ChildStderr::from(spawned.stderr))?,
            ))
        })();
        match watched {
            Ok((exit, stdout, stderr)) => Ok(Instance {
                pid,
                exit,
                stdout: Some(stdout),
                stderr: Some(stderr),
                ended: None,
            }),
            Err(e) => {
                let _ = killpg(pid, libc::SIGKILL);
                crate::spawn::reap_blocking(pid);
                Err(spawn_error(e))
            }
        }
    }

    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The output pipes, once; hand them to [`crate::output::capture`]. They must be read:
    /// a child writing to a full pipe blocks.
    pub fn take_output(&mut self) -> Option<(ChildStdout, ChildStderr)> {
        Some((self.stdout.take()?, self.stderr.take()?))
    }

    /// Waits for the instance to exit on its own, then kills what is left of its group.
    pub async fn wait(&mut self) -> Result<Ending> {
        if let Some(ending) = self.ended {
            return Ok(ending);
        }
        let status = self.reap().await.map_err(wait_error(self.pid))?;
        Ok(self.reaped(Ending::from_status(status)))
    }

    /// Sends `signal` to the whole group, waits up to `timeout` for the leader to exit, then
    /// SIGKILLs the group. Either way no member of the group survives.
    pub async fn stop(&mut self, signal: Signal, timeout: Duration) -> Result<Ending> {
        if let Some(ending) = self.ended {
            return Ok(ending);
        }
        if let Some(status) = crate::spawn::try_reap(self.pid).map_err(wait_error(self.pid))? {
            return Ok(self.reaped(Ending::from_status(status)));
        }

        killpg(self.pid, signal.as_raw())?;
        let ending = match tokio::time::timeout(timeout, self.reap()).await {
            Ok(status) => Ending::from_status(status.map_err(wait_error(self.pid))?),
            Err(_elapsed) => {
                killpg(self.pid, libc::SIGKILL)?;
                self.reap().await.map_err(wait_error(self.pid))?;
                Ending::ForceKilled
            }
        };
        Ok(self.reaped(ending))
    }

    /// Waits for the leader to exit and reaps it.
    async fn reap(&self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = crate::spawn::try_reap(self.pid)? {
                return Ok(status);
            }
            self.exit.readable().await?.clear_ready();
        }
    }

    /// Records the ending and sweeps the group: children that ignored the signal, or that the
    /// leader left behind, would otherwise outlive it. Done immediately after reaping, while
    /// any surviving member still keeps the group id from being reused.
    fn reaped(&mut self, ending: Ending) -> Ending {
        self.ended = Some(ending);
        // Best effort: ESRCH (nobody left) is the usual, happy answer.
        let _ = killpg(self.pid, libc::SIGKILL);
        ending
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.ended.is_some() {
            return;
        }
        let _ = killpg(self.pid, libc::SIGKILL);
        let pid = self.pid;
        if let Ok(Some(_)) = crate::spawn::try_reap(pid) {
            return;
        }
        // Not gone yet (SIGKILL takes a moment): reap it without blocking the dropping thread.
        let reap = move || crate::spawn::reap_blocking(pid);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(reap)),
            Err(_) => drop(std::thread::spawn(reap)),
        }
    }
}

/// The pidfd registered with the current runtime, to await the leader's exit.
fn watch(pidfd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` is open and stays so, unchanged, until the `AsyncFd` drops it.
    unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

fn wait_error(pid: i32) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Wait { pid, source }
}

/// `killpg`, treating "no such group" as success: the group already ended.
fn killpg(pgid: i32, signal: libc::c_int) -> Result<()> {
    // SAFETY: plain syscall on integers.
    if unsafe { libc::killpg(pgid, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(Error::Signal { pgid, source: err })
    }
}
