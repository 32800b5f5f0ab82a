//! Rate limiting: a token bucket per client, in bounded memory, without one lock for all.
//!
//! Each bucket is kept as a single number, the "theoretical arrival time" of the generic cell
//! rate algorithm (GCRA), which behaves exactly like a token bucket of `burst` tokens refilled
//! one per `per / count`: a request moves the time on by one interval, and is refused when that
//! would put it more than `burst` intervals ahead of now. A bucket whose time is in the past is
//! full, so forgetting it loses nothing. That is what bounds memory: when a shard is at its
//! share of `max_keys`, full buckets go first, then the ones closest to full.
//!
//! Keys are hashed with a per-limiter random key (SipHash), so every entry has the same small
//! size whatever the header value, and a client cannot aim collisions. Shards are picked by
//! hash, each behind its own mutex held for a few map operations.
//!
//! The clock is a parameter: tests drive it without sleeping.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use crate::spec::RateLimitSpec;

const SHARDS: usize = 16;

/// What a limit counts a request by.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    Ip(IpAddr),
    Header(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; a token is back after this long.
    Deny {
        retry_after: Duration,
    },
}

pub struct RateLimiter {
    pub spec: RateLimitSpec,
    /// Time one token takes to come back, in nanoseconds.
    interval: u64,
    /// `burst` intervals: how far ahead of now a bucket's time may run.
    capacity: u64,
    epoch: Instant,
    hasher: std::hash::RandomState,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Keys held now, exported as `berth_rate_limit_keys`.
    keys: Gauge,
}

#[derive(Default)]
struct Shard {
    /// Key hash to the bucket's theoretical arrival time (ns since `epoch`).
    buckets: HashMap<u64, u64, BuildHasherDefault<Prehashed>>,
}

impl RateLimiter {
    pub fn new(spec: RateLimitSpec, keys: Gauge, now: Instant) -> Self {
        let per_nanos = u64::try_from(spec.rate.per.as_nanos()).unwrap_or(u64::MAX);
        let interval = (per_nanos / u64::from(spec.rate.count.max(1))).max(1);
        let capacity = interval.saturating_mul(u64::from(spec.burst.max(1)));
        let per_shard = spec.max_keys.div_ceil(SHARDS).max(1);
        RateLimiter {
            spec,
            interval,
            capacity,
            epoch: now,
            hasher: std::hash::RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard,
            keys,
        }
    }

    /// Takes a token from `key`'s bucket if it has one.
    pub fn check(&self, key: Key<'_>, now: Instant) -> Decision {
        let hash = self.hash(key);
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        // Bits 32..36 pick the shard: the map itself uses the low bits and the top seven.
        let shard = &self.shards[(hash >> 32) as usize % SHARDS];
        // A panic while holding a shard leaves plain numbers behind: still usable.
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = shard.buckets.get_mut(&hash) {
            // Updated in place: a refusal leaves the time as it was.
            let (decision, next) = gcra(*tat, now, self.interval, self.capacity);
            *tat = next;
            return decision;
        }
        // A key not remembered has a full bucket.
        let (decision, tat) = gcra(now, now, self.interval, self.capacity);
        if decision == Decision::Allow {
            if shard.buckets.len() >= self.per_shard {
                let evicted = shard.make_room(now, self.per_shard);
                self.keys.dec_by(i64::try_from(evicted).unwrap_or(i64::MAX));
            }
            shard.buckets.insert(hash, tat);
            self.keys.inc();
        }
        decision
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .buckets
                    .len()
            })
            .sum()
    }

    fn hash(&self, key: Key<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        match key {
            Key::Ip(IpAddr::V4(ip)) => {
                h.write_u8(4);
                h.write(&ip.octets());
            }
            Key::Ip(IpAddr::V6(ip)) => {
                h.write_u8(6);
                h.write(&ip.octets());
            }
            Key::Header(value) => {
                h.write_u8(b'h');
                h.write(value);
            }
        }
        h.finish()
    }
}

impl Drop for RateLimiter {
    fn drop(&mut self) {
        // Several limiters may share a label set across a reload: each takes back its own.
        self.keys
            .dec_by(i64::try_from(self.len()).unwrap_or(i64::MAX));
    }
}

impl Shard {
    /// Brings the shard down to 7/8 of `cap`: full buckets first (nothing is lost), then
    /// those closest to full. Doing an eighth at once keeps a flood of new keys from paying
    /// a scan each. Returns how many were dropped.
    fn make_room(&mut self, now: u64, cap: usize) -> usize {
        let before = self.buckets.len();
        self.buckets.retain(|_, tat| *tat > now);
        let target = cap - (cap / 8).max(1);
        if self.buckets.len() > target {
            let excess = self.buckets.len() - target;
            let mut times: Vec<u64> = self.buckets.values().copied().collect();
            let (_, cutoff, _) = times.select_nth_unstable(excess - 1);
            let cutoff = *cutoff;
            self.buckets.retain(|_, tat| *tat > cutoff);
        }
        before - self.buckets.len()
    }
}

