//! Helpers both integration-test binaries (`edge`, `apps`) use; each includes this file with
//! `#[path]`, since test binaries cannot depend on each other.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// An HTTP client that never goes through a proxy and gives up after `timeout`.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("client")
}

/// Polls `check` until it holds or the timeout passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `cmd` to completion with its output captured, failing the test if it is still
/// running after `limit` (a command that should exit but hangs must not hang the suite).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("command spawns");
    wait_bounded(cmd, child, limit)
}

/// [`run_bounded`] with `input` written to the command's standard input.
#[allow(dead_code)]
pub fn run_bounded_with_input(cmd: &mut Command, input: &[u8], limit: Duration) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("command spawns");
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading gets EPIPE here; its exit status tells.
        let _ = stdin.write_all(input);
    }
    wait_bounded(cmd, child, limit)
}

fn wait_bounded(cmd: &Command, mut child: std::process::Child, limit: Duration) -> Output {
    // Read both pipes while waiting: a command that writes more than a pipe holds (64 KiB,
    // a completion script) would otherwise block on its write and never exit.
    fn drain<R: std::io::Read + Send + 'static>(
        pipe: Option<R>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
                String::from_utf8_lossy(&stderr.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// The command name and nice value in a `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`)
/// file; `None` once the process or thread is gone.
pub fn name_and_nice(stat_path: &str) -> Option<(String, i32)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The name is in parentheses and may contain both; the fields after the last `)` start
    // with the third, so the nice value (field 19) is the 17th of them.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    let nice = rest.split_whitespace().nth(16)?.parse().ok()?;
    Some((name.to_owned(), nice))
}
