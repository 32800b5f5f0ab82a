//! A deployment's events pushed by the server (NDJSON under `…/deploys/{id}/events` and
//! `…/deploys/events?since_id=`), and the CLI that follows them (`berth deploy`,
//! `berth deploys APP --follow`).

use std::time::Duration;

use serde_json::Value;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::locks::{awaiting, deploy_in_background, shop};
use crate::support::{Berth, cli_command, run_cli, start, user};

/// Bounds every wait on a process or a stream: a hang fails the test instead of hanging it.
const LIMIT: Duration = Duration::from_secs(180);

fn url(b: &Berth, app: &str, tail: &str) -> String {
    format!(
        "http://{}/api/v1/envs/production/apps/{app}/deploys/{tail}",
        b.admin
    )
}

/// Long enough for a deploy to run while a stream is open; a hang still fails.
fn client() -> reqwest::Client {
    crate::shared::client(LIMIT)
}

async fn get(token: Option<&str>, url: &str) -> reqwest::Response {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// An event stream read a line at a time.
struct Events {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Events {
    async fn open(b: &Berth, app: &str, tail: &str) -> Events {
        let response = get(Some(&b.token()), &url(b, app, tail)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/x-ndjson",
            "{:?}",
            response.headers()
        );
        Events {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event that is not a heartbeat; `None` once the response has ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let v: Value = serde_json::from_slice(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
                if v["event"] != "heartbeat" {
                    return Some(v);
                }
                continue;
            }
            let chunk = self.response.chunk().await.expect("the stream reads");
            match chunk {
                Some(c) => self.buffer.extend_from_slice(&c),
                None => {
                    assert!(self.buffer.is_empty(), "a partial last line");
                    return None;
                }
            }
        }
    }

    /// Every event up to the end of the response.
    async fn rest(&mut self) -> Vec<Value> {
        let mut all = Vec::new();
        while let Some(v) = self.next().await {
            all.push(v);
        }
        all
    }
}

/// A CLI run whose standard error is read while it runs.
struct Running {
    child: tokio::process::Child,
    stderr: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    seen: Vec<String>,
    stdout: tokio::task::JoinHandle<String>,
}

impl Running {
    fn spawn(b: &Berth, args: &[&str]) -> Running {
        let mut cmd = tokio::process::Command::from(cli_command(b.admin, &b.token(), args));
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the CLI starts");
        let mut out = child.stdout.take().expect("stdout");
        let stdout = tokio::spawn(async move {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text).await;
            text
        });
        let stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        Running {
            child,
            stderr,
            seen: Vec::new(),
            stdout,
        }
    }

    /// Reads standard error up to a line containing `text`.
    async fn stderr_until(&mut self, text: &str) {
        loop {
            let line = tokio::time::timeout(LIMIT, self.stderr.next_line())
                .await
                .expect("the CLI goes on writing")
                .expect("stderr reads");
            let Some(line) = line else {
                panic!("{text:?} never came; stderr: {:?}", self.seen);
            };
            self.seen.push(line.clone());
            if line.contains(text) {
                return;
            }
        }
    }

    /// Waits for the exit: (code, stdout, stderr).
    async fn finish(mut self) -> (i32, String, String) {
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("the CLI exits")
            .expect("wait");
        while let Ok(Some(line)) = self.stderr.next_line().await {
            self.seen.push(line);
        }
        let stdout = self.stdout.await.unwrap_or_default();
        (status.code().unwrap_or(-1), stdout, self.seen.join("\n"))
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect()
}

fn steps(events: &[Value]) -> Vec<(i64, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The app's newest deployment, as the listing shows it.
fn newest(b: &Berth) -> Value {
    b.cli(&["deploys", "shop", "--json"]).ok().json()["deployments"][0].clone()
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_finished_deployment_streams_its_steps_in_order_then_its_end() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    let out = b.deploy(shop("v1", "").path());
    out.ok();
    // Printed as it came over the stream or from the report, but once.
    assert_eq!(
        out.stdout.matches("all instances ready").count(),
        1,
        "{}",
        out.stdout
    );
    let d = newest(&b);
    let id = d["id"].as_i64().unwrap();
    let stored = steps(
        &d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s["event"] = "step".into();
                s
            })
            .collect::<Vec<_>>(),
    );
    assert!(stored.len() >= 3, "{d}");

    let all = Events::open(&b, "shop", &format!("{id}/events"))
        .await
        .rest()
        .await;
    let mut expected = vec!["deployment"];
    expected.extend(stored.iter().map(|_| "step"));
    expected.push("end");
    assert_eq!(kinds(&all), expected, "{all:?}");
    assert_eq!(steps(&all), stored);
    assert!(all.iter().all(|e| e["deployment"] == id), "{all:?}");
    assert_eq!(all[0]["release"], d["release"]);
    let end = all.last().unwrap();
    assert_eq!(end["state"], "succeeded");
    assert_eq!(end["detail"], d["detail"]);
    assert_eq!(end["finished"], d["finished"]);

    // A reconnecting client gets only what it has not seen.
    let later = Events::open(&b, "shop", &format!("{id}/events?after=2"))
        .await
        .rest()
        .await;
    assert_eq!(steps(&later), stored[2..]);
    assert_eq!(later.last().unwrap()["event"], "end");

    // The CLI follows it too, and a finished one ends at once.
    let shown = b.cli(&["deploys", "shop", &id.to_string(), "--follow"]);
    shown.ok();
    for (_, reason) in &stored {
        assert!(shown.stdout.contains(reason.as_str()), "{}", shown.stdout);
    }
    assert!(
        shown
            .stdout
            .contains(&format!("deployment #{id} succeeded")),
        "{}",
        shown.stdout
    );

    // Unknown ids, and ids of another app, are not found.
    let token = b.token();
    let (status, body) = error_of(get(Some(&token), &url(&b, "shop", "999999/events")).await).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_found");
    let message = body["message"].as_str().unwrap_or("");
    assert!(
        message.contains("no deployment 999999 of shop in production"),
        "{message}"
    );
    let other = url(&b, "other", &format!("{id}/events"));
    assert_eq!(error_of(get(Some(&token), &other).await).await.0, 404);
    let missing = b.cli(&["deploys", "shop", "999999", "--follow"]);
    assert_eq!(missing.code, 4, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no deployment 999999"),
        "{}",
        missing.stderr
    );

    // Reading deployments needs a token and viewer on the environment.
    let (status, body) = error_of(get(None, &url(&b, "shop", &format!("{id}/events"))).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("missing_token"))
    );
    let stranger = user(&b, "stranger", &["viewer@staging"]);
    let (status, _) =
        error_of(get(Some(&stranger), &url(&b, "shop", "events?since_id=0")).await).await;
    assert_eq!(status, 403);
    let (status, body) = error_of(
        get(
            Some(&token),
            &url(&b, "shop", &format!("{id}/events?after=x")),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("after")),
        "{body}"
    );
}

