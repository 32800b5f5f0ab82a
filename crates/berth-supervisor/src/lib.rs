//! berth's process supervisor: the parts that run one app instance.
//!
//! - [`Supervised`] (`run.rs`, `runner.rs`): the run loop for one instance. Spawns it,
//!   captures its output, probes it over HTTP until healthy (and keeps probing), restarts it
//!   with backoff when it exits or never becomes healthy, marks it failing on a crash loop,
//!   and stops it gracefully or, when its handle is dropped, at once. Its [`Status`] says
//!   what it is doing and, when it fails, why, with its last output lines.
//! - [`backoff`]: pure restart decisions: exponential backoff with a cap, reset after a stable
//!   run, and crash-loop detection that marks the instance failing.
//! - [`process`]: spawning an instance in its own process group with `PORT` and its
//!   environment, killed by the kernel if berth dies (`PR_SET_PDEATHSIG`), and stopping it as
//!   a group (signal, timeout, SIGKILL). Starts happen on one launcher thread (`launcher.rs`),
//!   by a `clone(CLONE_VM | CLONE_VFORK)` that copies nothing of berth (`spawn.rs`).
//! - [`output`]: the instance's stdout/stderr as timestamped lines in a size-rotated
//!   `<dir>/<instance>.log`, read continuously so the app never blocks on a full pipe, with
//!   the last few lines kept in memory to explain a crash.
//! - `probe.rs`: the HTTP health probe and its pure success/failure bookkeeping.
//! - [`ResourceLimits`] (`limits.rs`, `cgroup.rs`): a cgroup v2 per instance (memory, CPU,
//!   processes, and killing every process in it) where berth may create cgroups, `setrlimit`
//!   otherwise; what cannot be enforced is reported in the status.
//! - [`sweep_stale`]: at start-up, kills instances a `kill -9`ed berth left behind.
//! - [`guard_until_closed`] (`guard.rs`): the guard process `berth serve` starts, which kills
//!   them as soon as berth is gone instead.
//! - [`allocate_port`], [`port_is_free`]: loopback ports for instances.
//!
//! Releases, the processes an app spec declares and routing healthy instances through the
//! edge are the deployer's (`berth-deploy`), which runs one [`Supervised`] per instance.

pub mod backoff;
mod cgroup;
mod direct;
mod error;
mod guard;
mod launcher;
mod limits;
pub mod output;
mod port;
mod probe;
pub mod process;
mod run;
mod runner;
mod spawn;
mod status;
mod sweep;

pub use backoff::{Decision, RestartPolicy, RestartState};
pub use cgroup::cgroup_v2_available;
pub use error::{Error, Result};
pub use guard::{RUN_ENV, guard_until_closed, run_marker};
pub use launcher::start_launcher;
pub use limits::ResourceLimits;
pub use output::{Capture, LogConfig, RotatingLog, Stream, Tail, capture};
pub use port::{allocate_port, port_is_free};
pub use probe::ProbeSpec;
pub use process::{CommandSpec, Ending, Instance, Signal};
pub use run::{RunSpec, Supervised, wait_ready};
pub use status::{Phase, Status};
pub use sweep::{INSTANCE_ENV, sweep_stale};
