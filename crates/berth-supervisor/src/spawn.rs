//! Creating an instance's process: `clone(CLONE_VM | CLONE_VFORK)`, a few syscalls, `execve`.
//!
//! An instance needs some steps between its process's creation and the app's first
//! instruction: its own process group, `PR_SET_PDEATHSIG`, and for confined instances joining
//! a cgroup and setting rlimits. What berth tried before, measured with `bench/deploy.sh`
//! (p99 of requests during 25 deploys at half load, over steady state; bench/RESULTS.md):
//!
//! - `fork` (std's `pre_exec`): copying berth's page tables took about 0.7 ms per start,
//!   with the edge's threads seen blocked in the kernel meanwhile. 1.54x.
//! - `posix_spawn` of an exec shim (berth itself, taking the steps and then exec'ing the
//!   command): nothing copied, but a second exec of a large binary, about 2 ms of CPU per
//!   start. 1.39x.
//!
//! This is what `posix_spawn` does inside, with our steps added: the child shares berth's
//! memory (nothing copied) and the calling thread is suspended until the child has exec'd or
//! failed. Sharing memory is why the child only makes raw syscalls on data built beforehand:
//! no allocation, no locks, no unwinding. Signals are blocked across the clone, so none of
//! berth's handlers can run in the child before its dispositions are reset.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::limits::ChildSetup;
use crate::process::CommandSpec;

/// The child's stack. It runs one small function of syscalls; glibc's `posix_spawn` uses
/// about as much.
const STACK_BYTES: usize = 64 * 1024;

