//! Who the client is when berth sits behind other proxies.
//!
//! X-Forwarded-For is a list anyone can write to: each proxy appends the address it got the
//! request from, and a client can put anything in front. Only the part written by proxies we
//! trust can be believed, so the client is found from the right: the first address that is
//! not a trusted proxy. Nothing is believed unless the TCP peer (or the PROXY protocol's
//! source) is itself trusted.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::headers::X_FORWARDED_FOR;
use crate::spec::TrustedProxies;

/// The client's address for a request that came from `peer`.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, proxies: &TrustedProxies) -> IpAddr {
    if !proxies.trusts(peer) {
        return peer;
    }
    let mut client = peer;
    // Later header lines were appended later: walk them, and their entries, backwards.
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        for entry in value.as_bytes().rsplit(|&b| b == b',') {
            let Some(ip) = parse_entry(entry) else {
                // Garbage where a proxy should have written an address: the hop we last
                // trusted is as far as the chain can be believed.
                return client;
            };
            client = ip;
            if !proxies.trusts(ip) {
                return ip;
            }
        }
    }
    client
}

/// One X-Forwarded-For entry: an address, optionally with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`), as some proxies write it.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies {
            networks: nets.iter().map(|n| n.parse().expect("test CIDR")).collect(),
            proxy_protocol: false,
        }
    }

    fn xff(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let p = proxies(&["10.0.0.0/8"]);
        let got = resolve(ip("203.0.113.9"), &xff(&["1.2.3.4"]), &p);
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn rightmost_untrusted_address_from_a_trusted_peer() {
        let p = proxies(&["10.0.0.0/8"]);
        // The client spoofed 6.6.6.6; the load balancer appended the real 198.51.100.7, then
        // an inner proxy 10.1.1.1.
        let h = xff(&["6.6.6.6, 198.51.100.7, 10.1.1.1"]);
        assert_eq!(resolve(ip("10.0.0.2"), &h, &p), ip("198.51.100.7"));
        // The same spread over several header lines.
        let h = xff(&["6.6.6.6", "198.51.100.7", "10.1.1.1"]);
        assert_eq!(resolve(ip("10.0.0.2"), &h, &p), ip("198.51.100.7"));
    }

    #[test]
    fn no_header_or_all_trusted() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(ip("10.0.0.2"), &HeaderMap::new(), &p),
            ip("10.0.0.2")
        );
        let h = xff(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(resolve(ip("10.0.0.2"), &h, &p), ip("10.9.9.9"));
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = xff(&["1.2.3.4, not-an-ip, 10.1.1.1"]);
        assert_eq!(resolve(ip("10.0.0.2"), &h, &p), ip("10.1.1.1"));
    }

    #[test]
    fn entries_with_ports_and_ipv6() {
        let p = proxies(&["10.0.0.0/8", "fd00::/8"]);
        let h = xff(&["[2001:db8::1]:4711, 192.0.2.1:80"]);
        assert_eq!(resolve(ip("fd00::1"), &h, &p), ip("192.0.2.1"));
        let h = xff(&["2001:db8::1"]);
        assert_eq!(resolve(ip("fd00::1"), &h, &p), ip("2001:db8::1"));
        let h = xff(&["[2001:db8::2]"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &p), ip("2001:db8::2"));
    }
}
