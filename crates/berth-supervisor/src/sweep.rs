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
    // Bounded: each pass kills everything it found, so only processes forked meanwhile, or
    // caught in the middle of an exec, can show up in the next one.
    for _ in 0..MAX_PASSES {
        let mut found = false;
        let mut unsettled = false;
        for pid in pids() {
            if pid == own || spared.contains(&pid) || killed.contains(&pid) {
                continue;
            }
            match carries(pid, marker) {
                Carries::No => continue,
                Carries::Unsettled => {
                    unsettled = true;
                    continue;
                }
                Carries::Yes => {}
            }
            // SAFETY: plain syscall. ESRCH (exited meanwhile) is fine.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed.push(pid);
                found = true;
            }
        }
        if !found && !unsettled {
            break;
        }
        if !found {
            std::thread::sleep(UNSETTLED_WAIT);
        }
    }
    killed
}

/// Passes over `/proc` at most; with [`UNSETTLED_WAIT`] a process stuck mid-exec delays the
/// sweep by at most about 60 ms.
const MAX_PASSES: usize = 30;
/// Time for an exec seen half done to finish.
const UNSETTLED_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// Linux's `PF_KTHREAD` in `/proc/<pid>/stat`'s flags: kernel threads have no environment.
const PF_KTHREAD: u64 = 0x0020_0000;

pub(crate) fn pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
enum Carries {
    Yes,
    No,
    /// An empty environment on a live user process with no resident memory yet: it is in
    /// the middle of an exec, which wakes a vfork/posix_spawn parent before the new image's
    /// environment is in place, so an instance spawned a moment ago looks like this. Look
    /// again. (A process started with an empty environment on purpose has memory, and is
    /// settled.)
    Unsettled,
}

fn carries(pid: i32, marker: &str) -> Carries {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return Carries::No;
    };
    if environ.is_empty() {
        return match stat_fields(pid) {
            Some(s)
                if s.state != "Z" && s.state != "X" && s.flags & PF_KTHREAD == 0 && s.rss == 0 =>
            {
                Carries::Unsettled
            }
            _ => Carries::No,
        };
    }
    let mut has_marker = false;
    let mut has_instance = false;
    for entry in environ.split(|&b| b == 0) {
        has_marker |= entry == marker.as_bytes();
        has_instance |= entry
            .strip_prefix(INSTANCE_ENV.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b'='));
    }
    if has_marker && has_instance {
        Carries::Yes
    } else {
        Carries::No
    }
}

/// What `/proc/<pid>/stat` says of a process's state.
struct StatFields {
    /// Field 3: `R`, `S`, `D`, `Z`...
    state: String,
    /// Field 9.
    flags: u64,
    /// Field 24: resident pages.
    rss: u64,
}

fn stat_fields(pid: i32) -> Option<StatFields> {
    let fields = stat_after_comm(pid)?;
    Some(StatFields {
        state: fields.first()?.clone(),
        flags: fields.get(6)?.parse().ok()?,
        rss: fields.get(21)?.parse().ok()?,
    })
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

/// Field 4 of `/proc/<pid>/stat`.
pub(crate) fn parent_of(pid: i32) -> Option<i32> {
    stat_after_comm(pid)?.get(1)?.parse().ok()
}

/// Field 5 of `/proc/<pid>/stat`: the process group.
#[cfg(test)]
pub(crate) fn group_of(pid: i32) -> Option<i32> {
    stat_after_comm(pid)?.get(2)?.parse().ok()
}

/// The fields of `/proc/<pid>/stat` from the third (the state) on, read after the last `)`
/// since the command name may contain spaces and parentheses.
fn stat_after_comm(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_and_ordinary_processes_are_settled() {
        // kthreadd (pid 2) has no environment and is no instance; neither is this process.
        if stat_fields(2).is_some_and(|s| s.flags & PF_KTHREAD != 0) {
            assert_eq!(carries(2, "BERTH_RUN=x"), Carries::No);
        }
        assert_eq!(
            carries(std::process::id() as i32, "BERTH_RUN=no-such-run"),
            Carries::No
        );
    }

    #[test]
    fn a_process_with_an_empty_environment_settles_once_it_runs() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env_clear()
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = carries(pid, "BERTH_RUN=x");
        while seen == Carries::Unsettled && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
            seen = carries(pid, "BERTH_RUN=x");
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            seen,
            Carries::No,
            "an empty environment on purpose is not mid-exec"
        );
    }

    #[test]
    fn our_ancestors_end_at_init() {
        let chain = ancestors(std::process::id() as i32);
        assert!(!chain.is_empty());
        assert!(chain.contains(&(std::os::unix::process::parent_id() as i32)));
    }
}
