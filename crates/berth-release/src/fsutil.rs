//! File system helpers shared by import and prune: read-only trees, removing them again,
//! and checking that a symlink stays inside its release.

use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// How many symlinks one resolution may follow; the kernel's limit is 40 too.
const MAX_SYMLINK_HOPS: usize = 40;

/// Makes every file and directory under `root` read-only (files 0444, or 0555 when any exec
/// bit is set; directories 0555). `root` itself is included when `include_root` is set;
/// import leaves it writable until after the rename (see `import::finish`).
pub(crate) fn set_read_only(root: &Path, include_root: bool) -> Result<()> {
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for item in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let path = item.map_err(Error::io(&dir))?.path();
            let meta = fs::symlink_metadata(&path).map_err(Error::io(&path))?;
            let mode = if meta.is_dir() {
                stack.push(path.clone());
                0o555
            } else if meta.is_file() {
                if meta.permissions().mode() & 0o111 != 0 {
                    0o555
                } else {
                    0o444
                }
            } else {
                // Symlink modes mean nothing on Linux, and there is no lchmod.
                continue;
            };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(Error::io(&path))?;
        }
    }
    if include_root {
        fs::set_permissions(root, fs::Permissions::from_mode(0o555)).map_err(Error::io(root))?;
    }
    Ok(())
}

/// Removes a tree that may be read-only: directories are made writable first, because
/// unlinking an entry needs write permission on its directory (for non-root users). A
/// missing tree is not an error.
pub(crate) fn remove_tree(root: &Path) -> Result<()> {
    match fs::symlink_metadata(root) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(root)(e)),
        Ok(m) if !m.is_dir() => return fs::remove_file(root).map_err(Error::io(root)),
        Ok(_) => {}
    }
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(Error::io(&dir))?;
        for item in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let item = item.map_err(Error::io(&dir))?;
            if item.file_type().map_err(Error::io(item.path()))?.is_dir() {
                stack.push(item.path());
            }
        }
    }
    fs::remove_dir_all(root).map_err(Error::io(root))
}

/// Checks a relative entry path from untrusted input and returns it normalised (`.` dropped).
/// Absolute paths and `..` are rejected outright rather than cleaned, since an archive that
/// contains them is either broken or hostile.
pub(crate) fn safe_relative(entry: &str, path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::bad_entry(entry, "absolute path"));
            }
            Component::ParentDir => {
                return Err(Error::bad_entry(entry, "path contains `..`"));
            }
        }
    }
    Ok(out)
}

/// Checks that the symlink at `root/link` resolves inside `root`, following any symlinks it
/// passes through the way the kernel would. A purely lexical check is not enough: with
/// `a -> .`, the target `a/..` looks like the root but is its parent.
///
/// Components that do not exist are resolved lexically (a dangling link is allowed as long as
/// its path stays inside).
pub(crate) fn symlink_stays_inside(root: &Path, link: &Path) -> Result<bool> {
    // `resolved` only ever holds components that are real directories (or missing), never
    // symlinks, so `root.join(resolved)` is a path inside `root`.
    let mut resolved: Vec<OsString> = link
        .parent()
        .map(|p| p.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    let first = fs::read_link(root.join(link)).map_err(Error::io(root.join(link)))?;
    let mut pending: Vec<Step> = Vec::new();
    push_target(&mut pending, &first);
    let mut hops = 1;
    while let Some(step) = pending.pop() {
        match step {
            Step::Root => return Ok(false),
            Step::Up => {
                if resolved.pop().is_none() {
                    return Ok(false);
                }
            }
            Step::Name(name) => {
                let mut here: PathBuf = root.to_owned();
                here.extend(&resolved);
                here.push(&name);
                match fs::symlink_metadata(&here) {
                    Ok(m) if m.file_type().is_symlink() => {
                        hops += 1;
                        if hops > MAX_SYMLINK_HOPS {
                            return Ok(false);
                        }
                        let target = fs::read_link(&here).map_err(Error::io(&here))?;
                        // Relative to the directory holding this link: `resolved` as is.
                        push_target(&mut pending, &target);
                    }
                    Ok(_) => resolved.push(name),
                    Err(e) if e.kind() == ErrorKind::NotFound => resolved.push(name),
                    Err(e) => return Err(Error::io(&here)(e)),
                }
            }
        }
    }
    Ok(true)
}

/// One step of resolving a symlink target.
enum Step {
    Root,
    Up,
    Name(OsString),
}

/// Pushes a target's steps so that popping yields them in order.
fn push_target(pending: &mut Vec<Step>, target: &Path) {
    let steps: Vec<Step> = target
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Step::Name(n.to_owned())),
            Component::RootDir | Component::Prefix(_) => Some(Step::Root),
            Component::ParentDir => Some(Step::Up),
            Component::CurDir => None,
        })
        .collect();
    pending.extend(steps.into_iter().rev());
}