#[tokio::test]
async fn a_follower_in_another_process_sees_the_steps_arrive_and_the_end() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    b.deploy(shop("v1", "").path()).ok();
    let first = newest(&b)["id"].as_i64().unwrap();

    // Both wait for the app's next deployment before it starts.
    let mut events = Events::open(&b, "shop", &format!("events?since_id={first}")).await;
    let mut follower = Running::spawn(&b, &["deploys", "shop", "--follow"]);
    follower
        .stderr_until("waiting for the next deployment of shop in production")
        .await;
    let v2 = shop("v2", "requires_approval = true");
    let deploying = deploy_in_background(&b, &b.token(), v2.path());
    let id = awaiting(&b).await["awaiting_approval"].as_i64().unwrap();

    // While the deploy waits, what it has recorded so far is already there.
    let announced = events.next().await.expect("the deployment line");
    assert_eq!(
        (
            announced["event"].as_str(),
            announced["deployment"].as_i64()
        ),
        (Some("deployment"), Some(id)),
        "{announced}"
    );
    let waiting = events.next().await.expect("a step");
    assert_eq!(waiting["event"], "step", "{waiting}");
    assert!(
        waiting["reason"]
            .as_str()
            .unwrap_or("")
            .contains("waiting for approval"),
        "{waiting}"
    );

    b.cli(&["approve", "shop"]).ok();
    let rest = events.rest().await;
    assert_eq!(kinds(&rest).last(), Some(&"end"), "{rest:?}");
    assert_eq!(rest.last().unwrap()["state"], "succeeded");
    let seqs: Vec<i64> = std::iter::once(&waiting)
        .chain(rest.iter())
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let reasons: Vec<String> = steps(&rest).into_iter().map(|(_, r)| r).collect();
    assert!(
        reasons.iter().any(|r| r.contains("approved by admin")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("all instances ready")),
        "{reasons:?}"
    );

    let deployed = deploying.await.unwrap();
    deployed.ok();
    assert!(
        deployed.stdout.contains("waiting for approval"),
        "{}",
        deployed.stdout
    );
    let (code, stdout, stderr) = follower.finish().await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for text in [
        format!("deployment #{id} of shop"),
        "waiting for approval".to_owned(),
        "all instances ready".to_owned(),
        format!("deployment #{id} succeeded"),
    ] {
        assert!(stdout.contains(&text), "{text:?} not in: {stdout}");
    }

    // A deployment that does not succeed makes the follower fail.
    let v3 = shop("v3", "requires_approval = true");
    let deploying = deploy_in_background(&b, &b.token(), v3.path());
    let id = awaiting(&b).await["awaiting_approval"].as_i64().unwrap();
    let follower = {
        let (admin, token, id) = (b.admin, b.token(), id.to_string());
        tokio::task::spawn_blocking(move || {
            run_cli(
                admin,
                &token,
                &["deploys", "shop", &id, "--follow", "--json"],
                None,
            )
        })
    };
    b.cli(&["abort", "shop"]).ok();
    assert_eq!(deploying.await.unwrap().code, 1);
    let followed = follower.await.unwrap();
    assert_eq!(followed.code, 1, "{}\n{}", followed.stdout, followed.stderr);
    assert!(
        followed.stderr.contains(&format!(
            "deployment {id} of shop in production ended cancelled"
        )),
        "{}",
        followed.stderr
    );
    let last: Value = serde_json::from_str(followed.stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(
        (last["event"].as_str(), last["deployment"].as_i64()),
        (Some("end"), Some(id))
    );
}

#[tokio::test]
async fn an_open_stream_does_not_keep_berth_from_stopping() {
    let keep = tempfile::tempdir().unwrap();
    let mut b = start(&keep).await;
    // No deployment will come: the stream waits until berth stops. A followed log waits too.
    let mut events = Events::open(&b, "shop", "events?since_id=0").await;
    let logs_url = format!(
        "http://{}/api/v1/envs/production/apps/shop/logs?follow=true",
        b.admin
    );
    let mut logs = get(Some(&b.token()), &logs_url).await;
    assert_eq!(logs.status(), 200);
    let status = b.process.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    // Ended by the server, never with an `end` line, and closed rather than cut: berth lets
    // its admin listeners finish the responses they ended before it exits.
    let mut seen = Vec::new();
    loop {
        match events.response.chunk().await {
            Ok(Some(chunk)) => seen.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => panic!("the event stream was cut, not closed: {e}"),
        }
    }
    assert!(
        !String::from_utf8_lossy(&seen).contains("\"end\""),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    loop {
        match logs.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => panic!("the followed log was cut, not closed: {e}"),
        }
    }
}
