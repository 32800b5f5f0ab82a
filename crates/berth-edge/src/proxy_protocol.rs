//! PROXY protocol v1 (text) and v2 (binary) headers, as load balancers send them in front of
//! a connection to say who the client is (haproxy.org's proxy-protocol.txt).
//!
//! [`parse`] is pure: given the bytes read so far it says whether more are needed, whether the
//! connection does not start with a PROXY header at all, or what the header says and how long
//! it was. [`read_header`] reads just enough from a socket to decide, and hands back whatever
//! it read past the header in a [`Rewind`] so HTTP or TLS starts from the right byte.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const V1_PREFIX: &[u8] = b"PROXY ";
/// "PROXY TCP6 " + two IPv6 addresses + two ports + CRLF, per the spec.
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family, and the length of what follows.
const V2_FIXED: usize = 16;
/// Addresses plus TLVs; larger headers are refused rather than buffered.
const V2_MAX: usize = V2_FIXED + 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// The connection does not start with a PROXY header.
    NotProxy,
    /// A header of `len` bytes. `source` is `None` for `UNKNOWN` (v1) and `LOCAL` or
    /// non-TCP/IP families (v2): the connection's own address stands.
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed PROXY protocol header: {0}")]
pub struct Malformed(pub &'static str);

/// What the bytes at the start of a connection are.
pub fn parse(buf: &[u8]) -> Result<Parsed, Malformed> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    if could_be(buf, V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(Parsed::Incomplete);
        }
        return parse_v1(buf);
    }
    if could_be(buf, V2_SIGNATURE) {
        if buf.len() < V2_FIXED {
            return Ok(Parsed::Incomplete);
        }
        return parse_v2(buf);
    }
    Ok(Parsed::NotProxy)
}

