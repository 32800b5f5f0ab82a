use std::time::{Duration, Instant};

use super::*;

/// A fake clock: a fixed base plus offsets, so nothing sleeps.
struct Clock(Instant);

impl Clock {
    fn new() -> Self {
        Self(Instant::now())
    }

    fn at(&self, secs: u64) -> Instant {
        self.0 + Duration::from_secs(secs)
    }

    fn at_ms(&self, millis: u64) -> Instant {
        self.0 + Duration::from_millis(millis)
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn passive(consecutive: u32, window_failures: u32) -> PassiveHealthSpec {
    PassiveHealthSpec {
        consecutive_failures: consecutive,
        window_failures,
        window: secs(10),
        cool_off: secs(10),
        max_cool_off: secs(300),
    }
}

fn passive_only(spec: &PassiveHealthSpec) -> HealthState {
    HealthState::new(None, spec)
}

/// `n` failures at `now`, returning the last transition.
fn fail(state: &mut HealthState, n: u32, now: Instant) -> Option<Transition> {
    (0..n).fold(None, |_, _| state.on_outcome(Outcome::Failure, now))
}

fn ejected(seconds: u64) -> Option<Transition> {
    Some(Transition::Ejected {
        for_: secs(seconds),
    })
}

mod active {
    use super::*;

    fn checked(healthy_threshold: u32, unhealthy_threshold: u32) -> HealthState {
        let spec = ActiveHealthSpec {
            healthy_threshold,
            unhealthy_threshold,
            ..ActiveHealthSpec::default()
        };
        HealthState::new(Some(&spec), &passive(0, 0))
    }

    #[test]
    fn starts_healthy() {
        let clock = Clock::new();
        let state = checked(2, 3);
        assert!(state.is_active_healthy());
        assert!(state.is_available(clock.at(0)));
    }

    #[test]
    fn unhealthy_after_threshold_failures() {
        let clock = Clock::new();
        let mut state = checked(2, 3);
        assert_eq!(state.on_check(false, clock.at(0)), None);
        assert_eq!(state.on_check(false, clock.at(2)), None);
        assert!(state.is_available(clock.at(2)));
        assert_eq!(
            state.on_check(false, clock.at(4)),
            Some(Transition::BecameUnhealthy)
        );
        assert!(!state.is_active_healthy());
        assert!(!state.is_available(clock.at(4)));
        assert_eq!(state.on_check(false, clock.at(6)), None);
    }

    #[test]
    fn healthy_again_after_threshold_passes() {
        let clock = Clock::new();
        let mut state = checked(2, 1);
        assert_eq!(
            state.on_check(false, clock.at(0)),
            Some(Transition::BecameUnhealthy)
        );
        assert_eq!(state.on_check(true, clock.at(2)), None);
        assert!(!state.is_available(clock.at(2)));
        assert_eq!(
            state.on_check(true, clock.at(4)),
            Some(Transition::BecameHealthy)
        );
        assert!(state.is_available(clock.at(4)));
        assert_eq!(state.on_check(true, clock.at(6)), None);
    }

    #[test]
    fn streaks_must_be_unbroken() {
        let clock = Clock::new();
        let mut state = checked(2, 2);
        for n in 0..10 {
            assert_eq!(state.on_check(n % 2 == 0, clock.at(n)), None);
        }
        assert!(state.is_active_healthy());

        state.on_check(false, clock.at(20));
        state.on_check(false, clock.at(21));
        assert!(!state.is_active_healthy());
        for n in 0..10 {
            assert_eq!(state.on_check(n % 2 == 0, clock.at(30 + n)), None);
        }
        assert!(!state.is_active_healthy());
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let clock = Clock::new();
        let mut state = checked(0, 0);
        assert_eq!(
            state.on_check(false, clock.at(0)),
            Some(Transition::BecameUnhealthy)
        );
        assert_eq!(
            state.on_check(true, clock.at(1)),
            Some(Transition::BecameHealthy)
        );
    }

    #[test]
    fn without_active_spec_checks_are_ignored() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(0, 0));
        for n in 0..10 {
            assert_eq!(state.on_check(false, clock.at(n)), None);
        }
        assert!(state.is_available(clock.at(10)));
    }

    #[test]
    fn available_needs_both_active_health_and_no_ejection() {
        let clock = Clock::new();
        let spec = ActiveHealthSpec {
            unhealthy_threshold: 1,
            healthy_threshold: 1,
            ..ActiveHealthSpec::default()
        };
        let mut state = HealthState::new(Some(&spec), &passive(1, 0));
        assert_eq!(fail(&mut state, 1, clock.at(0)), ejected(10));
        assert!(state.is_active_healthy());
        assert!(!state.is_available(clock.at(5)));

        state.on_check(false, clock.at(6));
        assert_eq!(state.poll(clock.at(10)), Some(Transition::EjectionEnded));
        assert!(!state.is_available(clock.at(10)));
        state.on_check(true, clock.at(12));
        assert!(state.is_available(clock.at(12)));
    }
}

