//! Starting instances without forking berth.
//!
//! An instance needs a few steps between its process's creation and the app's first
//! instruction: `PR_SET_PDEATHSIG`, and for confined instances joining a cgroup and setting
//! rlimits. Done in a `pre_exec` closure they force a real `fork` of berth's address space,
//! which a scheduler trace of `bench/deploy.sh` showed to be the worst of a deploy's
//! disruption: about 0.7 ms copying page tables, during which berth's other threads (the
//! edge's among them) were seen blocked in the kernel. Under the same deploys at half load,
//! p99 rose 1.54x on average with `fork` and 1.27x with a plain `posix_spawn` (5 runs each);
//! through this shim, which adds its own start-up (about 2.4 ms of CPU in the child then,
//! 2.2 ms since mimalloc lost huge pages), 1.39x (7 runs). bench/RESULTS.md has the runs.
//!
//! So, when a binary registers itself with [`use_exec_shim`], instances are started through it
//! instead: a plain `posix_spawn` (no page tables copied) of that binary with [`SHIM_ARG`],
//! which takes the steps in its own process and then execs the instance's command, keeping
//! its pid. The binary's `main` must hand [`SHIM_ARG`] to [`run_exec_shim`] before anything
//! else. Without a registered shim (tests, other embedders) the `pre_exec` path is used.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::OnceLock;

use crate::limits::ChildSetup;

/// The first argument that makes a binary act as the shim.
pub const SHIM_ARG: &str = "__exec";

/// Exit status of a shim that could not prepare or exec the instance; the reason is on its
/// stderr, which is the instance's log. 127 is what a shell uses for "could not run".
const SHIM_FAILED: u8 = 127;

static SHIM: OnceLock<PathBuf> = OnceLock::new();

/// Starts instances through `binary`, which must call [`run_exec_shim`] when its first
/// argument is [`SHIM_ARG`]. `/proc/self/exe` is the usual choice: it still names the running
/// binary after an upgrade replaced the file. The first registration wins.
pub fn use_exec_shim(binary: PathBuf) {
    let _ = SHIM.set(binary);
}

/// The registered shim, if any.
pub(crate) fn registered() -> Option<&'static Path> {
    SHIM.get().map(PathBuf::as_path)
}

/// The command that starts `program args` through `shim`: the steps as options, then `--`.
pub(crate) fn command(
    shim: &Path,
    parent: i32,
    setup: Option<&ChildSetup>,
    program: &OsStr,
    args: &[OsString],
) -> Command {
    let mut cmd = Command::new(shim);
    cmd.arg(SHIM_ARG).arg("--parent").arg(parent.to_string());
    if let Some(setup) = setup {
        cmd.args(setup.to_args());
    }
    cmd.arg("--").arg(program).args(args);
    cmd
}

/// Fails as `exec` would with `ENOENT` when `program` names no file, so that through the shim
/// too a mistyped command fails its start with the error, rather than starting a shim that
/// exits 127. `program` is looked up as `execvp` does: in `cwd` if it has a slash, else along
/// `path` (the instance's `PATH`).
pub(crate) fn check_program(program: &OsStr, cwd: &Path, path: Option<&OsStr>) -> io::Result<()> {
    let program = Path::new(program);
    let found = if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        cwd.join(program).exists()
    } else {
        let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
        std::env::split_paths(path).any(|dir| cwd.join(dir).join(program).is_file())
    };
    if found {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::ENOENT))
    }
}

/// glibc's search path when `PATH` is unset.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// What the shim was asked to do.
#[derive(Debug, PartialEq)]
struct Plan {
    parent: i32,
    setup: ChildSetup,
    program: OsString,
    args: Vec<OsString>,
}

