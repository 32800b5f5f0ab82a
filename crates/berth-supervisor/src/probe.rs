//! The instance's HTTP health probe: one request ([`check`]) and the pure bookkeeping that
//! turns a series of results into a verdict ([`ProbeTracker`]).
//!
//! The request is written by hand: it is one fixed GET whose only interesting part of the
//! answer is the status code, and any 2xx or 3xx counts, so a full HTTP client would add
//! nothing but weight.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How to probe an instance: `GET <path>` on `127.0.0.1:<port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub path: String,
    /// Time between the start of one probe and the next.
    pub interval: Duration,
    /// One probe (connect, request, status line) must finish within this.
    pub timeout: Duration,
    /// A new instance must be healthy within this, or it counts as a failed start.
    pub start_timeout: Duration,
    /// Consecutive successes that make an instance healthy (again).
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy instance unhealthy.
    pub unhealthy_threshold: u32,
}

/// While an instance is starting, the first retry comes this soon after a failed probe, and
/// each later one twice as late, up to the interval: an app that listens a few milliseconds
/// after its start is then healthy a few milliseconds later, not a whole interval (2 s by
/// default) later, and a deploy waits on that. A refused connection costs microseconds.
pub const START_RETRY_FIRST: Duration = Duration::from_millis(5);

/// The status line is all we read; a server sending more than this before its first line
/// end is not speaking HTTP.
const MAX_STATUS_LINE: usize = 1024;

/// One probe. `Err` says why it failed, in words fit for a status.
pub(crate) async fn check(port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, request(port, path)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "GET {path}: no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

async fn request(port: u16, path: &str) -> Result<(), String> {
    let fail = |what: &str| format!("GET {path}: {what}");
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| fail(&e.to_string()))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: berth-health-check\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail(&e.to_string()))?;

    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    let line_end = loop {
        if let Some(i) = head.iter().position(|&b| b == b'\n') {
            break i;
        }
        if head.len() > MAX_STATUS_LINE {
            return Err(fail("not an HTTP response"));
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| fail(&e.to_string()))?;
        if n == 0 {
            return Err(fail("connection closed without a response"));
        }
        head.extend_from_slice(&buf[..n]);
    };
    let status =
        parse_status_line(&head[..line_end]).ok_or_else(|| fail("not an HTTP response"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(fail(&format!("status {status}")))
    }
}

/// `HTTP/1.x NNN reason` → `NNN`.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// What the probes say so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not yet healthy, still within the start timeout.
    Starting,
    Healthy,
    /// Was healthy, then failed `unhealthy_threshold` times in a row.
    Unhealthy,
}

/// Pure probe bookkeeping for one run of an instance; every call takes `now`.
#[derive(Debug, Clone)]
pub(crate) struct ProbeTracker {
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    start_deadline: Instant,
    verdict: Verdict,
    successes: u32,
    failures: u32,
    /// Probes recorded while starting: the start-up retry schedule's position.
    start_probes: u32,
    last_error: Option<String>,
}

impl ProbeTracker {
    pub(crate) fn new(spec: &ProbeSpec, started: Instant) -> Self {
        Self {
            // `max(1)`: a threshold of 0 would make an instance healthy without any probe.
            healthy_threshold: spec.healthy_threshold.max(1),
            unhealthy_threshold: spec.unhealthy_threshold.max(1),
            start_deadline: started + spec.start_timeout,
            verdict: Verdict::Starting,
            successes: 0,
            failures: 0,
            start_probes: 0,
            last_error: None,
        }
    }

    /// When a still-starting instance has run out of time.
    pub(crate) fn start_deadline(&self) -> Option<Instant> {
        (self.verdict == Verdict::Starting).then_some(self.start_deadline)
    }

    /// Time from the start of the last probe to the next: the interval, except while
    /// starting, when retries follow [`START_RETRY_FIRST`]'s doubling schedule.
    pub(crate) fn next_delay(&self, interval: Duration) -> Duration {
        if self.verdict != Verdict::Starting {
            return interval;
        }
        let doublings = self.start_probes.saturating_sub(1).min(16);
        START_RETRY_FIRST
            .saturating_mul(1 << doublings)
            .min(interval)
    }

