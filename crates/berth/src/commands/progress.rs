//! Live progress of a deployment, pushed by the server: `berth deploy` (while it waits for
//! its answer) and `berth deploys APP --follow` read the deployment's events (NDJSON, see
//! docs/api.md) and print each step's reason as it is recorded, canary analysis windows with
//! their numbers included. A stream that breaks is opened again after the last step seen.
//! Not with `deploy --json`, whose output stays one document.

use std::time::Duration;

use hyper::Method;
use serde_json::Value;

use super::apps::{AppArgs, app_path};
use super::{field, list};
use crate::client::{CliError, Client, exit, fail};

/// Tries to reopen a broken stream before giving up.
const MAX_RETRIES: u32 = 8;
/// A line longer than this is no event of ours: it is dropped rather than buffered further.
const MAX_LINE: usize = 4 << 20;

/// What a follower has seen: the deployment it follows and the steps printed.
#[derive(Debug, Default)]
pub struct Follower {
    /// Until a deployment is known: the app's first one after this id is followed.
    since: i64,
    deployment: Option<i64>,
    /// The last step seen of `deployment`.
    seq: i64,
    /// The reasons printed, so the final report does not repeat them.
    pub reasons: Vec<String>,
}

/// What one event line means to the follower.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// The deployment followed (its first line: id, releases, strategy, who, state).
    Deployment,
    /// A step not seen before: its reason.
    Step(String),
    /// The deployment ended; the line holds its state and detail.
    End,
    /// A heartbeat, a step seen already, or a line this CLI does not know.
    Nothing,
}

impl Follower {
    /// Follows the app's first deployment with an id above `id`.
    pub fn after(id: i64) -> Follower {
        Follower {
            since: id,
            ..Follower::default()
        }
    }

    /// Follows deployment `id` from its first step.
    pub fn deployment(id: i64) -> Follower {
        Follower {
            deployment: Some(id),
            ..Follower::default()
        }
    }

    /// Where the events continue: after the last step seen, or the next deployment.
    fn path(&self, deploys_path: &str) -> String {
        match self.deployment {
            Some(id) => format!("{deploys_path}/{id}/events?after={}", self.seq),
            None => format!("{deploys_path}/events?since_id={}", self.since),
        }
    }

    /// Takes in one event line.
    pub fn apply(&mut self, line: &Value) -> Seen {
        let Some(id) = line["deployment"].as_i64() else {
            return Seen::Nothing;
        };
        let event = line["event"].as_str().unwrap_or("");
        if !matches!(event, "deployment" | "step" | "end") {
            return Seen::Nothing;
        }
        if self.deployment != Some(id) {
            self.deployment = Some(id);
            self.seq = 0;
        }
        match event {
            "deployment" => Seen::Deployment,
            "end" => Seen::End,
            _ => {
                let seq = line["seq"].as_i64().unwrap_or(0);
                if seq <= self.seq {
                    return Seen::Nothing;
                }
                self.seq = seq;
                Seen::Step(field(line, "reason"))
            }
        }
    }

    /// The followed deployment ended: follow the next one.
    fn next(&mut self) {
        if let Some(id) = self.deployment.take() {
            self.since = self.since.max(id);
        }
        self.seq = 0;
    }
}

/// Splits a byte stream into lines.
#[derive(Default)]
struct LineBuffer(Vec<u8>);

impl LineBuffer {
    /// Adds a chunk; returns the lines it completed, without their newline.
    fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.0.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.0.iter().position(|b| *b == b'\n') {
            let rest = self.0.split_off(end + 1);
            let mut line = std::mem::replace(&mut self.0, rest);
            line.pop();
            lines.push(line);
        }
        if self.0.len() > MAX_LINE {
            self.0.clear();
        }
        lines
    }
}

/// The pause before reopening a stream for the `n`th time in a row (from 1): doubling from
/// half a second, at most five.
fn backoff(n: u32) -> Duration {
    let ms = 500u64.saturating_mul(1 << n.saturating_sub(1).min(10));
    Duration::from_millis(ms.min(5_000))
}

