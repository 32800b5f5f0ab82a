//! Importing a release: copy or extract into a temporary directory inside the releases
//! directory, validate, hash, make read-only, rename into place, record metadata.
//!
//! The temporary directory lives inside `releases_dir` so the final `rename` stays on one
//! file system and is atomic: a release directory named by an id is always complete. Its name
//! starts with `.tmp-`, which is never a valid id, so listing and pruning ignore it. It is
//! removed on every error path (a guard's `Drop`), so a failed import leaves `releases_dir`
//! as it was.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::git;
use crate::id::hash_tree;
use crate::meta::{Release, read_release, write_release};

/// Default cap on the total size of a release's files.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;
/// Default cap on the number of entries (files, directories, symlinks) in a release.
pub const DEFAULT_MAX_ENTRIES: u64 = 500_000;

/// Caps that keep a runaway or hostile source from filling the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Running totals checked against [`Limits`] as entries arrive, before they are written.
pub(crate) struct Budget {
    limits: Limits,
    bytes: u64,
    entries: u64,
}

impl Budget {
    pub(crate) fn new(limits: Limits) -> Self {
        Budget {
            limits,
            bytes: 0,
            entries: 0,
        }
    }

    /// Counts one entry of `bytes` bytes.
    pub(crate) fn take(&mut self, entry: &str, bytes: u64) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(Error::TooManyEntries {
                entry: entry.to_owned(),
                limit: self.limits.max_entries,
            });
        }
        self.add_bytes(entry, bytes)
    }

    /// Counts more bytes of the current entry.
    pub(crate) fn add_bytes(&mut self, entry: &str, bytes: u64) -> Result<()> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.limits.max_bytes {
            return Err(Error::TooLarge {
                entry: entry.to_owned(),
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }
}

/// Imports the directory `src` with default [`Limits`].
pub fn import_dir(src: &Path, releases_dir: &Path) -> Result<Release> {
    import_dir_with(src, releases_dir, Limits::default())
}

/// Imports the directory `src` as a release under `releases_dir`.
///
/// `.git` entries are skipped (at any depth); the commit `src/.git` points at is recorded.
/// Symlinks are copied as symlinks and must resolve inside the release; fifos, sockets and
/// devices are rejected. Hard-linked files are copied as separate files.
pub fn import_dir_with(src: &Path, releases_dir: &Path, limits: Limits) -> Result<Release> {
    let src = fs::canonicalize(src).map_err(Error::io(src))?;
    if !src.is_dir() {
        return Err(Error::BadSource {
            path: src,
            reason: "not a directory".into(),
        });
    }
    fs::create_dir_all(releases_dir).map_err(Error::io(releases_dir))?;
    let releases_canon = fs::canonicalize(releases_dir).map_err(Error::io(releases_dir))?;
    // Copying a tree that holds the releases directory would copy the copy into itself.
    if releases_canon.starts_with(&src) {
        return Err(Error::BadSource {
            path: src,
            reason: format!("contains the releases directory {}", releases_dir.display()),
        });
    }
    let tmp = TempTree::create(releases_dir)?;
    let symlinks = copy_tree(&src, &tmp.path, limits)?;
    let origin = Origin {
        source: src.to_string_lossy().into_owned(),
        git_commit: git::head_commit(&src),
    };
    finish(tmp, releases_dir, origin, &symlinks, None)
}

/// Imports the `.tar.gz` at `path` with default [`Limits`].
pub fn import_tarball(path: &Path, releases_dir: &Path) -> Result<Release> {
    import_tarball_with(path, releases_dir, Limits::default())
}

/// Imports the gzip-compressed tarball at `path` as a release under `releases_dir`.
///
/// Rejects absolute paths, `..`, paths through symlinks, symlinks resolving outside the
/// release, hard links, device and fifo entries, and duplicate entries.
pub fn import_tarball_with(path: &Path, releases_dir: &Path, limits: Limits) -> Result<Release> {
    let path = fs::canonicalize(path).map_err(Error::io(path))?;
    let source = path.to_string_lossy().into_owned();
    import_tarball_built(
        &path,
        releases_dir,
        limits,
        Origin {
            source,
            git_commit: None,
        },
        None,
    )
}

/// Where a release came from, for its metadata, when the caller knows better than the path
/// it imports from (an uploaded archive stands for the client's directory and commit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    pub git_commit: Option<String>,
}

