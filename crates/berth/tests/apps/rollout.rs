//! Canary, blue-green, rollback, the pre-deploy hook and smoke checks, with real processes
//! and real traffic through the edge.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Berth, Load, Ran, app_dir, eventually, run_cli, start};

/// A Python web app: `/health` is always 200; any other path answers the `version` file,
/// except that every `FAIL_EVERY`th such request is a 500 (0: never).
const SERVER_PY: &str = r#"import http.server, itertools, os
fail_every = int(os.environ.get("FAIL_EVERY", "0"))
version = open("version").read().encode()
counter = itertools.count(1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/health":
            code, body = 200, b"ok"
        elif fail_every and next(counter) % fail_every == 0:
            code, body = 500, b"boom"
        else:
            code, body = 200, version
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// App `shop` at `version`, failing every `fail_every`th request, with `deploy` lines added
/// to its `[deploy]` table and `extra` after it.
fn app(version: &str, fail_every: u32, deploy: &str, extra: &str) -> tempfile::TempDir {
    let spec = format!(
        "name = \"shop\"\nhosts = [\"shop.test\"]\n\n[deploy]\ntimeout = \"30s\"\n\
         drain_timeout = \"2s\"\n{deploy}\n{extra}\n[env]\nFAIL_EVERY = \"{fail_every}\"\n\n\
         [processes.web]\ncommand = \"exec python3 server.py\"\ninstances = 1\n\
         stop_timeout = \"5s\"\n[processes.web.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n"
    );
    app_dir(&[
        ("berth.toml", &spec),
        ("server.py", SERVER_PY),
        ("version", version),
    ])
}

/// A webhook on loopback that keeps every JSON body posted to it.
struct Webhook {
    url: String,
    got: Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Webhook {
    async fn start() -> Webhook {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = got.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let keep = keep.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let keep = keep.clone();
                            async move {
                                let body = req.into_body().collect().await?.to_bytes();
                                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                                    keep.lock().unwrap().push(v);
                                }
                                Ok::<_, hyper::Error>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Webhook { url, got }
    }

    fn notify(&self) -> String {
        format!(
            "[[deploy.notify]]\nurl = \"{}\"\nformat = \"json\"\n",
            self.url
        )
    }

    /// The events received, waiting a little for the last ones (they are sent in the
    /// background).
    async fn events(&self, last: &str) -> Vec<String> {
        let events = || -> Vec<String> {
            self.got
                .lock()
                .unwrap()
                .iter()
                .filter_map(|v| v["event"].as_str().map(str::to_owned))
                .collect()
        };
        eventually(Duration::from_secs(10), || {
            std::future::ready(events().iter().any(|e| e == last))
        })
        .await;
        events()
    }
}

/// Fast analysis for tests: one-second windows, judged from 10 requests.
const FAST_ANALYSIS: &str =
    "[deploy.analysis]\ninterval = \"1s\"\nmin_requests = 10\nmax_error_rate = 0.05\n";

/// Runs the CLI on a blocking thread, so the test can send traffic and commands meanwhile.
fn cli_in_background(b: &Berth, args: &[&str]) -> tokio::task::JoinHandle<Ran> {
    let (admin, token) = (b.admin, b.token());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(admin, &token, &args, None)
    })
}

/// A berth serving release v1 of the app, and v1's release id.
async fn start_with_v1(keep: &tempfile::TempDir) -> (Berth, String) {
    let b = start(keep).await;
    b.deploy(app("v1", 0, "", "").path()).ok();
    let v1 = b.ps("shop")["release"].as_str().unwrap().to_owned();
    (b, v1)
}