/// One GCRA step: the decision and the bucket's new time (unchanged when refused). `tat` is
/// never before `now` for a fresh key.
fn gcra(tat: u64, now: u64, interval: u64, capacity: u64) -> (Decision, u64) {
    let next = tat.max(now).saturating_add(interval);
    let ahead = next - now;
    if ahead > capacity {
        let wait = ahead - capacity;
        (
            Decision::Deny {
                retry_after: Duration::from_nanos(wait),
            },
            tat,
        )
    } else {
        (Decision::Allow, next)
    }
}

/// The keys are SipHash outputs already; hashing them again would only cost time.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys reach this hasher; fold anything else in rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1 (0 would invite a retry storm).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Rate, RateKey, RateLimitKind};

    fn spec(count: u32, per_secs: u64, burst: u32, max_keys: usize) -> RateLimitSpec {
        RateLimitSpec {
            kind: RateLimitKind::Route,
            paths: Vec::new(),
            rate: Rate {
                count,
                per: Duration::from_secs(per_secs),
            },
            burst,
            key: RateKey::ClientIp,
            max_keys,
        }
    }

    fn ip(n: u32) -> Key<'static> {
        Key::Ip(IpAddr::from(n.to_be_bytes()))
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let t0 = Instant::now();
        let l = RateLimiter::new(spec(1, 1, 3, 1000), Gauge::default(), t0);
        for _ in 0..3 {
            assert_eq!(l.check(ip(1), t0), Decision::Allow);
        }
        assert_eq!(
            l.check(ip(1), t0),
            Decision::Deny {
                retry_after: Duration::from_secs(1)
            }
        );
        // Half a second later the deficit is half a second.
        assert_eq!(
            l.check(ip(1), t0 + Duration::from_millis(500)),
            Decision::Deny {
                retry_after: Duration::from_millis(500)
            }
        );
        assert_eq!(l.check(ip(1), t0 + Duration::from_secs(1)), Decision::Allow);
        assert!(matches!(
            l.check(ip(1), t0 + Duration::from_secs(1)),
            Decision::Deny { .. }
        ));
        // Another client has its own bucket.
        assert_eq!(l.check(ip(2), t0), Decision::Allow);
        // After a long pause the bucket is full again, but no fuller than the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.check(ip(1), later), Decision::Allow);
        }
        assert!(matches!(l.check(ip(1), later), Decision::Deny { .. }));
    }

    #[test]
    fn header_keys_are_separate_from_ip_keys() {
        let t0 = Instant::now();
        let l = RateLimiter::new(spec(1, 60, 1, 1000), Gauge::default(), t0);
        assert_eq!(l.check(Key::Header(b"key-a"), t0), Decision::Allow);
        assert!(matches!(
            l.check(Key::Header(b"key-a"), t0),
            Decision::Deny { .. }
        ));
        assert_eq!(l.check(Key::Header(b"key-b"), t0), Decision::Allow);
        assert_eq!(l.check(ip(1), t0), Decision::Allow);
    }

    #[test]
    fn refused_requests_do_not_push_the_bucket_further() {
        let t0 = Instant::now();
        let l = RateLimiter::new(spec(1, 1, 1, 1000), Gauge::default(), t0);
        assert_eq!(l.check(ip(1), t0), Decision::Allow);
        for _ in 0..100 {
            assert!(matches!(l.check(ip(1), t0), Decision::Deny { .. }));
        }
        assert_eq!(l.check(ip(1), t0 + Duration::from_secs(1)), Decision::Allow);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let t0 = Instant::now();
        let gauge = Gauge::default();
        // Slow refill: nothing becomes full again during the flood.
        let l = RateLimiter::new(spec(1, 3600, 5, 1600), gauge.clone(), t0);
        for n in 0..100_000 {
            l.check(ip(n), t0 + Duration::from_micros(u64::from(n)));
        }
        let held = l.len();
        assert!(held <= 1600, "{held} keys held");
        assert!(held >= 1600 / 2, "eviction went too far: {held}");
        assert_eq!(gauge.get(), i64::try_from(held).unwrap_or(0));
        drop(l);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn full_buckets_are_evicted_first_then_those_closest_to_full() {
        let now = 1_000;
        let mut shard = Shard::default();
        // Full: their time is not after now.
        for k in 0..4 {
            shard.buckets.insert(k, 500 + k);
        }
        // Partial, from nearly full (1_001) to nearly empty (1_016).
        for k in 0..16 {
            shard.buckets.insert(100 + k, 1_001 + k);
        }
        let evicted = shard.make_room(now, 16);
        // Down to 14 (16 less an eighth): the 4 full ones and the 2 closest to full.
        assert_eq!(evicted, 6);
        assert_eq!(shard.buckets.len(), 14);
        assert!((0..4).all(|k| !shard.buckets.contains_key(&k)));
        assert!(!shard.buckets.contains_key(&100));
        assert!(!shard.buckets.contains_key(&101));
        assert!((102..116).all(|k| shard.buckets.contains_key(&k)));
    }

    #[test]
    fn evicting_a_full_bucket_loses_nothing() {
        // Same decisions whether or not a full bucket was remembered.
        let (d1, _) = gcra(0, 10_000, 100, 300);
        let (d2, _) = gcra(10_000, 10_000, 100, 300);
        assert_eq!(d1, d2);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }
}
