//! When to restart an exited instance, and when to give up on it.
//!
//! Pure and clock-free like `berth-edge`'s `health.rs`: every call takes `now`, so the tests
//! drive it with a fake clock and never sleep. The run loop (`runner.rs`) owns the sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// First restart delay.
pub const DEFAULT_BASE: Duration = Duration::from_secs(1);
/// Each quick exit multiplies the delay by this.
pub const DEFAULT_FACTOR: u32 = 2;
/// The delay never grows past this, so a recovered dependency is noticed within a minute.
pub const DEFAULT_CAP: Duration = Duration::from_secs(60);
/// A run at least this long counts as healthy: the next exit starts again from `base`.
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(30);
/// This many exits within `loop_window` mean a crash loop.
pub const DEFAULT_LOOP_EXITS: u32 = 5;
/// See [`DEFAULT_LOOP_EXITS`].
pub const DEFAULT_LOOP_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub base: Duration,
    pub factor: u32,
    pub cap: Duration,
    pub stable_after: Duration,
    pub loop_exits: u32,
    pub loop_window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            base: DEFAULT_BASE,
            factor: DEFAULT_FACTOR,
            cap: DEFAULT_CAP,
            stable_after: DEFAULT_STABLE_AFTER,
            loop_exits: DEFAULT_LOOP_EXITS,
            loop_window: DEFAULT_LOOP_WINDOW,
        }
    }
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RestartAfter(Duration),
    /// A crash loop: do not restart until [`RestartState::reset`].
    Failing,
}

/// Restart bookkeeping for one instance.
#[derive(Debug, Clone)]
pub struct RestartState {
    policy: RestartPolicy,
    next_delay: Duration,
    started_at: Option<Instant>,
    /// Exit times inside the loop window, oldest first.
    exits: VecDeque<Instant>,
    failing: bool,
}

