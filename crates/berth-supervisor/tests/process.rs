//! Real processes: `sh -c` scripts and `sleep`. No ports are bound.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_supervisor::{
    CommandSpec, Ending, Error, Instance, LogConfig, RotatingLog, Signal, capture,
};
use tokio::io::{AsyncBufReadExt, BufReader};

mod common;
use common::{eventually_gone, is_gone};

fn sh(script: &str) -> CommandSpec {
    CommandSpec::new("sh", std::env::temp_dir())
        .arg("-c")
        .arg(script)
}

/// Reads stdout lines until one is found; returns them all. Used to wait until a script has
/// set up its traps before signalling it.
async fn read_until_line(instance: &mut Instance, want: &str) -> Vec<String> {
    let (stdout, stderr) = instance.take_output().expect("pipes");
    // Drain stderr too: a closed pipe would SIGPIPE the script on its first diagnostic.
    let mut errors = BufReader::new(stderr).lines();
    tokio::spawn(async move { while let Ok(Some(_)) = errors.next_line().await {} });
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            let done = line == want;
            seen.push(line);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("script output");
    // Keep reading (and discarding) so the script never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    seen
}

fn log_config(dir: &Path, max_bytes: u64, keep: usize) -> LogConfig {
    LogConfig {
        dir: dir.to_owned(),
        max_bytes,
        keep,
    }
}