/// glibc's search path when `PATH` is unset.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// A started process: its pid, a pidfd to wait on, and the read ends of its output pipes.
pub(crate) struct Spawned {
    pub(crate) pid: i32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// Starts `spec` in a new process group with stdin from `/dev/null` and stdout and stderr
/// piped, after `setup`. The child is berth's until reaped: wait on `pidfd`, then `waitpid`.
pub(crate) fn spawn(spec: &CommandSpec, setup: Option<&ChildSetup>) -> io::Result<Spawned> {
    let env = environment(spec);
    let path = env.get(OsStr::new("PATH")).map(OsString::as_os_str);
    if let Some(words) = &spec.direct
        && let Some(first) = words.first()
        && let Ok(program) = resolve(first, &spec.cwd, path)
    {
        // As the shell would have it: the working directory in `PWD`.
        let mut direct_env = env.clone();
        direct_env.insert("PWD".into(), spec.cwd.clone().into_os_string());
        match start(&spec.cwd, setup, &program, words, &direct_env) {
            // A script without `#!`: `sh` runs those itself.
            Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {}
            started => return started,
        }
    }
    let program = resolve(&spec.program, &spec.cwd, path)?;
    let argv: Vec<OsString> = std::iter::once(spec.program.clone())
        .chain(spec.args.iter().cloned())
        .collect();
    start(&spec.cwd, setup, &program, &argv, &env)
}

/// [`spawn`] with the program found and the environment built: `argv[0]` is what the user
/// wrote, as `execvp` passes it.
fn start(
    cwd: &Path,
    setup: Option<&ChildSetup>,
    program: &CStr,
    argv: &[OsString],
    env: &BTreeMap<OsString, OsString>,
) -> io::Result<Spawned> {
    let argv = Strings::new(argv.iter().cloned())?;
    let envp = Strings::new(env.iter().map(|(k, v)| {
        let mut pair = k.clone();
        pair.push("=");
        pair.push(v);
        pair
    }))?;
    let cwd = c_string(cwd.as_os_str())?;

    // All close-on-exec, as std opens them: the child's dup2 copies onto 0–2 are not.
    let stdin = std::fs::File::open("/dev/null")?;
    let (stdout, stdout_w) = io::pipe()?;
    let (stderr, stderr_w) = io::pipe()?;
    let fds = [
        above_stdio(stdin.into())?,
        above_stdio(stdout_w.into())?,
        above_stdio(stderr_w.into())?,
    ];

    let child = Child {
        parent: std::process::id() as i32,
        setup,
        program,
        argv: argv.pointers(),
        envp: envp.pointers(),
        cwd: &cwd,
        stdio: [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()],
        failed_step: AtomicI32::new(0),
        errno: AtomicI32::new(0),
    };
    let pid = clone_vfork(&child)?;
    drop(fds);

    let failed = child.failed_step.load(Ordering::Acquire);
    if failed != 0 {
        reap_blocking(pid);
        let error = io::Error::from_raw_os_error(child.errno.load(Ordering::Acquire));
        return Err(match Step::from_raw(failed) {
            // What a caller expects from exec: the bare error (ENOENT, EACCES...).
            Step::Exec => error,
            step => io::Error::new(error.kind(), format!("{}: {error}", step.what())),
        });
    }
    match pidfd_open(pid) {
        Ok(pidfd) => Ok(Spawned {
            pid,
            pidfd,
            stdout: stdout.into(),
            stderr: stderr.into(),
        }),
        Err(e) => {
            // SAFETY: plain syscall on our own, not yet reaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap_blocking(pid);
            Err(io::Error::new(
                e.kind(),
                format!("pidfd_open (berth needs Linux 5.3 or later): {e}"),
            ))
        }
    }
}

/// Where `program` is, looked up as `execvp` does: as given if it has a slash (relative to
/// `cwd`, where the child will be), else the first file of that name along `path`.
fn resolve(program: &OsStr, cwd: &Path, path: Option<&OsStr>) -> io::Result<CString> {
    if program.as_bytes().contains(&b'/') {
        return c_string(program);
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    for dir in std::env::split_paths(path) {
        let candidate = dir.join(program);
        if cwd.join(&candidate).is_file() {
            return c_string(candidate.as_os_str());
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
}

/// berth's environment with the spec's over it, then `PORT`.
fn environment(spec: &CommandSpec) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    env.extend(spec.env.clone());
    if let Some(port) = spec.port {
        env.insert("PORT".into(), port.to_string().into());
    }
    env
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

/// NUL-terminated strings and the NULL-terminated array of pointers `execve` takes.
struct Strings {
    owned: Vec<CString>,
}

impl Strings {
    fn new(items: impl Iterator<Item = OsString>) -> io::Result<Strings> {
        let owned = items.map(|s| c_string(&s)).collect::<io::Result<_>>()?;
        Ok(Strings { owned })
    }

    fn pointers(&self) -> Vec<*const libc::c_char> {
        let mut pointers: Vec<_> = self.owned.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        pointers
    }
}

/// What the child does, in the order it does it; the number records where it failed.
#[derive(Clone, Copy)]
enum Step {
    ProcessGroup = 1,
    DeathSignal,
    ParentGone,
    Limits,
    Stdio,
    WorkingDir,
    Exec,
}

impl Step {
    fn from_raw(raw: i32) -> Step {
        [
            Step::ProcessGroup,
            Step::DeathSignal,
            Step::ParentGone,
            Step::Limits,
            Step::Stdio,
            Step::WorkingDir,
        ]
        .into_iter()
        .find(|s| *s as i32 == raw)
        .unwrap_or(Step::Exec)
    }

    fn what(self) -> &'static str {
        match self {
            Step::ProcessGroup => "making a process group",
            Step::DeathSignal => "asking for PR_SET_PDEATHSIG",
            Step::ParentGone => "berth exited while starting the instance",
            Step::Limits => "applying resource limits",
            Step::Stdio => "connecting stdin, stdout and stderr",
            Step::WorkingDir => "changing to the working directory",
            Step::Exec => "exec",
        }
    }
}

/// Everything the child reads, built by the parent; and where it reports a failure.
struct Child<'a> {
    parent: i32,
    setup: Option<&'a ChildSetup>,
    program: &'a CStr,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: &'a CStr,
    stdio: [RawFd; 3],
    failed_step: AtomicI32,
    errno: AtomicI32,
}

/// Runs [`child_main`] in a new process sharing this one's memory, and returns once it has
/// exec'd or exited.
fn clone_vfork(child: &Child<'_>) -> io::Result<i32> {
    let mut stack = vec![0u8; STACK_BYTES];
    // SAFETY: the stack grows down from its end, aligned as the ABI asks; it outlives the
    // child's use of it because CLONE_VFORK suspends this thread until the child has exec'd
    // or exited. `child` likewise. Signals stay blocked across the clone (see the module
    // doc); the child unblocks them just before its exec.
    unsafe {
        let top = stack.as_mut_ptr().add(STACK_BYTES);
        let top = top.sub(top as usize % 16);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (child as *const Child<'_>).cast_mut().cast(),
        );
        let error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 { Err(error) } else { Ok(pid) }
    }
}

/// The child, in berth's memory: syscalls only, then exec. On failure it records the step
/// and errno for the parent and exits 127.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Child` the parent keeps alive until this process has exec'd or
    // exited (CLONE_VFORK).
    let child = unsafe { &*(arg as *const Child<'_>) };
    if let Err((step, errno)) = prepare_and_exec(child) {
        child.errno.store(errno, Ordering::Release);
        child.failed_step.store(step as i32, Ordering::Release);
    }
    // SAFETY: ends this process only; `_exit` runs no handlers that could touch shared state.
    unsafe { libc::_exit(127) }
}

fn prepare_and_exec(child: &Child<'_>) -> Result<(), (Step, i32)> {
    let os = |step: Step| move |e: io::Error| (step, e.raw_os_error().unwrap_or(libc::EIO));
    let check = |step: Step, result: libc::c_int| {
        if result < 0 {
            Err(os(step)(io::Error::last_os_error()))
        } else {
            Ok(())
        }
    };
    // SAFETY: plain syscalls on this process and on data built before the clone.
    unsafe {
        reset_signal_dispositions();
        // pgid = the child's pid, so the whole tree can be signalled with killpg.
        check(Step::ProcessGroup, libc::setpgid(0, 0))?;
        // SIGKILL when the thread that started it ends: if berth is `kill -9`ed it cannot
        // clean up, so the kernel does.
        let death = libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        check(Step::DeathSignal, death)?;
        // berth may have died before the prctl; then the signal will never come.
        if libc::getppid() != child.parent {
            return Err((Step::ParentGone, libc::ESRCH));
        }
        if let Some(setup) = child.setup {
            setup.apply().map_err(os(Step::Limits))?;
        }
        for (target, &fd) in child.stdio.iter().enumerate() {
            check(Step::Stdio, libc::dup2(fd, target as libc::c_int))?;
        }
        check(Step::WorkingDir, libc::chdir(child.cwd.as_ptr()))?;
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(
            child.program.as_ptr(),
            child.argv.as_ptr(),
            child.envp.as_ptr(),
        );
    }
    Err(os(Step::Exec)(io::Error::last_os_error()))
}

/// Every signal back to its default action. berth's handlers must not run in the child (they
/// would run on berth's memory); SIGPIPE, which Rust programs ignore, must not stay ignored;
/// and an instance starts the same whether berth was started under `nohup` (SIGHUP ignored,
/// which a shell could then not even trap) or not, as under systemd.
///
/// # Safety
/// Only in the child, with all signals blocked.
unsafe fn reset_signal_dispositions() {
    // Linux's last real-time signal. SIGKILL and SIGSTOP refuse the change, and refusals
    // change nothing.
    const LAST_SIGNAL: libc::c_long = 64;
    // The kernel's `struct sigaction` all zero: SIG_DFL, no flags, no restorer, empty mask.
    // The raw syscall rather than glibc's wrapper, which refuses glibc's own signals (32 and
    // 33); a parent may have left those ignored too.
    let default = [0u64; 4];
    for signal in 1..=LAST_SIGNAL {
        // SAFETY: rt_sigaction on this process's own table (no CLONE_SIGHAND: it is a copy),
        // from a struct that outlives the call; the size is the kernel's signal set's.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8 as libc::size_t,
            );
        }
    }
}

/// `fd`, moved above 0–2 if berth was started with one of those closed: the child's `dup2`s
/// onto 0, 1 and 2 must not overwrite a descriptor a later one still reads from.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicates an fd we own; the copy is owned at once.
    unsafe {
        let copy = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3);
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(copy))
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned at once.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as RawFd))
    }
}

