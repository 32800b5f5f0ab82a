//! Live progress of a deploy: while `berth deploy` waits for its answer, the app's newest
//! deployment is read every second and its new steps are printed as they are recorded, canary
//! analysis windows with their numbers included. Not with `--json`, whose output stays one
//! document.

use std::time::Duration;

use hyper::Method;

use super::{field, list};
use crate::client::Client;

/// How often the deployment is read while a deploy runs.
const POLL: Duration = Duration::from_secs(1);

/// Steps already printed: the deployment they belong to and the last sequence number.
#[derive(Default)]
pub struct Printed {
    /// Deployments at or below this id were there before the deploy began.
    before: i64,
    deployment: Option<i64>,
    seq: i64,
    /// The reasons printed, so the final report does not repeat them.
    pub reasons: Vec<String>,
}

/// The id of the app's newest deployment now (0 when there is none), so that only a newer one
/// is followed.
pub async fn newest(c: &Client, deploys_path: &str) -> Printed {
    let before = c
        .call(Method::GET, &format!("{deploys_path}?limit=1"), None)
        .await
        .ok()
        .and_then(|v| {
            list(&v, "deployments")
                .first()
                .and_then(|d| d["id"].as_i64())
        })
        .unwrap_or(0);
    Printed {
        before,
        ..Printed::default()
    }
}

/// Prints the newest deployment's steps not printed yet.
pub async fn print_new(c: &Client, deploys_path: &str, printed: &mut Printed) {
    let Ok(v) = c
        .call(Method::GET, &format!("{deploys_path}?limit=1"), None)
        .await
    else {
        return;
    };
    let Some(d) = list(&v, "deployments").first().copied() else {
        return;
    };
    let id = d["id"].as_i64().unwrap_or(0);
    if id <= printed.before {
        return;
    }
    if printed.deployment != Some(id) {
        printed.deployment = Some(id);
        printed.seq = 0;
    }
    for s in list(d, "steps") {
        let seq = s["seq"].as_i64().unwrap_or(0);
        if seq <= printed.seq {
            continue;
        }
        printed.seq = seq;
        let reason = field(s, "reason");
        println!("  {reason}");
        printed.reasons.push(reason);
    }
}

/// Prints steps as they come, forever (the caller races it against the deploy's answer).
pub async fn follow(c: &Client, deploys_path: &str, printed: &mut Printed) {
    loop {
        tokio::time::sleep(POLL).await;
        print_new(c, deploys_path, printed).await;
    }
}
