//! `sweep_stale` against real processes that look like instances a dead berth left behind.

use std::time::Duration;

use berth_supervisor::sweep_stale;

mod common;
use common::eventually_gone;

#[tokio::test]
async fn sweep_kills_marked_processes_and_spares_the_rest() {
    // Unique per run, so a sweep here never touches another test's processes.
    let marker_value = format!("sweep-test-{}-{}", std::process::id(), line!());
    let marker = format!("BERTH_TEST_DATA_DIR={marker_value}");
    let spawn = |with_marker: bool, with_instance: bool| {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "sleep 600; true"]);
        if with_marker {
            cmd.env("BERTH_TEST_DATA_DIR", &marker_value);
        }
        if with_instance {
            cmd.env("BERTH_INSTANCE", "web-1");
        }
        // SAFETY: setsid is async-signal-safe; it detaches the child from our process
        // group, like an instance whose berth died.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().expect("spawn")
    };
    let mut stale = spawn(true, true);
    let mut unmarked = spawn(false, true);
    let mut operator_shell = spawn(true, false);
    // Let the shells fork their `sleep`, which inherits the environment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let killed = sweep_stale(&marker);
    assert!(killed.contains(&(stale.id() as i32)), "{killed:?}");
    assert!(!killed.contains(&(unmarked.id() as i32)), "{killed:?}");
    assert!(
        !killed.contains(&(operator_shell.id() as i32)),
        "{killed:?}"
    );
    assert!(!killed.contains(&(std::process::id() as i32)));
    stale.wait().expect("reap");
    for pid in &killed {
        assert!(eventually_gone(*pid).await, "{pid} survived the sweep");
    }
    assert!(
        unmarked.try_wait().expect("try_wait").is_none(),
        "unmarked died"
    );
    assert!(
        operator_shell.try_wait().expect("try_wait").is_none(),
        "shell died"
    );

    // Nothing left to sweep.
    assert_eq!(sweep_stale(&marker), Vec::<i32>::new());
    for mut child in [unmarked, operator_shell] {
        // The whole session (setsid made the shell its group leader), `sleep` included.
        // SAFETY: plain syscall.
        unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
    }
}
