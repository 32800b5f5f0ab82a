//! Integration tests of apps: the real `berth` binary and CLI deploying real processes
//! (Python's http.server, shell scripts, gunicorn serving examples/python-app), requests
//! through the edge by host. One module per concern.

#[path = "../shared/mod.rs"]
mod shared;
mod support;

mod bad_input;
mod deploy;
mod edge_policies;
mod environments;
mod events;
mod locks;
mod python;
mod quickstart;
mod restart;
mod rollout;
mod secrets;
mod supervise;
