//! Integration tests of the edge: the real `berth` binary, real sockets, fake upstreams that
//! speak real HTTP. One module per concern.

mod common;
#[path = "../shared/mod.rs"]
mod shared;

mod balancing;
mod cli;
mod compression;
mod control;
mod health;
mod limits;
mod observability;
mod policies;
mod pool;
mod proxy_protocol;
mod reload;
mod retries;
mod routing;
mod semantics;
mod shutdown;
mod smuggling;
mod static_files;
mod threads;
mod tls;
