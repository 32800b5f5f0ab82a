//! Conditional and range requests on a file (RFC 9110 §13 and §14), as pure functions of the
//! request's headers and the file's validators.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header;

/// A file's validators.
#[derive(Debug, Clone)]
pub struct Validators {
    /// Strong, quoted: `"<size>-<mtime>"` in hex, with `-<extension>` appended for a
    /// precompressed sibling (its bytes differ from the file's).
    pub etag: String,
    pub modified: SystemTime,
}

impl Validators {
    pub fn new(len: u64, modified: SystemTime, sibling: Option<&str>) -> Self {
        let nanos = modified
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos();
        let etag = match sibling {
            Some(ext) => format!("\"{len:x}-{nanos:x}-{ext}\""),
            None => format!("\"{len:x}-{nanos:x}\""),
        };
        Validators { etag, modified }
    }

    /// Last-Modified has whole seconds; comparisons use the same precision.
    fn modified_secs(&self) -> u64 {
        self.modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// True when a GET or HEAD can be answered 304: If-None-Match matches (weakly), or, without
/// If-None-Match, the file is not newer than If-Modified-Since.
pub fn not_modified(headers: &HeaderMap, v: &Validators) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let Ok(list) = inm.to_str() else { return false };
        return list
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == v.etag);
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .and_then(|since| since.duration_since(UNIX_EPOCH).ok())
        .is_some_and(|since| v.modified_secs() <= since.as_secs())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// No usable Range header (absent, invalid, several ranges, or If-Range not matching):
    /// the whole file.
    Full,
    /// Bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416: nothing of the file is in the range.
    Unsatisfiable,
}

/// The single byte range a GET asks for. Several ranges are answered with the whole file,
/// which RFC 9110 §14.2 allows and which saves building multipart bodies.
pub fn range(headers: &HeaderMap, len: u64, v: &Validators) -> Range {
    let Some(spec) = headers.get(header::RANGE).and_then(|r| r.to_str().ok()) else {
        return Range::Full;
    };
    if let Some(cond) = headers.get(header::IF_RANGE) {
        let Ok(cond) = cond.to_str() else {
            return Range::Full;
        };
        let cond = cond.trim();
        let matches = if cond.starts_with('"') {
            // Strong comparison: a weak tag never matches.
            cond == v.etag
        } else if cond.starts_with("W/") {
            false
        } else {
            httpdate::parse_http_date(cond)
                .ok()
                .and_then(|d| d.duration_since(UNIX_EPOCH).ok())
                .is_some_and(|d| d.as_secs() == v.modified_secs())
        };
        if !matches {
            return Range::Full;
        }
    }
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Range::Full;
    };
    if set.contains(',') {
        return Range::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Range::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // Suffix: the last N bytes.
        let Some(n) = digits(last).then(|| last.parse::<u64>().ok()).flatten() else {
            return Range::Full;
        };
        if n == 0 || len == 0 {
            return Range::Unsatisfiable;
        }
        return Range::Partial {
            start: len.saturating_sub(n),
            end: len - 1,
        };
    }
    let Some(start) = digits(first).then(|| first.parse::<u64>().ok()).flatten() else {
        return Range::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match digits(last).then(|| last.parse::<u64>().ok()).flatten() {
            Some(end) if end >= start => end,
            _ => return Range::Full,
        }
    };
    if start >= len {
        return Range::Unsatisfiable;
    }
    Range::Partial {
        start,
        end: end.min(len - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn v() -> Validators {
        Validators::new(1000, UNIX_EPOCH + Duration::from_secs(1_700_000_000), None)
    }

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, val) in pairs {
            m.append(*k, HeaderValue::from_str(val).expect("header value"));
        }
        m
    }

    #[test]
    fn etag_shape() {
        assert_eq!(
            v().etag,
            format!("\"3e8-{:x}\"", 1_700_000_000u128 * 1_000_000_000)
        );
        assert!(
            Validators::new(1, UNIX_EPOCH, Some("br"))
                .etag
                .ends_with("-br\"")
        );
    }

    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        let v = v();
        assert!(not_modified(&h(&[("if-none-match", &v.etag)]), &v));
        assert!(not_modified(
            &h(&[("if-none-match", &format!("\"x\", W/{}", v.etag))]),
            &v
        ));
        assert!(not_modified(&h(&[("if-none-match", "*")]), &v));
        let later = httpdate::fmt_http_date(v.modified + Duration::from_secs(10));
        // A non-matching tag is a change, whatever the date says.
        assert!(!not_modified(
            &h(&[
                ("if-none-match", "\"other\""),
                ("if-modified-since", &later)
            ]),
            &v
        ));
    }

    #[test]
    fn if_modified_since_at_second_precision() {
        let v = Validators::new(
            1,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_500),
            None,
        );
        let same = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let before = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(1_699_999_999));
        assert!(not_modified(&h(&[("if-modified-since", &same)]), &v));
        assert!(!not_modified(&h(&[("if-modified-since", &before)]), &v));
        assert!(!not_modified(&h(&[("if-modified-since", "yesterday")]), &v));
        assert!(!not_modified(&HeaderMap::new(), &v));
    }

    #[test]
    fn single_ranges() {
        let v = v();
        let r = |spec: &str| range(&h(&[("range", spec)]), 1000, &v);
        assert_eq!(r("bytes=0-99"), Range::Partial { start: 0, end: 99 });
        assert_eq!(
            r("bytes=900-"),
            Range::Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            r("bytes=900-5000"),
            Range::Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            r("bytes=-100"),
            Range::Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(r("bytes=-5000"), Range::Partial { start: 0, end: 999 });
        assert_eq!(r("bytes=1000-"), Range::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Range::Unsatisfiable);
        // Invalid or several: the whole file.
        assert_eq!(r("bytes=5-1"), Range::Full);
        assert_eq!(r("bytes=0-1,5-6"), Range::Full);
        assert_eq!(r("items=0-1"), Range::Full);
        assert_eq!(r("bytes=a-b"), Range::Full);
        assert_eq!(range(&HeaderMap::new(), 1000, &v), Range::Full);
        assert_eq!(
            range(&h(&[("range", "bytes=0-")]), 0, &v),
            Range::Unsatisfiable
        );
    }

    #[test]
    fn if_range_must_match_strongly() {
        let v = v();
        let date = httpdate::fmt_http_date(v.modified);
        let with = |cond: &str| range(&h(&[("range", "bytes=0-9"), ("if-range", cond)]), 1000, &v);
        assert_eq!(with(&v.etag), Range::Partial { start: 0, end: 9 });
        assert_eq!(with(&date), Range::Partial { start: 0, end: 9 });
        assert_eq!(with("\"old\""), Range::Full);
        assert_eq!(with(&format!("W/{}", v.etag)), Range::Full);
    }
}
