//! Resource limits for one instance: a cgroup v2 of its own when the machine has a writable
//! one, `setrlimit` otherwise.
//!
//! Why both: cgroups limit the instance as a whole (all its processes together, resident
//! memory, CPU time) and can kill every process in it, even ones that left the process group.
//! rlimits are per process and cruder (address space rather than resident memory, processes
//! counted per user rather than per instance, no CPU share at all), but work everywhere.
//! Whatever cannot be enforced is said in [`Confinement::note`], which ends up in the status.

use std::ffi::CString;
use std::io;

use crate::cgroup::{self, Cgroup};

/// Limits for one instance; `None` leaves that resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResourceLimits {
    /// cgroup `memory.max` (resident memory of all processes), or `RLIMIT_AS` (address space
    /// of each process) without cgroup v2.
    pub memory_bytes: Option<u64>,
    /// CPU cores, e.g. `0.5`; cgroup `cpu.max` only.
    pub cpu: Option<f64>,
    /// `RLIMIT_NOFILE`, always (cgroups have no such limit).
    pub open_files: Option<u64>,
    /// cgroup `pids.max`, or `RLIMIT_NPROC` without cgroup v2.
    pub processes: Option<u64>,
}

/// Which rlimit to set in the child. An enum rather than libc's constant because the
/// constant's type differs between C libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    AddressSpace,
    Processes,
    OpenFiles,
}

/// What the new process does before it execs the instance. Built in the parent, because the
/// child shares berth's memory and may only make raw syscalls: no allocation, no locks (see
/// `spawn.rs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ChildSetup {
    /// `<cgroup>/cgroup.procs`: writing "0" moves the writing process into the cgroup.
    cgroup_procs: Option<CString>,
    rlimits: Vec<(Resource, u64)>,
}

impl ChildSetup {
    /// Only joining the cgroup whose `cgroup.procs` is `procs`.
    #[cfg(test)]
    pub(crate) fn joining(procs: CString) -> ChildSetup {
        ChildSetup {
            cgroup_procs: Some(procs),
            rlimits: Vec::new(),
        }
    }

