//! Free loopback ports for instances.
//!
//! Inherently racy: the port is free when checked, and another process may take it before
//! the instance binds it. A taken port shows up as an instance that exits or never becomes
//! healthy, which the run loop already handles; callers that can should retry with a new
//! port.

use std::io;
use std::net::{Ipv4Addr, TcpListener};

/// A port the kernel just handed out for `127.0.0.1`, released again before returning.
pub fn allocate_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether `127.0.0.1:<port>` can be bound right now. Also false when something listens on
/// the wildcard address with that port, since Linux refuses that bind too.
pub fn port_is_free(port: u16) -> bool {
    port != 0 && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocated_port_is_free_until_bound() {
        let port = allocate_port().expect("allocate");
        assert_ne!(port, 0);
        assert!(port_is_free(port));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("bind");
        assert!(!port_is_free(port));
        drop(listener);
        assert!(!port_is_free(0));
    }
}