/// Asserts that a CLI run failed with exit status 1 and said `text`.
#[track_caller]
fn failed_with(out: &Ran, text: &str) {
    assert_eq!(
        out.code, 1,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert!(out.stderr.contains(text), "{text:?} not in: {}", out.stderr);
}

fn latest_deployment(b: &Berth) -> Value {
    let deps = b.cli(&["deploys", "shop", "--json"]).ok().json();
    deps["deployments"]
        .as_array()
        .and_then(|d| d.first())
        .cloned()
        .unwrap_or_else(|| panic!("no deployment: {deps}"))
}

fn steps_of(d: &Value) -> Vec<(String, String, String)> {
    d["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default().to_owned(),
                s["decision"].as_str().unwrap_or_default().to_owned(),
                s["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The pids of `release`'s instances, sorted.
fn pids_of(b: &Berth, release: &str) -> Vec<i64> {
    let ps = b.ps("shop");
    let mut pids: Vec<i64> = ps["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["release"] == release)
        .filter_map(|i| i["pid"].as_i64())
        .collect();
    pids.sort_unstable();
    pids
}

fn releases_running(b: &Berth) -> Vec<String> {
    let ps = b.ps("shop");
    let mut r: Vec<String> = ps["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["release"].as_str().map(str::to_owned))
        .collect();
    r.dedup();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_one_request_in_five_is_rolled_back_within_a_window() {
    let keep = tempfile::tempdir().unwrap();
    let (b, v1) = start_with_v1(&keep).await;

    let hook = Webhook::start().await;
    let load = Load::start(&b, "shop.test", 1);
    let bad = app(
        "v2",
        5,
        "strategy = \"canary\"\nsteps = [{ weight = 50, pause = \"30s\" }]",
        &format!("{FAST_ANALYSIS}{}", hook.notify()),
    );
    let out = b.deploy(bad.path());
    let seen = load.finish().await;
    failed_with(&out, "rolled back");
    failed_with(&out, "error rate");

    // The numbers behind the decision are in the deployment's log.
    let d = latest_deployment(&b);
    assert_eq!(d["state"], "rolled_back", "{d}");
    assert_eq!(d["strategy"], "canary");
    let steps = steps_of(&d);
    let failed = steps
        .iter()
        .find(|(step, decision, _)| step == "analysis" && decision == "fail")
        .unwrap_or_else(|| panic!("no failed analysis in {steps:?}"));
    assert!(failed.2.contains("above the limit 5.00%"), "{failed:?}");
    assert!(steps.iter().any(|(s, _, _)| s == "rollback"), "{steps:?}");

    // Everything is back on v1, the canary's instances are gone, and every request after
    // the rollback is answered by v1.
    assert_eq!(releases_running(&b), vec![v1.clone()]);
    for _ in 0..20 {
        assert_eq!(b.get("shop.test", "/version").await, (200, "v1".into()));
    }
    // Users saw only some of the canary's 500s: at most half the traffic for at most about
    // two windows, and never a connection error.
    let errors = seen.iter().filter(|(s, _)| *s != 200).count();
    assert!(seen.iter().all(|(s, _)| *s == 200 || *s == 500), "{seen:?}");
    assert!(
        errors > 0,
        "the canary served no traffic: {} requests",
        seen.len()
    );
    assert!(
        errors * 10 < seen.len(),
        "{errors} failed of {} requests",
        seen.len()
    );
    // The webhook heard the start and the rollback, with the reason.
    assert_eq!(
        hook.events("rolled_back").await,
        vec!["started", "rolled_back"]
    );
    let last = hook.got.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last["app"], "shop");
    assert!(
        last["detail"].as_str().unwrap().contains("error rate"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_goes_through_its_steps_to_all_traffic() {
    let keep = tempfile::tempdir().unwrap();
    let (b, _) = start_with_v1(&keep).await;

    let hook = Webhook::start().await;
    let load = Load::start(&b, "shop.test", 1);
    let good = app(
        "v2",
        0,
        "strategy = \"canary\"\nsteps = [{ weight = 20, pause = \"1s\" }, { weight = 60, pause = \"1s\" }]",
        // A fifth of a slow trickle is too little to judge: probes make up the numbers.
        &format!(
            "{FAST_ANALYSIS}[[deploy.probe]]\npath = \"/version\"\ncount = 10\n{}",
            hook.notify()
        ),
    );
    let out = b.deploy(good.path());
    let seen = load.finish().await;
    out.ok();
    let bad: Vec<_> = seen
        .iter()
        .filter(|(s, body)| *s != 200 || (body != "v1" && body != "v2"))
        .collect();
    assert!(bad.is_empty(), "failed requests during the canary: {bad:?}");
    assert!(seen.iter().any(|(_, body)| body == "v2"));

    let d = latest_deployment(&b);
    assert_eq!(d["state"], "succeeded", "{d}");
    let steps = steps_of(&d);
    let passes = steps
        .iter()
        .filter(|(s, decision, _)| s == "analysis" && decision == "pass")
        .count();
    assert!(passes >= 2, "{steps:?}");
    assert!(
        steps
            .iter()
            .any(|(_, _, r)| r.contains("moving 60% of traffic")),
        "{steps:?}"
    );
    // The move itself is a step of its own, with the connections opened ahead of it.
    let moved = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "weight")
        .unwrap_or_else(|| panic!("no weight step: {steps:?}"));
    assert_eq!(moved["measurements"]["weight"], 60, "{moved}");
    assert!(
        moved["measurements"]["connections_opened"].is_u64(),
        "{moved}"
    );
    let numbers = &d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "analysis")
        .unwrap()["measurements"];
    assert!(
        numbers.to_string().contains("canary_requests"),
        "analysis steps record their numbers: {numbers}"
    );
    assert_eq!(numbers["probes"], 10, "{numbers}");
    for _ in 0..10 {
        assert_eq!(b.get("shop.test", "/version").await, (200, "v2".into()));
    }
    assert_eq!(
        hook.events("succeeded").await,
        vec!["started", "promoted", "succeeded"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_is_previewed_by_header_then_promoted_and_rolled_back() {
    let keep = tempfile::tempdir().unwrap();
    let (b, v1) = start_with_v1(&keep).await;

    let green = app(
        "v2",
        0,
        "strategy = \"blue-green\"\npreview_hosts = [\"preview.shop.test\"]",
        FAST_ANALYSIS,
    );
    let deploying = cli_in_background(&b, &["deploy", &green.path().to_string_lossy()]);
    // The new release runs beside the old one...
    let mut v2 = String::new();
    let started = eventually(Duration::from_secs(30), || {
        let found = releases_running(&b).into_iter().find(|r| *r != v1);
        if let Some(r) = &found {
            v2 = r.clone();
        }
        std::future::ready(found.is_some())
    })
    .await;
    assert!(started, "the new release never started");
    // ... but takes no traffic unless asked for by name.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..10 {
        assert_eq!(b.get("shop.test", "/version").await, (200, "v1".into()));
    }
    let preview = crate::support::client()
        .get(format!("http://{}/version", b.listen))
        .header("host", "shop.test")
        .header("x-berth-release", &v2)
        .send()
        .await
        .unwrap();
    assert_eq!(preview.text().await.unwrap(), "v2");
    // The preview host reaches the new release alone, with no header.
    for _ in 0..5 {
        assert_eq!(
            b.get("preview.shop.test", "/version").await,
            (200, "v2".into())
        );
    }

    b.cli(&["promote", "shop"]).ok();
    let out = deploying.await.unwrap();
    out.ok();
    assert!(
        out.stdout.contains("at host preview.shop.test"),
        "{}",
        out.stdout
    );
    assert_eq!(b.get("shop.test", "/version").await, (200, "v2".into()));
    assert_eq!(
        b.get("preview.shop.test", "/version").await,
        (200, "v2".into())
    );
    let steps = steps_of(&latest_deployment(&b));
    assert!(
        steps
            .iter()
            .any(|(s, _, r)| s == "command" && r.contains("promote")),
        "{steps:?}"
    );

    // No rollout in progress: promote has nothing to act on.
    let none = b.cli(&["promote", "shop"]);
    assert_eq!(none.code, 4, "{}", none.stderr);
    assert!(
        none.stderr.contains("no canary or blue-green deploy"),
        "{}",
        none.stderr
    );

    // Blue-green keeps the replaced release running (out of the route) for a while...
    assert!(
        out.stdout.contains(&format!("{v1} keeps running")),
        "{}",
        out.stdout
    );
    let warm_pids = pids_of(&b, &v1);
    assert!(
        !warm_pids.is_empty(),
        "v1 was not kept warm: {}",
        b.ps("shop")
    );
    assert_eq!(b.get("shop.test", "/version").await, (200, "v2".into()));

    // ... so one command goes back to it without starting anything.
    let back = b.cli(&["rollback", "shop"]);
    back.ok();
    assert!(
        back.stdout.contains(&format!("back on release {v1}")),
        "{}",
        back.stdout
    );
    assert!(back.stdout.contains("kept warm"), "{}", back.stdout);
    assert_eq!(b.get("shop.test", "/version").await, (200, "v1".into()));
    assert_eq!(releases_running(&b), vec![v1.clone()]);
    assert_eq!(
        pids_of(&b, &v1),
        warm_pids,
        "the warm instances took the traffic"
    );
    assert_eq!(latest_deployment(&b)["strategy"], "rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_during_a_manual_canary_step_rolls_back() {
    let keep = tempfile::tempdir().unwrap();
    let (b, v1) = start_with_v1(&keep).await;
    let canary = app(
        "v2",
        0,
        "strategy = \"canary\"\nsteps = [{ weight = 10, pause = \"manual\" }]",
        FAST_ANALYSIS,
    );
    let deploying = cli_in_background(&b, &["deploy", &canary.path().to_string_lossy()]);
    let both = eventually(Duration::from_secs(30), || {
        std::future::ready(releases_running(&b).len() == 2)
    })
    .await;
    assert!(both, "the canary never started");
    // The rollout is waiting: pausing and resuming are accepted.
    let paused = eventually(Duration::from_secs(10), || {
        std::future::ready(b.cli(&["pause", "shop"]).code == 0)
    })
    .await;
    assert!(paused, "pause was never accepted");
    b.cli(&["resume", "shop"]).ok();
    b.cli(&["abort", "shop"]).ok();
    let out = deploying.await.unwrap();
    failed_with(&out, "aborted by");
    assert_eq!(releases_running(&b), vec![v1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_deploy_hook_stops_the_deploy_before_any_traffic_moves() {
    let keep = tempfile::tempdir().unwrap();
    let (b, v1) = start_with_v1(&keep).await;

    let hooked = app(
        "v2",
        0,
        "",
        "[deploy.pre_deploy]\ncommand = \"echo migrating $BERTH_RELEASE_ID; sleep 2; echo 'relation users does not exist' >&2; exit 3\"\nmaintenance = true\n",
    );
    let deploying = cli_in_background(&b, &["deploy", &hooked.path().to_string_lossy()]);
    // While the hook runs, the app's host shows the maintenance page.
    let maintenance = eventually(Duration::from_secs(20), || async {
        let (status, body) = b.get("shop.test", "/version").await;
        status == 503 && body.contains("Down for maintenance")
    })
    .await;
    assert!(maintenance, "no maintenance page while the hook ran");
    let out = deploying.await.unwrap();
    failed_with(&out, "pre-deploy hook failed");
    failed_with(&out, "relation users does not exist");
    // No instance of v2 ever started; v1 serves, and not the maintenance page.
    assert_eq!(releases_running(&b), vec![v1]);
    assert_eq!(b.get("shop.test", "/version").await, (200, "v1".into()));

    // A passing hook runs with the new release's id and the app's secrets (a migration needs
    // the database password), then the deploy goes on.
    crate::secrets::set(&b, "shop", "DB_PASSWORD", "hook-sees-this", &[]).ok();
    let ok = app(
        "v3",
        0,
        "",
        "[deploy.pre_deploy]\ncommand = \"test -n \\\"$BERTH_RELEASE_ID\\\" && test -f server.py && test \\\"$DB_PASSWORD\\\" = hook-sees-this\"\n",
    );
    let out = b.deploy(ok.path());
    out.ok();
    assert!(
        out.stdout.contains("pre-deploy hook passed"),
        "{}",
        out.stdout
    );
    assert_eq!(b.get("shop.test", "/version").await, (200, "v3".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_smoke_check_puts_the_old_release_back() {
    let keep = tempfile::tempdir().unwrap();
    let (b, v1) = start_with_v1(&keep).await;

    let smoked = app(
        "v2",
        0,
        "",
        "[[deploy.smoke]]\npath = \"/version\"\nbody_contains = \"v3\"\n",
    );
    let out = b.deploy(smoked.path());
    failed_with(&out, "does not contain \"v3\"");
    assert_eq!(releases_running(&b), vec![v1.clone()]);
    assert_eq!(b.get("shop.test", "/version").await, (200, "v1".into()));
    let releases = b.cli(&["releases", "shop", "--json"]).ok().json();
    let active: Vec<&Value> = releases["releases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["active"] == true)
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["release"], v1.as_str());
    assert_eq!(latest_deployment(&b)["state"], "rolled_back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_interrupted_by_kill_9_converges_to_the_stable_release() {
    let keep = tempfile::tempdir().unwrap();
    let (mut b, v1) = start_with_v1(&keep).await;
    let canary = app(
        "v2",
        0,
        "strategy = \"canary\"\nsteps = [{ weight = 50, pause = \"manual\" }]",
        FAST_ANALYSIS,
    );
    let deploying = cli_in_background(&b, &["deploy", &canary.path().to_string_lossy()]);
    let both = eventually(Duration::from_secs(30), || {
        std::future::ready(releases_running(&b).len() == 2)
    })
    .await;
    assert!(both, "the canary never started");
    // Both releases take traffic now.
    let mut bodies = std::collections::BTreeSet::new();
    for _ in 0..40 {
        bodies.insert(b.get("shop.test", "/version").await.1);
    }
    assert_eq!(bodies.len(), 2, "{bodies:?}");

    b.process.signal(libc::SIGKILL).unwrap();
    b.process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("berth died");
    let out = deploying.await.unwrap();
    assert_ne!(
        out.code, 0,
        "the deploy cannot have succeeded: {}",
        out.stdout
    );

    // A new berth on the same data: the release that was active (v1) and only it serves;
    // the canary's deployment is marked interrupted.
    let b2 = crate::support::start_in(&b.data_dir).await;
    let back = eventually(Duration::from_secs(30), || async {
        b2.get("shop.test", "/version").await == (200, "v1".to_owned())
    })
    .await;
    assert!(back, "the app did not come back");
    assert_eq!(releases_running(&b2), vec![v1]);
    for _ in 0..20 {
        assert_eq!(b2.get("shop.test", "/version").await, (200, "v1".into()));
    }
    assert_eq!(latest_deployment(&b2)["state"], "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_with_promote_after_promotes_itself_once_analysis_passes() {
    let keep = tempfile::tempdir().unwrap();
    let (mut b, v1) = start_with_v1(&keep).await;
    // Nobody previews it: the probes are the only traffic the analysis judges.
    let green = app(
        "v2",
        0,
        "strategy = \"blue-green\"\npromote_after = \"1s\"",
        &format!("{FAST_ANALYSIS}[[deploy.probe]]\npath = \"/version\"\ncount = 10\n"),
    );
    b.deploy(green.path()).ok();
    assert_eq!(b.get("shop.test", "/version").await, (200, "v2".into()));
    let steps = steps_of(&latest_deployment(&b));
    assert!(
        steps
            .iter()
            .any(|(s, decision, _)| s == "analysis" && decision == "pass"),
        "{steps:?}"
    );
    assert!(!steps.iter().any(|(s, _, _)| s == "command"), "{steps:?}");

    // v1 is kept warm, and does not outlive berth (stopped with the rest at shutdown; the
    // parent-death signal would also end it).
    let warm = pids_of(&b, &v1);
    assert!(!warm.is_empty(), "v1 was not kept warm: {}", b.ps("shop"));
    let all: Vec<i64> = crate::support::pids(&b.ps("shop"));
    b.process.stop(Duration::from_secs(20)).await;
    let gone = eventually(Duration::from_secs(10), || {
        std::future::ready(all.iter().all(|p| !crate::support::alive(*p)))
    })
    .await;
    assert!(
        gone,
        "instances outlived berth's shutdown: {all:?} (warm: {warm:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_runs_the_release_with_the_secret_versions_it_ran_with() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    crate::secrets::set(&b, "shop", "API_TOKEN", "first", &[]).ok();
    b.deploy(app("v1", 0, "", "").path()).ok();
    let v1 = b.ps("shop")["release"].as_str().unwrap().to_owned();
    crate::secrets::set(&b, "shop", "API_TOKEN", "second", &[]).ok();
    b.deploy(app("v2", 0, "", "").path()).ok();
    let started = |d: &Value| -> String {
        steps_of(d)
            .into_iter()
            .find(|(s, _, _)| s == "start_instances")
            .map(|(_, _, r)| r)
            .unwrap_or_else(|| panic!("no start step: {d}"))
    };
    assert!(started(&latest_deployment(&b)).contains("API_TOKEN v2"));

    b.cli(&["rollback", "shop"]).ok();
    let d = latest_deployment(&b);
    assert_eq!(d["release"], v1.as_str());
    let step = started(&d);
    assert!(step.contains("API_TOKEN v1"), "{step}");
}
