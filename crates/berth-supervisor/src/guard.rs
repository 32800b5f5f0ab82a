//! The guard: a small process that outlives berth by a moment to kill what berth left behind.
//!
//! `PR_SET_PDEATHSIG` kills an instance's leader when berth dies, but not the leader's own
//! children (a pre-forking server's workers, a shell's background job). Without the guard
//! those ran on, holding the app's port, until the next `berth serve` swept them. The guard is
//! started by `berth serve` with a pipe on its stdin whose write end only berth holds; the
//! kernel closes it when berth ends, however it ends, so end-of-file is the guard's signal.
//!
//! It sweeps by a marker unique to one `berth serve` run ([`RUN_ENV`]), not the data
//! directory's: a berth restarted at once on the same data directory must not lose its fresh
//! instances to its predecessor's guard.

use std::io::Read;

use crate::sweep::sweep_stale;

/// The variable every process started by one `berth serve` run inherits: a value unique to
/// that run, see [`run_marker`].
pub const RUN_ENV: &str = "BERTH_RUN";

/// A value for [`RUN_ENV`] that no other run on this machine has: the pid tells apart runs
/// alive at the same time, the start time a pid reused later.
pub fn run_marker(pid: u32, started_nanos: u128) -> String {
    format!("{pid}-{started_nanos:x}")
}

/// Blocks until `input` reaches end-of-file (or fails), then kills every instance carrying
/// `marker` (`"KEY=VALUE"`) and returns their pids. What berth's pipe carries is ignored:
/// only its closing matters.
pub fn guard_until_closed(mut input: impl Read, marker: &str) -> Vec<i32> {
    let mut buf = [0u8; 64];
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    sweep_stale(marker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_differ_by_pid_and_by_start() {
        assert_ne!(run_marker(10, 5), run_marker(11, 5));
        assert_ne!(run_marker(10, 5), run_marker(10, 6));
    }

    #[test]
    fn once_its_input_closes_it_kills_the_runs_instances_and_no_others() {
        use std::os::unix::process::ExitStatusExt;
        use std::process::Command;

        let marker = run_marker(std::process::id(), 1);
        let spawn = |run: &str| {
            Command::new("sleep")
                .arg("30")
                .env(RUN_ENV, run)
                .env(crate::INSTANCE_ENV, "guard-test")
                .spawn()
                .expect("spawn sleep")
        };
        let mut ours = spawn(&marker);
        let mut other_run = spawn(&run_marker(std::process::id(), 2));

        let killed =
            guard_until_closed(&b"anything berth wrote"[..], &format!("{RUN_ENV}={marker}"));
        assert_eq!(killed, [ours.id() as i32]);
        let status = ours.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(
            other_run.try_wait().expect("try_wait").is_none(),
            "another run's instance is left alone"
        );
        let _ = other_run.kill();
        let _ = other_run.wait();
    }
}
