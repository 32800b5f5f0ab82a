//! The runtime switches that let tests make the demo misbehave on purpose.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Shared by every connection; plain atomics because the hot path reads them on
/// every request and must not contend on a lock.
#[derive(Debug)]
pub struct Switches {
    fail: AtomicBool,
    delay_ms: AtomicU64,
    /// Zero means "never": DEMO_CRASH_AFTER=0 would otherwise exit before serving anything.
    crash_after: AtomicU64,
    crash_code: i32,
    served: AtomicU64,
}

impl Switches {
    pub fn new(fail: bool, delay_ms: u64, crash_after: Option<u64>, crash_code: i32) -> Self {
        Switches {
            fail: AtomicBool::new(fail),
            delay_ms: AtomicU64::new(delay_ms),
            crash_after: AtomicU64::new(crash_after.unwrap_or(0)),
            crash_code,
            served: AtomicU64::new(0),
        }
    }

    pub fn failing(&self) -> bool {
        self.fail.load(Ordering::Relaxed)
    }

    pub fn set_failing(&self, on: bool) {
        self.fail.store(on, Ordering::Relaxed);
    }

    pub fn delay(&self) -> Option<Duration> {
        match self.delay_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub fn set_delay_ms(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Counts one served (non-control) request; returns the exit code when this
    /// request is the one after which the process should crash.
    pub fn count_served(&self) -> Option<i32> {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.crash_after.load(Ordering::Relaxed);
        (limit != 0 && served == limit).then_some(self.crash_code)
    }

    pub fn state_json(&self) -> String {
        let crash_after = match self.crash_after.load(Ordering::Relaxed) {
            0 => serde_json::Value::Null,
            n => n.into(),
        };
        serde_json::json!({
            "fail": self.failing(),
            "delay_ms": self.delay_ms.load(Ordering::Relaxed),
            "crash_after": crash_after,
            "served": self.served.load(Ordering::Relaxed),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_fires_once_on_the_nth_request() {
        let s = Switches::new(false, 0, Some(2), 7);
        assert_eq!(s.count_served(), None);
        assert_eq!(s.count_served(), Some(7));
        assert_eq!(s.count_served(), None);
    }

    #[test]
    fn no_crash_without_limit() {
        let s = Switches::new(false, 0, None, 3);
        assert!((0..100).all(|_| s.count_served().is_none()));
    }

    #[test]
    fn state_reflects_switches() {
        let s = Switches::new(false, 0, None, 3);
        s.set_failing(true);
        s.set_delay_ms(40);
        let v: serde_json::Value = serde_json::from_str(&s.state_json()).unwrap();
        assert_eq!(v["fail"], true);
        assert_eq!(v["delay_ms"], 40);
        assert!(v["crash_after"].is_null());
        assert_eq!(s.delay(), Some(Duration::from_millis(40)));
    }
}
