//! One cgroup v2 per instance, under berth's own cgroup.
//!
//! Used only when `/sys/fs/cgroup` is a cgroup v2 mount and berth may create cgroups below
//! its own (a systemd unit with `Delegate=yes`, a container with a private cgroup namespace,
//! or root). The instance's cgroup holds every process it ever starts, so the limits cover
//! them all and `cgroup.kill` reaches even processes that left the process group.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where a cgroup v2 hierarchy is mounted on a machine that uses it.
const MOUNT: &str = "/sys/fs/cgroup";
/// The `cpu.max` period, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses `cpu.max` quotas below 1 ms.
const CPU_MIN_QUOTA_US: u64 = 1_000;
/// How long removing a cgroup waits for its killed processes to be gone.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// berth's cgroup, below which instance cgroups are created, and the controllers enabled for
/// them.
#[derive(Debug)]
pub(crate) struct Support {
    base: PathBuf,
    controllers: Vec<String>,
}

/// Detected once per process: detection may move berth itself (see [`detect`]), after which
/// `/proc/self/cgroup` no longer names the base.
pub(crate) fn support() -> &'static Result<Support, String> {
    static SUPPORT: OnceLock<Result<Support, String>> = OnceLock::new();
    SUPPORT.get_or_init(|| detect(Path::new(MOUNT)))
}

/// Whether instances get cgroups on this machine; for tests and diagnostics.
pub fn cgroup_v2_available() -> bool {
    support().is_ok()
}

/// Finds berth's cgroup below `mount` and enables the memory, cpu and pids controllers for
/// its children.
///
/// cgroup v2 forbids enabling controllers for the children of a cgroup that itself holds
/// processes (except at the root). When that is why enabling fails, berth moves itself into
/// a leaf `berth-supervisor` beside the instances, as systemd documents for delegated units.
fn detect(mount: &Path) -> Result<Support, String> {
    if !mount.join("cgroup.controllers").exists() {
        return Err("cgroup v2 not available".into());
    }
    let own = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cgroup v2 not usable: reading /proc/self/cgroup: {e}"))?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("cgroup v2 not usable: berth is in no cgroup v2")?;
    let base = mount.join(rel.trim().trim_start_matches('/'));

    // Writable: can we create (and remove) a child at all?
    let check = base.join(format!("berth-check-{}", std::process::id()));
    fs::create_dir(&check)
        .and_then(|()| fs::remove_dir(&check))
        .map_err(|e| format!("cgroup v2 not writable: {}: {e}", base.display()))?;

    let available = read_words(&base.join("cgroup.controllers"));
    let wanted: Vec<&str> = ["memory", "cpu", "pids"]
        .into_iter()
        .filter(|c| available.iter().any(|a| a == c))
        .collect();
    if !wanted.is_empty() && enable(&base, &wanted).is_err() {
        let leaf = base.join("berth-supervisor");
        let moved = match fs::create_dir(&leaf) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
        .and_then(|()| fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()));
        if moved.is_ok() {
            // Still failing means other processes share berth's cgroup (berth run from a
            // login session, say): carry on with whatever is enabled, which the per-limit
            // notes then report.
            let _ = enable(&base, &wanted);
        }
    }
    let controllers = read_words(&base.join("cgroup.subtree_control"));
    Ok(Support { base, controllers })
}

fn enable(base: &Path, controllers: &[&str]) -> io::Result<()> {
    let line: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    fs::write(base.join("cgroup.subtree_control"), line.join(" "))
}

fn read_words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// One instance's cgroup; removed (after killing what is left in it) by [`Cgroup::remove`],
/// or at least killed and removed on a best-effort basis when dropped.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
    procs: CString,
    controllers: Vec<String>,
    removed: bool,
}

