//! The data plane's one error type: where a fault came from and whether a retry is safe.

use http::StatusCode;

/// Who caused a failed exchange; it decides the status, the metric label and whether passive
/// health counts it against the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route for this host and path")]
    NoRoute,
    #[error("bad Host header: {0}")]
    BadHost(&'static str),
    #[error("request headers are larger than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error(
        "the request body could not be read (malformed chunked encoding or the client went away)"
    )]
    BadRequestBody,
    #[error("the route is at its limit of {limit} concurrent requests")]
    Overloaded { limit: usize },
    #[error("no upstream instance is configured for this route")]
    NoUpstream,
    #[error("could not connect to upstream {upstream}: {reason}")]
    Connect { upstream: String, reason: String },
    #[error("upstream {upstream} did not send response headers within {secs:.1} s")]
    ResponseTimeout { upstream: String, secs: f64 },
    #[error("upstream {upstream} failed: {reason}")]
    Upstream {
        upstream: String,
        reason: String,
        retry_safe: bool,
    },
    #[error("your address {0} may not use this site")]
    IpDenied(std::net::IpAddr),
    #[error("too many requests; try again in {retry_after_secs} s")]
    RateLimited {
        kind: crate::spec::RateLimitKind,
        retry_after_secs: u64,
    },
    #[error("bad path: {0}")]
    BadPath(crate::static_files::path::BadPath),
    #[error("the file is outside the static directory")]
    OutsideRoot,
    #[error("no such file")]
    NotFound,
    #[error("static files answer GET and HEAD only")]
    MethodNotAllowed,
    #[error("the requested range is outside the file ({len} bytes)")]
    RangeNotSatisfiable { len: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::NoRoute
            | ProxyError::BadHost(_)
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::BadRequestBody
            | ProxyError::IpDenied(_)
            | ProxyError::RateLimited { .. }
            | ProxyError::BadPath(_)
            | ProxyError::OutsideRoot
            | ProxyError::NotFound
            | ProxyError::MethodNotAllowed
            | ProxyError::RangeNotSatisfiable { .. } => Fault::Client,
            ProxyError::Overloaded { .. } | ProxyError::Internal(_) => Fault::Internal,
            ProxyError::NoUpstream
            | ProxyError::Connect { .. }
            | ProxyError::ResponseTimeout { .. }
            | ProxyError::Upstream { .. } => Fault::Upstream,
        }
    }

    /// True when the request never reached the upstream application, so sending it again
    /// cannot apply it twice.
    pub fn retry_safe(&self) -> bool {
        match self {
            ProxyError::Connect { .. } => true,
            ProxyError::Upstream { retry_safe, .. } => *retry_safe,
            _ => false,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequestBody | ProxyError::BadPath(_) | ProxyError::BadHost(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::IpDenied(_) | ProxyError::OutsideRoot => StatusCode::FORBIDDEN,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ProxyError::Overloaded { .. } | ProxyError::NoUpstream => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::ResponseTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short label for metrics and the access log.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::BadHost(_) => "bad_host",
            ProxyError::HeadersTooLarge { .. } => "headers_too_large",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::BadRequestBody => "bad_request_body",
            ProxyError::IpDenied(_) => "ip_denied",
            ProxyError::RateLimited { kind, .. } => kind.reason(),
            ProxyError::BadPath(_) => "bad_path",
            ProxyError::OutsideRoot => "outside_root",
            ProxyError::NotFound => "not_found",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ProxyError::Overloaded { .. } => "overloaded",
            ProxyError::NoUpstream => "no_upstream",
            ProxyError::Connect { .. } => "connect",
            ProxyError::ResponseTimeout { .. } => "timeout",
            ProxyError::Upstream { .. } => "upstream",
            ProxyError::Internal(_) => "internal",
        }
    }
}
