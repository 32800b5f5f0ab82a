//! Active health checks: thresholds of consecutive results flip the state, so one slow or
//! failed probe does not take an instance out.

use crate::spec::ActiveHealthSpec;

#[derive(Debug, Clone)]
pub(super) struct Active {
    /// None when active checks are off: the instance is then always healthy.
    thresholds: Option<Thresholds>,
    healthy: bool,
    /// Consecutive results contradicting `healthy`.
    streak: u32,
}

#[derive(Debug, Clone, Copy)]
struct Thresholds {
    healthy: u32,
    unhealthy: u32,
}

impl Active {
    pub(super) fn new(spec: Option<&ActiveHealthSpec>) -> Self {
        // A threshold of 0 would flip on no evidence at all; treat it as 1.
        let thresholds = spec.map(|spec| Thresholds {
            healthy: spec.healthy_threshold.max(1),
            unhealthy: spec.unhealthy_threshold.max(1),
        });
        Self {
            thresholds,
            healthy: true,
            streak: 0,
        }
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Returns the new state when this check flips it.
    pub(super) fn on_check(&mut self, passed: bool) -> Option<bool> {
        let thresholds = self.thresholds?;
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let needed = if passed {
            thresholds.healthy
        } else {
            thresholds.unhealthy
        };
        if self.streak < needed {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(passed)
    }
}
