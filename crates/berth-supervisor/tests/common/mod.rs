//! Helpers shared by the integration tests (each test file includes this module).

#![allow(dead_code)] // Not every test file uses every helper.

use std::time::{Duration, Instant};

/// Gone, or a zombie waiting for whoever reaps orphans here (not our business).
pub fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Generous: a loaded 2-core machine may take a while to deliver a SIGKILL and reap.
pub async fn eventually_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if is_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
