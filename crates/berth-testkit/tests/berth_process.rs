//! BerthProcess against stand-in `berth` binaries: small shell scripts, with a
//! FakeUpstream playing berth's admin listener where readiness matters.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_testkit::{BerthProcess, BerthProcessBuilder, FakeUpstream, StartError, free_addr};

const WAIT: Duration = Duration::from_secs(5);

/// A script standing in for berth, in its own directory (kept alive by the
/// returned guard).
fn fake_berth(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake-berth");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, path)
}

/// Retries ETXTBSY: another test thread forking while our script was open for
/// writing can briefly make it "busy".
async fn start(builder: BerthProcessBuilder) -> Result<BerthProcess, StartError> {
    for _ in 0..20 {
        match builder.clone().start().await {
            Err(StartError::Spawn { source, .. })
                if source.raw_os_error() == Some(libc::ETXTBSY) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
    builder.start().await
}

fn alive(pid: u32) -> bool {
    // A killed orphan may linger as a zombie until init reaps it; that is dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

// Traps first: a signal arriving before them would kill the shell outright.
const LONG_RUNNING: &str = r#"
trap 'echo got-hup' HUP
trap 'echo got-term; exit 0' TERM
echo "args: $*"
echo "cwd: $(pwd)"
echo "env: $FAKE_MODE"
echo "to stderr" >&2
while true; do sleep 0.05; done
"#;

#[tokio::test]
async fn runs_serve_with_config_and_captures_output() {
    let (_bin_dir, bin) = fake_berth(LONG_RUNNING);
    let admin = FakeUpstream::start_named("admin").await;
    let mut berth = start(
        BerthProcess::builder(&bin)
            .config_toml("[server]\nlisten = \"127.0.0.1:1\"\n")
            .admin_addr(admin.addr())
            .arg("--flag")
            .env("FAKE_MODE", "bar"),
    )
    .await
    .unwrap();
    assert!(admin.requests().iter().any(|r| r.path() == "/ready"));
    assert!(berth.pid() > 0);
    assert_eq!(berth.admin_addr(), Some(admin.addr()));

    let config = berth.config_path().to_path_buf();
    assert_eq!(config, berth.dir().join("berth.toml"));
    let args = berth
        .wait_for_stdout(|l| l.starts_with("args: "), WAIT)
        .await
        .unwrap();
    assert_eq!(
        args,
        format!("args: serve --config {} --flag", config.display())
    );
    berth
        .wait_for_stdout(|l| l == "env: bar", WAIT)
        .await
        .unwrap();
    let cwd = berth
        .wait_for_stdout(|l| l.starts_with("cwd: "), WAIT)
        .await
        .unwrap();
    assert_eq!(
        Path::new(cwd.trim_start_matches("cwd: "))
            .canonicalize()
            .unwrap(),
        berth.dir().canonicalize().unwrap()
    );
    berth
        .wait_for_stderr(|l| l == "to stderr", WAIT)
        .await
        .unwrap();
    assert_eq!(berth.stderr_text(), "to stderr\n");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "[server]\nlisten = \"127.0.0.1:1\"\n"
    );

    berth.write_config("reloaded = true\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "reloaded = true\n"
    );
    berth.signal(libc::SIGHUP).unwrap();
    berth
        .wait_for_stdout(|l| l == "got-hup", WAIT)
        .await
        .unwrap();

    let status = berth.stop(WAIT).await;
    assert_eq!(status.code(), Some(0));
    assert!(berth.stdout_lines().iter().any(|l| l == "got-term"));
    // Stopping twice is harmless.
    assert_eq!(berth.stop(WAIT).await.code(), Some(0));
}

#[tokio::test]
async fn wait_for_reports_what_was_captured() {
    let (_bin_dir, bin) = fake_berth("echo only-line; exec sleep 30");
    let berth = start(BerthProcess::builder(&bin)).await.unwrap();
    berth
        .wait_for_stdout(|l| l == "only-line", WAIT)
        .await
        .unwrap();
    let err = berth
        .wait_for_stdout(|l| l == "never", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(!err.closed);
    assert!(err.to_string().contains("only-line"), "{err}");
}

#[tokio::test]
async fn start_fails_with_stderr_when_berth_exits() {
    let (_bin_dir, bin) = fake_berth("echo 'config error: no apps' >&2; exit 3");
    let err = start(BerthProcess::builder(&bin).admin_addr(free_addr()))
        .await
        .unwrap_err();
    match &err {
        StartError::Exited { status, stderr, .. } => {
            assert_eq!(status.code(), Some(3));
            assert!(stderr.contains("config error: no apps"), "{stderr}");
        }
        other => panic!("expected Exited, got {other}"),
    }
    assert!(format!("{err:?}").contains("config error: no apps"));
}

#[tokio::test]
async fn start_times_out_and_kills_when_never_ready() {
    let (_bin_dir, bin) = fake_berth("echo $$; echo starting >&2; exec sleep 30");
    let started = Instant::now();
    let err = start(
        BerthProcess::builder(&bin)
            .admin_addr(free_addr())
            .ready_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4));
    match err {
        StartError::NotReady { stderr, stdout, .. } => {
            assert!(stderr.contains("starting"), "{stderr}");
            let pid: u32 = stdout.trim().parse().unwrap();
            assert!(!alive(pid), "berth pid {pid} survived a failed start");
        }
        other => panic!("expected NotReady, got {other}"),
    }
}

#[tokio::test]
async fn readiness_waits_for_200() {
    let (_bin_dir, bin) = fake_berth("exec sleep 30");
    let admin = std::sync::Arc::new(FakeUpstream::start_named("admin").await);
    admin.set_status(503);
    let started = Instant::now();
    let flipper = admin.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        flipper.clear_status();
    });
    start(BerthProcess::builder(&bin).admin_addr(admin.addr()))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(admin.request_count() >= 2);
}

