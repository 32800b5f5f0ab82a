//! Throttling of failed authentications, per source address. Pure: every method takes the
//! current time, so the tests drive it with a fake clock and never sleep.
//!
//! Each address gets a fixed window that opens at its first failure. Once `max_failures`
//! failures have been seen in the window, every request from that address is refused until
//! the window closes; then the address starts afresh. Refused requests do not add failures
//! (they never reach authentication), so the lock-out ends when the window does.
//!
//! Memory is bounded under a flood of distinct addresses: at most `capacity` addresses are
//! tracked. Expired windows are dropped first (oldest first, no scan), and when the map is
//! still full the address whose window opened earliest is evicted. An attacker with more
//! addresses than that can therefore shake off their own entries; what it cannot do is
//! exhaust memory.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// How many source addresses the limiter tracks at most (about 100 bytes each).
pub(crate) const MAX_TRACKED_SOURCES: usize = 10_000;

/// What failures are counted against: an IPv4 address, or the /64 network of an IPv6
/// address (one host usually controls a whole /64, so counting per IPv6 address would let
/// it guess without limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SourceKey {
    V4(Ipv4Addr),
    V6Net(u64),
}

impl SourceKey {
    pub(crate) fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey::V4(v4),
            IpAddr::V6(v6) => {
                let [a, b, c, d, ..] = v6.segments();
                SourceKey::V6Net(
                    (u64::from(a) << 48)
                        | (u64::from(b) << 32)
                        | (u64::from(c) << 16)
                        | u64::from(d),
                )
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Refuse; the window closes after this long.
    Throttled {
        retry_after: Duration,
    },
}

#[derive(Debug)]
struct Entry {
    window_start: Instant,
    /// Tie-breaker in `by_start` for windows opened at the same instant.
    seq: u64,
    failures: u32,
}

#[derive(Debug)]
pub(crate) struct Limiter {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    entries: HashMap<SourceKey, Entry>,
    /// The same entries ordered by when their window opened: every window has the same
    /// length, so the front is both the first to expire and the oldest to evict.
    by_start: BTreeMap<(Instant, u64), SourceKey>,
    next_seq: u64,
}

impl Limiter {
    pub(crate) fn new(max_failures: u32, window: Duration, capacity: usize) -> Limiter {
        Limiter {
            max_failures,
            window,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            by_start: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// May a request from `key` go on to authentication at `now`?
    pub(crate) fn check(&mut self, key: SourceKey, now: Instant) -> Verdict {
        self.expire(now);
        match self.entries.get(&key) {
            Some(e) if e.failures >= self.max_failures => Verdict::Throttled {
                retry_after: self
                    .window
                    .saturating_sub(now.saturating_duration_since(e.window_start)),
            },
            _ => Verdict::Allow,
        }
    }

    /// Counts a failed authentication from `key` at `now`.
    pub(crate) fn record_failure(&mut self, key: SourceKey, now: Instant) {
        self.expire(now);
        if let Some(e) = self.entries.get_mut(&key) {
            e.failures = e.failures.saturating_add(1);
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_start.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_start.insert((now, seq), key);
        self.entries.insert(
            key,
            Entry {
                window_start: now,
                seq,
                failures: 1,
            },
        );
    }

    /// How many addresses are tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops the entries whose window has closed, oldest first.
    fn expire(&mut self, now: Instant) {
        while let Some((&(start, seq), &key)) = self.by_start.first_key_value() {
            if now.saturating_duration_since(start) < self.window {
                break;
            }
            self.by_start.pop_first();
            // Only remove the entry this index row belongs to (always true today, kept
            // explicit so a future "reopen the window" change cannot remove a fresh one).
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn ip(n: u32) -> SourceKey {
        SourceKey::of(IpAddr::V4(Ipv4Addr::from(n)))
    }

    #[test]
    fn tenth_failure_throttles_until_the_window_closes() {
        let t0 = Instant::now();
        let mut l = Limiter::new(10, WINDOW, 100);
        let a = ip(1);
        for i in 0..10 {
            let now = t0 + Duration::from_secs(i);
            assert_eq!(l.check(a, now), Verdict::Allow, "request {i}");
            l.record_failure(a, now);
        }
        // The window opened at t0: throttled for what is left of it.
        assert_eq!(
            l.check(a, t0 + Duration::from_secs(15)),
            Verdict::Throttled {
                retry_after: Duration::from_secs(45)
            }
        );
        assert_eq!(
            l.check(a, t0 + Duration::from_millis(59_999)),
            Verdict::Throttled {
                retry_after: Duration::from_millis(1)
            }
        );
        // Another address is not affected.
        assert_eq!(l.check(ip(2), t0 + Duration::from_secs(15)), Verdict::Allow);
        // When the window has passed, the address starts afresh.
        let later = t0 + WINDOW;
        assert_eq!(l.check(a, later), Verdict::Allow);
        l.record_failure(a, later);
        assert_eq!(l.check(a, later), Verdict::Allow);
    }

    #[test]
    fn failures_spread_over_windows_never_throttle() {
        let t0 = Instant::now();
        let mut l = Limiter::new(3, WINDOW, 100);
        let a = ip(7);
        for i in 0..20u64 {
            // Two failures per window: never three in one.
            let now = t0 + Duration::from_secs(61 * (i / 2)) + Duration::from_secs(i % 2);
            assert_eq!(l.check(a, now), Verdict::Allow, "failure {i}");
            l.record_failure(a, now);
        }
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_addresses() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2, WINDOW, 100);
        // A throttled address, then a flood of 1000 others within the same window.
        let victim = ip(1);
        l.record_failure(victim, t0);
        l.record_failure(victim, t0);
        assert!(matches!(l.check(victim, t0), Verdict::Throttled { .. }));
        for n in 0..1000 {
            l.record_failure(ip(1000 + n), t0 + Duration::from_millis(u64::from(n)));
            assert!(l.len() <= 100);
        }
        assert_eq!(l.len(), 100);
        assert_eq!(l.by_start.len(), 100);
        // The oldest were evicted; the newest are still counted.
        assert_eq!(l.check(victim, t0 + Duration::from_secs(2)), Verdict::Allow);
        let newest = ip(1999);
        l.record_failure(newest, t0 + Duration::from_secs(2));
        assert!(matches!(
            l.check(newest, t0 + Duration::from_secs(2)),
            Verdict::Throttled { .. }
        ));
        // Closed windows are dropped without waiting for pressure.
        l.check(ip(5), t0 + Duration::from_secs(200));
        assert_eq!(l.len(), 0);
        assert!(l.by_start.is_empty());
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2, WINDOW, 100);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        l.record_failure(SourceKey::of(a), t0);
        l.record_failure(SourceKey::of(b), t0);
        assert!(matches!(
            l.check(SourceKey::of(a), t0),
            Verdict::Throttled { .. }
        ));
        assert_eq!(l.check(SourceKey::of(other), t0), Verdict::Allow);
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            SourceKey::of(mapped),
            SourceKey::of("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn zero_allowed_failures_throttles_after_the_first() {
        let t0 = Instant::now();
        let mut l = Limiter::new(0, WINDOW, 10);
        assert_eq!(l.check(ip(1), t0), Verdict::Allow);
        l.record_failure(ip(1), t0);
        assert!(matches!(l.check(ip(1), t0), Verdict::Throttled { .. }));
    }
}
