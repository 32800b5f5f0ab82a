//! Compression of responses in the respond phase (gzip, brotli, zstd when configured).
//!
//! A response is compressed when its route asks for it, the client accepts one of the route's
//! encodings, and the response is worth it: a compressible type, not encoded already, not a
//! range, not bodiless (HEAD, 204, 304), not marked `no-transform`, and not known to be smaller
//! than the route's `min_size`. Whenever the type alone would qualify, `Vary: Accept-Encoding`
//! is added, so a cache never hands a compressed copy to a client that cannot read it.
//! Bodies stream: see [`body`] for how pauses are flushed.

mod body;
mod negotiate;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

pub use body::{Compressed, Encoder};
pub use negotiate::choose;

use crate::spec::{CompressionSpec, Encoding};

/// What the request allows, taken before the request is forwarded (forwarding consumes it).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// The client's preferred encoding among the route's; `None` when it accepts none.
    pub encoding: Option<Encoding>,
    pub head: bool,
}

pub fn plan(spec: &CompressionSpec, method: &Method, headers: &HeaderMap) -> Plan {
    Plan {
        encoding: choose(headers, &spec.algorithms),
        head: method == Method::HEAD,
    }
}

/// Decides from the response head whether to compress (adding `Vary` when the type
/// qualifies); [`mark`] then rewrites the head once an encoder is ready.
pub fn prepare(
    plan: &Plan,
    spec: &CompressionSpec,
    status: StatusCode,
    headers: &mut HeaderMap,
) -> Option<Encoding> {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || headers.contains_key(header::CONTENT_ENCODING)
        || headers.contains_key(header::CONTENT_RANGE)
    {
        return None;
    }
    let typed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(negotiate::compressible);
    if !typed || no_transform(headers) {
        return None;
    }
    add_vary(headers);
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n < spec.min_size);
    if plan.head || small {
        return None;
    }
    plan.encoding
}

/// The head of a response being compressed: `Content-Encoding` set, `Content-Length` and
/// `Accept-Ranges` dropped (both describe the uncompressed bytes), a strong `ETag` made weak
/// (the bytes differ from the app's).
pub fn mark(headers: &mut HeaderMap, encoding: Encoding) {
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.token()),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    if let Some(etag) = headers.get(header::ETAG)
        && !etag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, v);
        }
    }
}

fn no_transform(headers: &HeaderMap) -> bool {
    crate::headers::tokens(headers, header::CACHE_CONTROL)
        .any(|d| d.eq_ignore_ascii_case("no-transform"))
}

/// Adds `Accept-Encoding` to `Vary` unless it (or `*`) is there already.
pub fn add_vary(headers: &mut HeaderMap) {
    let present = crate::headers::tokens(headers, header::VARY)
        .any(|t| t == "*" || t.eq_ignore_ascii_case("accept-encoding"));
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const GZIP: Plan = Plan {
        encoding: Some(Encoding::Gzip),
        head: false,
    };

    fn prepare_and_mark(
        plan: &Plan,
        spec: &CompressionSpec,
        status: StatusCode,
        h: &mut HeaderMap,
    ) -> Option<Encoding> {
        let chosen = prepare(plan, spec, status, h);
        if let Some(e) = chosen {
            mark(h, e);
        }
        chosen
    }

    #[test]
    fn compresses_text_and_rewrites_the_head() {
        let spec = CompressionSpec::default();
        let mut h = head(&[
            ("content-type", "text/html"),
            ("content-length", "5000"),
            ("etag", "\"abc\""),
            ("accept-ranges", "bytes"),
            ("vary", "Cookie"),
        ]);
        assert_eq!(
            prepare_and_mark(&GZIP, &spec, StatusCode::OK, &mut h),
            Some(Encoding::Gzip)
        );
        assert_eq!(h["content-encoding"], "gzip");
        assert!(!h.contains_key("content-length"));
        assert!(!h.contains_key("accept-ranges"));
        assert_eq!(h["etag"], "W/\"abc\"");
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Cookie", "Accept-Encoding"]);
    }

    #[test]
    fn skips_what_is_not_worth_it_but_still_varies() {
        let spec = CompressionSpec::default();
        // Too small: not compressed, yet a larger version might be.
        let mut h = head(&[("content-type", "text/css"), ("content-length", "100")]);
        assert_eq!(prepare(&GZIP, &spec, StatusCode::OK, &mut h), None);
        assert_eq!(h["vary"], "Accept-Encoding");
        // The client accepts nothing we offer.
        let none = Plan {
            encoding: None,
            head: false,
        };
        let mut h = head(&[("content-type", "application/json")]);
        assert_eq!(prepare(&none, &spec, StatusCode::OK, &mut h), None);
        assert_eq!(h["vary"], "Accept-Encoding");
        // HEAD.
        let head_plan = Plan {
            encoding: Some(Encoding::Gzip),
            head: true,
        };
        let mut h = head(&[("content-type", "text/html")]);
        assert_eq!(prepare(&head_plan, &spec, StatusCode::OK, &mut h), None);
    }

    #[test]
    fn a_body_of_unknown_length_is_compressed_whatever_min_size() {
        // A stream (events, a long answer without Content-Length) is never known to be small.
        let spec = CompressionSpec::default();
        let mut h = head(&[("content-type", "text/event-stream")]);
        assert_eq!(
            prepare(&GZIP, &spec, StatusCode::OK, &mut h),
            Some(Encoding::Gzip)
        );
    }

    #[test]
    fn never_touches_encoded_ranged_bodiless_or_binary_responses() {
        let spec = CompressionSpec::default();
        let cases: [(StatusCode, &[(&'static str, &'static str)]); 6] = [
            (
                StatusCode::OK,
                &[("content-type", "text/html"), ("content-encoding", "br")],
            ),
            (StatusCode::OK, &[("content-type", "image/png")]),
            (StatusCode::OK, &[]),
            (
                StatusCode::PARTIAL_CONTENT,
                &[("content-type", "text/html")],
            ),
            (StatusCode::NOT_MODIFIED, &[("content-type", "text/html")]),
            (
                StatusCode::OK,
                &[
                    ("content-type", "text/html"),
                    ("cache-control", "public, no-transform"),
                ],
            ),
        ];
        for (status, pairs) in cases {
            let mut h = head(pairs);
            let before = h.clone();
            assert_eq!(prepare(&GZIP, &spec, status, &mut h), None, "{pairs:?}");
            assert_eq!(h, before, "{pairs:?} was changed");
        }
    }

    #[test]
    fn vary_is_not_repeated() {
        let mut h = head(&[("vary", "accept-encoding, cookie")]);
        add_vary(&mut h);
        assert_eq!(h.get_all("vary").iter().count(), 1);
        let mut h = head(&[("vary", "*")]);
        add_vary(&mut h);
        assert_eq!(h.get_all("vary").iter().count(), 1);
    }
}
