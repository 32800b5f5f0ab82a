//! Release ids: a deterministic content hash of a tree.
//!
//! The tree is walked without following symlinks and its entries are sorted by relative path
//! (bytes, `/`-separated), so the hash does not depend on directory read order. Each entry
//! contributes a kind tag, its length-prefixed path and then: nothing for a directory, the
//! length-prefixed bytes for a file (tagged executable or not: only the exec bit of the mode
//! matters, because that is all a release keeps), or the length-prefixed target for a
//! symlink. Length prefixes make the encoding unambiguous, so two different trees cannot
//! produce the same byte stream. Timestamps, owners and other mode bits are ignored.
//!
//! # Collisions
//!
//! The id keeps 12 hex digits (48 bits) of the SHA-256 so it stays readable in logs and
//! paths. Ids only need to be unique among one app's releases: with `n` releases ever
//! imported for an app, the chance of any two colliding is about `n² / 2⁴⁹`, i.e. about
//! 2·10⁻⁹ for a million deploys. Because that is not zero, the full digest is kept in the
//! metadata and an import whose id matches an existing release with a different digest fails
//! with [`Error::Collision`](crate::Error::Collision) instead of silently reusing it.

use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Hex digits of the digest kept in a release id.
pub const ID_HEX_LEN: usize = 12;

/// Prefix of every release id, so ids are recognisable and never look like plain numbers.
pub const ID_PREFIX: &str = "r-";

/// Domain separation: a change of encoding must change every id.
const DOMAIN: &[u8] = b"berth-release-tree-v1\0";

/// A release id: `r-` followed by 12 lower-case hex digits.
///
/// Parsing validates the shape, so an id read from a file can safely be joined to a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReleaseId(String);

impl ReleaseId {
    /// Parses and validates an id.
    pub fn parse(s: &str) -> Result<Self> {
        let hex = s
            .strip_prefix(ID_PREFIX)
            .ok_or_else(|| Error::InvalidId(s.to_owned()))?;
        let valid = hex.len() == ID_HEX_LEN
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(ReleaseId(s.to_owned()))
        } else {
            Err(Error::InvalidId(s.to_owned()))
        }
    }

    /// The id of a full hex digest.
    pub(crate) fn from_digest(digest_hex: &str) -> Self {
        ReleaseId(format!("{ID_PREFIX}{}", &digest_hex[..ID_HEX_LEN]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ReleaseId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        ReleaseId::parse(&s)
    }
}

impl From<ReleaseId> for String {
    fn from(id: ReleaseId) -> String {
        id.0
    }
}

/// The id of a tree and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSummary {
    pub id: ReleaseId,
    /// The full SHA-256, hex; kept to detect id collisions.
    pub digest: String,
    /// Sum of regular file sizes.
    pub size_bytes: u64,
    /// Number of regular files.
    pub files: u64,
}

/// One entry of a tree, as far as the hash is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File { exec: bool, len: u64 },
    Symlink(Vec<u8>),
}

/// Hashes the tree under `root` (not including `root` itself).
///
/// Fails on entries a release cannot hold (fifos, sockets, devices).
pub fn hash_tree(root: &Path) -> Result<TreeSummary> {
    let mut entries = walk(root)?;
    // Sorting here, not in `walk`, is what makes the hash independent of read order.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    let (mut size_bytes, mut files) = (0u64, 0u64);
    for (rel, kind) in &entries {
        let tag: &[u8] = match kind {
            Kind::Dir => b"d",
            Kind::File { exec: false, .. } => b"f",
            Kind::File { exec: true, .. } => b"x",
            Kind::Symlink(_) => b"l",
        };
        hasher.update(tag);
        put_bytes(&mut hasher, rel);
        match kind {
            Kind::Dir => {}
            Kind::Symlink(target) => put_bytes(&mut hasher, target),
            Kind::File { len, .. } => {
                let path = root.join(std::ffi::OsStr::from_bytes(rel));
                hasher.update(len.to_le_bytes());
                hash_file(&mut hasher, &path, *len)?;
                size_bytes += len;
                files += 1;
            }
        }
    }
    let digest = hex::encode(hasher.finalize());
    Ok(TreeSummary {
        id: ReleaseId::from_digest(&digest),
        digest,
        size_bytes,
        files,
    })
}

fn put_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// Streams a file into the hash, checking it still has the length that was hashed as its
/// prefix (a file changing under us must not give a plausible-looking id).
fn hash_file(hasher: &mut Sha256, path: &Path, len: u64) -> Result<()> {
    let mut file = fs::File::open(path).map_err(Error::io(path))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        seen += n as u64;
    }
    if seen != len {
        return Err(Error::Io {
            path: path.to_owned(),
            source: std::io::Error::other("file changed while it was being hashed"),
        });
    }
    Ok(())
}

