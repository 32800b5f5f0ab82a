//! An instance's stdout and stderr, line by line, into `<dir>/<instance>.log` with
//! size-based rotation.
//!
//! Each line is written as `<RFC 3339 UTC timestamp> <stream> <text>`. The pipes are read
//! continuously by async tasks and handed to a writer thread over a bounded channel; when the
//! disk falls behind, lines are dropped and counted rather than ever letting the child block on
//! a full pipe (the same trade the edge's access log makes).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Longer lines are split, so a child that never writes a newline cannot grow memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Lines waiting for the writer thread before new ones are dropped.
pub const CHANNEL_LINES: usize = 4096;
/// Last lines kept in memory by [`Tail`], so a crash can be explained without reading logs.
pub const TAIL_LINES: usize = 5;
/// Each remembered line is cut to this, so a tail stays small enough to show in a status.
pub const TAIL_LINE_BYTES: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where and how much to keep.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// The live file is rotated before a write would take it past this.
    pub max_bytes: u64,
    /// Rotated files kept beside the live one: `.1` (newest) to `.keep`.
    pub keep: usize,
}

/// `<dir>/<instance>.log`, rotated by size. Blocking; used from the writer thread.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingLog {
    /// Opens (appending to) the instance's log, so a restarted instance continues its file.
    pub fn open(config: &LogConfig, instance: &str) -> Result<Self> {
        let path = config.dir.join(format!("{instance}.log"));
        let file = open_append(&path)?;
        let size = file
            .metadata()
            .map_err(|source| Error::Log {
                path: path.clone(),
                source,
            })?
            .len();
        Ok(Self {
            path,
            file,
            size,
            max_bytes: config.max_bytes,
            keep: config.keep,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one complete line (the caller includes the newline). A line larger than
    /// `max_bytes` still goes in whole, into a fresh file.
    pub fn write_line(&mut self, line: &[u8]) -> Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(line)
            .map_err(|source| self.err(source))?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        // Shift `.keep-1` → `.keep` … `.1` → `.2`, overwriting the oldest, then live → `.1`.
        for n in (1..self.keep).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                fs::rename(&from, rotated(&self.path, n + 1)).map_err(|source| self.err(source))?;
            }
        }
        if self.keep > 0 {
            fs::rename(&self.path, rotated(&self.path, 1)).map_err(|source| self.err(source))?;
        } else {
            fs::remove_file(&self.path).map_err(|source| self.err(source))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }

    fn err(&self, source: io::Error) -> Error {
        Error::Log {
            path: self.path.clone(),
            source,
        }
    }
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| Error::Log {
            path: path.to_owned(),
            source,
        })
}

/// The last [`TAIL_LINES`] lines an instance printed on either stream, in the order they
/// were read (across the two streams that order is approximate). Cloning shares the buffer,
/// so it can still be read after [`Capture::finish`] consumed the capture.
#[derive(Debug, Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<(Stream, String)>>>);

impl Tail {
    /// Oldest first.
    pub fn lines(&self) -> Vec<(Stream, String)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn push(&self, stream: Stream, text: &[u8]) {
        let mut end = text.len().min(TAIL_LINE_BYTES);
        // Cut on a character boundary when the text is UTF-8; anything else is shown lossily.
        while end > 0 && end < text.len() && (text[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        let line = String::from_utf8_lossy(&text[..end]).into_owned();
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back((stream, line));
    }
}

/// A running capture; [`Capture::finish`] waits until both pipes reached EOF and every line
/// is on disk.
#[derive(Debug)]
pub struct Capture {
    readers: [tokio::task::JoinHandle<()>; 2],
    writer: thread::JoinHandle<Result<()>>,
    dropped: Arc<AtomicU64>,
    tail: Tail,
}

impl Capture {
    /// Lines dropped so far because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The last lines read so far (also those the writer had to drop).
    pub fn tail(&self) -> Tail {
        self.tail.clone()
    }

    pub async fn finish(self) -> Result<()> {
        for reader in self.readers {
            // A reader only ends by EOF or a read error (both mean: the pipe is done).
            let _ = reader.await;
        }
        // The readers dropped their senders, so the writer drains the channel and returns.
        tokio::task::spawn_blocking(move || self.writer.join())
            .await
            .map_err(|_| Error::LogWriterPanicked)?
            .map_err(|_| Error::LogWriterPanicked)?
    }
}

/// Starts reading both pipes into `log`. Must be called inside a tokio runtime.
pub fn capture(
    stdout: impl AsyncRead + Unpin + Send + 'static,
    stderr: impl AsyncRead + Unpin + Send + 'static,
    mut log: RotatingLog,
) -> Result<Capture> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CHANNEL_LINES);
    let dropped = Arc::new(AtomicU64::new(0));

