//! One running instance of an app process: spawned in its own process group, stopped as a
//! group.
//!
//! Why a group: apps are often shell wrappers or pre-forking servers, and signalling only the
//! leader leaves their children running. Why `PR_SET_PDEATHSIG`: if berth itself is
//! `kill -9`ed it cannot clean up, so the kernel kills the instance for it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, ChildStderr, ChildStdout, Command};

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
}

impl CommandSpec {
    pub fn new(program: impl Into<OsString>, cwd: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: cwd.into(),
            env: BTreeMap::new(),
            port: None,
        }
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
    child: Child,
    pid: i32,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// Set once the leader is reaped; from then on its pid may be reused, so only the final
    /// sweep right after reaping may still signal the group.
    ended: Option<Ending>,
}

impl Instance {
    /// Starts the instance with stdout and stderr piped (see [`Instance::take_output`]).
    ///
    /// Call this from a thread that lives as long as the instance should (a runtime worker,
    /// not `spawn_blocking`): the kernel delivers `PR_SET_PDEATHSIG` when the *thread* that
    /// forked the child exits, not only when berth does.
    pub fn spawn(spec: &CommandSpec) -> Result<Instance> {
        Self::spawn_with(spec, None)
    }

    /// [`Instance::spawn`], additionally applying resource limits (cgroup membership,
    /// rlimits) in the child before it execs, so not even its first instruction runs
    /// unconfined.
    pub(crate) fn spawn_with(spec: &CommandSpec, setup: Option<ChildSetup>) -> Result<Instance> {
        let program = spec.program.to_string_lossy().into_owned();
        if !spec.cwd.is_dir() {
            return Err(Error::MissingWorkingDir {
                program,
                cwd: spec.cwd.clone(),
            });
        }

        let parent = std::process::id() as i32;
        let mut cmd = Command::from(match crate::exec_shim::registered() {
            Some(shim) => {
                let path = spec.env.get(OsStr::new("PATH")).map(OsString::as_os_str);
                crate::exec_shim::check_program(&spec.program, &spec.cwd, path).map_err(
                    |source| Error::Spawn {
                        program: program.clone(),
                        cwd: spec.cwd.clone(),
                        source,
                    },
                )?;
                crate::exec_shim::command(shim, parent, setup.as_ref(), &spec.program, &spec.args)
            }
            None => {
                let mut cmd = std::process::Command::new(&spec.program);
                cmd.args(&spec.args);
                with_pre_exec(&mut cmd, parent, setup);
                cmd
            }
        });
        cmd.current_dir(&spec.cwd)
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // pgid = the child's pid, so the whole tree can be signalled with killpg.
            .process_group(0);
        if let Some(port) = spec.port {
            cmd.env("PORT", port.to_string());
        }

        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: program.clone(),
            cwd: spec.cwd.clone(),
            source,
        })?;
        let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
            // Only possible if the child was already reaped, which we never do before here.
            return Err(Error::Spawn {
                program,
                cwd: spec.cwd.clone(),
                source: io::Error::other("spawned child has no pid"),
            });
        };
        Ok(Instance {
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            pid,
            ended: None,
        })
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
        let status = self.child.wait().await.map_err(wait_error(self.pid))?;
        Ok(self.reaped(Ending::from_status(status)))
    }

    /// Sends `signal` to the whole group, waits up to `timeout` for the leader to exit, then
    /// SIGKILLs the group. Either way no member of the group survives.
    pub async fn stop(&mut self, signal: Signal, timeout: Duration) -> Result<Ending> {
        if let Some(ending) = self.ended {
            return Ok(ending);
        }
        if let Some(status) = self.child.try_wait().map_err(wait_error(self.pid))? {
            return Ok(self.reaped(Ending::from_status(status)));
        }

        killpg(self.pid, signal.as_raw())?;
        let ending = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ending::from_status(status.map_err(wait_error(self.pid))?),
            Err(_elapsed) => {
                killpg(self.pid, libc::SIGKILL)?;
                self.child.wait().await.map_err(wait_error(self.pid))?;
                Ending::ForceKilled
            }
        };
        Ok(self.reaped(ending))
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

/// The steps between fork and exec, when there is no exec shim: a real `fork` of berth, since
/// a `pre_exec` closure rules out `posix_spawn` (see `exec_shim` for what that costs).
fn with_pre_exec(cmd: &mut std::process::Command, parent: i32, setup: Option<ChildSetup>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: `prepare_instance` is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(move || prepare_instance(parent, setup.as_ref()));
    }
}

/// What the new process does before it becomes the instance, in a forked child
/// ([`with_pre_exec`]) or in the exec shim: ask for SIGKILL when the thread that started it
/// ends, make sure berth (`parent`) had not already gone, and apply the limits.
///
/// Async-signal-safe (prctl, getppid, and in `ChildSetup::apply` open, write, close,
/// setrlimit) and allocation-free, as a forked child requires.
pub(crate) fn prepare_instance(parent: i32, setup: Option<&ChildSetup>) -> io::Result<()> {
    // SAFETY: plain syscalls on the calling process.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            return Err(io::Error::last_os_error());
        }
        // berth may have died before the prctl; then the signal will never come.
        if libc::getppid() != parent {
            return Err(io::Error::other("berth exited while starting the instance"));
        }
    }
    match setup {
        Some(setup) => setup.apply(),
        None => Ok(()),
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.ended.is_none() {
            let _ = killpg(self.pid, libc::SIGKILL);
            // tokio's orphan queue reaps the leader later; nothing to await in Drop.
        }
    }
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
