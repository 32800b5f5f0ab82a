//! Post-switch smoke checks: each `[[deploy.smoke]]` request is sent to every new instance;
//! one wrong answer fails the deploy (and the flow rolls back).

use std::net::SocketAddr;

use berth_config::app::AppSpec;

/// `Ok` says how many checks passed; `Err` names the first that did not, and why.
pub async fn run(spec: &AppSpec, addrs: &[SocketAddr]) -> Result<String, String> {
    let host = spec.hosts.first().map_or("localhost", String::as_str);
    let mut passed = 0usize;
    for check in &spec.rollout.smoke {
        for &addr in addrs {
            let answer = crate::http::get(addr, host, &check.path, check.timeout)
                .await
                .map_err(|e| format!("smoke check GET {}: {e}", check.path))?;
            if answer.status != check.status {
                return Err(format!(
                    "smoke check GET {} on {addr}: status {}, expected {}",
                    check.path, answer.status, check.status
                ));
            }
            if let Some(needle) = &check.body_contains
                && !String::from_utf8_lossy(&answer.body).contains(needle.as_str())
            {
                return Err(format!(
                    "smoke check GET {} on {addr}: the body does not contain {needle:?}",
                    check.path
                ));
            }
            passed += 1;
        }
    }
    Ok(format!("{passed} smoke check request(s) passed"))
}
