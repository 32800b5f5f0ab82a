//! Passive ejection: take an instance out after real requests fail, for a cool-off that grows
//! while it keeps failing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Outcome, Transition};
use crate::spec::PassiveHealthSpec;

#[derive(Debug, Clone)]
pub(super) struct Passive {
    spec: PassiveHealthSpec,
    consecutive: u32,
    /// Times of recent failures, oldest first, never more than `window_failures` of them.
    recent: VecDeque<Instant>,
    ejected_until: Option<Instant>,
    /// Ejections since the last quiet period: the exponent of the next cool-off.
    backoff: u32,
    /// Start of the current failure-free stretch after an ejection ended; None once that
    /// stretch has reset the backoff, or before any ejection.
    quiet_since: Option<Instant>,
    ejections: u32,
}

impl Passive {
    pub(super) fn new(spec: &PassiveHealthSpec) -> Self {
        Self {
            spec: spec.clone(),
            consecutive: 0,
            recent: VecDeque::new(),
            ejected_until: None,
            backoff: 0,
            quiet_since: None,
            ejections: 0,
        }
    }

    pub(super) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    pub(super) fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    pub(super) fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    pub(super) fn ejections(&self) -> u32 {
        self.ejections
    }

    #[cfg(test)]
    pub(super) fn failures_in_window(&self) -> usize {
        self.recent.len()
    }

    pub(super) fn poll(&mut self, now: Instant) -> Option<Transition> {
        self.end_expired(now).then_some(Transition::EjectionEnded)
    }

    pub(super) fn on_outcome(&mut self, outcome: Outcome, now: Instant) -> Option<Transition> {
        let ended = self.end_expired(now);
        // No traffic is routed to an ejected instance; what still arrives was in flight before
        // the ejection and says nothing new.
        if self.is_ejected(now) {
            return None;
        }
        let ejected = match outcome {
            Outcome::Success => {
                self.consecutive = 0;
                None
            }
            Outcome::Failure => self.on_failure(now),
        };
        ejected.or(ended.then_some(Transition::EjectionEnded))
    }

    fn on_failure(&mut self, now: Instant) -> Option<Transition> {
        self.track_quiet_period(now);
        self.consecutive = self.consecutive.saturating_add(1);
        let in_window = self.record_in_window(now);
        let too_many_in_a_row = reached(self.consecutive, self.spec.consecutive_failures);
        let too_many_in_window = reached(in_window, self.spec.window_failures);
        (too_many_in_a_row || too_many_in_window).then(|| self.eject(now))
    }

    /// Resets the backoff once an instance has gone a whole cool-off without failing after an
    /// ejection, so a one-off incident long ago does not lengthen today's ejection.
    fn track_quiet_period(&mut self, now: Instant) {
        let Some(since) = self.quiet_since else {
            return;
        };
        if now.saturating_duration_since(since) >= self.spec.cool_off {
            self.backoff = 0;
            self.quiet_since = None;
        } else {
            self.quiet_since = Some(now);
        }
    }

    /// Adds a failure at `now` and returns how many fall within the window.
    fn record_in_window(&mut self, now: Instant) -> u32 {
        let limit = self.spec.window_failures;
        if limit == 0 {
            return 0;
        }
        let window = self.spec.window;
        while self
            .recent
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= window)
        {
            self.recent.pop_front();
        }
        // Only the newest `limit` failures can matter: reaching `limit` ejects.
        if u32::try_from(self.recent.len()).unwrap_or(u32::MAX) >= limit {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        u32::try_from(self.recent.len()).unwrap_or(u32::MAX)
    }

    fn eject(&mut self, now: Instant) -> Transition {
        let cool_off = self.cool_off();
        self.ejected_until = Some(instant_after(now, cool_off));
        self.backoff = self.backoff.saturating_add(1);
        self.ejections = self.ejections.saturating_add(1);
        self.quiet_since = None;
        // Half-open afterwards: the next streak and window count from scratch.
        self.consecutive = 0;
        self.recent.clear();
        Transition::Ejected { for_: cool_off }
    }

    /// `cool_off × 2^backoff`, capped at `max_cool_off` (but never below `cool_off`).
    fn cool_off(&self) -> Duration {
        let base = self.spec.cool_off;
        let cap = self.spec.max_cool_off.max(base);
        2_u32
            .checked_pow(self.backoff)
            .and_then(|factor| base.checked_mul(factor))
            .map_or(cap, |cool_off| cool_off.min(cap))
    }

    fn end_expired(&mut self, now: Instant) -> bool {
        let Some(until) = self.ejected_until.filter(|&until| now >= until) else {
            return false;
        };
        self.ejected_until = None;
        // The quiet period runs from the deadline, not from whenever we noticed it passed.
        self.quiet_since = Some(until);
        true
    }
}

/// A limit of 0 disables the rule.
fn reached(count: u32, limit: u32) -> bool {
    limit > 0 && count >= limit
}

/// `now + duration`, shortened until the platform's `Instant` can represent it: an absurd
/// configured cool-off must not panic.
fn instant_after(now: Instant, mut duration: Duration) -> Instant {
    loop {
        if let Some(at) = now.checked_add(duration) {
            return at;
        }
        duration /= 2;
    }
}
