//! The rollout state machine of a canary or blue-green deploy: pure, driven by analysis
//! verdicts, operator commands and a clock passed in, so every path is unit-tested without
//! sleeping. The deploy flow carries out what it returns ([`Next`]).
//!
//! A step advances when its pause is over *and* the latest window passed: time alone never
//! promotes a release nobody has judged. A manual step (`pause = "manual"`) waits for
//! `berth promote`; its inconclusive windows do not count towards the limit, since a person,
//! not traffic, decides there.

use std::time::{Duration, Instant};

use berth_config::app::{AnalysisSpec, CanaryStep};
use serde::Serialize;

use crate::analysis::Verdict;

/// What an operator can ask of a rollout in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Go to the next step now (the last step's next is all traffic).
    Promote,
    /// Roll back now; the text says who asked.
    Abort(String),
    /// Stop advancing (analysis still runs, and can still roll back).
    Pause,
    Resume,
}

/// What the flow must do next.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", content = "detail", rename_all = "snake_case")]
pub enum Next {
    /// Put this percent of traffic on the new release.
    Weight(u32),
    /// Change nothing; the text says what the rollout waits for.
    Hold(String),
    /// Move all traffic to the new release.
    Complete,
    /// Put all traffic back on the stable release; the text says why.
    RollBack(String),
}

#[derive(Debug, Clone)]
pub struct Rollout {
    steps: Vec<CanaryStep>,
    failure_limit: u32,
    inconclusive_limit: u32,
    index: usize,
    entered: Instant,
    paused: bool,
    failures: u32,
    inconclusive_run: u32,
}

impl Rollout {
    /// A rollout at its first step. `steps` must not be empty (the app spec guarantees it;
    /// an empty list completes at the first passing window).
    pub fn new(steps: Vec<CanaryStep>, analysis: &AnalysisSpec, now: Instant) -> Rollout {
        Rollout {
            steps,
            failure_limit: analysis.failure_limit.max(1),
            inconclusive_limit: analysis.inconclusive_limit.max(1),
            index: 0,
            entered: now,
            paused: false,
            failures: 0,
            inconclusive_run: 0,
        }
    }

    /// Percent of traffic on the new release in the current step.
    pub fn weight(&self) -> u32 {
        self.steps.get(self.index).map_or(100, |s| s.weight)
    }

    /// `"step 1 of 2 (10%)"`.
    pub fn describe(&self) -> String {
        format!(
            "step {} of {} ({}%)",
            (self.index + 1).min(self.steps.len()),
            self.steps.len(),
            self.weight()
        )
    }

    fn manual(&self) -> bool {
        self.steps
            .get(self.index)
            .is_some_and(|s| s.pause.is_none())
    }

    /// The outcome of one analysis window.
    pub fn analysed(&mut self, verdict: Verdict, reason: &str, now: Instant) -> Next {
        match verdict {
            Verdict::Fail => {
                self.failures += 1;
                if self.failures >= self.failure_limit {
                    Next::RollBack(format!("analysis failed: {reason}"))
                } else {
                    Next::Hold(format!(
                        "analysis failed ({} of {} failures allowed): {reason}",
                        self.failures,
                        self.failure_limit - 1
                    ))
                }
            }
            Verdict::Inconclusive if self.manual() => {
                Next::Hold(format!("{reason}; waiting for berth promote"))
            }
            Verdict::Inconclusive => {
                self.inconclusive_run += 1;
                if self.inconclusive_run >= self.inconclusive_limit {
                    Next::RollBack(format!(
                        "inconclusive for {} windows in a row: {reason}; add [[deploy.probe]] \
                         requests or lower analysis.min_requests for a quiet app",
                        self.inconclusive_run
                    ))
                } else {
                    Next::Hold(format!(
                        "inconclusive ({} of {}): {reason}",
                        self.inconclusive_run, self.inconclusive_limit
                    ))
                }
            }
            Verdict::Pass => {
                self.inconclusive_run = 0;
                self.try_advance(now)
            }
        }
    }

