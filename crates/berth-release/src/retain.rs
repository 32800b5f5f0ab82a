//! Which releases to keep. The decision is pure ([`plan_prune`]); [`prune`] applies it.
//!
//! Rule: the `keep` newest releases are always kept, and so is every active release however
//! old (it is serving traffic). Everything else is pruned. Active releases outside the newest
//! `keep` do not push a newer one out: pruning only ever removes what the rule requires, so a
//! rollback target among the newest is not lost because an old release is still active.

use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::id::ReleaseId;
use crate::meta::{Release, list_releases, meta_path};

/// How many of the newest releases are kept by default.
pub const DEFAULT_KEEP: usize = 5;

/// The releases to prune, oldest first. `releases` need not be sorted: they are ordered by
/// creation time (then id) here, so a caller's mistake cannot prune a newer release.
pub fn plan_prune(releases: &[Release], keep: usize, active: &[ReleaseId]) -> Vec<ReleaseId> {
    let mut sorted: Vec<&Release> = releases.iter().collect();
    sorted.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    let old = sorted.len().saturating_sub(keep);
    sorted[..old]
        .iter()
        .filter(|r| !active.contains(&r.id))
        .map(|r| r.id.clone())
        .collect()
}

/// Prunes `releases_dir` down to the `keep` newest releases plus the active ones; returns the
/// ids removed, oldest first.
///
/// The tree goes first and the metadata last: if pruning stops half-way, the metadata is
/// still there and the next prune finishes the job.
pub fn prune(releases_dir: &Path, keep: usize, active: &[ReleaseId]) -> Result<Vec<ReleaseId>> {
    let releases = list_releases(releases_dir)?;
    let doomed = plan_prune(&releases, keep, active);
    for id in &doomed {
        fsutil::remove_tree(&releases_dir.join(id.as_str()))?;
        let meta = meta_path(releases_dir, id);
        match std::fs::remove_file(&meta) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&meta)(e)),
        }
    }
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn rel(n: u64) -> Release {
        Release {
            id: ReleaseId::parse(&format!("r-{n:012x}")).unwrap(),
            path: Default::default(),
            source: String::new(),
            git_commit: None,
            created: SystemTime::UNIX_EPOCH + Duration::from_secs(n * 10),
            size_bytes: 0,
            files: 0,
            digest: String::new(),
        }
    }

    fn ids(ns: &[u64]) -> Vec<ReleaseId> {
        ns.iter().map(|&n| rel(n).id).collect()
    }

    #[test]
    fn keeps_the_newest_n() {
        let all: Vec<Release> = (1..=8).map(rel).collect();
        assert_eq!(plan_prune(&all, 5, &[]), ids(&[1, 2, 3]));
        assert_eq!(plan_prune(&all, DEFAULT_KEEP, &[]), ids(&[1, 2, 3]));
        assert_eq!(plan_prune(&all, 8, &[]), ids(&[]));
        assert_eq!(plan_prune(&all, 100, &[]), ids(&[]));
        assert_eq!(plan_prune(&all, 0, &[]), ids(&[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(plan_prune(&[], 5, &[]), ids(&[]));
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut all: Vec<Release> = (1..=8).map(rel).collect();
        all.reverse();
        all.swap(2, 6);
        assert_eq!(plan_prune(&all, 5, &[]), ids(&[1, 2, 3]));
    }

    #[test]
    fn never_prunes_an_active_release() {
        let all: Vec<Release> = (1..=8).map(rel).collect();
        // Active and older than the newest 5: kept, and it does not push out a newer one.
        assert_eq!(plan_prune(&all, 5, &ids(&[2])), ids(&[1, 3]));
        // Two active (e.g. a canary and the stable release).
        assert_eq!(plan_prune(&all, 5, &ids(&[1, 8])), ids(&[2, 3]));
        // Active among the newest: changes nothing.
        assert_eq!(plan_prune(&all, 5, &ids(&[7])), ids(&[1, 2, 3]));
        // keep = 0 still keeps the active one.
        assert_eq!(plan_prune(&all, 0, &ids(&[4])), ids(&[1, 2, 3, 5, 6, 7, 8]));
    }
}
