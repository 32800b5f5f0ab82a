//! Packing a source directory into the `.tar.gz` that `berth deploy` uploads.
//!
//! The client packs and the server imports with [`crate::import_tarball_built`], so a remote
//! server and a local one see the same bytes and give the same release id. What is left out
//! follows `.gitignore` and `.berthignore` (same syntax; `.berthignore` wins, and can bring a
//! git-ignored build output back with `!dist/`), and `.git` is always left out. Problems the
//! server would refuse anyway (an absolute symlink, a fifo) are refused here first, with the
//! hint the person deploying needs.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use flate2::{Compression, write::GzEncoder};
use tar::{EntryType, Header};

use crate::error::{Error, Result};

/// The ignore file read in every directory of the source, beside `.gitignore`.
pub const IGNORE_FILE: &str = ".berthignore";

/// What went into an archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackSummary {
    pub files: u64,
    pub bytes: u64,
}

/// Writes `src` as a gzip-compressed tarball to `out`.
pub fn pack_dir(src: &Path, out: impl Write) -> Result<PackSummary> {
    let src = fs::canonicalize(src).map_err(Error::io(src))?;
    if !src.is_dir() {
        return Err(Error::BadSource {
            path: src,
            reason: "not a directory".into(),
        });
    }
    let walker = ignore::WalkBuilder::new(&src)
        .standard_filters(false)
        .hidden(false)
        .git_ignore(true)
        .require_git(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .filter_entry(|e| e.file_name() != ".git")
        // Sorted so the same tree always packs to the same archive.
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::fast()));
    let mut summary = PackSummary::default();
    for item in walker {
        let item = item.map_err(|e| Error::BadSource {
            path: src.clone(),
            reason: e.to_string(),
        })?;
        let path = item.path();
        let Ok(rel) = path.strip_prefix(&src) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let entry = rel.to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(path).map_err(Error::io(path))?;
        let ft = meta.file_type();
        let mut header = Header::new_gnu();
        header.set_mtime(0);
        if ft.is_dir() {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, rel, std::io::empty())
                .map_err(Error::io(path))?;
        } else if ft.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            let file = fs::File::open(path).map_err(Error::io(path))?;
            tar.append_data(&mut header, rel, file)
                .map_err(Error::io(path))?;
            summary.files += 1;
            summary.bytes += meta.len();
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(Error::io(path))?;
            if target.is_absolute() {
                return Err(Error::bad_entry(
                    entry,
                    format!(
                        "symlink to the absolute path {}; releases must be self-contained \
                         (a local virtualenv or node_modules? list it in {IGNORE_FILE} and \
                         let the app's build command create it on the server)",
                        target.display()
                    ),
                ));
            }
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, rel, &target)
                .map_err(Error::io(path))?;
        } else {
            return Err(Error::bad_entry(
                entry,
                "not a regular file, directory or symlink (device, fifo or socket)",
            ));
        }
    }
    let gz = tar.into_inner().map_err(Error::io(&src))?;
    gz.finish().map_err(Error::io(&src))?;
    Ok(summary)
}

/// The contents of the regular file `name` at the root of the `.tar.gz` at `archive`
/// (`./name` matches too), read up to `max` bytes; `Ok(None)` when there is no such entry.
/// Lets the CLI read an archive's `berth.toml` before uploading it.
pub fn read_root_file(archive: &Path, name: &str, max: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let bad = |source: std::io::Error| Error::Archive {
        path: archive.to_owned(),
        source,
    };
    let file = fs::File::open(archive).map_err(Error::io(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    for entry in tar.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let path = entry.path_bytes().into_owned();
        let path = path.strip_prefix(b"./").unwrap_or(&path);
        if path == name.as_bytes() && entry.header().entry_type() == EntryType::Regular {
            let mut out = Vec::new();
            entry.take(max).read_to_end(&mut out).map_err(bad)?;
            return Ok(Some(out));
        }
    }
    Ok(None)
}