    /// Runs in the child. Any failure fails the spawn: an instance must not run with
    /// weaker limits than the status claims.
    pub(crate) fn apply(&self) -> io::Result<()> {
        if let Some(path) = &self.cgroup_procs {
            // SAFETY: open/write/close on a NUL-terminated path built before the clone.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if written != 1 {
                    return Err(err);
                }
            }
        }
        for &(resource, value) in &self.rlimits {
            let limit = libc::rlimit {
                rlim_cur: value as libc::rlim_t,
                rlim_max: value as libc::rlim_t,
            };
            let resource = match resource {
                Resource::AddressSpace => libc::RLIMIT_AS,
                Resource::Processes => libc::RLIMIT_NPROC,
                Resource::OpenFiles => libc::RLIMIT_NOFILE,
            };
            // SAFETY: plain syscall on a stack value.
            if unsafe { libc::setrlimit(resource, &limit) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The limits as they will actually be applied to every start of one instance.
#[derive(Debug)]
pub(crate) struct Confinement {
    pub(crate) cgroup: Option<Cgroup>,
    rlimits: Vec<(Resource, u64)>,
    /// What is not enforced, or enforced more weakly than asked; `None` when all is as asked.
    pub(crate) note: Option<String>,
}

impl Confinement {
    /// Decides how to enforce `limits` for `instance`, creating its cgroup if cgroup v2 is
    /// usable. Never fails: what cannot be enforced is noted instead.
    pub(crate) fn prepare(instance: &str, limits: &ResourceLimits) -> Confinement {
        let cgroup = match cgroup::support() {
            Ok(support) => {
                Cgroup::create(support, instance).map_err(|e| format!("cgroup not created: {e}"))
            }
            Err(reason) => Err(reason.clone()),
        };
        Self::new(cgroup, limits)
    }

    /// Puts each limit in `cgroup` where it can go there, and falls back to an rlimit (or to
    /// nothing) with a note saying why where it cannot: the cgroup's own error, or, when
    /// there is no cgroup, the reason there is none.
    pub(crate) fn new(cgroup: Result<Cgroup, String>, limits: &ResourceLimits) -> Confinement {
        let in_cgroup = |set: &dyn Fn(&Cgroup) -> io::Result<()>| match &cgroup {
            Ok(cgroup) => set(cgroup).map_err(|e| e.to_string()),
            Err(reason) => Err(reason.clone()),
        };
        let mut notes = Vec::new();
        let mut rlimits = Vec::new();
        if let Some(bytes) = limits.memory_bytes
            && let Err(why) = in_cgroup(&|c| c.set_memory(bytes))
        {
            notes.push(format!(
                "memory limit applied per process as address space (RLIMIT_AS): {why}"
            ));
            rlimits.push((Resource::AddressSpace, bytes));
        }
        if let Some(cores) = limits.cpu
            && let Err(why) = in_cgroup(&|c| c.set_cpu(cores))
        {
            notes.push(format!("cpu limit not enforced: {why}"));
        }
        if let Some(n) = limits.processes
            && let Err(why) = in_cgroup(&|c| c.set_pids(n))
        {
            notes.push(processes_note(&why));
            rlimits.push((Resource::Processes, n));
        }
        // cgroups have no limit on open files: always an rlimit.
        if let Some(n) = limits.open_files {
            let (n, note) = open_files_limit(n);
            notes.extend(note);
            rlimits.push((Resource::OpenFiles, n));
        }
        Confinement {
            cgroup: cgroup.ok(),
            rlimits,
            note: join(notes),
        }
    }

    /// What each spawned child must do before exec; `None` when there is nothing to do.
    pub(crate) fn child_setup(&self) -> Option<ChildSetup> {
        let cgroup_procs = self.cgroup.as_ref().map(|c| c.procs_path().clone());
        if cgroup_procs.is_none() && self.rlimits.is_empty() {
            return None;
        }
        Some(ChildSetup {
            cgroup_procs,
            rlimits: self.rlimits.clone(),
        })
    }
}

/// `RLIMIT_NPROC` counts every process of the user, not of the instance, and the kernel does
/// not apply it to root at all; say so rather than let the status imply a per-instance limit.
fn processes_note(reason: &str) -> String {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } == 0 {
        format!("processes limit not enforced for root: {reason}")
    } else {
        format!("processes limit applied per user (RLIMIT_NPROC), not per instance: {reason}")
    }
}

/// Without privilege the hard limit cannot be raised, and asking for more would fail every
/// spawn; clamp instead, and say so.
fn open_files_limit(wanted: u64) -> (u64, Option<String>) {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls writing into a stack value.
    let (ok, root) = unsafe {
        (
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) == 0,
            libc::geteuid() == 0,
        )
    };
    let hard: u64 = current.rlim_max;
    if ok && !root && wanted > hard {
        let note = format!("open files limited to {hard}, berth's own hard limit (asked {wanted})");
        (hard, Some(note))
    } else {
        (wanted, None)
    }
}

fn join(notes: Vec<String>) -> Option<String> {
    (!notes.is_empty()).then(|| notes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback without a cgroup, whatever the machine running the tests has.
    #[test]
    fn without_a_cgroup_limits_become_rlimits_and_notes_say_why() {
        let limits = ResourceLimits {
            memory_bytes: Some(512 << 20),
            cpu: Some(0.5),
            open_files: Some(256),
            processes: Some(4000),
        };
        let confinement = Confinement::new(Err("cgroup v2 not available".into()), &limits);
        assert!(confinement.cgroup.is_none());
        let resources: Vec<Resource> = confinement.rlimits.iter().map(|&(r, _)| r).collect();
        assert_eq!(
            resources,
            [
                Resource::AddressSpace,
                Resource::Processes,
                Resource::OpenFiles
            ]
        );
        assert_eq!(confinement.rlimits[0].1, 512 << 20);
        assert_eq!(confinement.rlimits[1].1, 4000);
        let note = confinement.note.clone().expect("a note");
        for part in [
            "memory limit applied per process as address space (RLIMIT_AS): cgroup v2 not available",
            "cpu limit not enforced: cgroup v2 not available",
        ] {
            assert!(note.contains(part), "{part:?} not in {note}");
        }
        assert!(
            note.matches("cgroup v2 not available").count() >= 3,
            "the processes note names the reason too: {note}"
        );
        let setup = confinement.child_setup().expect("rlimits to set");
        assert_eq!(setup.cgroup_procs, None);
        assert_eq!(setup.rlimits, confinement.rlimits);
    }

    #[test]
    fn no_limits_need_no_child_setup_and_no_note() {
        let confinement = Confinement::new(
            Err("cgroup v2 not available".into()),
            &ResourceLimits::default(),
        );
        assert_eq!(confinement.note, None);
        assert!(confinement.child_setup().is_none());
    }
}
