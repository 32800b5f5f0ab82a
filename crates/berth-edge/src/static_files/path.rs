//! From a request path to a file name under the static root, refusing every way out of it.
//!
//! Each segment is percent-decoded once and must then be a plain name: not `.` or `..`, and
//! without `/`, `\`, NUL, control characters or `%` (a `%` left after decoding means the path
//! was encoded twice, which only an attack does). Empty segments (`a//b`) are skipped.
//! Symlinks are dealt with later, on the real file system: see `super::find`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use percent_encoding::percent_decode;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    #[error("the path has an encoded `/` or `\\`, or a backslash")]
    Separator,
    #[error("the path has a NUL or control character")]
    Control,
    #[error("the path is percent-encoded twice")]
    DoubleEncoded,
}

/// What a request asks for under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relative {
    /// Segments, decoded; empty for the root itself.
    pub path: PathBuf,
    /// Some segment starts with `.` (`.git`, `.env`): served as missing.
    pub hidden: bool,
    /// The request path ended in `/`: a directory is meant.
    pub directory: bool,
}

/// `rest` is the request path with the route's prefix removed (no query string).
pub fn relative(rest: &str) -> Result<Relative, BadPath> {
    if rest.contains('\\') {
        return Err(BadPath::Separator);
    }
    let mut path = PathBuf::new();
    let mut hidden = false;
    for raw in rest.split('/') {
        if raw.is_empty() {
            continue;
        }
        let decoded: Vec<u8> = percent_decode(raw.as_bytes()).collect();
        if decoded == b"." || decoded == b".." {
            return Err(BadPath::DotSegment);
        }
        for &b in &decoded {
            match b {
                b'/' | b'\\' => return Err(BadPath::Separator),
                b'%' => return Err(BadPath::DoubleEncoded),
                0..=0x1f | 0x7f => return Err(BadPath::Control),
                _ => {}
            }
        }
        hidden |= decoded.first() == Some(&b'.');
        path.push(OsString::from_vec(decoded));
    }
    Ok(Relative {
        path,
        hidden,
        directory: rest.is_empty() || rest.ends_with('/'),
    })
}

/// Names with a content hash (`app.3f2a9c1b.js`, `base.5af66c1b1797.css`, `chunk-9f8e7d6c.js`)
/// change whenever their content does, so they can be cached for good. A hash is a dot- or
/// dash-separated part of at least 8 hex digits, with at least one digit (so words like
/// `deadbeef` do not count), before the extension.
pub fn fingerprinted(file_name: &str) -> bool {
    let stem = file_name.rsplit_once('.').map_or(file_name, |(s, _)| s);
    stem.split(['.', '-']).skip(1).any(|part| {
        part.len() >= 8
            && part.bytes().all(|b| b.is_ascii_hexdigit())
            && part.bytes().any(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(rest: &str) -> PathBuf {
        relative(rest).expect("allowed").path
    }

    #[test]
    fn plain_paths_map_to_files() {
        assert_eq!(ok("css/site.css"), PathBuf::from("css/site.css"));
        assert_eq!(ok("/css//site.css"), PathBuf::from("css/site.css"));
        assert_eq!(ok("a%20b.txt"), PathBuf::from("a b.txt"));
        assert_eq!(ok(""), PathBuf::new());
        assert!(relative("docs/").expect("dir").directory);
        assert!(!relative("docs").expect("file").directory);
        assert!(relative("").expect("root").directory);
        // Non-ASCII names arrive percent-encoded as UTF-8.
        assert_eq!(ok("caf%C3%A9.txt"), PathBuf::from("café.txt"));
    }

    #[test]
    fn traversal_is_refused_however_it_is_written() {
        for attack in [
            "../etc/passwd",
            "css/../../etc/passwd",
            "%2e%2e/etc/passwd",
            "%2E%2E/etc/passwd",
            ".%2e/etc/passwd",
            "css/./site.css",
        ] {
            assert_eq!(relative(attack), Err(BadPath::DotSegment), "{attack}");
        }
        for attack in [
            "..%2fetc%2fpasswd",
            "css%2f..%2f..%2fetc",
            "..\\..\\etc\\passwd",
            "css%5c..%5c..%5cetc",
        ] {
            assert_eq!(relative(attack), Err(BadPath::Separator), "{attack}");
        }
        for attack in ["%252e%252e/etc/passwd", "..%252fetc"] {
            assert_eq!(relative(attack), Err(BadPath::DoubleEncoded), "{attack}");
        }
        for attack in ["site.css%00.png", "a%0ab", "a%7f"] {
            assert_eq!(relative(attack), Err(BadPath::Control), "{attack}");
        }
    }

    #[test]
    fn dot_files_are_hidden() {
        assert!(relative(".env").expect("allowed").hidden);
        assert!(relative(".git/config").expect("allowed").hidden);
        assert!(relative("%2egit/config").expect("allowed").hidden);
        assert!(!relative("site.css").expect("allowed").hidden);
    }

    #[test]
    fn fingerprints() {
        for name in [
            "app.3f2a9c1b.js",
            "base.5af66c1b1797.css",
            "chunk-9f8e7d6c.js",
            "main.0123abcd4567.min.js",
        ] {
            assert!(fingerprinted(name), "{name}");
        }
        for name in [
            "app.js",
            "site.css",
            "jquery-3.7.1.min.js",
            "logo.png",
            "deadbeef.js",
            "x.deadbeef.js",
            "app.3f2a9c1.js",
        ] {
            assert!(!fingerprinted(name), "{name}");
        }
    }
}