/// A build step run inside a new release before it is frozen (`npm ci`, a virtualenv). It
/// runs at the release's final path, because builds bake absolute paths into what they make
/// (virtualenv scripts' `#!` lines). `Err` carries the reason shown to the deployer.
pub type BuildStep<'a> = &'a mut dyn FnMut(&Path) -> std::result::Result<(), String>;

/// Imports the tarball at `path` like [`import_tarball_with`], records `origin`, and runs
/// `build` in the new release before freezing it. When a release with the same content
/// already exists, it is returned as is and `build` does not run (deploys are idempotent).
/// If `build` fails, the release is removed again and nothing in `releases_dir` changes.
pub fn import_tarball_built(
    path: &Path,
    releases_dir: &Path,
    limits: Limits,
    origin: Origin,
    build: Option<BuildStep<'_>>,
) -> Result<Release> {
    fs::create_dir_all(releases_dir).map_err(Error::io(releases_dir))?;
    let tmp = TempTree::create(releases_dir)?;
    let symlinks = crate::tarball::extract(path, &tmp.path, limits)?;
    finish(tmp, releases_dir, origin, &symlinks, build)
}

/// Copies `src` into `dst` (which exists), returning the relative paths of the symlinks.
fn copy_tree(src: &Path, dst: &Path, limits: Limits) -> Result<Vec<PathBuf>> {
    let mut budget = Budget::new(limits);
    let mut symlinks = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = src.join(&rel_dir);
        let mut items = Vec::new();
        for item in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            items.push(item.map_err(Error::io(&dir))?.file_name());
        }
        // Sorted so that which entry trips a limit does not depend on read order.
        items.sort();
        for name in items {
            if name == OsStr::new(".git") {
                continue;
            }
            let rel = rel_dir.join(&name);
            let entry = rel.to_string_lossy().into_owned();
            let from = src.join(&rel);
            let to = dst.join(&rel);
            let meta = fs::symlink_metadata(&from).map_err(Error::io(&from))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                budget.take(&entry, 0)?;
                fs::create_dir(&to).map_err(Error::io(&to))?;
                stack.push(rel);
            } else if ft.is_file() {
                budget.take(&entry, meta.len())?;
                let copied = fs::copy(&from, &to).map_err(Error::io(&from))?;
                // The file may have grown since `metadata`; count what was really copied.
                budget.add_bytes(&entry, copied.saturating_sub(meta.len()))?;
            } else if ft.is_symlink() {
                budget.take(&entry, 0)?;
                let target = fs::read_link(&from).map_err(Error::io(&from))?;
                if target.is_absolute() {
                    return Err(Error::bad_entry(entry, "symlink to an absolute path"));
                }
                symlink(&target, &to).map_err(Error::io(&to))?;
                symlinks.push(rel);
            } else {
                return Err(Error::bad_entry(
                    entry,
                    "not a regular file, directory or symlink (device, fifo or socket)",
                ));
            }
        }
    }
    Ok(symlinks)
}

