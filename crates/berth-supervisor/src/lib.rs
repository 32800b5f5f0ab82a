//! berth's process supervisor: the parts that run one app instance.
//!
//! - [`backoff`]: pure restart decisions: exponential backoff with a cap, reset after a stable
//!   run, and crash-loop detection that marks a process type failing until an explicit reset.
//! - [`process`]: spawning an instance in its own process group with `PORT` and its
//!   environment, killed by the kernel if berth dies (`PR_SET_PDEATHSIG`), and stopping it as
//!   a group (signal, timeout, SIGKILL).
//! - [`output`]: the instance's stdout/stderr as timestamped lines in a size-rotated
//!   `<dir>/<instance>.log`, read continuously so the app never blocks on a full pipe, with
//!   the last few lines kept in memory to explain a crash.
//! - [`sweep_stale`]: at start-up, kills instances a `kill -9`ed berth left behind.
//! - [`allocate_port`], [`port_is_free`]: loopback ports for instances.
//!
//! Not built yet (issue 4 continues): releases (unpacking an artifact into a release
//! directory, the process types it declares), the run loop that combines these pieces per
//! process type (spawn, capture, wait, back off, restart, mark failing), health-gated
//! registration of instances with the edge through `Edge::apply`, and cgroups (resource
//! limits, and reaping grandchildren that left the process group — `PR_SET_PDEATHSIG` only
//! covers the direct child).

pub mod backoff;
mod error;
pub mod output;
mod port;
pub mod process;
mod sweep;

pub use backoff::{Decision, RestartPolicy, RestartState};
pub use error::{Error, Result};
pub use output::{Capture, LogConfig, RotatingLog, Stream, Tail, capture};
pub use port::{allocate_port, port_is_free};
pub use process::{CommandSpec, Ending, Instance, Signal};
pub use sweep::{INSTANCE_ENV, sweep_stale};
