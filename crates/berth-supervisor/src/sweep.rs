//! Killing instances a previous berth left behind.
//!
//! `PR_SET_PDEATHSIG` only reaches an instance's direct child. When berth is `kill -9`ed,
//! the grandchildren (a pre-forking server's workers, say) survive, reparented to init, and
//! keep the app's port. berth tags every instance's environment, and at start-up finds and
//! kills processes carrying the tag.

use std::fs;

/// The variable every instance gets (its instance name); see [`sweep_stale`].
pub const INSTANCE_ENV: &str = "BERTH_INSTANCE";

/// SIGKILLs every process whose environment contains the entry `marker` (`"KEY=VALUE"`,
/// matched exactly) and also a `BERTH_INSTANCE` entry, except berth itself and its
/// ancestors; returns their pids.
///
/// Requiring `BERTH_INSTANCE` as well as the marker keeps the sweep to processes a berth
/// supervisor started: an operator's shell or a `berth` CLI call that happens to export the
/// same marker (`BERTH_DATA_DIR`, say) is left alone. Processes whose environment cannot be
/// read (another user's, without privilege) are skipped. Scans until a pass finds nothing
/// new, so children forked during the sweep are caught too.
pub fn sweep_stale(marker: &str) -> Vec<i32> {
    let own = std::process::id() as i32;
    let spared = ancestors(own);
    let mut killed = Vec::new();
    // Bounded: each pass kills everything it found, so only processes forked meanwhile can
    // show up in the next one.
    for _ in 0..10 {
        let mut found = false;
        for pid in pids() {
            if pid == own || spared.contains(&pid) || killed.contains(&pid) {
                continue;
            }
            if !carries(pid, marker) {
                continue;
            }
            // SAFETY: plain syscall. ESRCH (exited meanwhile) is fine.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed.push(pid);
                found = true;
            }
        }
        if !found {
            break;
        }
    }
    killed
}

fn pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn carries(pid: i32, marker: &str) -> bool {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let mut has_marker = false;
    let mut has_instance = false;
    for entry in environ.split(|&b| b == 0) {
        has_marker |= entry == marker.as_bytes();
        has_instance |= entry
            .strip_prefix(INSTANCE_ENV.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b'='));
    }
    has_marker && has_instance
}

/// The parent chain from `pid` up to (and including) pid 1.
fn ancestors(pid: i32) -> Vec<i32> {
    let mut chain = Vec::new();
    let mut current = pid;
    while let Some(parent) = parent_of(current) {
        if parent <= 0 || chain.contains(&parent) {
            break;
        }
        chain.push(parent);
        current = parent;
    }
    chain
}

/// Field 4 of `/proc/<pid>/stat`, read after the last `)` since the command name may
/// contain spaces and parentheses.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_ancestors_end_at_init() {
        let chain = ancestors(std::process::id() as i32);
        assert!(!chain.is_empty());
        assert!(chain.contains(&(std::os::unix::process::parent_id() as i32)));
    }
}