/// Validates, hashes, freezes and renames the temporary tree into place, then records it.
fn finish(
    tmp: TempTree,
    releases_dir: &Path,
    origin: Origin,
    symlinks: &[PathBuf],
    build: Option<BuildStep<'_>>,
) -> Result<Release> {
    let Origin { source, git_commit } = origin;
    // Symlinks are checked only once the whole tree exists, since a link's meaning depends on
    // the links it passes through, which may come later in the source.
    for link in symlinks {
        if !fsutil::symlink_stays_inside(&tmp.path, link)? {
            return Err(Error::bad_entry(
                link.to_string_lossy(),
                "symlink resolves outside the release",
            ));
        }
    }
    let summary = hash_tree(&tmp.path)?;
    let target = releases_dir.join(summary.id.as_str());
    if build.is_some() {
        // A built tree without metadata is a build that a crash interrupted: its content is no
        // longer the source's, so it cannot be adopted the way an unbuilt one is.
        if read_release(releases_dir, &summary.id)?.is_none() {
            fsutil::remove_tree(&target)?;
        }
    }
    if let Some(existing) = existing_release(releases_dir, &summary, &source, &git_commit)? {
        return Ok(existing);
    }
    // The root stays writable until after the rename: renaming a directory can need write
    // permission on it (to update its `..`).
    fsutil::set_read_only(&tmp.path, false)?;
    if let Err(e) = fs::rename(&tmp.path, &target) {
        // A concurrent import of the same content may have won the race.
        if let Some(existing) = existing_release(releases_dir, &summary, &source, &git_commit)? {
            return Ok(existing);
        }
        return Err(Error::io(&target)(e));
    }
    tmp.disarm();
    if let Some(Err(reason)) = build.map(|build| build(&target)) {
        let _ = fsutil::remove_tree(&target);
        return Err(Error::Build {
            id: summary.id.to_string(),
            reason,
        });
    }
    let release = Release {
        id: summary.id,
        path: target.clone(),
        source,
        git_commit,
        created: SystemTime::now(),
        size_bytes: summary.size_bytes,
        files: summary.files,
        digest: summary.digest,
    };
    let frozen = fsutil::set_read_only(&target, true);
    if let Err(e) = frozen.and_then(|()| write_release(releases_dir, &release)) {
        // Leave nothing behind: a tree without metadata would never be listed or pruned.
        let _ = fsutil::remove_tree(&target);
        return Err(e);
    }
    Ok(release)
}

/// The release already stored under this id, if any (the temporary tree is then dropped).
/// A stored tree whose digest differs is an id collision. A tree without metadata (a crash
/// between rename and metadata write) is re-hashed and given metadata now.
fn existing_release(
    releases_dir: &Path,
    summary: &crate::id::TreeSummary,
    source: &str,
    git_commit: &Option<String>,
) -> Result<Option<Release>> {
    let target = releases_dir.join(summary.id.as_str());
    match fs::symlink_metadata(&target) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&target)(e)),
        Ok(_) => {}
    }
    let stored = read_release(releases_dir, &summary.id)?;
    let same_content = match &stored {
        Some(existing) => existing.digest == summary.digest,
        None => hash_tree(&target)?.digest == summary.digest,
    };
    if !same_content {
        return Err(Error::Collision {
            id: summary.id.to_string(),
        });
    }
    if stored.is_some() {
        return Ok(stored);
    }
    let release = Release {
        id: summary.id.clone(),
        path: target,
        source: source.to_owned(),
        git_commit: git_commit.clone(),
        created: SystemTime::now(),
        size_bytes: summary.size_bytes,
        files: summary.files,
        digest: summary.digest.clone(),
    };
    write_release(releases_dir, &release)?;
    Ok(Some(release))
}

/// A temporary directory inside the releases directory, removed on drop unless disarmed.
pub(crate) struct TempTree {
    pub(crate) path: PathBuf,
    armed: bool,
}

impl TempTree {
    fn create(releases_dir: &Path) -> Result<TempTree> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!(".tmp-import-{}-{nanos}-{n}", std::process::id());
            let path = releases_dir.join(name);
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempTree { path, armed: true }),
                // Left over by a crashed process that had our pid: try the next name.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path)(e)),
            }
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        if self.armed {
            let _ = fsutil::remove_tree(&self.path);
        }
    }
}

/// Relative path from raw archive bytes (Unix paths are bytes).
pub(crate) fn path_from_bytes(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}
