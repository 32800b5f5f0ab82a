//! Picking loopback ports for servers under test.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A port on 127.0.0.1 that was free a moment ago.
///
/// The kernel picks it, the probe socket is closed, and the port is handed
/// back; another process could take it in between, which is rare enough for
/// tests. Prefer binding port 0 directly where the code under test allows it.
///
/// # Panics
/// If no socket can be bound on 127.0.0.1 at all.
///
/// ```
/// let port = berth_testkit::free_port();
/// assert_ne!(port, 0);
/// ```
pub fn free_port() -> u16 {
    free_addr().port()
}

/// `127.0.0.1:<free port>`; see [`free_port`].
///
/// ```
/// let addr = berth_testkit::free_addr();
/// assert!(addr.ip().is_loopback());
/// ```
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("bound socket has no local address: {e}"))
}