impl RestartState {
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            next_delay: policy.base.min(policy.cap),
            started_at: None,
            exits: VecDeque::new(),
            failing: false,
        }
    }

    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    pub fn is_failing(&self) -> bool {
        self.failing
    }

    /// The process was (re)started at `now`.
    pub fn on_start(&mut self, now: Instant) {
        self.started_at = Some(now);
    }

    /// The process exited at `now`. An exit without a matching `on_start` (a spawn that
    /// failed) counts as a quick exit.
    pub fn on_exit(&mut self, now: Instant) -> Decision {
        if self.failing {
            return Decision::Failing;
        }
        let ran_stably = self
            .started_at
            .take()
            .is_some_and(|start| now.saturating_duration_since(start) >= self.policy.stable_after);
        if ran_stably {
            // A healthy run wipes the slate: its exit is a fresh incident, not part of a loop.
            self.next_delay = self.policy.base.min(self.policy.cap);
            self.exits.clear();
        }

        self.exits.push_back(now);
        while let Some(&oldest) = self.exits.front() {
            if now.saturating_duration_since(oldest) > self.policy.loop_window {
                self.exits.pop_front();
            } else {
                break;
            }
        }
        // `max(1)`: a policy with `loop_exits = 0` would otherwise fail before any exit.
        if self.exits.len() >= self.policy.loop_exits.max(1) as usize {
            self.failing = true;
            return Decision::Failing;
        }

        let delay = self.next_delay;
        self.next_delay = delay
            .saturating_mul(self.policy.factor)
            .min(self.policy.cap);
        Decision::RestartAfter(delay)
    }

    /// Starts from scratch, clearing a crash loop. The run loop never does: a failing instance
    /// stays failing until it is stopped, and a deploy or a restart of berth starts a new one.
    pub fn reset(&mut self) {
        *self = Self::new(self.policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A policy whose crash-loop detector stays out of the way of backoff tests.
    fn no_loop() -> RestartPolicy {
        RestartPolicy {
            loop_exits: u32::MAX,
            ..RestartPolicy::default()
        }
    }

    /// Start at `t`, exit after `ran`; returns the decision and the exit time.
    fn run(state: &mut RestartState, t: Instant, ran: Duration) -> (Decision, Instant) {
        state.on_start(t);
        let exit = t + ran;
        (state.on_exit(exit), exit)
    }

    #[test]
    fn delay_doubles_from_base() {
        let mut state = RestartState::new(no_loop());
        let mut t = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..4 {
            let (decision, exit) = run(&mut state, t, secs(1));
            let Decision::RestartAfter(d) = decision else {
                panic!("unexpected {decision:?}");
            };
            delays.push(d);
            t = exit + d;
        }
        assert_eq!(delays, [secs(1), secs(2), secs(4), secs(8)]);
    }

    #[test]
    fn delay_is_capped() {
        let mut state = RestartState::new(no_loop());
        let mut t = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..12 {
            let (decision, exit) = run(&mut state, t, secs(1));
            let Decision::RestartAfter(d) = decision else {
                panic!("unexpected {decision:?}");
            };
            assert!(d <= DEFAULT_CAP);
            last = d;
            t = exit + d;
        }
        assert_eq!(last, DEFAULT_CAP);
    }

    #[test]
    fn a_stable_run_resets_the_delay() {
        let mut state = RestartState::new(no_loop());
        let mut t = Instant::now();
        for _ in 0..3 {
            let (decision, exit) = run(&mut state, t, secs(1));
            let Decision::RestartAfter(d) = decision else {
                panic!("unexpected {decision:?}");
            };
            t = exit + d;
        }
        // Just under the stable period still counts as quick.
        let (decision, exit) = run(
            &mut state,
            t,
            DEFAULT_STABLE_AFTER - Duration::from_millis(1),
        );
        assert_eq!(decision, Decision::RestartAfter(secs(8)));
        let (decision, _) = run(&mut state, exit + secs(8), DEFAULT_STABLE_AFTER);
        assert_eq!(decision, Decision::RestartAfter(DEFAULT_BASE));
    }

    #[test]
    fn five_quick_exits_are_a_crash_loop_until_reset() {
        let mut state = RestartState::new(RestartPolicy::default());
        let t0 = Instant::now();
        let mut decisions = Vec::new();
        // Exits at 0, 1, 2, 3, 4 s: well inside 60 s (ignoring the delays on purpose).
        for i in 0..5 {
            state.on_start(t0 + secs(i));
            decisions.push(state.on_exit(t0 + secs(i)));
        }
        assert!(
            decisions[..4]
                .iter()
                .all(|d| matches!(d, Decision::RestartAfter(_)))
        );
        assert_eq!(decisions[4], Decision::Failing);
        assert!(state.is_failing());

        // Failing is sticky: even a long, healthy-looking run does not clear it.
        state.on_start(t0 + secs(100));
        assert_eq!(state.on_exit(t0 + secs(1000)), Decision::Failing);

        state.reset();
        assert!(!state.is_failing());
        state.on_start(t0 + secs(1001));
        assert_eq!(
            state.on_exit(t0 + secs(1002)),
            Decision::RestartAfter(DEFAULT_BASE)
        );
    }

    #[test]
    fn five_exits_spread_beyond_the_window_are_not_a_loop() {
        let mut state = RestartState::new(RestartPolicy::default());
        let t0 = Instant::now();
        // Every 16 s: the first and fifth are 64 s apart, so no 60 s window holds five.
        for i in 0..10 {
            let at = t0 + secs(16 * i);
            state.on_start(at);
            let decision = state.on_exit(at);
            assert!(
                matches!(decision, Decision::RestartAfter(_)),
                "exit {i}: {decision:?}"
            );
        }
        assert!(!state.is_failing());
    }

    #[test]
    fn failed_spawns_count_towards_the_loop() {
        let mut state = RestartState::new(RestartPolicy::default());
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(matches!(
                state.on_exit(t0 + secs(i)),
                Decision::RestartAfter(_)
            ));
        }
        assert_eq!(state.on_exit(t0 + secs(4)), Decision::Failing);
    }
}