/// True while `buf` agrees with `sig` as far as either goes.
fn could_be(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, Malformed> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(Malformed("v1 line longer than 107 bytes"))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..end])
        .map_err(|_| Malformed("v1 line is not ASCII"))?;
    let len = end + 2;
    let mut parts = line.split(' ');
    let family = parts.next().unwrap_or("");
    if family == "UNKNOWN" {
        return Ok(Parsed::Header { len, source: None });
    }
    let fields: Vec<&str> = parts.collect();
    let [src, _dst, sport, _dport] = fields[..] else {
        return Err(Malformed("v1 line needs 4 fields after the family"));
    };
    let ip: IpAddr = src
        .parse()
        .map_err(|_| Malformed("v1 source is not an address"))?;
    match (family, ip) {
        ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => {}
        ("TCP4" | "TCP6", _) => return Err(Malformed("v1 address does not match its family")),
        _ => return Err(Malformed("v1 family is not TCP4, TCP6 or UNKNOWN")),
    }
    let port: u16 = sport
        .parse()
        .map_err(|_| Malformed("v1 source port is not a port"))?;
    Ok(Parsed::Header {
        len,
        source: Some(SocketAddr::new(ip, port)),
    })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Malformed> {
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(Malformed("v2 version is not 2"));
    }
    let command = version_command & 0x0f;
    let family = buf[13];
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = V2_FIXED + body;
    if len > V2_MAX {
        return Err(Malformed("v2 header longer than 2 KiB"));
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let addr = &buf[V2_FIXED..len];
    let source = match (command, family) {
        // LOCAL: the proxy's own connection (health checks); its address stands.
        (0, _) => None,
        // PROXY over TCP (0x1_) or UDP (0x2_) — the address is what matters.
        (1, 0x11 | 0x12) => {
            let a: [u8; 12] = addr
                .get(..12)
                .and_then(|a| a.try_into().ok())
                .ok_or(Malformed("v2 IPv4 addresses are cut short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (1, 0x21 | 0x22) => {
            let a: [u8; 36] = addr
                .get(..36)
                .and_then(|a| a.try_into().ok())
                .ok_or(Malformed("v2 IPv6 addresses are cut short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC or Unix sockets: nothing to take.
        (1, _) => None,
        _ => return Err(Malformed("v2 command is neither LOCAL nor PROXY")),
    };
    Ok(Parsed::Header { len, source })
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("connection closed before the PROXY header was complete")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A PROXY header that was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `None` for `UNKNOWN` (v1), `LOCAL` and non-TCP/IP families (v2).
    pub source: Option<SocketAddr>,
}

/// Reads the start of `stream` until it is known whether a PROXY header is there. Returns the
/// header (`None` for a connection without one) and the stream with the bytes read past the
/// header put back.
pub async fn read_header<S: AsyncRead + Unpin>(
    mut stream: S,
) -> Result<(Option<Header>, Rewind<S>), ReadError> {
    let mut buf = BytesMut::with_capacity(128);
    loop {
        match parse(&buf)? {
            Parsed::Incomplete => {}
            Parsed::NotProxy => return Ok((None, Rewind::new(stream, buf.freeze()))),
            Parsed::Header { len, source } => {
                buf.advance(len);
                return Ok((Some(Header { source }), Rewind::new(stream, buf.freeze())));
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// A stream that first yields bytes already read from it.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(inner: S, prefix: Bytes) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("test address"))
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                len: 41,
                source: addr("192.0.2.7:56324")
            })
        );
        let h = b"PROXY TCP6 2001:db8::1 ::1 4711 80\r\n";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                len: h.len(),
                source: addr("[2001:db8::1]:4711")
            })
        );
        let h = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                len: h.len(),
                source: None
            })
        );
    }

    #[test]
    fn v1_incomplete_and_malformed() {
        assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(Parsed::Incomplete));
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n").is_err());
        assert!(parse(b"PROXY TCP4 ::1 ::1 1 2\r\n").is_err());
        assert!(parse(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n").is_err());
        assert!(parse(&[b'P', b'R', b'O', b'X', b'Y', b' '].repeat(20)).is_err());
    }

    #[test]
    fn http_and_tls_are_not_proxy_headers() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Ok(Parsed::NotProxy));
        assert_eq!(parse(b"POST / HTTP/1.1\r\n"), Ok(Parsed::NotProxy));
        assert_eq!(parse(b"PRI * HTTP/2.0\r\n"), Ok(Parsed::NotProxy));
        assert_eq!(parse(&[0x16, 0x03, 0x01]), Ok(Parsed::NotProxy));
        // Too short to tell yet.
        assert_eq!(parse(b"P"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"\r\n\r\n"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b""), Ok(Parsed::Incomplete));
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(addresses.len()).unwrap_or(0).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn v2_ipv4_ipv6_local() {
        let mut a = vec![192, 0, 2, 7, 10, 0, 0, 1];
        a.extend_from_slice(&56324u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        let mut h = v2(1, 0x11, &a);
        let len = h.len();
        h.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&h),
            Ok(Parsed::Header {
                len,
                source: addr("192.0.2.7:56324")
            })
        );
        // Cut anywhere before its end, it is incomplete.
        assert_eq!(parse(&h[..len - 1]), Ok(Parsed::Incomplete));

        let mut a = Vec::new();
        a.extend_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().expect("v6").octets());
        a.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        a.extend_from_slice(&4711u16.to_be_bytes());
        a.extend_from_slice(&80u16.to_be_bytes());
        // A TLV after the addresses is skipped.
        a.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]);
        let h = v2(1, 0x21, &a);
        assert_eq!(
            parse(&h),
            Ok(Parsed::Header {
                len: h.len(),
                source: addr("[2001:db8::9]:4711")
            })
        );
        let h = v2(0, 0x00, &[]);
        assert_eq!(
            parse(&h),
            Ok(Parsed::Header {
                len: 16,
                source: None
            })
        );
    }

    #[test]
    fn v2_malformed() {
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        assert!(parse(&bad_version).is_err());
        assert!(parse(&v2(1, 0x11, &[0; 4])).is_err());
        assert!(parse(&v2(5, 0x11, &[0; 12])).is_err());
    }

    #[tokio::test]
    async fn read_header_puts_back_what_follows() {
        let mut input = b"PROXY TCP4 192.0.2.7 10.0.0.1 1234 80\r\n".to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (header, mut rest) = read_header(&input[..]).await.expect("header");
        assert!(matches!(
            header,
            Some(Header { source: Some(a) }) if a == "192.0.2.7:1234".parse().expect("addr")
        ));
        let mut after = Vec::new();
        rest.read_to_end(&mut after).await.expect("read");
        assert_eq!(after, b"GET / HTTP/1.1\r\n\r\n");

        let (header, mut rest) = read_header(&b"GET / HTTP/1.1\r\n\r\n"[..])
            .await
            .expect("no header");
        assert_eq!(header, None);
        let mut after = Vec::new();
        rest.read_to_end(&mut after).await.expect("read");
        assert_eq!(after, b"GET / HTTP/1.1\r\n\r\n");

        assert!(matches!(
            read_header(&b"PROXY TCP4"[..]).await,
            Err(ReadError::Closed)
        ));
    }
}
