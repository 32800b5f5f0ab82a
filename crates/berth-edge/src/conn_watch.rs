//! Client connection timing: the slowloris guard and the keep-alive idle limit.
//!
//! hyper's own head timer also runs while a kept-alive connection sits idle and does not run
//! at all before the protocol is detected, so berth keeps the clock itself: the IO wrapper
//! notes when the first byte of a new request head arrives, the request phases note when a
//! request begins and ends, and [`verdict`] decides.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::spec::ClientLimits;

/// Timestamps are milliseconds since the connection opened; 0 in `head_started` means none.
pub struct ConnActivity {
    opened: Instant,
    active: AtomicUsize,
    requests: AtomicU64,
    last_end_ms: AtomicU64,
    head_started_ms: AtomicU64,
}

impl ConnActivity {
    pub fn new(opened: Instant) -> Self {
        Self {
            opened,
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        // Never 0, so "0 = unset" stays unambiguous.
        (self.opened.elapsed().as_millis() as u64).max(1)
    }

    /// A request head was parsed: the head clock stops until this request ends.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(0, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    fn on_read(&self) {
        if self.active.load(Ordering::Relaxed) == 0
            && self.head_started_ms.load(Ordering::Relaxed) == 0
        {
            self.head_started_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            now_ms: self.now_ms(),
            active: self.active.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            last_end_ms: self.last_end_ms.load(Ordering::Relaxed),
            head_started_ms: self.head_started_ms.load(Ordering::Relaxed),
        }
    }
}

pub struct ActiveGuard(Arc<ConnActivity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.last_end_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub now_ms: u64,
    pub active: usize,
    pub requests: u64,
    pub last_end_ms: u64,
    pub head_started_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// A head took longer than `header_timeout`, or nothing came at all after connecting.
    SlowHead,
    /// Kept alive with nothing to do for `idle_timeout`.
    Idle,
}

pub fn verdict(s: Snapshot, limits: &ClientLimits) -> Verdict {
    if s.active > 0 {
        return Verdict::Keep;
    }
    // A head is awaited from its first byte, or from connect (0) while nothing has come at all;
    // otherwise the connection sits idle between requests.
    let (since, limit, expired) = if s.head_started_ms != 0 || s.requests == 0 {
        (s.head_started_ms, limits.header_timeout, Verdict::SlowHead)
    } else {
        (s.last_end_ms, limits.idle_timeout, Verdict::Idle)
    };
    if s.now_ms.saturating_sub(since) >= limit.as_millis() as u64 {
        expired
    } else {
        Verdict::Keep
    }
}

/// How often the watchdog looks: often enough to act within a quarter of the shorter limit.
pub fn tick(limits: &ClientLimits) -> Duration {
    (limits.header_timeout.min(limits.idle_timeout) / 4).max(Duration::from_millis(20))
}

/// The client socket, noting reads for [`ConnActivity`].
pub struct WatchedIo<T> {
    inner: T,
    activity: Arc<ConnActivity>,
}

impl<T> WatchedIo<T> {
    pub fn new(inner: T, activity: Arc<ConnActivity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ClientLimits {
        ClientLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
        }
    }

    fn at(now_ms: u64, active: usize, requests: u64, last_end_ms: u64, head: u64) -> Verdict {
        let s = Snapshot {
            now_ms,
            active,
            requests,
            last_end_ms,
            head_started_ms: head,
        };
        verdict(s, &limits())
    }

    #[test]
    fn silent_new_connection_is_cut_at_the_header_timeout() {
        assert_eq!(at(9_999, 0, 0, 0, 0), Verdict::Keep);
        assert_eq!(at(10_000, 0, 0, 0, 0), Verdict::SlowHead);
    }

    #[test]
    fn slow_head_is_timed_from_its_first_byte() {
        // Idle for 50 s after a request, then a head trickles in from 50 s.
        assert_eq!(at(59_000, 0, 1, 0, 50_000), Verdict::Keep);
        assert_eq!(at(60_000, 0, 1, 0, 50_000), Verdict::SlowHead);
        // Once a head has started, the idle limit no longer applies.
        assert_eq!(at(65_000, 0, 1, 0, 60_000), Verdict::Keep);
    }

    #[test]
    fn idle_keep_alive_lasts_the_idle_timeout_not_the_header_timeout() {
        assert_eq!(at(30_000, 0, 1, 5_000, 0), Verdict::Keep);
        assert_eq!(at(65_000, 0, 1, 5_000, 0), Verdict::Idle);
    }

    #[test]
    fn a_request_in_flight_is_never_cut() {
        assert_eq!(at(999_999, 1, 1, 0, 0), Verdict::Keep);
        assert_eq!(at(999_999, 1, 0, 0, 1), Verdict::Keep);
    }

    #[test]
    fn tick_is_a_quarter_of_the_shorter_limit() {
        assert_eq!(tick(&limits()), Duration::from_millis(2_500));
    }
}