    fn try_advance(&mut self, now: Instant) -> Next {
        if self.paused {
            return Next::Hold(format!(
                "{} paused; berth resume continues",
                self.describe()
            ));
        }
        match self.steps.get(self.index).map(|s| s.pause) {
            Some(None) => Next::Hold(format!("{}: waiting for berth promote", self.describe())),
            Some(Some(pause)) => {
                let elapsed = now.saturating_duration_since(self.entered);
                if elapsed < pause {
                    Next::Hold(format!(
                        "{}: {}s of {}s",
                        self.describe(),
                        elapsed.as_secs(),
                        pause.as_secs()
                    ))
                } else {
                    self.advance(now)
                }
            }
            None => Next::Complete,
        }
    }

    fn advance(&mut self, now: Instant) -> Next {
        self.index += 1;
        self.entered = now;
        self.inconclusive_run = 0;
        match self.steps.get(self.index) {
            Some(step) => Next::Weight(step.weight),
            None => Next::Complete,
        }
    }

    pub fn command(&mut self, command: Command, now: Instant) -> Next {
        match command {
            Command::Promote => {
                self.paused = false;
                self.advance(now)
            }
            Command::Abort(by) => Next::RollBack(format!("aborted by {by}")),
            Command::Pause => {
                self.paused = true;
                Next::Hold(format!("{} paused", self.describe()))
            }
            Command::Resume => {
                self.paused = false;
                Next::Hold(format!("{} resumed", self.describe()))
            }
        }
    }

