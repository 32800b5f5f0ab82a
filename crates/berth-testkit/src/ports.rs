//! Picking loopback ports for servers under test.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, PoisonError};

/// Every port handed out in this process: the kernel may give a just-closed probe port to
/// the next probe, and one berth with the same port for two listeners fails to start.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port on 127.0.0.1 that was free a moment ago.
///
/// The kernel picks it, the probe socket is closed, and the port is handed
/// back; another process could take it in between, which is rare enough for
/// tests. No port is handed out twice in one process. Prefer binding port 0 directly where
/// the code under test allows it.
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
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("bound socket has no local address: {e}"));
        let mut seen = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.get_or_insert_with(HashSet::new).insert(addr.port()) {
            return addr;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_port_is_handed_out_twice() {
        let mut ports: Vec<u16> = (0..2000).map(|_| super::free_port()).collect();
        ports.sort_unstable();
        let before = ports.len();
        ports.dedup();
        assert_eq!(ports.len(), before);
    }
}