impl Cgroup {
    /// `berth-<instance>-<berth pid>-<n>`: unique within this berth even when two
    /// supervisors run the same instance name (a deploy overlapping the old release), and
    /// never one a previous berth left behind.
    pub(crate) fn create(support: &Support, instance: &str) -> io::Result<Cgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "berth-{}-{}-{}",
            sanitize(instance),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self::create_in(&support.base, &name, support.controllers.clone())
    }

    fn create_in(base: &Path, name: &str, controllers: Vec<String>) -> io::Result<Cgroup> {
        let dir = base.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            // Same pid and counter as a cgroup a previous berth left: empty it and reuse it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => kill_members(&dir)?,
            Err(e) => return Err(e),
        }
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| io::Error::other("cgroup path contains a NUL byte"))?;
        Ok(Cgroup {
            dir,
            procs,
            controllers,
            removed: false,
        })
    }

    pub(crate) fn procs_path(&self) -> &CString {
        &self.procs
    }

    pub(crate) fn set_memory(&self, bytes: u64) -> io::Result<()> {
        self.write_limit("memory", "memory.max", &bytes.to_string())
    }

    /// `cores` × period as the quota per period: 0.5 cores is 50 ms of CPU every 100 ms.
    pub(crate) fn set_cpu(&self, cores: f64) -> io::Result<()> {
        if !cores.is_finite() || cores <= 0.0 {
            return Err(io::Error::other(format!("invalid cpu limit {cores}")));
        }
        let quota = ((cores * CPU_PERIOD_US as f64).round() as u64).max(CPU_MIN_QUOTA_US);
        self.write_limit("cpu", "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))
    }

    pub(crate) fn set_pids(&self, n: u64) -> io::Result<()> {
        self.write_limit("pids", "pids.max", &n.to_string())
    }

    fn write_limit(&self, controller: &str, file: &str, value: &str) -> io::Result<()> {
        if !self.controllers.iter().any(|c| c == controller) {
            return Err(io::Error::other(format!(
                "cgroup {controller} controller not enabled for berth's cgroup"
            )));
        }
        fs::write(self.dir.join(file), value)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {file}: {e}")))
    }

    /// Kills every process in the cgroup, including ones that left the instance's process
    /// group or session. Does not wait for them.
    pub(crate) fn kill(&self) -> io::Result<()> {
        kill_members(&self.dir)
    }

    /// Kills what is left, waits until the cgroup is empty, and removes it.
    pub(crate) async fn remove(mut self) -> io::Result<()> {
        self.kill()?;
        let deadline = tokio::time::Instant::now() + REMOVE_TIMEOUT;
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => {
                    self.removed = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.removed = true;
                    return Ok(());
                }
                // EBUSY while killed processes are still exiting.
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    let _ = self.kill();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.removed {
            // Best effort: the killed processes may not be gone yet, so rmdir may fail with
            // EBUSY and leave an empty cgroup behind; it holds no process.
            let _ = kill_members(&self.dir);
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// `cgroup.kill` (Linux 5.14+) kills atomically, even processes forking meanwhile. Older
/// kernels: SIGKILL each member listed in `cgroup.procs`, a few rounds to catch forks.
fn kill_members(dir: &Path) -> io::Result<()> {
    match fs::write(dir.join("cgroup.kill"), "1") {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    for _ in 0..5 {
        let pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))?
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: plain syscall; a pid that already exited gives ESRCH, which is fine.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    Ok(())
}

/// A cgroup name from an instance name: no `/`, no leading dot, nothing surprising.
fn sanitize(instance: &str) -> String {
    let name: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "instance".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_path_components() {
        assert_eq!(sanitize("web-1"), "web-1");
        assert_eq!(sanitize("../etc"), "___etc");
        assert_eq!(sanitize("a/b c"), "a_b_c");
        assert_eq!(sanitize(""), "instance");
    }

    /// The parts of the cgroup path that need no controller (create, join before exec, kill
    /// what escaped the process group, remove), on the cgroup v2 mount of a hybrid
    /// (v1 + v2) machine, which has no controllers to delegate. Skipped where there is no
    /// such writable mount. Limits themselves (memory.max, cpu.max, pids.max) need a full
    /// cgroup v2 machine: see `cgroup_v2_confines_the_instance` in tests/run.rs.
    #[tokio::test]
    async fn a_controllerless_cgroup_v2_still_holds_and_kills_escaped_processes() {
        use crate::limits::{Confinement, ResourceLimits};
        use crate::process::{CommandSpec, Instance, Signal};
        use tokio::io::{AsyncBufReadExt, BufReader};

        let mount = ControllerlessMount::find_or_make();
        let Some(Ok(support)) = mount.as_ref().map(|m| detect(&m.path)) else {
            eprintln!(
                "skipped: no writable cgroup v2 mount at /sys/fs/cgroup/unified, and \
                 mounting one needs root"
            );
            return;
        };
        let cgroup = Cgroup::create(&support, "unit-test").expect("create");
        let dir = cgroup.dir.clone();
        let confinement = Confinement::new(Ok(cgroup), &ResourceLimits::default());
        // `setsid` takes the sleep out of the instance's session and process group, beyond
        // the reach of `killpg`.
        let spec = CommandSpec::new("sh", "/")
            .arg("-c")
            .arg("setsid sleep 300 & echo $!; wait");
        let mut instance = Instance::spawn_with(&spec, confinement.child_setup()).expect("spawn");
        let (stdout, _stderr) = instance.take_output().expect("pipes");
        let mut lines = BufReader::new(stdout).lines();
        let escaped: i32 = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("in time")
            .expect("read")
            .expect("a line")
            .parse()
            .expect("pid");
        // `$!` is known before the child has called setsid; wait until it leads a session.
        let leads_session = |pid: i32| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(3)?.parse::<i32>().ok())
                    == Some(pid)
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !leads_session(escaped) {
            assert!(
                std::time::Instant::now() < deadline,
                "{escaped} never left the group"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        for pid in [instance.pid(), escaped] {
            let membership = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read");
            assert!(
                membership.contains(&format!("0::/{name}\n")),
                "{membership}"
            );
        }

        instance
            .stop(Signal::Term, Duration::from_secs(10))
            .await
            .expect("stop");
        let alive = |pid: i32| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                !stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            })
        };
        assert!(alive(escaped), "the group stop should not reach {escaped}");

        let Some(cgroup) = confinement.cgroup else {
            panic!("confinement lost its cgroup");
        };
        cgroup.remove().await.expect("remove");
        assert!(!alive(escaped), "{escaped} survived cgroup.kill");
        assert!(!dir.exists());
        drop(mount);
    }

    /// A cgroup v2 mount: the hybrid machine's own, or one this test mounts (as root) on a
    /// temporary directory and unmounts when dropped. cgroup v2 is one hierarchy, so a
    /// second mount shows the same cgroups; the controllers stay with their v1 mounts.
    struct ControllerlessMount {
        path: PathBuf,
        ours: Option<tempfile::TempDir>,
    }

    impl ControllerlessMount {
        fn find_or_make() -> Option<Self> {
            let hybrid = Path::new("/sys/fs/cgroup/unified");
            if hybrid.join("cgroup.controllers").exists() {
                return Some(Self {
                    path: hybrid.to_owned(),
                    ours: None,
                });
            }
            let dir = tempfile::tempdir().ok()?;
            let target = CString::new(dir.path().as_os_str().as_bytes()).ok()?;
            // SAFETY: valid NUL-terminated strings; mount(2) only reads them.
            let mounted = unsafe {
                libc::mount(
                    c"none".as_ptr(),
                    target.as_ptr(),
                    c"cgroup2".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            } == 0;
            mounted.then(|| Self {
                path: dir.path().to_owned(),
                ours: Some(dir),
            })
        }
    }

    impl Drop for ControllerlessMount {
        fn drop(&mut self) {
            if self.ours.is_some()
                && let Ok(target) = CString::new(self.path.as_os_str().as_bytes())
            {
                // SAFETY: a valid NUL-terminated path; lazy, so a busy mount cannot fail it.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }

    #[test]
    fn no_cgroup_v2_is_reported_not_guessed() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            detect(dir.path()).map(|_| ()),
            Err("cgroup v2 not available".to_owned())
        );
    }
}
