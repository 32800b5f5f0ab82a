//! Test helper: stands in for berth in the PDEATHSIG test. Spawns `sleep 300` as a supervised
//! instance, prints its pid, and waits to be `kill -9`ed; the test then checks the kernel
//! killed the `sleep` too. A separate process is needed because the test cannot SIGKILL itself.

use std::io::Write;

use berth_supervisor::{CommandSpec, Instance};

fn main() {
    // current_thread: the spawning thread is the main thread, which lives until the SIGKILL.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async {
        let spec = CommandSpec::new("sleep", "/").arg("300");
        let mut instance = match Instance::spawn(&spec) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
        println!("{}", instance.pid());
        let _ = std::io::stdout().flush();
        let _ = instance.wait().await;
    });
}