#[tokio::test]
async fn stop_escalates_to_sigkill() {
    let (_bin_dir, bin) = fake_berth("trap '' TERM; echo ready; while true; do sleep 0.05; done");
    let mut berth = start(BerthProcess::builder(&bin)).await.unwrap();
    berth.wait_for_stdout(|l| l == "ready", WAIT).await.unwrap();
    let started = Instant::now();
    let status = berth.stop(Duration::from_millis(300)).await;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(berth.try_wait(), Some(status));
}

#[tokio::test]
async fn wait_exit_sees_a_process_that_ends_by_itself() {
    let (_bin_dir, bin) = fake_berth("echo bye; exit 4");
    let mut berth = start(BerthProcess::builder(&bin)).await.unwrap();
    let status = berth.wait_exit(WAIT).await.unwrap();
    assert_eq!(status.code(), Some(4));
    assert_eq!(berth.stdout_lines(), ["bye"]);
    // Waiting on a closed stream gives up at once instead of using up the limit.
    let asked = Instant::now();
    let err = berth
        .wait_for_stdout(|l| l == "never", WAIT)
        .await
        .unwrap_err();
    assert!(err.closed, "{err}");
    assert!(asked.elapsed() < WAIT / 2, "waited {:?}", asked.elapsed());
    assert!(err.to_string().contains("bye"), "{err}");
    assert_eq!(
        berth.wait_for_stdout(|l| l == "bye", WAIT).await.unwrap(),
        "bye"
    );
}

#[tokio::test]
async fn drop_kills_berth_and_its_children() {
    let (_bin_dir, bin) = fake_berth("sleep 30 & echo \"child $!\"; echo \"self $$\"; wait");
    let berth = start(BerthProcess::builder(&bin)).await.unwrap();
    let child = berth
        .wait_for_stdout(|l| l.starts_with("child "), WAIT)
        .await
        .unwrap();
    let child: u32 = child.trim_start_matches("child ").parse().unwrap();
    let me = berth.pid();
    assert!(alive(child) && alive(me));
    drop(berth);
    let deadline = Instant::now() + WAIT;
    while (alive(child) || alive(me)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(child), "app process {child} outlived the test");
    assert!(!alive(me), "berth {me} outlived the test");
}
