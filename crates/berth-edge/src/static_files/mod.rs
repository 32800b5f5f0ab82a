//! Static files served by the edge itself, for routes with `static` (e.g. a Django
//! `collectstatic` directory under `/static/`).
//!
//! - The request path, less the route's prefix, is checked by [`path::relative`]: no `..`,
//!   no encoded separators, no double encoding, no NUL. Refused paths get 400 and are counted.
//! - The file is then resolved on disk with symlinks followed and must still be under the
//!   (canonical) root; one that leaves it gets 403 and is counted. Directories serve their
//!   index file if configured, never a listing; dot-files are missing.
//! - Missing files get 404, or go to the route's group when the route falls back.
//! - Responses carry ETag, Last-Modified and Cache-Control (a year and `immutable` for names
//!   with a content hash), answer If-None-Match / If-Modified-Since with 304 and a single
//!   Range with 206 (416 when nothing of the file is in it).
//! - A `.br` or `.gz` sibling is sent instead of the file to clients that accept it (never
//!   for range requests), with `Vary: Accept-Encoding`.
//!
//! File system calls run on the blocking pool and bodies stream in 64 KiB reads, so a slow
//! disk never stalls the proxy's threads.

mod conditional;
pub mod path;

use std::fs::{File, Metadata};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

use crate::body::BoxError;
use crate::compress;
use crate::error::ProxyError;
use crate::spec::{Encoding, StaticSpec};
use conditional::{Range, Validators};

const READ_CHUNK: usize = 64 * 1024;
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Precompressed siblings berth looks for (encoding and file extension), in its order of
/// preference.
const SIBLINGS: [(Encoding, &str); 2] = [(Encoding::Brotli, "br"), (Encoding::Gzip, "gz")];

/// What the static phase decided.
pub enum Outcome {
    Serve(Response<FileBody>),
    /// No such file (or a hidden one), or a method files do not answer, on a route that
    /// falls back to its group.
    Fallback,
    /// The edge answers with this error (400, 403, 404, 405, 416).
    Refused(ProxyError),
}

/// Serves a request (`method`, `full` path without query, `headers`) from `spec.roots`.
/// `prefix` is the route's path prefix, removed from the path.
pub async fn serve(
    spec: &StaticSpec,
    prefix: &str,
    method: &Method,
    full: &str,
    headers: &HeaderMap,
) -> Outcome {
    // What files do not answer goes to the group when the route falls back.
    let unanswered = |e| {
        if spec.fallback {
            Outcome::Fallback
        } else {
            Outcome::Refused(e)
        }
    };
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        return unanswered(ProxyError::MethodNotAllowed);
    }
    let rest = full
        .strip_prefix(prefix.trim_end_matches('/'))
        .unwrap_or(full);
    let rel = match path::relative(rest) {
        Ok(rel) => rel,
        Err(e) => return Outcome::Refused(ProxyError::BadPath(e)),
    };
    if rel.hidden {
        return unanswered(ProxyError::NotFound);
    }
    // A precompressed sibling is sent only to a client that accepts its encoding; a range
    // always gets the file itself (as if nothing were accepted), so offsets mean what the
    // client thinks they mean.
    let ranged = headers.contains_key(header::RANGE);
    let mut accept = HeaderMap::new();
    if !ranged {
        for v in headers.get_all(header::ACCEPT_ENCODING) {
            accept.append(header::ACCEPT_ENCODING, v.clone());
        }
    }
    let roots = spec.roots.clone();
    let index = spec.index.clone();
    let found =
        tokio::task::spawn_blocking(move || find_in(&roots, &rel.path, index.as_deref(), &accept))
            .await;
    let found = match found {
        Ok(Ok(f)) => f,
        Ok(Err(Lookup::Missing)) => return unanswered(ProxyError::NotFound),
        Ok(Err(Lookup::Outside)) => return Outcome::Refused(ProxyError::OutsideRoot),
        Err(e) => return Outcome::Refused(ProxyError::Internal(format!("static file task: {e}"))),
    };
    respond(spec, headers, head, found).await
}

enum Lookup {
    Missing,
    /// A symlink led out of the root.
    Outside,
}