/// Reaps a child known to have exited or been killed.
pub(crate) fn reap_blocking(pid: i32) {
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

/// The exit status of `pid` if it has ended (and reaps it), else `None`.
pub(crate) fn try_reap(pid: i32) -> io::Result<Option<std::process::ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: waits for our own child without blocking.
    match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
        0 => Ok(None),
        n if n < 0 => Err(io::Error::last_os_error()),
        _ => Ok(Some(std::process::ExitStatus::from_raw(status))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_looked_up_as_exec_would() {
        let cwd = Path::new("/");
        let found = |p: &str, cwd: &Path, path: Option<&str>| {
            resolve(p.as_ref(), cwd, path.map(OsStr::new)).map(|c| c.into_string().unwrap())
        };
        assert!(found("sh", cwd, None).unwrap().ends_with("bin/sh"));
        assert_eq!(found("/bin/sh", cwd, None).unwrap(), "/bin/sh");
        assert_eq!(found("bin/sh", cwd, None).unwrap(), "bin/sh");
        let missing = found("no-such-berth-program", cwd, None).unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
        assert!(found("sh", cwd, Some("/nonexistent")).is_err());
        // A relative PATH entry is relative to the instance's working directory.
        assert_eq!(found("sh", cwd, Some("bin")).unwrap(), "bin/sh");
        assert!(found("sh", Path::new("/tmp"), Some("bin")).is_err());
    }

    #[test]
    fn the_environment_is_berths_with_the_specs_and_port_over_it() {
        let spec = CommandSpec::new("x", "/")
            .env("PATH", "/opt/app/bin")
            .env("PORT", "1")
            .port(8080);
        let env = environment(&spec);
        assert_eq!(env.get(OsStr::new("PATH")), Some(&"/opt/app/bin".into()));
        assert_eq!(env.get(OsStr::new("PORT")), Some(&"8080".into()));
        // berth's own variables are inherited.
        assert_eq!(
            env.get(OsStr::new("HOME")),
            std::env::var_os("HOME").as_ref()
        );
        assert!(env.len() >= 2);
    }

    /// Runs `program args` to its end, returning its stdout and exit status.
    fn run(program: &str, args: &[&str], setup: Option<&ChildSetup>) -> io::Result<(String, i32)> {
        let mut spec = CommandSpec::new(program, "/");
        spec.args = args.iter().map(OsString::from).collect();
        run_spec(&spec, setup).map(|(out, _, status)| (out, status))
    }

    /// Runs `spec` to its end: stdout, stderr, and the wait status.
    fn run_spec(
        spec: &CommandSpec,
        setup: Option<&ChildSetup>,
    ) -> io::Result<(String, String, i32)> {
        use std::io::Read;
        let spawned = spawn(spec, setup)?;
        let mut out = String::new();
        std::fs::File::from(spawned.stdout).read_to_string(&mut out)?;
        let mut err = String::new();
        std::fs::File::from(spawned.stderr).read_to_string(&mut err)?;
        let mut status = 0;
        // SAFETY: waits for the child just started.
        let reaped = unsafe { libc::waitpid(spawned.pid, &mut status, 0) };
        assert_eq!(reaped, spawned.pid);
        Ok((out, err, status))
    }

    #[test]
    fn a_command_of_plain_words_is_execd_without_the_shell() {
        let spawned = spawn(&CommandSpec::shell("exec sleep 30", "/"), None).expect("starts");
        // The exec wakes this thread a moment before the kernel renames the process.
        let comm = || std::fs::read_to_string(format!("/proc/{}/comm", spawned.pid));
        let started = std::time::Instant::now();
        while comm().is_ok_and(|c| c.trim() != "sleep" && c.trim() != "sh")
            && started.elapsed() < std::time::Duration::from_secs(5)
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let comm = comm();
        // SAFETY: ends the child just started.
        unsafe { libc::kill(spawned.pid, libc::SIGKILL) };
        reap_blocking(spawned.pid);
        assert_eq!(
            comm.expect("comm").trim(),
            "sleep",
            "the pid is sleep's, no sh"
        );

        let (env, _, status) = run_spec(&CommandSpec::shell("env", "/tmp"), None).expect("runs");
        assert_eq!(status, 0);
        assert!(
            env.lines().any(|l| l == "PWD=/tmp"),
            "PWD as sh sets it: {env}"
        );
    }

    #[test]
    fn the_shell_runs_what_cannot_be_execd_directly() {
        let (_, err, status) =
            run_spec(&CommandSpec::shell("no-such-berth-program --x", "/"), None).expect("sh");
        assert_eq!(libc::WEXITSTATUS(status), 127, "{err}");
        assert!(
            err.contains("no-such-berth-program: not found"),
            "sh says so: {err}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("no-shebang");
        std::fs::write(&script, "echo from the script in $PWD\n").expect("write");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let (out, err, status) =
            run_spec(&CommandSpec::shell("./no-shebang", dir.path()), None).expect("sh");
        assert_eq!(status, 0, "{err}");
        assert_eq!(
            out.trim(),
            format!("from the script in {}", dir.path().display())
        );
    }

    /// berth blocks every signal around the clone and ignores SIGPIPE (as Rust programs do,
    /// this test binary too), and may have been started ignoring SIGHUP (`nohup`); the
    /// instance must get none of it.
    #[test]
    fn the_instance_starts_with_no_signal_blocked_or_ignored() {
        // SAFETY: ignoring SIGHUP in this test process, which nothing sends it.
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        let (status, code) = run("cat", &["/proc/self/status"], None).expect("runs");
        assert_eq!(code, 0);
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).expect(name);
            u64::from_str_radix(line[name.len()..].trim(), 16).expect("hex mask")
        };
        assert_eq!(field("SigBlk:"), 0, "{status}");
        assert_eq!(field("SigIgn:"), 0, "{status}");
        assert_eq!(field("SigCgt:"), 0, "no handler survives exec: {status}");
    }

    #[test]
    fn its_process_group_is_its_own_and_its_stdin_is_dev_null() {
        let spawned = spawn(&CommandSpec::new("sleep", "/").arg("30"), None).expect("starts");
        let group = crate::sweep::group_of(spawned.pid);
        // SAFETY: ends the child just started.
        unsafe { libc::kill(spawned.pid, libc::SIGKILL) };
        reap_blocking(spawned.pid);
        assert_eq!(group, Some(spawned.pid), "pid is the group id");

        let (stdin, code) = run("readlink", &["/proc/self/fd/0"], None).expect("runs");
        assert_eq!(code, 0);
        assert_eq!(stdin.trim(), "/dev/null");
    }

    #[test]
    fn a_failed_exec_is_the_exec_error_and_leaves_no_child() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("not-executable");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        // The child never execs, so it keeps the name of the thread that started it.
        let name = "berth-noexec";
        // SAFETY: renames this test's own thread.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"berth-noexec".as_ptr()) };
        let err = run(script.to_str().expect("utf-8"), &[], None).expect_err("refused");
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        let ours = std::process::id() as i32;
        let zombies: Vec<i32> = crate::sweep::pids()
            .into_iter()
            .filter(|&pid| {
                crate::sweep::parent_of(pid) == Some(ours)
                    && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm.trim() == name)
            })
            .collect();
        assert!(zombies.is_empty(), "a child was left to reap: {zombies:?}");
    }

    #[test]
    fn a_failed_step_before_exec_is_named() {
        let setup = ChildSetup::joining(c"/nonexistent/berth/cgroup.procs".into());
        let err = run("true", &[], Some(&setup)).expect_err("refused");
        let text = err.to_string();
        assert!(text.starts_with("applying resource limits: "), "{text}");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{text}");
    }

    #[test]
    fn a_nul_byte_is_refused_before_anything_starts() {
        let spec = CommandSpec::new("sh", "/").arg("a\0b");
        let err = spawn(&spec, None).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
