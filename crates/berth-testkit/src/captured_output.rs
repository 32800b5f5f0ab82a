//! Lines of a child's stdout or stderr, read continuously by a background task
//! so the child never blocks on a full pipe and tests can wait for a line.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use crate::upstream::lock;

#[derive(Debug)]
pub(crate) struct CapturedOutput {
    stream: &'static str,
    lines: Mutex<Vec<String>>,
    closed: AtomicBool,
    /// Bumped on every line and at EOF, to wake waiters.
    version: watch::Sender<u64>,
}

/// Returned when a waited-for line did not show up; its `Debug` shows what was
/// captured, so `.unwrap()` in a test prints something useful.
pub struct WaitError {
    pub stream: &'static str,
    pub waited: Duration,
    /// The stream ended (usually: the process exited) before a line matched.
    pub closed: bool,
    pub captured: String,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = if self.closed {
            "the stream closed"
        } else {
            "time ran out"
        };
        write!(
            f,
            "no matching {} line after {:?} ({why}); captured:\n{}",
            self.stream, self.waited, self.captured
        )
    }
}

impl fmt::Debug for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for WaitError {}

impl CapturedOutput {
    /// Starts reading `pipe`; with `BERTH_TESTKIT_ECHO` set, lines are also
    /// printed to stderr as they arrive, prefixed with the stream name.
    pub(crate) fn spawn(
        stream: &'static str,
        pipe: impl AsyncRead + Unpin + Send + 'static,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let out = Arc::new(CapturedOutput {
            stream,
            lines: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            version: watch::Sender::new(0),
        });
        let echo = std::env::var_os("BERTH_TESTKIT_ECHO").is_some();
        let reader_out = out.clone();
        let task = tokio::spawn(async move {
            let mut reader = BufReader::new(pipe);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&raw)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        if echo {
                            eprintln!("[berth {}] {line}", reader_out.stream);
                        }
                        lock(&reader_out.lines).push(line);
                        reader_out.version.send_modify(|v| *v += 1);
                    }
                }
            }
            reader_out.closed.store(true, Ordering::SeqCst);
            reader_out.version.send_modify(|v| *v += 1);
        });
        (out, task)
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    pub(crate) fn text(&self) -> String {
        let lines = lock(&self.lines);
        let mut text = lines.join("\n");
        if !lines.is_empty() {
            text.push('\n');
        }
        text
    }

    /// The first captured line (already captured or arriving within `limit`)
    /// for which `pred` holds.
    pub(crate) async fn wait_for(
        &self,
        pred: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Result<String, WaitError> {
        let deadline = Instant::now() + limit;
        // Subscribing before looking means no line can slip in unnoticed.
        let mut changes = self.version.subscribe();
        let mut checked = 0;
        // Set once the stream has closed or time is up: one more look, for lines that came
        // with the closing bump or just before the deadline, then give up.
        let mut last_look = false;
        loop {
            {
                let lines = lock(&self.lines);
                if let Some(line) = lines[checked..].iter().find(|l| pred(l)) {
                    return Ok(line.clone());
                }
                checked = lines.len();
            }
            if last_look {
                return Err(WaitError {
                    stream: self.stream,
                    waited: limit,
                    closed: self.closed.load(Ordering::SeqCst),
                    captured: self.text(),
                });
            }
            last_look = self.closed.load(Ordering::SeqCst)
                || !matches!(timeout_at(deadline, changes.changed()).await, Ok(Ok(())));
        }
    }
}
