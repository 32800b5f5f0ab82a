//! Reading instances' logs back for `berth logs`: every instance's files (rotated ones
//! first), filtered by release, process and time, merged in time order, and followed.
//!
//! Lines on disk are `<RFC 3339 time> <stream> <text>` with a fixed-width time, so comparing
//! times as strings orders them; what the reader gets is
//! `<time> <release> <instance> <stream> <text>`.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::error::DeployError;

/// Lines returned when the caller gives no limit.
pub const DEFAULT_TAIL: usize = 200;
/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Which lines to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    pub process: Option<String>,
    pub release: Option<String>,
    pub since: Option<SystemTime>,
    /// At most this many of the newest lines (before following).
    pub tail: Option<usize>,
}

/// One instance's live log file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LogFile {
    release: String,
    instance: String,
    live: PathBuf,
}

impl LogFile {
    /// Rotated files oldest first, then the live one.
    fn generations(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for n in (1..=16).rev() {
            let mut name = self.live.as_os_str().to_owned();
            name.push(format!(".{n}"));
            let p = PathBuf::from(name);
            if p.exists() {
                out.push(p);
            }
        }
        out.push(self.live.clone());
        out
    }
}

fn matches_process(instance: &str, process: Option<&str>) -> bool {
    match process {
        None => true,
        // `web-1` is an instance of `web`.
        Some(p) => instance
            .rsplit_once('-')
            .is_some_and(|(name, n)| name == p && n.chars().all(|c| c.is_ascii_digit())),
    }
}

fn log_files(dir: &Path, q: &LogQuery) -> Vec<LogFile> {
    let mut out = Vec::new();
    let Ok(releases) = fs::read_dir(dir) else {
        return out;
    };
    for r in releases.flatten() {
        let release = r.file_name().to_string_lossy().into_owned();
        if q.release.as_ref().is_some_and(|want| *want != release) {
            continue;
        }
        let Ok(files) = fs::read_dir(r.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let Some(instance) = name.strip_suffix(".log") else {
                continue;
            };
            if matches_process(instance, q.process.as_deref()) {
                out.push(LogFile {
                    release: release.clone(),
                    instance: instance.to_owned(),
                    live: f.path(),
                });
            }
        }
    }
    out.sort();
    out
}

fn since_text(q: &LogQuery) -> Option<String> {
    q.since
        .map(|t| humantime::format_rfc3339_millis(t).to_string())
}

fn decorate(file: &LogFile, line: &str) -> Option<(String, String)> {
    let (time, rest) = line.split_once(' ')?;
    Some((
        time.to_owned(),
        format!("{time} {} {} {rest}", file.release, file.instance),
    ))
}

/// The lines matching `q` from the app's log directory `dir`, oldest first.
pub fn read_logs(dir: &Path, q: &LogQuery) -> Result<Vec<String>, DeployError> {
    let since = since_text(q);
    let mut lines: Vec<(String, String)> = Vec::new();
    for file in log_files(dir, q) {
        for path in file.generations() {
            let Ok(f) = File::open(&path) else { continue };
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if let Some((time, text)) = decorate(&file, &line)
                    && since.as_ref().is_none_or(|s| time >= *s)
                {
                    lines.push((time, text));
                }
            }
        }
    }
    // Stable: lines with the same millisecond keep their file order.
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let keep = q.tail.unwrap_or(DEFAULT_TAIL);
    let start = lines.len().saturating_sub(keep);
    Ok(lines.drain(start..).map(|(_, l)| l).collect())
}

/// Sends the lines matching `q`, then every new line as it is written (new instances and
/// releases included), until the receiver is dropped.
pub async fn follow(dir: PathBuf, q: LogQuery, tx: mpsc::Sender<String>) {
    let initial = {
        let (dir, q) = (dir.clone(), q.clone());
        tokio::task::spawn_blocking(move || {
            let lines = read_logs(&dir, &q).unwrap_or_default();
            // Where each live file ends now: following starts there.
            let offsets: Vec<(LogFile, u64)> = log_files(&dir, &q)
                .into_iter()
                .map(|f| {
                    let len = fs::metadata(&f.live).map(|m| m.len()).unwrap_or(0);
                    (f, len)
                })
                .collect();
            (lines, offsets)
        })
        .await
    };
    let Ok((lines, mut offsets)) = initial else {
        return;
    };
    for l in lines {
        if tx.send(l).await.is_err() {
            return;
        }
    }
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        if tx.is_closed() {
            return;
        }
        let (dir2, q2) = (dir.clone(), q.clone());
        let prev = std::mem::take(&mut offsets);
        let polled = tokio::task::spawn_blocking(move || poll_new(&dir2, &q2, prev)).await;
        let Ok((new_lines, next)) = polled else {
            return;
        };
        offsets = next;
        for l in new_lines {
            if tx.send(l).await.is_err() {
                return;
            }
        }
    }
}

