//! Per-instance health: active checks and passive ejection combined into "available or not".
//!
//! Pure and clock-free: every call takes `now`, so tests drive it with a fake clock. Failing
//! open when a whole pool is unavailable is the pool's decision, not this module's.

mod active;
mod passive;

use std::time::{Duration, Instant};

use crate::spec::{ActiveHealthSpec, PassiveHealthSpec};

use active::Active;
use passive::Passive;

/// How a proxied request went; the caller classifies (connect errors, timeouts and 5xx are
/// failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    BecameHealthy,
    BecameUnhealthy,
    Ejected { for_: Duration },
    EjectionEnded,
}

/// One instance's health. An instance is available while its active checks say healthy and it
/// is not passively ejected.
#[derive(Debug, Clone)]
pub struct HealthState {
    active: Active,
    passive: Passive,
}

impl HealthState {
    /// Starts healthy so static upstreams serve immediately. Without an active spec the
    /// instance is always active-healthy and [`Self::on_check`] is ignored.
    pub fn new(active: Option<&ActiveHealthSpec>, passive: &PassiveHealthSpec) -> Self {
        Self {
            active: Active::new(active),
            passive: Passive::new(passive),
        }
    }

    pub fn on_check(&mut self, passed: bool, _now: Instant) -> Option<Transition> {
        self.active.on_check(passed).map(|healthy| {
            if healthy {
                Transition::BecameHealthy
            } else {
                Transition::BecameUnhealthy
            }
        })
    }

    /// Ignored while ejected. If an ejection has expired it ends first; when the outcome then
    /// causes a new ejection, `Ejected` is returned (the latest state) rather than
    /// `EjectionEnded`.
    pub fn on_outcome(&mut self, outcome: Outcome, now: Instant) -> Option<Transition> {
        self.passive.on_outcome(outcome, now)
    }

    /// Ends an expired ejection, returning `EjectionEnded`; call it (e.g. at
    /// [`Self::ejected_until`]) when you need that transition.
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        self.passive.poll(now)
    }

    /// Active healthy and not ejected at `now`; an ejection is over at its deadline even if
    /// nobody has polled yet.
    pub fn is_available(&self, now: Instant) -> bool {
        self.active.is_healthy() && !self.passive.is_ejected(now)
    }

    /// Deadline of the current ejection; may be in the past until [`Self::poll`] or
    /// [`Self::on_outcome`] ends it.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.passive.ejected_until()
    }

    pub fn is_active_healthy(&self) -> bool {
        self.active.is_healthy()
    }

    /// Failures in a row towards ejection; 0 while ejected. When it is 0 a success changes
    /// nothing, which lets the runtime skip taking a lock.
    pub fn consecutive_failures(&self) -> u32 {
        self.passive.consecutive_failures()
    }

    /// Ejections so far, for metrics.
    pub fn ejections(&self) -> u32 {
        self.passive.ejections()
    }
}

#[cfg(test)]
mod tests;
