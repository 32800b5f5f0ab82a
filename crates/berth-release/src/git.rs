//! Reads the commit a source directory is checked out at, without a git binary: a release
//! records it for humans, so anything unusual just gives `None`.

use std::fs;
use std::path::{Path, PathBuf};

/// The commit `HEAD` points at in `src/.git`, if it can be read.
pub fn head_commit(src: &Path) -> Option<String> {
    let git_dir = git_dir(src)?;
    let head = fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(refname) = head.strip_prefix("ref:") else {
        // Detached HEAD holds the commit itself.
        return is_object_id(head).then(|| head.to_owned());
    };
    let refname = refname.trim();
    // A ref name must not lead us out of the git directory.
    if refname
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    // Linked worktrees keep shared refs in the directory named by `commondir`.
    let mut dirs = vec![git_dir.clone()];
    if let Ok(common) = fs::read_to_string(git_dir.join("commondir")) {
        dirs.push(git_dir.join(common.trim()));
    }
    for dir in &dirs {
        if let Ok(id) = fs::read_to_string(dir.join(refname)) {
            let id = id.trim();
            return is_object_id(id).then(|| id.to_owned());
        }
        if let Some(id) = packed_ref(dir, refname) {
            return Some(id);
        }
    }
    None
}

/// `src/.git` is either the git directory or (worktrees, submodules) a file `gitdir: PATH`.
fn git_dir(src: &Path) -> Option<PathBuf> {
    let dot_git = src.join(".git");
    let meta = fs::metadata(&dot_git).ok()?;
    if meta.is_dir() {
        return Some(dot_git);
    }
    let text = fs::read_to_string(&dot_git).ok()?;
    let target = text.trim().strip_prefix("gitdir:")?.trim();
    Some(src.join(target))
}

fn packed_ref(dir: &Path, refname: &str) -> Option<String> {
    let text = fs::read_to_string(dir.join("packed-refs")).ok()?;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('^'))
        .filter_map(|l| l.split_once(' '))
        .find(|(_, name)| *name == refname)
        .and_then(|(id, _)| is_object_id(id).then(|| id.to_owned()))
}

/// SHA-1 (40) or SHA-256 (64) hex object id.
fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "0123456789abcdef0123456789abcdef01234567";
    const C2: &str = "89abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn loose_packed_detached_and_missing() {
        let src = tempfile::tempdir().unwrap();
        assert_eq!(head_commit(src.path()), None);
        let git = src.path().join(".git");
        fs::create_dir_all(git.join("refs/heads")).unwrap();
        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(head_commit(src.path()), None, "unborn branch");
        fs::write(
            git.join("packed-refs"),
            format!("# pack-refs with: peeled\n{C2} refs/heads/main\n^{C1}\n"),
        )
        .unwrap();
        assert_eq!(head_commit(src.path()).as_deref(), Some(C2));
        fs::write(git.join("refs/heads/main"), format!("{C1}\n")).unwrap();
        assert_eq!(head_commit(src.path()).as_deref(), Some(C1), "loose wins");
        fs::write(git.join("HEAD"), format!("{C2}\n")).unwrap();
        assert_eq!(head_commit(src.path()).as_deref(), Some(C2), "detached");
        fs::write(git.join("HEAD"), "ref: ../../../etc/passwd\n").unwrap();
        assert_eq!(head_commit(src.path()), None);
    }
}