/// Lists every entry under `root` with its `/`-separated relative path, without following
/// symlinks. Iterative, so a deep tree cannot overflow the stack.
pub(crate) fn walk(root: &Path) -> Result<Vec<(Vec<u8>, Kind)>> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_owned(), Vec::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for item in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let item = item.map_err(Error::io(&dir))?;
            let path = item.path();
            let mut rel = prefix.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(item.file_name().as_bytes());
            let meta = fs::symlink_metadata(&path).map_err(Error::io(&path))?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push((path, rel.clone()));
                Kind::Dir
            } else if ft.is_file() {
                Kind::File {
                    exec: meta.permissions().mode() & 0o111 != 0,
                    len: meta.len(),
                }
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(Error::io(&path))?;
                Kind::Symlink(target.as_os_str().as_bytes().to_vec())
            } else {
                return Err(Error::bad_entry(
                    String::from_utf8_lossy(&rel),
                    "not a regular file, directory or symlink",
                ));
            };
            out.push((rel, kind));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(root: &Path, rel: &str, bytes: &[u8], mode: u32) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The same small app, created in the order given.
    fn tree(order: &[usize]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let files: [(&str, &[u8], u32); 4] = [
            ("bin/app", b"#!/bin/sh\necho hi\n", 0o755),
            ("static/index.html", b"<h1>hi</h1>", 0o644),
            ("static/css/site.css", b"body{}", 0o600),
            ("README", b"readme", 0o644),
        ];
        for &i in order {
            let (rel, bytes, mode) = files[i];
            write(dir.path(), rel, bytes, mode);
        }
        fs::create_dir_all(dir.path().join("empty")).unwrap();
        symlink("static/index.html", dir.path().join("index")).unwrap();
        dir
    }

    #[test]
    fn same_content_same_id_regardless_of_order_and_mtime() {
        let a = tree(&[0, 1, 2, 3]);
        let b = tree(&[3, 2, 1, 0]);
        // Different mtimes and non-exec mode bits must not matter.
        let f = fs::File::options()
            .write(true)
            .open(b.path().join("README"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        fs::set_permissions(b.path().join("README"), fs::Permissions::from_mode(0o600)).unwrap();
        let (ha, hb) = (hash_tree(a.path()).unwrap(), hash_tree(b.path()).unwrap());
        assert_eq!(ha, hb);
        assert_eq!(ha.files, 4);
        assert_eq!(ha.size_bytes, 18 + 11 + 6 + 6);
        assert!(ha.id.as_str().starts_with("r-") && ha.id.as_str().len() == 14);
        assert_eq!(ReleaseId::parse(ha.id.as_str()).unwrap(), ha.id);
    }

    #[test]
    fn one_byte_exec_bit_symlink_or_empty_dir_changes_the_id() {
        let base = hash_tree(tree(&[0, 1, 2, 3]).path()).unwrap().id;

        let t = tree(&[0, 1, 2, 3]);
        write(t.path(), "static/css/site.css", b"body{ ", 0o600);
        assert_ne!(hash_tree(t.path()).unwrap().id, base, "one byte");

        let t = tree(&[0, 1, 2, 3]);
        fs::set_permissions(t.path().join("README"), fs::Permissions::from_mode(0o744)).unwrap();
        assert_ne!(hash_tree(t.path()).unwrap().id, base, "exec bit");

        let t = tree(&[0, 1, 2, 3]);
        fs::remove_file(t.path().join("index")).unwrap();
        symlink("README", t.path().join("index")).unwrap();
        assert_ne!(hash_tree(t.path()).unwrap().id, base, "symlink target");

        let t = tree(&[0, 1, 2, 3]);
        fs::remove_dir(t.path().join("empty")).unwrap();
        assert_ne!(hash_tree(t.path()).unwrap().id, base, "empty dir");

        let t = tree(&[0, 1, 2, 3]);
        fs::rename(t.path().join("README"), t.path().join("README2")).unwrap();
        assert_ne!(hash_tree(t.path()).unwrap().id, base, "renamed file");
    }

    #[test]
    fn moving_bytes_between_path_and_content_changes_the_id() {
        // Without length prefixes ("ab", "c") and ("a", "bc") could hash alike.
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "ab", b"c", 0o644);
        let b = tempfile::tempdir().unwrap();
        write(b.path(), "a", b"bc", 0o644);
        assert_ne!(hash_tree(a.path()).unwrap(), hash_tree(b.path()).unwrap());
    }

    #[test]
    fn id_parsing() {
        assert!(ReleaseId::parse("r-0123456789ab").is_ok());
        for bad in [
            "0123456789ab",
            "r-0123456789a",
            "r-0123456789AB",
            "r-../../etc/x",
            "",
        ] {
            assert!(ReleaseId::parse(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&ReleaseId::parse("r-0123456789ab").unwrap()).unwrap();
        assert_eq!(json, "\"r-0123456789ab\"");
        assert!(serde_json::from_str::<ReleaseId>("\"r-../x\"").is_err());
    }
}