    /// How long the current step has run.
    pub fn in_step(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.entered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn steps() -> Vec<CanaryStep> {
        vec![
            CanaryStep {
                weight: 10,
                pause: Some(10 * MIN),
            },
            CanaryStep {
                weight: 50,
                pause: Some(10 * MIN),
            },
        ]
    }

    fn rollout(t0: Instant) -> Rollout {
        Rollout::new(steps(), &AnalysisSpec::default(), t0)
    }

    #[test]
    fn passes_through_every_step_to_completion() {
        let t0 = Instant::now();
        let mut r = rollout(t0);
        assert_eq!(r.weight(), 10);
        assert!(matches!(
            r.analysed(Verdict::Pass, "ok", t0 + 5 * MIN),
            Next::Hold(_)
        ));
        assert_eq!(
            r.analysed(Verdict::Pass, "ok", t0 + 10 * MIN),
            Next::Weight(50)
        );
        assert_eq!(r.weight(), 50);
        assert!(matches!(
            r.analysed(Verdict::Pass, "ok", t0 + 15 * MIN),
            Next::Hold(_)
        ));
        assert_eq!(
            r.analysed(Verdict::Pass, "ok", t0 + 20 * MIN),
            Next::Complete
        );
    }

    #[test]
    fn time_alone_never_advances_a_step() {
        let t0 = Instant::now();
        let mut r = rollout(t0);
        for i in 0..5 {
            let next = r.analysed(Verdict::Inconclusive, "quiet", t0 + (20 + i) * MIN);
            assert!(matches!(next, Next::Hold(_)), "{next:?}");
        }
        assert_eq!(r.weight(), 10);
        assert_eq!(
            r.analysed(Verdict::Pass, "ok", t0 + 30 * MIN),
            Next::Weight(50)
        );
    }

    #[test]
    fn a_failed_window_rolls_back_at_once_by_default() {
        let t0 = Instant::now();
        let mut r = rollout(t0);
        let next = r.analysed(Verdict::Fail, "error rate 20.00%", t0 + MIN);
        assert_eq!(
            next,
            Next::RollBack("analysis failed: error rate 20.00%".into())
        );
    }

    #[test]
    fn a_failure_limit_allows_that_many_bad_windows() {
        let t0 = Instant::now();
        let spec = AnalysisSpec {
            failure_limit: 2,
            ..AnalysisSpec::default()
        };
        let mut r = Rollout::new(steps(), &spec, t0);
        assert!(matches!(r.analysed(Verdict::Fail, "x", t0), Next::Hold(_)));
        assert!(matches!(
            r.analysed(Verdict::Pass, "ok", t0 + MIN),
            Next::Hold(_)
        ));
        assert!(matches!(
            r.analysed(Verdict::Fail, "x", t0 + 2 * MIN),
            Next::RollBack(_)
        ));
    }

    #[test]
    fn low_traffic_is_bounded_then_rolls_back_with_advice() {
        let t0 = Instant::now();
        let spec = AnalysisSpec {
            inconclusive_limit: 3,
            ..AnalysisSpec::default()
        };
        let mut r = Rollout::new(steps(), &spec, t0);
        assert!(matches!(
            r.analysed(Verdict::Inconclusive, "2 requests", t0),
            Next::Hold(_)
        ));
        assert!(matches!(
            r.analysed(Verdict::Inconclusive, "2 requests", t0),
            Next::Hold(_)
        ));
        match r.analysed(Verdict::Inconclusive, "2 requests", t0) {
            Next::RollBack(why) => assert!(why.contains("[[deploy.probe]]"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pass_resets_the_inconclusive_run() {
        let t0 = Instant::now();
        let spec = AnalysisSpec {
            inconclusive_limit: 2,
            ..AnalysisSpec::default()
        };
        let mut r = Rollout::new(steps(), &spec, t0);
        assert!(matches!(
            r.analysed(Verdict::Inconclusive, "q", t0),
            Next::Hold(_)
        ));
        assert!(matches!(r.analysed(Verdict::Pass, "ok", t0), Next::Hold(_)));
        assert!(matches!(
            r.analysed(Verdict::Inconclusive, "q", t0),
            Next::Hold(_)
        ));
    }

    #[test]
    fn a_manual_step_waits_for_promote_however_quiet() {
        let t0 = Instant::now();
        let manual = vec![CanaryStep {
            weight: 10,
            pause: None,
        }];
        let spec = AnalysisSpec {
            inconclusive_limit: 1,
            ..AnalysisSpec::default()
        };
        let mut r = Rollout::new(manual, &spec, t0);
        for _ in 0..5 {
            assert!(matches!(
                r.analysed(Verdict::Inconclusive, "q", t0),
                Next::Hold(_)
            ));
            assert!(matches!(
                r.analysed(Verdict::Pass, "ok", t0 + 60 * MIN),
                Next::Hold(_)
            ));
        }
        assert_eq!(r.command(Command::Promote, t0), Next::Complete);
    }

    #[test]
    fn pause_holds_and_abort_during_pause_rolls_back() {
        let t0 = Instant::now();
        let mut r = rollout(t0);
        assert!(matches!(r.command(Command::Pause, t0), Next::Hold(_)));
        assert!(matches!(
            r.analysed(Verdict::Pass, "ok", t0 + 30 * MIN),
            Next::Hold(_)
        ));
        assert_eq!(r.weight(), 10);
        // Analysis still guards a paused rollout.
        let mut failing = r.clone();
        assert!(matches!(
            failing.analysed(Verdict::Fail, "x", t0 + 31 * MIN),
            Next::RollBack(_)
        ));
        assert_eq!(
            r.command(Command::Abort("alice".into()), t0 + 31 * MIN),
            Next::RollBack("aborted by alice".into())
        );
    }

    #[test]
    fn resume_lets_the_next_pass_advance() {
        let t0 = Instant::now();
        let mut r = rollout(t0);
        r.command(Command::Pause, t0);
        assert!(matches!(
            r.analysed(Verdict::Pass, "ok", t0 + 11 * MIN),
            Next::Hold(_)
        ));
        r.command(Command::Resume, t0 + 11 * MIN);
        assert_eq!(
            r.analysed(Verdict::Pass, "ok", t0 + 12 * MIN),
            Next::Weight(50)
        );
    }

    #[test]
    fn promote_skips_the_pause_and_abort_in_a_later_step_rolls_back() {
        let t0 = Instant::now();
        let mut r = rollout(t0);
        assert_eq!(r.command(Command::Promote, t0), Next::Weight(50));
        assert_eq!(r.in_step(t0 + MIN), MIN);
        assert!(matches!(
            r.command(Command::Abort("ci".into()), t0 + MIN),
            Next::RollBack(_)
        ));
    }
}
