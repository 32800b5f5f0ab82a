//! The crate's error type. Every variant about input names the offending entry, because the
//! person deploying has to find it in their tree or tarball.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while importing, describing or pruning releases.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The tarball could not be read (corrupt gzip or tar stream).
    #[error("reading archive {path}: {source}")]
    Archive {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An entry of the source is not allowed in a release.
    #[error("entry {entry:?}: {reason}")]
    BadEntry { entry: String, reason: String },
    /// The source is bigger than the size limit.
    #[error("entry {entry:?}: release exceeds the size limit of {limit} bytes")]
    TooLarge { entry: String, limit: u64 },
    /// The source has more entries than the limit.
    #[error("entry {entry:?}: release exceeds the limit of {limit} entries")]
    TooManyEntries { entry: String, limit: u64 },
    /// The source cannot be imported at all (e.g. it contains the releases directory).
    #[error("source {path}: {reason}")]
    BadSource { path: PathBuf, reason: String },
    /// A release with this id exists but its content digest differs: a 48-bit id collision.
    #[error(
        "release {id} already exists with different content (id collision); refusing to reuse it"
    )]
    Collision { id: String },
    /// A release's metadata file could not be parsed or written.
    #[error("release metadata {path}: {source}")]
    Meta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The release's build step failed; the release was removed again.
    #[error("build of release {id} failed: {reason}")]
    Build { id: String, reason: String },
    /// A string is not a release id (`r-` and 12 lower-case hex digits).
    #[error("invalid release id {0:?}")]
    InvalidId(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn bad_entry(entry: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::BadEntry {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}