    let writer_dropped = Arc::clone(&dropped);
    let name = format!("berth-log-{}", log.path().display());
    let writer = thread::Builder::new()
        .name(name)
        .spawn(move || -> Result<()> {
            let mut reported = 0;
            while let Some(line) = rx.blocking_recv() {
                let now_dropped = writer_dropped.load(Ordering::Relaxed);
                if now_dropped > reported {
                    let note = format!(
                        "{} berth dropped {} lines: log writer fell behind\n",
                        rfc3339(SystemTime::now()),
                        now_dropped - reported
                    );
                    log.write_line(note.as_bytes())?;
                    reported = now_dropped;
                }
                log.write_line(&line)?;
            }
            Ok(())
        })
        .map_err(|source| Error::Log {
            path: PathBuf::from("<writer thread>"),
            source,
        })?;

    let tail = Tail::default();
    let readers = [
        tokio::spawn(read_lines(
            stdout,
            Stream::Stdout,
            tx.clone(),
            Arc::clone(&dropped),
            tail.clone(),
        )),
        tokio::spawn(read_lines(
            stderr,
            Stream::Stderr,
            tx,
            Arc::clone(&dropped),
            tail.clone(),
        )),
    ];
    Ok(Capture {
        readers,
        writer,
        dropped,
        tail,
    })
}

async fn read_lines(
    pipe: impl AsyncRead + Unpin,
    stream: Stream,
    tx: mpsc::Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    tail: Tail,
) {
    let mut reader = BufReader::new(pipe);
    let mut pending: Vec<u8> = Vec::new();
    // Set after splitting a full line, so a newline right at the split point ends that line
    // instead of producing an empty one.
    let mut just_split = false;
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        if std::mem::take(&mut just_split) && chunk[0] == b'\n' {
            reader.consume(1);
            continue;
        }
        let (consumed, complete) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = MAX_LINE_BYTES - pending.len();
        let take = consumed.min(room);
        pending.extend_from_slice(&chunk[..take]);
        reader.consume(take);
        if (complete && take == consumed) || pending.len() >= MAX_LINE_BYTES {
            if pending.last() == Some(&b'\n') {
                pending.pop();
            }
            just_split = pending.len() >= MAX_LINE_BYTES;
            tail.push(stream, &pending);
            send(&tx, stream, &pending, &dropped);
            pending.clear();
        }
    }
    // A last line without a newline.
    if !pending.is_empty() {
        tail.push(stream, &pending);
        send(&tx, stream, &pending, &dropped);
    }
}

