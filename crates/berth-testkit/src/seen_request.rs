//! What a fake upstream records about each request it receives.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version};

/// One request as the fake upstream saw it, recorded (with its whole body)
/// before any response was sent, so it is there even for dropped requests.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SeenRequest {
    pub method: Method,
    /// The request target as received: usually origin-form (`/path?query`).
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Request trailers, when the body was chunked and carried some.
    pub trailers: Option<HeaderMap>,
    /// The client (for a proxied request: the proxy's side of the connection).
    pub peer: SocketAddr,
    /// Which accepted connection it arrived on, counting from 0; equal values
    /// mean the client reused a keep-alive connection.
    pub connection: usize,
}

impl SeenRequest {
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// The first value of a header, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header that are valid UTF-8, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}
