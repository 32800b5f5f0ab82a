//! Running an app's build command inside a new release (blocking: it runs inside the
//! release import, on a blocking thread).
//!
//! The command runs with `/bin/sh -c` in its own process group, so a timeout kills
//! everything it started (`npm` spawns a tree). Its output goes to the release's build log;
//! the last lines come back in the error, since that is where the reason usually is.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Lines of the build log quoted in an error.
const TAIL_LINES: usize = 15;
/// How often a running build is checked for exit or timeout.
const POLL: Duration = Duration::from_millis(50);

/// Runs `command` in `dir` with `env` added, writing output to `log`. `Err` explains the
/// failure and quotes the end of the log.
pub fn run_build(
    dir: &Path,
    command: &str,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    log: &Path,
) -> Result<Duration, String> {
    let out =
        File::create(log).map_err(|e| format!("cannot create build log {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot open build log {}: {e}", log.display()))?;
    let started = Instant::now();
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the build command: {e}"))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                // The whole group: the shell and whatever it started.
                let pgid = child.id() as libc::pid_t;
                // SAFETY: kill(2) with a negative pid signals the process group we created.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                let _ = child.wait();
                return Err(format!(
                    "build command `{command}` did not finish within {} and was killed (raise \
                     [build] timeout if it needs longer); last lines of {}:\n{}",
                    humantime::format_duration(timeout),
                    log.display(),
                    tail(log)
                ));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(format!("waiting for the build command: {e}")),
        }
    };
    if status.success() {
        return Ok(started.elapsed());
    }
    let how = match (status.code(), status.signal()) {
        (Some(127), _) => "exited with status 127 (command not found)".to_owned(),
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "failed".to_owned(),
    };
    Err(format!(
        "build command `{command}` {how}; last lines of {}:\n{}",
        log.display(),
        tail(log)
    ))
}

/// The last [`TAIL_LINES`] lines of a file (reading at most its last 64 KiB).
pub fn tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())])
    }

    #[test]
    fn success_writes_the_log_in_the_dir_with_the_env() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        run_build(
            dir.path(),
            "echo $GREETING > out.txt; echo done",
            &env(),
            Duration::from_secs(30),
            &log,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
            "hi\n"
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "done\n");
    }

    #[test]
    fn failure_quotes_the_end_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let err = run_build(
            dir.path(),
            "for i in $(seq 1 30); do echo line $i; done; echo boom >&2; exit 3",
            &env(),
            Duration::from_secs(30),
            &log,
        )
        .unwrap_err();
        assert!(err.contains("exited with status 3"), "{err}");
        assert!(
            err.contains("  | boom") && err.contains("  | line 30"),
            "{err}"
        );
        assert!(!err.contains("line 10\n"), "only the tail is quoted: {err}");
        let err = run_build(
            dir.path(),
            "no-such-tool --x",
            &env(),
            Duration::from_secs(30),
            &log,
        )
        .unwrap_err();
        assert!(err.contains("command not found"), "{err}");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let pidfile = dir.path().join("child.pid");
        let cmd = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let err =
            run_build(dir.path(), &cmd, &env(), Duration::from_millis(500), &log).unwrap_err();
        assert!(err.contains("did not finish within"), "{err}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep was in the group and is gone (reaped by init or a zombie).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            if stat.is_empty() || state == Some("Z") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sleep {pid} survived the build timeout"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