fn send(tx: &mpsc::Sender<Vec<u8>>, stream: Stream, text: &[u8], dropped: &AtomicU64) {
    // The timestamp is taken when the line is read, not when the writer gets to it.
    let stamp = rfc3339(SystemTime::now());
    let mut line = Vec::with_capacity(stamp.len() + text.len() + 9);
    line.extend_from_slice(stamp.as_bytes());
    line.push(b' ');
    line.extend_from_slice(stream.name().as_bytes());
    line.push(b' ');
    line.extend_from_slice(text);
    line.push(b'\n');
    if tx.try_send(line).is_err() {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the same format as the edge's access log.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339_utc() {
        let at = |s: u64, ms: u64| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.789
        assert_eq!(at(951_827_696, 789), "2000-02-29T12:34:56.789Z");
        assert_eq!(at(1_700_000_000, 5), "2023-11-14T22:13:20.005Z");
        // 2100 is not a leap year: 2100-02-28 23:59:59 + 1 s is March 1st.
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_and_keeps_n_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            dir: dir.path().to_owned(),
            max_bytes: 10,
            keep: 2,
        };
        let mut log = RotatingLog::open(&config, "web.1").expect("open");
        for i in 0..5 {
            log.write_line(format!("line {i}..\n").as_bytes())
                .expect("write"); // 9 bytes: one line per file
        }
        let live = dir.path().join("web.1.log");
        assert_eq!(read(&live), "line 4..\n");
        assert_eq!(read(&rotated(&live, 1)), "line 3..\n");
        assert_eq!(read(&rotated(&live, 2)), "line 2..\n");
        assert!(!rotated(&live, 3).exists());
    }

    #[test]
    fn a_line_over_the_limit_goes_in_whole_into_a_fresh_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            dir: dir.path().to_owned(),
            max_bytes: 10,
            keep: 1,
        };
        let mut log = RotatingLog::open(&config, "web.1").expect("open");
        let long = format!("{}\n", "x".repeat(30));
        log.write_line(b"short\n").expect("write");
        log.write_line(long.as_bytes()).expect("write");
        let live = dir.path().join("web.1.log");
        assert_eq!(read(&live), long);
        assert_eq!(read(&rotated(&live, 1)), "short\n");
    }

    #[test]
    fn keep_zero_keeps_only_the_live_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            dir: dir.path().to_owned(),
            max_bytes: 10,
            keep: 0,
        };
        let mut log = RotatingLog::open(&config, "web.1").expect("open");
        for line in ["one.....\n", "two.....\n"] {
            log.write_line(line.as_bytes()).expect("write");
        }
        let live = dir.path().join("web.1.log");
        assert_eq!(read(&live), "two.....\n");
        assert!(!rotated(&live, 1).exists());
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            dir: dir.path().to_owned(),
            max_bytes: 1000,
            keep: 1,
        };
        RotatingLog::open(&config, "a")
            .and_then(|mut l| l.write_line(b"one\n"))
            .expect("first");
        RotatingLog::open(&config, "a")
            .and_then(|mut l| l.write_line(b"two\n"))
            .expect("second");
        assert_eq!(read(&dir.path().join("a.log")), "one\ntwo\n");
    }

    #[test]
    fn tail_keeps_the_last_lines_cut_on_a_character_boundary() {
        let tail = Tail::default();
        for i in 0..TAIL_LINES + 2 {
            tail.push(Stream::Stdout, format!("line {i}").as_bytes());
        }
        // 'é' is two bytes; the cut falls in the middle of the last one.
        let long = format!("{}é", "x".repeat(TAIL_LINE_BYTES - 1));
        tail.push(Stream::Stderr, long.as_bytes());
        let lines = tail.lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines[0], (Stream::Stdout, "line 3".to_owned()));
        assert_eq!(
            lines[TAIL_LINES - 1],
            (Stream::Stderr, "x".repeat(TAIL_LINE_BYTES - 1))
        );
    }

    /// Captures the two streams to completion; returns the log's text.
    async fn captured(stdout: &str, stderr: &'static [u8]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            dir: dir.path().to_owned(),
            max_bytes: 1 << 20,
            keep: 1,
        };
        let log = RotatingLog::open(&config, "x").expect("open");
        let stdout = std::io::Cursor::new(stdout.as_bytes().to_vec());
        let capture = capture(stdout, stderr, log).expect("capture");
        capture.finish().await.expect("finish");
        read(&dir.path().join("x.log"))
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_one_line() {
        let text = captured(&format!("{}\nnext\n", "b".repeat(MAX_LINE_BYTES)), b"").await;
        let lens: Vec<usize> = text
            .lines()
            .map(|l| {
                l.split_once(" stdout ")
                    .map_or(usize::MAX, |(_, t)| t.len())
            })
            .collect();
        assert_eq!(lens, [MAX_LINE_BYTES, 4]);
    }

    #[tokio::test]
    async fn splits_overlong_lines_and_keeps_a_last_partial_line() {
        let long = "a".repeat(MAX_LINE_BYTES + 10);
        let text = captured(&format!("{long}\nend"), b"oops\n").await;
        let mut stdout: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" stdout "))
            .map(|l| l.split_once(" stdout ").map_or("", |(_, t)| t))
            .collect();
        stdout.sort_by_key(|l| l.len());
        assert_eq!(stdout, ["end", "aaaaaaaaaa", &long[..MAX_LINE_BYTES]]);
        assert!(text.lines().any(|l| l.ends_with(" stderr oops")));
    }
}