/// Parses the shim's arguments (those after [`SHIM_ARG`]).
fn parse(args: Vec<OsString>) -> Result<Plan, String> {
    let mut parent = None;
    let mut options = Vec::new();
    let mut rest = args.into_iter();
    while let Some(arg) = rest.next() {
        match arg.to_str() {
            Some("--") => break,
            Some("--parent") => {
                let value = rest.next().ok_or("--parent needs a pid")?;
                let pid = value
                    .to_str()
                    .and_then(|v| v.parse::<i32>().ok())
                    .ok_or_else(|| format!("--parent {value:?} is not a pid"))?;
                parent = Some(pid);
            }
            _ => {
                let value = rest
                    .next()
                    .ok_or_else(|| format!("{arg:?} needs a value"))?;
                options.push((arg, value));
            }
        }
    }
    let parent = parent.ok_or("--parent is missing")?;
    let setup = ChildSetup::from_args(options)?;
    let program = rest.next().ok_or("no command after --")?;
    Ok(Plan {
        parent,
        setup,
        program,
        args: rest.collect(),
    })
}

/// The shim's whole life: prepare this process, then become the instance. Returns only on
/// failure, with the reason written to stderr.
pub fn run_exec_shim(args: Vec<OsString>) -> ExitCode {
    let error = match parse(args) {
        Ok(plan) => become_instance(plan),
        Err(e) => format!("bad arguments: {e}"),
    };
    eprintln!("berth {SHIM_ARG}: {error}");
    ExitCode::from(SHIM_FAILED)
}

fn become_instance(plan: Plan) -> String {
    if let Err(e) = crate::process::prepare_instance(plan.parent, Some(&plan.setup)) {
        return format!("preparing the instance: {e}");
    }
    let error = Command::new(&plan.program).args(&plan.args).exec();
    format!("cannot run {:?}: {error}", plan.program)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of(cmd: &Command) -> Vec<OsString> {
        cmd.get_args().skip(1).map(OsStr::to_owned).collect()
    }

    #[test]
    fn the_shim_reads_back_what_the_command_says() {
        let setup = crate::limits::every_step();
        let args = [OsString::from("-c"), OsString::from("exec app --flag -- x")];
        let cmd = command(
            Path::new("/bin/berth"),
            42,
            Some(&setup),
            "/bin/sh".as_ref(),
            &args,
        );
        assert_eq!(cmd.get_program(), "/bin/berth");
        assert_eq!(cmd.get_args().next(), Some(OsStr::new(SHIM_ARG)));

        let plan = parse(args_of(&cmd)).expect("parses");
        assert_eq!(plan.parent, 42);
        assert_eq!(plan.setup, setup);
        assert_eq!(plan.program, "/bin/sh");
        assert_eq!(plan.args, args);
    }

    #[test]
    fn without_limits_only_the_parent_is_passed() {
        let cmd = command(Path::new("/b"), 7, None, "sleep".as_ref(), &["1".into()]);
        let plan = parse(args_of(&cmd)).expect("parses");
        assert_eq!(plan.parent, 7);
        assert_eq!(plan.setup, ChildSetup::default());
        assert_eq!(plan.args, vec![OsString::from("1")]);
    }

    #[test]
    fn a_program_is_looked_up_as_exec_would() {
        let cwd = Path::new("/");
        assert!(check_program("sh".as_ref(), cwd, None).is_ok());
        assert!(check_program("/bin/sh".as_ref(), cwd, None).is_ok());
        assert!(check_program("bin/sh".as_ref(), cwd, None).is_ok());
        let missing = check_program("no-such-berth-program".as_ref(), cwd, None).unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
        assert!(check_program("sh".as_ref(), cwd, Some("/nonexistent".as_ref())).is_err());
        assert!(check_program("./sh".as_ref(), Path::new("/tmp"), None).is_err());
    }

    #[test]
    fn bad_arguments_are_named() {
        let parse_str = |a: &[&str]| parse(a.iter().map(OsString::from).collect());
        assert_eq!(parse_str(&["--", "x"]).unwrap_err(), "--parent is missing");
        assert!(
            parse_str(&["--parent", "x"])
                .unwrap_err()
                .contains("not a pid")
        );
        assert_eq!(
            parse_str(&["--parent", "1", "--"]).unwrap_err(),
            "no command after --"
        );
        assert!(
            parse_str(&["--parent", "1", "--rlimit", "bogus=1", "--", "x"])
                .unwrap_err()
                .contains("bogus")
        );
    }
}
