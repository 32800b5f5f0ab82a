//! Which encoding a client gets (Accept-Encoding with q-values, RFC 9110 §12.5.3) and which
//! content types are worth compressing. Pure functions of header text.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::ACCEPT_ENCODING;

use crate::spec::Encoding;

/// The encoding among `offered` that the client rates highest, ties going to the earlier in
/// `offered`; `None` when it accepts none of them (or sent no Accept-Encoding).
pub fn choose(headers: &HeaderMap, offered: &[Encoding]) -> Option<Encoding> {
    let mut best: Option<(Encoding, u16)> = None;
    for &encoding in offered {
        let q = quality(headers, encoding.token());
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((encoding, q));
        }
    }
    best.map(|(e, _)| e)
}

/// The client's q-value for `token` in thousandths: its own entry, else `*`'s, else 0.
/// `x-gzip` counts as `gzip` (RFC 9110 §8.4.1.3).
fn quality(headers: &HeaderMap, token: &str) -> u16 {
    let mut own = None;
    let mut any = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut params = item.split(';');
            let name = params.next().unwrap_or("").trim();
            let q = params
                .find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| parse_q(v.trim()))
                })
                .unwrap_or(Some(1000));
            // A malformed q-value makes the entry meaningless: skip it.
            let Some(q) = q else { continue };
            if name.eq_ignore_ascii_case(token)
                || (token == "gzip" && name.eq_ignore_ascii_case("x-gzip"))
            {
                own = Some(own.map_or(q, |o: u16| o.max(q)));
            } else if name == "*" {
                any = Some(q);
            }
        }
    }
    own.or(any).unwrap_or(0)
}

/// `0`, `0.5`, `1`, `1.000` → thousandths; anything else is `None`.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match int {
        // Up to three digits, checked above: "05" is 50 thousandths.
        "0" => Some(
            frac.bytes()
                .zip([100, 10, 1])
                .map(|(digit, scale)| u16::from(digit - b'0') * scale)
                .sum(),
        ),
        "1" if frac.bytes().all(|b| b == b'0') => Some(1000),
        _ => None,
    }
}

/// Text-like types shrink well; images, audio, video, archives and woff/woff2 fonts are
/// compressed already and would only cost CPU.
pub fn compressible(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    // Types are nearly always written in lower case: copy only when they are not.
    let essence = if essence.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(essence.to_ascii_lowercase())
    } else {
        Cow::Borrowed(essence)
    };
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    match top {
        "text" => true,
        "application" => {
            sub.ends_with("+json")
                || sub.ends_with("+xml")
                || matches!(
                    sub,
                    "json"
                        | "javascript"
                        | "x-javascript"
                        | "ecmascript"
                        | "xml"
                        | "x-ndjson"
                        | "wasm"
                        | "graphql"
                        | "x-www-form-urlencoded"
                        | "vnd.ms-fontobject"
                        | "x-font-ttf"
                        | "x-font-otf"
                )
        }
        "image" => matches!(sub, "svg+xml" | "x-icon" | "vnd.microsoft.icon" | "bmp"),
        "font" => matches!(sub, "ttf" | "otf" | "sfnt" | "collection"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ae(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static(v));
        h
    }

    const ALL: [Encoding; 3] = [Encoding::Brotli, Encoding::Gzip, Encoding::Zstd];

    #[test]
    fn q_values_decide_then_server_order() {
        assert_eq!(choose(&ae("gzip, br"), &ALL), Some(Encoding::Brotli));
        assert_eq!(
            choose(&ae("gzip;q=1, br;q=0.5"), &ALL),
            Some(Encoding::Gzip)
        );
        assert_eq!(choose(&ae("zstd"), &ALL), Some(Encoding::Zstd));
        assert_eq!(
            choose(&ae("zstd, gzip"), &[Encoding::Brotli, Encoding::Gzip]),
            Some(Encoding::Gzip)
        );
        assert_eq!(choose(&ae("gzip;q=0, br;q=0"), &ALL), None);
        assert_eq!(choose(&ae("identity"), &ALL), None);
        assert_eq!(choose(&HeaderMap::new(), &ALL), None);
    }

    #[test]
    fn wildcard_and_aliases() {
        assert_eq!(choose(&ae("*"), &ALL), Some(Encoding::Brotli));
        assert_eq!(choose(&ae("*;q=0.5, br;q=0"), &ALL), Some(Encoding::Gzip));
        assert_eq!(choose(&ae("x-gzip"), &ALL), Some(Encoding::Gzip));
        assert_eq!(choose(&ae("GZIP ; Q=0.8"), &ALL), Some(Encoding::Gzip));
        // An explicit entry counts for its encoding, even when lower than the wildcard.
        assert_eq!(
            choose(
                &ae("*;q=1, gzip;q=0.1"),
                &[Encoding::Gzip, Encoding::Brotli]
            ),
            Some(Encoding::Brotli)
        );
    }

    #[test]
    fn malformed_q_values_are_ignored() {
        assert_eq!(choose(&ae("br;q=2, gzip"), &ALL), Some(Encoding::Gzip));
        assert_eq!(choose(&ae("br;q=abc"), &ALL), None);
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.05"), Some(50));
        assert_eq!(parse_q("1.0"), Some(1000));
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
    }

    #[test]
    fn compressible_types() {
        for t in [
            "text/html; charset=utf-8",
            "text/css",
            "text/event-stream",
            "application/json",
            "application/problem+json",
            "application/javascript",
            "image/svg+xml",
            "application/wasm",
            "Text/HTML",
        ] {
            assert!(compressible(t), "{t}");
        }
        for t in [
            "image/png",
            "image/jpeg",
            "video/mp4",
            "application/zip",
            "application/gzip",
            "application/octet-stream",
            "font/woff2",
            "font/woff",
            "application/pdf",
            "",
            "nonsense",
        ] {
            assert!(!compressible(t), "{t}");
        }
    }
}