mod ejection {
    use super::*;

    #[test]
    fn consecutive_failures_eject() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(5, 0));
        assert_eq!(fail(&mut state, 4, clock.at(0)), None);
        assert_eq!(state.consecutive_failures(), 4);
        assert!(state.is_available(clock.at(0)));
        assert_eq!(fail(&mut state, 1, clock.at(1)), ejected(10));
        assert_eq!(state.ejected_until(), Some(clock.at(11)));
        assert!(!state.is_available(clock.at(1)));
        assert_eq!(state.ejections(), 1);
        assert_eq!(state.consecutive_failures(), 0);
    }

    #[test]
    fn success_resets_the_consecutive_count() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(5, 0));
        for round in 0..10 {
            assert_eq!(fail(&mut state, 4, clock.at(round)), None);
            assert_eq!(state.on_outcome(Outcome::Success, clock.at(round)), None);
            assert_eq!(state.consecutive_failures(), 0);
        }
        assert!(state.is_available(clock.at(10)));
    }

    #[test]
    fn success_does_not_reset_the_window() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(0, 3));
        assert_eq!(fail(&mut state, 1, clock.at(0)), None);
        state.on_outcome(Outcome::Success, clock.at(1));
        assert_eq!(fail(&mut state, 1, clock.at(2)), None);
        state.on_outcome(Outcome::Success, clock.at(3));
        assert_eq!(fail(&mut state, 1, clock.at(4)), ejected(10));
    }

    #[test]
    fn failures_within_the_window_eject() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(0, 3));
        assert_eq!(fail(&mut state, 1, clock.at(0)), None);
        assert_eq!(fail(&mut state, 1, clock.at(4)), None);
        assert_eq!(fail(&mut state, 1, clock.at_ms(9_999)), ejected(10));
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_eject() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(0, 3));
        // Two failures every 10 s: never three within any 10 s.
        for n in 0..100 {
            assert_eq!(fail(&mut state, 1, clock.at(5 * n)), None, "failure {n}");
        }
        // The window is half-open: a failure exactly `window` old has left it.
        let mut state = passive_only(&passive(0, 3));
        fail(&mut state, 1, clock.at(0));
        fail(&mut state, 1, clock.at(5));
        assert_eq!(fail(&mut state, 1, clock.at(10)), None);
    }

    #[test]
    fn either_rule_ejects_first() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(3, 5));
        assert_eq!(fail(&mut state, 3, clock.at(0)), ejected(10));

        let mut state = passive_only(&passive(3, 5));
        for n in 0..4 {
            fail(&mut state, 2, clock.at(n));
            assert_eq!(state.on_outcome(Outcome::Success, clock.at(n)), None);
        }
        assert_eq!(
            state.ejections(),
            1,
            "the fifth failure in the window ejected"
        );
    }

    #[test]
    fn zero_thresholds_never_eject() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(0, 0));
        for n in 0..10_000 {
            assert_eq!(state.on_outcome(Outcome::Failure, clock.at_ms(n)), None);
        }
        assert!(state.is_available(clock.at(10)));
        assert_eq!(state.ejections(), 0);
        assert_eq!(state.ejected_until(), None);
    }

    #[test]
    fn window_memory_stays_bounded() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(0, 4));
        for n in 0..10_000 {
            // Three per window, forever: never ejected, never more than the limit stored.
            state.on_outcome(Outcome::Failure, clock.at_ms(3_334 * n));
            assert!(state.passive.failures_in_window() <= 4);
        }
        assert_eq!(state.ejections(), 0);
    }

    #[test]
    fn outcomes_during_ejection_are_ignored() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(5, 7));
        assert_eq!(fail(&mut state, 5, clock.at(0)), ejected(10));
        for n in 0..100 {
            let outcome = if n % 3 == 0 {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            assert_eq!(state.on_outcome(outcome, clock.at_ms(n * 99)), None);
        }
        assert_eq!(state.consecutive_failures(), 0);
        assert_eq!(state.ejections(), 1);
        assert_eq!(state.ejected_until(), Some(clock.at(10)));
    }

    #[test]
    fn ejection_ends_exactly_at_the_deadline() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(1, 0));
        fail(&mut state, 1, clock.at(0));
        let until = clock.at(10);
        let just_before = until - Duration::from_nanos(1);
        assert!(!state.is_available(just_before));
        assert!(state.is_available(until), "available before anyone polls");
        assert_eq!(state.poll(just_before), None);
        assert_eq!(state.poll(until), Some(Transition::EjectionEnded));
        assert_eq!(state.poll(until), None);
        assert_eq!(state.ejected_until(), None);
        assert!(state.is_available(until));
    }

    #[test]
    fn half_open_after_ejection() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(3, 0));
        fail(&mut state, 3, clock.at(0));
        // The first outcome after the deadline ends the ejection itself...
        assert_eq!(
            state.on_outcome(Outcome::Failure, clock.at(10)),
            Some(Transition::EjectionEnded)
        );
        // ...and the streak counts afresh from that failure.
        assert_eq!(state.consecutive_failures(), 1);
        assert_eq!(fail(&mut state, 1, clock.at(10)), None);
        assert_eq!(fail(&mut state, 1, clock.at(10)), ejected(20));
    }

    #[test]
    fn expired_ejection_and_new_one_in_one_call_reports_the_new_one() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(1, 0));
        fail(&mut state, 1, clock.at(0));
        assert_eq!(fail(&mut state, 1, clock.at(10)), ejected(20));
        assert_eq!(state.ejected_until(), Some(clock.at(30)));
    }
}