#[tokio::test]
async fn captures_output_with_timestamps_env_and_cwd() {
    let logs = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let spec = CommandSpec::new("sh", work.path())
        .arg("-c")
        .arg(r#"echo "port=$PORT greeting=$GREETING"; pwd; echo "to stderr" >&2; exit 3"#)
        .env("GREETING", "hello")
        .port(40123);
    let mut instance = Instance::spawn(&spec).expect("spawn");
    let (stdout, stderr) = instance.take_output().expect("pipes");
    let log = RotatingLog::open(&log_config(logs.path(), 1 << 20, 3), "web.1").expect("log");
    let capture = capture(stdout, stderr, log).expect("capture");

    assert_eq!(
        instance.wait().await.expect("wait"),
        Ending::Exited { code: 3 }
    );
    capture.finish().await.expect("finish");

    let text = std::fs::read_to_string(logs.path().join("web.1.log")).expect("log file");
    let lines: Vec<(&str, &str, &str)> = text
        .lines()
        .map(|l| {
            let (stamp, rest) = l.split_once(' ').expect("stamp");
            let (stream, msg) = rest.split_once(' ').expect("stream");
            (stamp, stream, msg)
        })
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (stamp, _, _) in &lines {
        // 2026-11-22T05:48:02.123Z
        assert_eq!(stamp.len(), 24, "{stamp}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
    }
    let work_dir = work.path().canonicalize().expect("canonical");
    let mut msgs: Vec<(&str, &str)> = lines.iter().map(|&(_, s, m)| (s, m)).collect();
    msgs.sort();
    assert_eq!(
        msgs,
        [
            ("stderr", "to stderr"),
            ("stdout", &*work_dir.to_string_lossy()),
            ("stdout", "port=40123 greeting=hello"),
        ]
    );
}

#[tokio::test]
async fn rotation_keeps_n_files_for_a_real_process() {
    let logs = tempfile::tempdir().expect("tempdir");
    let mut instance = Instance::spawn(&sh(
        "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done",
    ))
    .expect("spawn");
    let (stdout, stderr) = instance.take_output().expect("pipes");
    let log = RotatingLog::open(&log_config(logs.path(), 512, 3), "worker.1").expect("log");
    let capture = capture(stdout, stderr, log).expect("capture");
    assert_eq!(
        instance.wait().await.expect("wait"),
        Ending::Exited { code: 0 }
    );
    capture.finish().await.expect("finish");

    let mut names: Vec<String> = std::fs::read_dir(logs.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "worker.1.log",
            "worker.1.log.1",
            "worker.1.log.2",
            "worker.1.log.3"
        ]
    );
    for name in &names {
        let len = std::fs::metadata(logs.path().join(name))
            .expect("meta")
            .len();
        assert!(len <= 512, "{name} is {len} bytes");
    }
    let live = std::fs::read_to_string(logs.path().join("worker.1.log")).expect("live");
    assert!(live.trim_end().ends_with("stdout line-199"), "{live}");
}

#[tokio::test]
async fn graceful_stop_with_sigterm() {
    let mut instance = Instance::spawn(&sh(
        "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done",
    ))
    .expect("spawn");
    read_until_line(&mut instance, "ready").await;
    let started = Instant::now();
    let ending = instance
        .stop(Signal::Term, Duration::from_secs(10))
        .await
        .expect("stop");
    assert_eq!(ending, Ending::Exited { code: 0 });
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(eventually_gone(instance.pid()).await);
}

#[tokio::test]
async fn an_untrapped_signal_is_reported() {
    let mut instance = Instance::spawn(&sh("echo ready; sleep 300")).expect("spawn");
    read_until_line(&mut instance, "ready").await;
    let ending = instance
        .stop(Signal::Term, Duration::from_secs(10))
        .await
        .expect("stop");
    assert_eq!(
        ending,
        Ending::Signaled {
            signal: libc::SIGTERM
        }
    );
}

#[tokio::test]
async fn ignoring_sigterm_gets_sigkilled_after_the_timeout() {
    let mut instance =
        Instance::spawn(&sh("trap '' TERM; echo ready; while :; do sleep 0.1; done"))
            .expect("spawn");
    read_until_line(&mut instance, "ready").await;
    let timeout = Duration::from_secs(1);
    let started = Instant::now();
    let ending = instance.stop(Signal::Term, timeout).await.expect("stop");
    let took = started.elapsed();
    assert_eq!(ending, Ending::ForceKilled);
    assert!(took >= timeout, "{took:?}");
    assert!(took < timeout + Duration::from_secs(2), "{took:?}");
    assert!(eventually_gone(instance.pid()).await);
}

#[tokio::test]
async fn stop_kills_the_whole_group() {
    // The leader exits cleanly on TERM but leaves a grandchild that ignores TERM; the group
    // sweep after the leader exits must still get it.
    let mut instance = Instance::spawn(&sh(
        "(trap '' TERM; exec sleep 300) & echo $!; trap 'exit 0' TERM; echo ready; \
         while :; do sleep 0.1; done",
    ))
    .expect("spawn");
    let lines = read_until_line(&mut instance, "ready").await;
    let grandchild: i32 = lines[0].parse().expect("grandchild pid");
    assert!(!is_gone(grandchild), "grandchild should be running");

    let ending = instance
        .stop(Signal::Term, Duration::from_secs(10))
        .await
        .expect("stop");
    assert_eq!(ending, Ending::Exited { code: 0 });
    assert!(
        eventually_gone(grandchild).await,
        "grandchild {grandchild} survived"
    );
}

#[tokio::test]
async fn dropping_an_instance_kills_its_group() {
    let mut instance =
        Instance::spawn(&sh("sleep 300 & echo $!; echo ready; wait")).expect("spawn");
    let lines = read_until_line(&mut instance, "ready").await;
    let grandchild: i32 = lines[0].parse().expect("grandchild pid");
    let leader = instance.pid();
    drop(instance);
    assert!(eventually_gone(leader).await);
    assert!(eventually_gone(grandchild).await);
}

#[tokio::test]
async fn berth_dying_by_sigkill_takes_the_instance_with_it() {
    let helper = env!("CARGO_BIN_EXE_berth-supervisor-testhelper");
    let mut fake_berth = tokio::process::Command::new(helper)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn helper");
    let stdout = fake_berth.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("helper output in time")
        .expect("read")
        .expect("a line");
    let instance: i32 = line.parse().expect("pid");
    assert!(!is_gone(instance));
    // The instance's pid runs the command itself, once it has exec'd.
    let comm = || std::fs::read_to_string(format!("/proc/{instance}/comm")).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while comm().trim() != "sleep" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(comm().trim(), "sleep");

    fake_berth.start_kill().expect("SIGKILL helper");
    fake_berth.wait().await.expect("reap helper");
    assert!(
        eventually_gone(instance).await,
        "instance {instance} outlived berth"
    );
}

#[tokio::test]
async fn a_missing_command_names_the_command_and_directory() {
    let work = tempfile::tempdir().expect("tempdir");
    let err = Instance::spawn(&CommandSpec::new("no-such-berth-app", work.path()))
        .expect_err("must fail");
    assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("no-such-berth-app"), "{msg}");
    assert!(msg.contains(&*work.path().to_string_lossy()), "{msg}");
    assert!(msg.contains("No such file"), "{msg}");
}

/// Run without the shell, a command that cannot start is named as written, not as `/bin/sh`.
#[tokio::test]
async fn a_command_run_without_the_shell_is_named_in_its_error() {
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("web"), "#!/bin/sh\n").expect("write");
    let err = Instance::spawn(&CommandSpec::shell("exec ./web --port 1", work.path()))
        .expect_err("not executable");
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot start `./web --port 1` in "),
        "{msg}"
    );
    assert!(msg.contains("Permission denied"), "{msg}");
}

#[tokio::test]
async fn a_missing_working_directory_is_its_own_error() {
    let err = Instance::spawn(&CommandSpec::new("sh", "/nonexistent/berth/release"))
        .expect_err("must fail");
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingWorkingDir { .. }), "{err:?}");
    assert!(
        msg.contains("/nonexistent/berth/release") && msg.contains("`sh`"),
        "{msg}"
    );
}
