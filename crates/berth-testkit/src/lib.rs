//! Test kit for berth's integration tests.
//!
//! - [`free_port`] / [`free_addr`]: loopback ports for servers under test.
//! - [`FakeUpstream`]: an in-process HTTP/1.1 upstream with scripted faults
//!   (latency, status mixes, dropped connections, truncated or slow bodies,
//!   health toggles) that records every request it sees.
//! - [`BerthProcess`]: runs the real `berth` binary with a config in a
//!   temporary directory, waits until it is ready, captures its output and
//!   kills it when the test ends.
//! - [`http_get`], [`send_request`], [`raw_exchange`]: one-connection clients.
//!
//! Everything runs on the caller's tokio runtime (`#[tokio::test]` works);
//! fake upstreams need the runtime to be polled, so don't block the test
//! thread while they should answer.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use berth_testkit::{FakeUpstream, http_get};
//!
//! let up = FakeUpstream::builder().name("a").status(503).start().await;
//! let (status, headers, _) = http_get(up.addr(), "/", "app.test").await;
//! assert_eq!(status, 503);
//! assert_eq!(headers["x-upstream"], "a");
//! # }
//! ```

mod berth_process;
mod captured_output;
mod client;
mod ports;
mod scripted_body;
mod seen_request;
mod special_routes;
mod status_mix;
mod upstream;
mod upstream_server;

pub use berth_process::{BerthProcess, BerthProcessBuilder, StartError};
pub use captured_output::WaitError;
pub use client::{http_get, raw_exchange, send_request, try_http_get, try_raw_exchange};
pub use ports::{free_addr, free_port};
pub use seen_request::SeenRequest;
pub use upstream::{FakeUpstream, FakeUpstreamBuilder};