    pub(crate) fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Records one probe result. Healthy needs `healthy_threshold` successes in a row, both
    /// at start and to recover from Unhealthy; a failure only resets that count until the
    /// instance has been healthy, and after that `unhealthy_threshold` failures in a row
    /// make it Unhealthy. Unhealthy never ends the instance: the edge stops sending it
    /// traffic, and a restart would only add a cold start to whatever is wrong.
    pub(crate) fn record(&mut self, result: Result<(), String>) -> Verdict {
        if self.verdict == Verdict::Starting {
            self.start_probes = self.start_probes.saturating_add(1);
        }
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.verdict != Verdict::Healthy && self.successes >= self.healthy_threshold {
                    self.verdict = Verdict::Healthy;
                }
            }
            Err(e) => {
                self.last_error = Some(e);
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.verdict == Verdict::Healthy && self.failures >= self.unhealthy_threshold {
                    self.verdict = Verdict::Unhealthy;
                }
            }
        }
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(healthy: u32, unhealthy: u32) -> ProbeSpec {
        ProbeSpec {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            start_timeout: Duration::from_secs(10),
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
        }
    }

    fn timed_out(t: &ProbeTracker, now: Instant) -> bool {
        t.start_deadline().is_some_and(|deadline| now >= deadline)
    }

    fn fail() -> Result<(), String> {
        Err("refused".into())
    }

    #[test]
    fn healthy_after_threshold_successes_in_a_row() {
        let mut t = ProbeTracker::new(&spec(2, 3), Instant::now());
        assert_eq!(t.record(Ok(())), Verdict::Starting);
        assert_eq!(t.record(fail()), Verdict::Starting);
        assert_eq!(t.record(Ok(())), Verdict::Starting);
        assert_eq!(t.record(Ok(())), Verdict::Healthy);
        assert_eq!(t.start_deadline(), None);
    }

    #[test]
    fn unhealthy_after_threshold_failures_and_back() {
        let mut t = ProbeTracker::new(&spec(1, 2), Instant::now());
        assert_eq!(t.record(Ok(())), Verdict::Healthy);
        assert_eq!(t.record(fail()), Verdict::Healthy);
        assert_eq!(t.record(Ok(())), Verdict::Healthy);
        assert_eq!(t.record(fail()), Verdict::Healthy);
        assert_eq!(t.record(fail()), Verdict::Unhealthy);
        assert_eq!(t.last_error(), Some("refused"));
        // Never a start timeout once it has been healthy.
        assert!(!timed_out(&t, Instant::now() + Duration::from_secs(3600)));
        assert_eq!(t.record(Ok(())), Verdict::Healthy);
    }

    #[test]
    fn start_deadline_applies_only_while_starting() {
        let t0 = Instant::now();
        let mut t = ProbeTracker::new(&spec(1, 1), t0);
        assert!(!timed_out(&t, t0 + Duration::from_secs(9)));
        assert!(timed_out(&t, t0 + Duration::from_secs(10)));
        t.record(Ok(()));
        assert!(!timed_out(&t, t0 + Duration::from_secs(10)));
    }

    #[test]
    fn starting_retries_double_up_to_the_interval_then_the_interval_alone() {
        let interval = Duration::from_secs(2);
        let mut t = ProbeTracker::new(&spec(2, 1), Instant::now());
        let mut delays = Vec::new();
        for _ in 0..10 {
            t.record(fail());
            delays.push(t.next_delay(interval).as_millis());
        }
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2000]);
        // One pass of two: still starting, and the schedule is at its cap.
        t.record(Ok(()));
        assert_eq!(t.next_delay(interval), interval);
        let mut t = ProbeTracker::new(&spec(2, 1), Instant::now());
        t.record(fail());
        t.record(Ok(()));
        assert_eq!(t.next_delay(interval), Duration::from_millis(10));
        assert_eq!(t.record(Ok(())), Verdict::Healthy);
        assert_eq!(t.next_delay(interval), interval);
        // Unhealthy later: the interval, not the start-up schedule.
        assert_eq!(t.record(fail()), Verdict::Unhealthy);
        assert_eq!(t.next_delay(interval), interval);
        // A short interval caps the schedule from the start.
        let mut t = ProbeTracker::new(&spec(1, 1), Instant::now());
        t.record(fail());
        assert_eq!(
            t.next_delay(Duration::from_millis(3)),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn zero_thresholds_mean_one() {
        let mut t = ProbeTracker::new(&spec(0, 0), Instant::now());
        assert_eq!(t.record(fail()), Verdict::Starting);
        assert_eq!(t.record(Ok(())), Verdict::Healthy);
        assert_eq!(t.record(fail()), Verdict::Unhealthy);
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 302"), Some(302));
        assert_eq!(parse_status_line(b"HTTP/2 200"), None);
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20 OK"), None);
    }

    /// A real listener on a free port: one status per accepted connection.
    async fn serve(answers: Vec<&'static [u8]>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for answer in answers {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(answer).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn checks_status_codes_over_real_connections() {
        let port = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 301 Moved\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
            b"garbage\n",
        ])
        .await;
        let t = Duration::from_secs(10);
        assert_eq!(check(port, "/health", t).await, Ok(()));
        assert_eq!(check(port, "/health", t).await, Ok(()));
        assert_eq!(
            check(port, "/health", t).await,
            Err("GET /health: status 503".into())
        );
        assert_eq!(
            check(port, "/health", t).await,
            Err("GET /health: not an HTTP response".into())
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_an_error_naming_the_cause() {
        let port = crate::port::allocate_port().expect("port");
        let err = check(port, "/up", Duration::from_secs(10))
            .await
            .expect_err("nothing listens");
        assert!(err.starts_with("GET /up: "), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }
}
