//! Starting `berth serve`'s guard process, and being it (`berth __guard`); the why is in
//! `berth_supervisor::guard`.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_supervisor::{RUN_ENV, guard_until_closed, run_marker};

/// Marks this run in berth's environment, which every instance, hook and build inherits, and
/// starts the guard watching for berth's end. Must run before the runtime starts a thread:
/// changing the environment is only sound while berth is single-threaded.
///
/// A guard that cannot start costs only promptness: the next `berth serve` on this data
/// directory still sweeps what a killed berth left.
pub fn start() {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let value = run_marker(std::process::id(), started);
    // SAFETY: berth is still single-threaded here (no runtime, no other thread yet).
    unsafe { std::env::set_var(RUN_ENV, &value) };

    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::warn!(error = %e, "no guard process: cannot find berth's own executable");
            return;
        }
    };
    let spawned = Command::new(exe)
        .arg("__guard")
        .arg("--marker")
        .arg(format!("{RUN_ENV}={value}"))
        .env_remove(RUN_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // Its own process group: a Ctrl-C meant for berth must not take the guard first.
        .process_group(0)
        .spawn();
    match spawned {
        Ok(mut guard) => {
            // The write end stays open for as long as berth lives (it is close-on-exec, so no
            // instance inherits it); the kernel closing it is what wakes the guard.
            std::mem::forget(guard.stdin.take());
            tracing::debug!(pid = guard.id(), "guard process started");
        }
        Err(e) => tracing::warn!(error = %e, "no guard process: could not start it"),
    }
}

/// `berth __guard --marker KEY=VALUE`: waits for berth's end, then kills what is left.
pub fn run(marker: &str) -> ExitCode {
    let killed = guard_until_closed(std::io::stdin().lock(), marker);
    if !killed.is_empty() {
        eprintln!(
            "berth guard: berth has ended; killed {} process(es) its instances left behind: {killed:?}",
            killed.len()
        );
    }
    ExitCode::SUCCESS
}