/// An answer that another try would not change (not allowed, not found, bad input).
fn permanent(e: &anyhow::Error) -> bool {
    e.downcast_ref::<CliError>()
        .is_some_and(|c| c.code != exit::FAILED)
}

/// Reads the events until the followed deployment ends, passing each line and what it meant
/// to `show`; returns the `end` line. A stream that breaks is reopened with a growing pause;
/// the first one failing, or a refusal, is the error.
async fn until_end(
    c: &Client,
    deploys_path: &str,
    f: &mut Follower,
    mut show: impl FnMut(&Value, &Seen, &mut Follower),
) -> anyhow::Result<Value> {
    let mut failures = 0;
    let mut connected = false;
    loop {
        let mut buffer = LineBuffer::default();
        let mut end = None;
        let mut lines = 0;
        let read = c
            .stream(&f.path(deploys_path), |chunk| {
                for line in buffer.push(chunk) {
                    let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    lines += 1;
                    let seen = f.apply(&v);
                    show(&v, &seen, f);
                    if seen == Seen::End {
                        end = Some(v);
                    }
                }
            })
            .await;
        if let Some(end) = end {
            return Ok(end);
        }
        if lines > 0 {
            connected = true;
            failures = 0;
        }
        match read {
            Err(e) if !connected || permanent(&e) => return Err(e),
            _ => {}
        }
        failures += 1;
        if failures > MAX_RETRIES {
            return Err(fail(
                exit::FAILED,
                "the deployment's event stream kept breaking; see berth deploys APP",
            ));
        }
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// The app's newest deployment, with its steps, if it has any.
async fn newest_deployment(c: &Client, deploys_path: &str) -> anyhow::Result<Option<Value>> {
    let v = c
        .call(Method::GET, &format!("{deploys_path}?limit=1"), None)
        .await?;
    Ok(list(&v, "deployments").first().map(|d| (*d).clone()))
}

/// The id of the app's newest deployment now (0 when there is none), so that only a newer
/// one is followed.
pub async fn newest(c: &Client, deploys_path: &str) -> Follower {
    let before = newest_deployment(c, deploys_path)
        .await
        .ok()
        .flatten()
        .and_then(|d| d["id"].as_i64())
        .unwrap_or(0);
    Follower::after(before)
}

/// `berth deploy`'s progress: prints the steps of the next deployment of the app as they
/// come, then of the one after (should another have slipped in first), until the caller
/// stops it with the deploy's answer.
pub async fn follow_deploy(c: &Client, deploys_path: &str, f: &mut Follower) {
    loop {
        let ended = until_end(c, deploys_path, f, |_, seen, f| {
            if let Seen::Step(reason) = seen {
                println!("  {reason}");
                f.reasons.push(reason.clone());
            }
        })
        .await;
        if ended.is_err() {
            // Progress is a courtesy: the deploy's answer still comes, and says what happened.
            std::future::pending::<()>().await;
        }
        f.next();
    }
}

/// After a failed deploy's answer: the steps of its deployment the stream had not delivered
/// yet (the answer and the stream travel apart). One read, only of a finished deployment, so
/// it never waits on someone else's deploy.
pub async fn catch_up(c: &Client, deploys_path: &str, f: &mut Follower) {
    let Ok(Some(d)) = newest_deployment(c, deploys_path).await else {
        return;
    };
    let id = d["id"].as_i64().unwrap_or(0);
    let ours = f.deployment.map_or(id > f.since, |followed| followed == id);
    if !ours || d["finished"].is_null() {
        return;
    }
    for s in list(&d, "steps") {
        let mut line = s.clone();
        line["event"] = "step".into();
        line["deployment"] = id.into();
        if let Seen::Step(reason) = f.apply(&line) {
            println!("  {reason}");
            f.reasons.push(reason);
        }
    }
}

/// `berth deploys APP [ID] --follow`: the deployment's steps as they are recorded, then how
/// it ended. Without an id: the app's deployment in progress, else the next to start.
pub async fn follow_command(
    c: &Client,
    a: &AppArgs,
    id: Option<i64>,
    json: bool,
) -> anyhow::Result<()> {
    let deploys_path = app_path(a, "deploys");
    let mut f = match id {
        Some(id) => Follower::deployment(id),
        None => match newest_deployment(c, &deploys_path).await? {
            Some(d) if d["finished"].is_null() => {
                Follower::deployment(d["id"].as_i64().unwrap_or(0))
            }
            newest => {
                if !json {
                    eprintln!("waiting for the next deployment of {} in {}…", a.app, a.env);
                }
                Follower::after(newest.and_then(|d| d["id"].as_i64()).unwrap_or(0))
            }
        },
    };
    let end = until_end(c, &deploys_path, &mut f, |line, seen, _| {
        if json {
            if *seen != Seen::Nothing {
                println!("{line}");
            }
            return;
        }
        match seen {
            Seen::Deployment => println!(
                "deployment #{} of {}: {} → {} ({}) by {}, {}",
                field(line, "deployment"),
                a.app,
                field(line, "previous_release"),
                field(line, "release"),
                field(line, "strategy"),
                field(line, "requested_by"),
                field(line, "state"),
            ),
            Seen::Step(reason) => println!("  {reason}"),
            Seen::End if line["state"] == "succeeded" => println!(
                "deployment #{} succeeded: {}",
                field(line, "deployment"),
                field(line, "detail")
            ),
            Seen::End | Seen::Nothing => {}
        }
    })
    .await?;
    if end["state"] == "succeeded" {
        return Ok(());
    }
    Err(fail(
        exit::FAILED,
        format!(
            "deployment {} of {} in {} ended {}: {}",
            field(&end, "deployment"),
            a.app,
            a.env,
            field(&end, "state"),
            field(&end, "detail")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn step(deployment: i64, seq: i64) -> Value {
        json!({ "event": "step", "deployment": deployment, "seq": seq, "reason": format!("r{seq}") })
    }

    #[test]
    fn lines_are_split_across_chunks_and_a_partial_one_waits() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"{\"a\"").is_empty());
        assert_eq!(
            b.push(b":1}\n{}\n{\"b"),
            [b"{\"a\":1}".to_vec(), b"{}".to_vec()]
        );
        assert_eq!(b.push(b"\"}\n"), [b"{\"b\"}".to_vec()]);
        assert!(b.push(b"").is_empty());
    }

    #[test]
    fn steps_print_once_in_order_and_the_next_path_resumes_after_the_last() {
        let mut f = Follower::after(4);
        assert_eq!(f.path("/d"), "/d/events?since_id=4");
        assert_eq!(
            f.apply(&json!({ "event": "deployment", "deployment": 5 })),
            Seen::Deployment
        );
        assert_eq!(f.apply(&step(5, 1)), Seen::Step("r1".into()));
        assert_eq!(f.apply(&step(5, 2)), Seen::Step("r2".into()));
        // A reconnect may send a step again.
        assert_eq!(f.apply(&step(5, 2)), Seen::Nothing);
        assert_eq!(f.apply(&json!({ "event": "heartbeat" })), Seen::Nothing);
        assert_eq!(f.path("/d"), "/d/5/events?after=2");
        assert_eq!(
            f.apply(&json!({ "event": "end", "deployment": 5, "state": "failed" })),
            Seen::End
        );
        f.next();
        assert_eq!(f.path("/d"), "/d/events?since_id=5");
        // Another deployment starts from its own first step.
        assert_eq!(f.apply(&step(6, 1)), Seen::Step("r1".into()));
        assert_eq!(f.path("/d"), "/d/6/events?after=1");
    }

    #[test]
    fn reopening_waits_longer_each_time_up_to_five_seconds() {
        let waits: Vec<u64> = (1..=6).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }
}
