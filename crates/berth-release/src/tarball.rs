//! Extracting a `.tar.gz` into a temporary release tree, entry by entry, with every entry
//! checked before anything is written. The `tar` crate's own `unpack` is not used: it
//! silently skips some bad entries, and a release must fail loudly instead.

use std::fs;
use std::io::{self, BufReader, ErrorKind, Read};
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use tar::{Archive, EntryType};

use crate::error::{Error, Result};
use crate::fsutil::safe_relative;
use crate::import::{Budget, Limits, path_from_bytes};

/// Extracts `archive` into the existing directory `root`; returns the symlinks' relative
/// paths so the caller can check them once the whole tree exists.
pub(crate) fn extract(archive: &Path, root: &Path, limits: Limits) -> Result<Vec<PathBuf>> {
    let bad_archive = |source: io::Error| Error::Archive {
        path: archive.to_owned(),
        source,
    };
    let file = fs::File::open(archive).map_err(Error::io(archive))?;
    let mut tar = Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut budget = Budget::new(limits);
    let mut symlinks = Vec::new();
    for entry in tar.entries().map_err(bad_archive)? {
        let mut entry = entry.map_err(bad_archive)?;
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        match kind {
            // pax global headers (e.g. `git archive`'s commit comment) carry no file.
            EntryType::XGlobalHeader => continue,
            EntryType::Link => return Err(Error::bad_entry(name, "hard links are not allowed")),
            EntryType::Char | EntryType::Block => {
                return Err(Error::bad_entry(name, "device files are not allowed"));
            }
            EntryType::Fifo => return Err(Error::bad_entry(name, "fifos are not allowed")),
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::Symlink => {}
            other => {
                return Err(Error::bad_entry(
                    name,
                    format!("unsupported entry type {:?}", other.as_byte() as char),
                ));
            }
        }
        let rel = safe_relative(&name, path_from_bytes(&raw_path))?;
        if rel.as_os_str().is_empty() {
            // `./` itself: the release root, which already exists.
            continue;
        }
        let size = if kind == EntryType::Directory || kind == EntryType::Symlink {
            0
        } else {
            entry.size()
        };
        budget.take(&name, size)?;
        make_parents(root, &rel, &name)?;
        let dest = root.join(&rel);
        match kind {
            EntryType::Directory => match fs::create_dir(&dest) {
                Ok(()) => {}
                // Archives often list a directory after files inside it created it.
                Err(e) if e.kind() == ErrorKind::AlreadyExists && is_real_dir(&dest) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(Error::bad_entry(name, "duplicate entry"));
                }
                Err(e) => return Err(Error::io(&dest)(e)),
            },
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::bad_entry(&name, "symlink without a target"))?
                    .into_owned();
                let target = path_from_bytes(&target);
                if target.is_absolute() {
                    return Err(Error::bad_entry(name, "symlink to an absolute path"));
                }
                symlink(target, &dest).map_err(|e| exists_as_duplicate(e, &name, &dest))?;
                symlinks.push(rel);
            }
            _ => {
                let mode = entry.header().mode().map_err(bad_archive)?;
                let exec = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(exec)
                    .open(&dest)
                    .map_err(|e| exists_as_duplicate(e, &name, &dest))?;
                // `take` bounds the copy by the declared size, whatever the stream holds.
                let copied =
                    io::copy(&mut (&mut entry).take(size), &mut out).map_err(bad_archive)?;
                if copied != size {
                    return Err(Error::bad_entry(name, "archive ends inside this entry"));
                }
            }
        }
    }
    Ok(symlinks)
}

/// Creates the missing parent directories of `rel`, refusing to go through anything that is
/// not a real directory: writing `a/x` after a symlink `a -> ..` would land outside the
/// release before any symlink check ran.
fn make_parents(root: &Path, rel: &Path, name: &str) -> Result<()> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut here = root.to_owned();
    for c in parent.components() {
        here.push(c);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::bad_entry(name, "path goes through a symlink"));
            }
            Ok(_) => return Err(Error::bad_entry(name, "parent is not a directory")),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir(&here).map_err(Error::io(&here))?;
            }
            Err(e) => return Err(Error::io(&here)(e)),
        }
    }
    Ok(())
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Tar allows an entry to replace an earlier one; a release does not (which one would be
/// meant is unclear, and replacing could swap a checked file for a symlink).
fn exists_as_duplicate(e: io::Error, name: &str, dest: &Path) -> Error {
    if e.kind() == ErrorKind::AlreadyExists {
        Error::bad_entry(name, "duplicate entry")
    } else {
        Error::io(dest)(e)
    }
}
