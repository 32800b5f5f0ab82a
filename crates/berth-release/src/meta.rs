//! Release metadata, stored beside the tree as `<releases_dir>/<id>.json`.
//!
//! Beside rather than inside: the tree is hashed and read-only, and the metadata (when, from
//! where) is not part of its content.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::ReleaseId;

/// An imported release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub id: ReleaseId,
    /// `<releases_dir>/<id>`. Not stored: it is derived from where the metadata is read, so a
    /// data directory can be moved.
    #[serde(skip)]
    pub path: PathBuf,
    /// Where it was imported from (canonical path of the directory or tarball).
    pub source: String,
    /// The commit `HEAD` pointed at when a directory with `.git` was imported.
    pub git_commit: Option<String>,
    /// When it was first imported (re-imports of the same content keep this).
    pub created: SystemTime,
    /// Sum of regular file sizes.
    pub size_bytes: u64,
    /// Number of regular files.
    pub files: u64,
    /// Full SHA-256 of the tree (the id is its first 12 hex digits); detects id collisions.
    pub digest: String,
}

/// Path of a release's metadata file.
pub fn meta_path(releases_dir: &Path, id: &ReleaseId) -> PathBuf {
    releases_dir.join(format!("{id}.json"))
}

/// Writes the metadata atomically: a temporary file in the same directory, synced, then
/// renamed over `<id>.json`, so readers see the old file or the new one, never half of one.
pub fn write_release(releases_dir: &Path, release: &Release) -> Result<()> {
    let path = meta_path(releases_dir, &release.id);
    let tmp = releases_dir.join(format!(".{}.json.tmp-{}", release.id, std::process::id()));
    let json = serde_json::to_vec_pretty(release).map_err(|source| Error::Meta {
        path: path.clone(),
        source,
    })?;
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&path)(e));
    }
    Ok(())
}

/// Reads one release's metadata; `Ok(None)` when it has none.
pub fn read_release(releases_dir: &Path, id: &ReleaseId) -> Result<Option<Release>> {
    let path = meta_path(releases_dir, id);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path)(e)),
    };
    let mut release: Release = serde_json::from_slice(&bytes).map_err(|source| Error::Meta {
        path: path.clone(),
        source,
    })?;
    if &release.id != id {
        return Err(Error::InvalidId(format!(
            "{} (in {})",
            release.id,
            path.display()
        )));
    }
    release.path = releases_dir.join(id.as_str());
    Ok(Some(release))
}

/// Every release in `releases_dir` that has both its tree and its metadata, oldest first
/// (ties broken by id so the order is total). Other files (temporary directories, stray
/// files) are ignored, so a half-finished import is never mistaken for a release.
pub fn list_releases(releases_dir: &Path) -> Result<Vec<Release>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(releases_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(releases_dir)(e)),
    };
    for item in entries {
        let item = item.map_err(Error::io(releases_dir))?;
        let name = item.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| ReleaseId::parse(n).ok())
        else {
            continue;
        };
        if !releases_dir.join(id.as_str()).is_dir() {
            continue;
        }
        if let Some(release) = read_release(releases_dir, &id)? {
            out.push(release);
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}
