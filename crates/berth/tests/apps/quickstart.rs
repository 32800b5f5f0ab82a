//! `scripts/quickstart` as README.md tells a newcomer to run it: berth starts with the demo
//! app deployed, `scripts/quickstart bad` sends a failing release through the canary and
//! berth rolls it back, and stopping the first script stops berth and the app.
//!
//! The script runs with the debug binaries next to this test's `berth` (BERTH_BIN_DIR), so
//! `berth-demo` must be built there too: `cargo test --workspace` builds it (the demo has
//! integration tests of its own); alone, run `cargo build -p berth -p berth-demo` first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::free_addr;
use serde_json::Value;

use crate::support::{BIN, Ran, alive, client, descendants, eventually, run_cli};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn bin_dir() -> PathBuf {
    Path::new(BIN).parent().expect("bin dir").to_owned()
}

/// The script, with the environment that points it at this test's ports, directories and
/// binaries (and never at the developer's saved login).
fn quickstart(keep: &Path, args: &[&str], ports: Option<(u16, u16)>) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/quickstart"))
        .args(args)
        .current_dir(repo_root())
        .env("BERTH_QUICKSTART_DATA_DIR", keep.join("data"))
        .env("BERTH_BIN_DIR", bin_dir())
        .env("BERTH_CREDENTIALS", keep.join("credentials.json"))
        .env("TMPDIR", keep)
        .env_remove("BERTH_REMOTE")
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_QUICKSTART_PORT")
        .env_remove("BERTH_QUICKSTART_ADMIN_PORT");
    if let Some((port, admin)) = ports {
        cmd.env("BERTH_QUICKSTART_PORT", port.to_string())
            .env("BERTH_QUICKSTART_ADMIN_PORT", admin.to_string());
    }
    cmd
}

/// The demo app's `/health/version` through the edge, as a newcomer's curl sends it.
async fn version(port: u16) -> Option<Value> {
    let r = client()
        .get(format!("http://127.0.0.1:{port}/health/version"))
        .header("host", "localhost")
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

/// Kills the first script's whole tree if the test fails before stopping it.
struct Serving {
    child: Child,
    output: PathBuf,
}

impl Serving {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id() as i64;
            for p in descendants(pid).into_iter().chain([pid]) {
                // SAFETY: kill(2) on pids this test started; no memory is involved.
                unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
            }
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_deploys_the_demo_and_rolls_back_a_bad_canary() {
    let demo = bin_dir().join("berth-demo");
    assert!(
        demo.exists(),
        "{} is missing: run `cargo build -p berth -p berth-demo` (scripts/test builds it)",
        demo.display()
    );
    let started = Instant::now();
    let keep = tempfile::tempdir().unwrap();
    let (port, admin) = (free_addr().port(), free_addr().port());

    // scripts/quickstart: berth starts and the demo app answers through the edge.
    let output = keep.path().join("quickstart.out");
    let log = std::fs::File::create(&output).unwrap();
    let child = quickstart(keep.path(), &[], Some((port, admin)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("scripts/quickstart starts");
    let mut serving = Serving { child, output };
    let end = Instant::now() + Duration::from_secs(45);
    let v1 = loop {
        if let Some(v) = version(port).await {
            break v;
        }
        if let Ok(Some(status)) = serving.child.try_wait() {
            panic!(
                "scripts/quickstart exited ({status}):\n{}",
                serving.output()
            );
        }
        assert!(
            Instant::now() < end,
            "the demo app never answered:\n{}",
            serving.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(v1["version"], "1", "{v1}");
    let stable = v1["release"].as_str().unwrap().to_owned();
    assert!(stable.starts_with("r-"), "{v1}");
    // The first script has told the reader what to do next, and never shows the token.
    let token_file = keep.path().join("data/admin.token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        eventually(Duration::from_secs(5), || std::future::ready(
            serving.output().contains("scripts/quickstart bad")
        ))
        .await,
        "{}",
        serving.output()
    );

    // scripts/quickstart bad, from "another terminal": the ports come from the running one.
    let bad = crate::shared::run_bounded(
        &mut quickstart(keep.path(), &["bad"], None),
        Duration::from_secs(60),
    );
    let bad = Ran {
        code: bad.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&bad.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&bad.stderr).into_owned(),
    };
    bad.ok();
    assert!(
        bad.stdout
            .contains("version 3 was rolled back automatically"),
        "{}",
        bad.stdout
    );
    assert!(bad.stdout.contains("error rate"), "{}", bad.stdout);

    // The stable release still serves every request, and the deploy is recorded as
    // rolled back by the canary analysis.
    for _ in 0..20 {
        let v = version(port).await.expect("the demo app answers");
        assert_eq!(
            (v["release"].as_str(), &v["version"]),
            (Some(&*stable), &Value::from("1"))
        );
    }
    let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
    let deploys = run_cli(admin_addr, &token, &["deploys", "demo", "--json"], None);
    let deploys = deploys.ok().json();
    let latest = &deploys["deployments"][0];
    assert_eq!(latest["state"], "rolled_back", "{deploys}");
    assert_eq!(latest["strategy"], "canary", "{deploys}");
    let steps = latest["steps"].as_array().cloned().unwrap_or_default();
    assert!(
        steps
            .iter()
            .any(|s| s["step"] == "analysis" && s["decision"] == "fail"),
        "{latest}"
    );
    let ps = run_cli(admin_addr, &token, &["ps", "demo", "--json"], None)
        .ok()
        .json();
    let running: Vec<&str> = ps["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["release"].as_str())
        .collect();
    assert_eq!(running, vec![stable.as_str()], "{ps}");

    // Ctrl-C on the first script stops berth and every instance.
    let pid = serving.child.id() as i64;
    let tree = descendants(pid);
    assert!(
        tree.iter().any(|p| is_demo(*p)),
        "no berth-demo under the script: {tree:?}"
    );
    // SAFETY: kill(2) on the script this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serving.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < end,
            "scripts/quickstart still running 20 s after SIGINT:\n{}",
            serving.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}\n{}", serving.output());
    let left: Vec<i64> = tree.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "still running after Ctrl-C: {left:?}");
    let demos = demo_processes_in(&keep.path().join("data"));
    assert!(demos.is_empty(), "berth-demo processes left: {demos:?}");
    assert!(serving.output().contains("stopped"), "{}", serving.output());
    // The admin token was read from its file, never printed.
    assert!(!serving.output().contains(&token));
    assert!(!bad.stdout.contains(&token) && !bad.stderr.contains(&token));
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}

fn is_demo(pid: i64) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|exe| exe.file_name().is_some_and(|n| n == "berth-demo"))
        .unwrap_or(false)
}

/// berth-demo processes running from a release under `data_dir`.
fn demo_processes_in(data_dir: &Path) -> Vec<i64> {
    let data_dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_owned());
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i64>().ok())
        .filter(|p| is_demo(*p) && alive(*p))
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/cwd"))
                .map(|cwd| cwd.starts_with(&data_dir))
                .unwrap_or(false)
        })
        .collect()
}
