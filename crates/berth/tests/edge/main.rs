//! Integration tests of the edge: the real `berth` binary, real sockets, fake upstreams that
//! speak real HTTP. One module per concern.

mod common;
#[path = "../shared/mod.rs"]
mod shared;

mod balancing;
mod cli;
mod control;
mod health;
mod limits;
mod observability;
mod pool;
mod reload;
mod retries;
mod routing;
mod semantics;
mod shutdown;
mod smuggling;
mod tls;