mod backoff {
    use super::*;

    /// Ejects with `threshold` failures at `now`, returning the ejection length.
    fn eject_at(state: &mut HealthState, threshold: u32, now: Instant) -> Duration {
        state.poll(now);
        match fail(state, threshold, now) {
            Some(Transition::Ejected { for_ }) => for_,
            other => panic!("expected an ejection at {now:?}, got {other:?}"),
        }
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(5, 0));
        let mut now = clock.at(0);
        let mut lengths = Vec::new();
        for _ in 0..8 {
            let length = eject_at(&mut state, 5, now);
            lengths.push(length.as_secs());
            now = state.ejected_until().unwrap();
        }
        assert_eq!(lengths, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(state.ejections(), 8);
    }

    #[test]
    fn resets_after_a_quiet_cool_off() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(5, 0));
        assert_eq!(eject_at(&mut state, 5, clock.at(0)), secs(10));
        assert_eq!(eject_at(&mut state, 5, clock.at(10)), secs(20));
        // Ended at 30; serving fine until 40 is a whole cool-off without failures.
        for n in 30..40 {
            state.on_outcome(Outcome::Success, clock.at(n));
        }
        assert_eq!(eject_at(&mut state, 5, clock.at(40)), secs(10));
        assert_eq!(eject_at(&mut state, 5, clock.at(50)), secs(20));
    }

    #[test]
    fn a_quiet_period_shorter_than_the_cool_off_does_not_reset() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(5, 0));
        eject_at(&mut state, 5, clock.at(0));
        assert_eq!(eject_at(&mut state, 5, clock.at_ms(19_999)), secs(20));
    }

    #[test]
    fn sporadic_failures_keep_the_backoff() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(3, 0));
        eject_at(&mut state, 3, clock.at(0));
        // A failure every 6 s after the ejection ended at 10: never a failure-free 10 s.
        for n in 0..5 {
            let now = clock.at(10 + 6 * n);
            state.poll(now);
            assert_eq!(fail(&mut state, 1, now), None);
            state.on_outcome(Outcome::Success, now);
        }
        assert_eq!(eject_at(&mut state, 3, clock.at(40)), secs(20));
    }

    #[test]
    fn absurd_durations_do_not_panic() {
        let clock = Clock::new();
        let spec = PassiveHealthSpec {
            cool_off: Duration::MAX,
            max_cool_off: Duration::MAX,
            ..passive(1, 0)
        };
        let mut state = passive_only(&spec);
        assert_eq!(
            fail(&mut state, 1, clock.at(0)),
            Some(Transition::Ejected {
                for_: Duration::MAX
            })
        );
        assert!(state.ejected_until().is_some());
        assert!(!state.is_available(clock.at(1_000_000)));

        let spec = PassiveHealthSpec {
            cool_off: secs(10),
            max_cool_off: secs(1),
            ..passive(1, 0)
        };
        let mut state = passive_only(&spec);
        assert_eq!(
            fail(&mut state, 1, clock.at(0)),
            ejected(10),
            "cap below cool-off"
        );

        let spec = PassiveHealthSpec {
            cool_off: Duration::ZERO,
            ..passive(1, 0)
        };
        let mut state = passive_only(&spec);
        assert_eq!(
            fail(&mut state, 1, clock.at(0)),
            Some(Transition::Ejected {
                for_: Duration::ZERO
            })
        );
        assert!(state.is_available(clock.at(0)));
    }

    #[test]
    fn many_ejections_stay_capped() {
        let clock = Clock::new();
        let mut state = passive_only(&passive(1, 0));
        let mut now = clock.at(0);
        for _ in 0..100 {
            assert!(eject_at(&mut state, 1, now) <= secs(300));
            now = state.ejected_until().unwrap();
        }
    }
}