/// The file chosen for a request, open.
struct Found {
    file: File,
    len: u64,
    modified: SystemTime,
    /// The requested file's name: its type and whether it is fingerprinted.
    name: String,
    /// Set when a precompressed sibling is sent instead: its encoding and extension.
    sibling: Option<(Encoding, &'static str)>,
    /// Whether any sibling exists (the answer then varies with Accept-Encoding).
    varies: bool,
}

/// The file from the first root that has it. A way out of any root is refused outright
/// rather than looked for in the next one.
fn find_in(
    roots: &[PathBuf],
    rel: &Path,
    index: Option<&str>,
    accept: &HeaderMap,
) -> Result<Found, Lookup> {
    for root in roots {
        match find(root, rel, index, accept) {
            Err(Lookup::Missing) => continue,
            other => return other,
        }
    }
    Err(Lookup::Missing)
}

/// Resolves and opens the file on the blocking pool.
fn find(root: &Path, rel: &Path, index: Option<&str>, accept: &HeaderMap) -> Result<Found, Lookup> {
    let mut real = inside(root, &root.join(rel))?;
    let mut meta = std::fs::metadata(&real).map_err(|_| Lookup::Missing)?;
    if meta.is_dir() {
        let index = index.ok_or(Lookup::Missing)?;
        real = inside(root, &real.join(index))?;
        meta = std::fs::metadata(&real).map_err(|_| Lookup::Missing)?;
    }
    if !meta.is_file() {
        return Err(Lookup::Missing);
    }
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut available: Vec<(Encoding, &'static str, PathBuf, Metadata)> = Vec::new();
    for (encoding, ext) in SIBLINGS {
        let mut sibling = real.clone().into_os_string();
        sibling.push(".");
        sibling.push(ext);
        // A sibling that leads out of the root is ignored, like a missing one.
        if let Ok(path) = inside(root, Path::new(&sibling))
            && let Ok(m) = std::fs::metadata(&path)
            && m.is_file()
        {
            available.push((encoding, ext, path, m));
        }
    }
    let varies = !available.is_empty();
    let offered: Vec<Encoding> = available.iter().map(|(e, ..)| *e).collect();
    let chosen = compress::choose(accept, &offered)
        .and_then(|e| available.into_iter().find(|(a, ..)| *a == e));
    let (path, meta, sibling) = match chosen {
        Some((e, ext, path, m)) => (path, m, Some((e, ext))),
        None => (real, meta, None),
    };
    let file = File::open(&path).map_err(|_| Lookup::Missing)?;
    Ok(Found {
        file,
        len: meta.len(),
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        name,
        sibling,
        varies,
    })
}

/// `path` with symlinks resolved, if it exists and stays under `root` (itself canonical).
fn inside(root: &Path, path: &Path) -> Result<PathBuf, Lookup> {
    let real = std::fs::canonicalize(path).map_err(|_| Lookup::Missing)?;
    if real.starts_with(root) {
        Ok(real)
    } else {
        Err(Lookup::Outside)
    }
}

async fn respond(spec: &StaticSpec, headers: &HeaderMap, head: bool, found: Found) -> Outcome {
    let v = Validators::new(found.len, found.modified, found.sibling.map(|(_, ext)| ext));
    let mut h = HeaderMap::new();
    let put = |h: &mut HeaderMap, name, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    put(&mut h, header::ETAG, &v.etag);
    put(
        &mut h,
        header::LAST_MODIFIED,
        &httpdate::fmt_http_date(found.modified),
    );
    if path::fingerprinted(&found.name) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    } else {
        put(
            &mut h,
            header::CACHE_CONTROL,
            &format!("public, max-age={}", spec.max_age.as_secs()),
        );
    }
    if found.varies {
        compress::add_vary(&mut h);
    }
    if conditional::not_modified(headers, &v) {
        return Outcome::Serve(answer(StatusCode::NOT_MODIFIED, h, FileBody::empty()));
    }
    put(&mut h, header::CONTENT_TYPE, &content_type(&found.name));
    let (status, start, len) = match found.sibling {
        Some((e, _)) => {
            h.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(e.token()),
            );
            (StatusCode::OK, 0, found.len)
        }
        None => {
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            match conditional::range(headers, found.len, &v) {
                Range::Full => (StatusCode::OK, 0, found.len),
                Range::Partial { start, end } => {
                    put(
                        &mut h,
                        header::CONTENT_RANGE,
                        &format!("bytes {start}-{end}/{}", found.len),
                    );
                    (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
                }
                Range::Unsatisfiable => {
                    return Outcome::Refused(ProxyError::RangeNotSatisfiable { len: found.len });
                }
            }
        }
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if head || len == 0 {
        return Outcome::Serve(answer(status, h, FileBody::empty()));
    }
    let mut file = tokio::fs::File::from_std(found.file);
    // tokio seeks on the blocking pool, like every other file system call here.
    if start > 0
        && let Err(e) = file.seek(SeekFrom::Start(start)).await
    {
        return Outcome::Refused(ProxyError::Internal(format!("seek: {e}")));
    }
    Outcome::Serve(answer(status, h, FileBody::new(file, len)))
}

fn answer(status: StatusCode, headers: HeaderMap, body: FileBody) -> Response<FileBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// By extension; text gets `charset=utf-8` (what collectstatic and bundlers write).
fn content_type(name: &str) -> String {
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let text =
        mime.type_() == mime_guess::mime::TEXT || mime.essence_str() == "application/javascript";
    if text && mime.get_param(mime_guess::mime::CHARSET).is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_owned()
    }
}

/// `len` bytes of a file, read in chunks as the client takes them.
pub struct FileBody {
    file: Option<tokio::fs::File>,
    remaining: u64,
    /// Kept across polls: a read that returns Pending must not cost a fresh buffer.
    buf: BytesMut,
}

impl FileBody {
    fn new(file: tokio::fs::File, len: u64) -> Self {
        FileBody {
            file: Some(file),
            remaining: len,
            buf: BytesMut::new(),
        }
    }

    fn empty() -> Self {
        FileBody {
            file: None,
            remaining: 0,
            buf: BytesMut::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the file ended {0} bytes early (changed while being sent?)")]
struct Truncated(u64);

impl Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(file) = this.file.as_mut() else {
            return Poll::Ready(None);
        };
        if this.remaining == 0 {
            this.file = None;
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining).map_or(READ_CHUNK, |r| r.min(READ_CHUNK));
        if this.buf.len() != want {
            this.buf.resize(want, 0);
        }
        let mut read = ReadBuf::new(&mut this.buf);
        match Pin::new(file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                this.file = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    let short = this.remaining;
                    this.file = None;
                    return Poll::Ready(Some(Err(Box::new(Truncated(short)))));
                }
                this.remaining -= n as u64;
                let chunk = this.buf.split_to(n).freeze();
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.file.is_none() || self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(if self.file.is_some() {
            self.remaining
        } else {
            0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("site.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("logo.png"), "image/png");
        assert_eq!(content_type("font.woff2"), "font/woff2");
        assert_eq!(content_type("no-extension"), "application/octet-stream");
    }
}