/// Lines appended since `offsets`, and the new offsets. A file that shrank was rotated:
/// it is read from its start (the lines between the last poll and the rotation went to
/// `.1`, and are skipped rather than read twice or out of order).
fn poll_new(
    dir: &Path,
    q: &LogQuery,
    offsets: Vec<(LogFile, u64)>,
) -> (Vec<String>, Vec<(LogFile, u64)>) {
    let mut out = Vec::new();
    let mut next = Vec::new();
    for file in log_files(dir, q) {
        let mut from = offsets
            .iter()
            .find(|(f, _)| *f == file)
            .map_or(0, |(_, o)| *o);
        let len = fs::metadata(&file.live).map(|m| m.len()).unwrap_or(0);
        if len < from {
            from = 0;
        }
        if len > from
            && let Ok(mut f) = File::open(&file.live)
            && f.seek(SeekFrom::Start(from)).is_ok()
        {
            let mut reader = BufReader::new(f);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    // Only whole lines: a partial one is read again next time.
                    Ok(n) if n > 0 && line.ends_with('\n') => {
                        from += n as u64;
                        if let Some((_, text)) = decorate(&file, line.trim_end_matches('\n')) {
                            out.push(text);
                        }
                    }
                    _ => break,
                }
            }
        }
        next.push((file, from));
    }
    (out, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, lines: &[&str]) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(
            p,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    fn logs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r1 = "r-000000000001";
        write(
            d.path(),
            &format!("{r1}/web-1.log.1"),
            &["2026-01-01T00:00:01.000Z stdout a1"],
        );
        write(
            d.path(),
            &format!("{r1}/web-1.log"),
            &["2026-01-01T00:00:03.000Z stdout a3"],
        );
        write(
            d.path(),
            &format!("{r1}/worker-1.log"),
            &["2026-01-01T00:00:02.000Z stderr w2"],
        );
        write(
            d.path(),
            "r-000000000002/web-1.log",
            &["2026-01-01T00:00:04.000Z stdout b4"],
        );
        d
    }

    #[test]
    fn merges_in_time_order_with_filters() {
        let d = logs();
        let all = read_logs(d.path(), &LogQuery::default()).unwrap();
        assert_eq!(
            all,
            [
                "2026-01-01T00:00:01.000Z r-000000000001 web-1 stdout a1",
                "2026-01-01T00:00:02.000Z r-000000000001 worker-1 stderr w2",
                "2026-01-01T00:00:03.000Z r-000000000001 web-1 stdout a3",
                "2026-01-01T00:00:04.000Z r-000000000002 web-1 stdout b4",
            ]
        );
        let web = LogQuery {
            process: Some("web".into()),
            ..Default::default()
        };
        assert_eq!(read_logs(d.path(), &web).unwrap().len(), 3);
        let r1 = LogQuery {
            release: Some("r-000000000001".into()),
            ..Default::default()
        };
        assert_eq!(read_logs(d.path(), &r1).unwrap().len(), 3);
        let since = LogQuery {
            since: Some(humantime::parse_rfc3339("2026-01-01T00:00:02.500Z").unwrap()),
            ..Default::default()
        };
        assert_eq!(read_logs(d.path(), &since).unwrap().len(), 2);
        let tail = LogQuery {
            tail: Some(1),
            ..Default::default()
        };
        assert_eq!(read_logs(d.path(), &tail).unwrap(), [all[3].clone()]);
        assert!(
            read_logs(&d.path().join("none"), &LogQuery::default())
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn follow_sends_new_lines_and_new_instances() {
        let d = logs();
        let (tx, mut rx) = mpsc::channel(100);
        let q = LogQuery {
            release: Some("r-000000000002".into()),
            ..Default::default()
        };
        tokio::spawn(follow(d.path().to_owned(), q, tx));
        async fn next(rx: &mut mpsc::Receiver<String>) -> String {
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a line within 10 s")
                .expect("the follower is running")
        }
        assert!(next(&mut rx).await.ends_with("b4"));
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("r-000000000002/web-1.log"))
            .unwrap();
        f.write_all(b"2026-01-01T00:00:05.000Z stdout b5\n2026-01-01T00:00:06.000Z stdout par")
            .unwrap();
        assert!(next(&mut rx).await.ends_with("b5"));
        f.write_all(b"tial\n").unwrap();
        assert!(next(&mut rx).await.ends_with("stdout partial"));
        write(
            d.path(),
            "r-000000000002/web-2.log",
            &["2026-01-01T00:00:07.000Z stdout c7"],
        );
        assert_eq!(
            next(&mut rx).await,
            "2026-01-01T00:00:07.000Z r-000000000002 web-2 stdout c7"
        );
    }
}
