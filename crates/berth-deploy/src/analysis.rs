//! Judging a new release from one analysis window: pure, from the edge's counts for the new
//! and the stable release and what the supervisor saw, to a verdict with the numbers that
//! drove it. Too little traffic is inconclusive, never a pass.

use berth_config::app::AnalysisSpec;
use berth_edge::stats::StatsSnapshot;
use serde::Serialize;

/// A canary's p99 must exceed the stable release's by at least this much, as well as by the
/// configured ratio, to fail: at a few milliseconds a 1.5× difference is noise (and within one
/// latency bucket), not a regression anyone notices.
pub const MIN_P99_GAP_MS: f64 = 25.0;

/// What one window held.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub canary: StatsSnapshot,
    /// `None` when nothing else serves (a first deploy, or blue-green before promotion).
    pub stable: Option<StatsSnapshot>,
    /// Exits of the new release's instances during the window.
    pub crashes: u32,
    /// New instances not ready at the end of the window.
    pub unready: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The numbers behind a verdict, as recorded in the deployment's step log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Numbers {
    pub canary_requests: u64,
    pub canary_errors: u64,
    pub canary_error_rate: f64,
    pub canary_p99_ms: Option<f64>,
    pub stable_requests: Option<u64>,
    pub stable_error_rate: Option<f64>,
    pub stable_p99_ms: Option<f64>,
    pub crashes: u32,
    pub unready: usize,
}

impl Numbers {
    /// Both releases' window in one line: `new 120 req 0.00% 5xx p99 12 ms | stable …`.
    pub fn summary(&self) -> String {
        let p99 = |p: Option<f64>| p.map_or("-".to_owned(), |p| format!("{p:.0} ms"));
        let mut line = format!(
            "new {} req {} 5xx p99 {}",
            self.canary_requests,
            percent(self.canary_error_rate),
            p99(self.canary_p99_ms)
        );
        if let (Some(n), Some(rate)) = (self.stable_requests, self.stable_error_rate) {
            line.push_str(&format!(
                " | stable {n} req {} 5xx p99 {}",
                percent(rate),
                p99(self.stable_p99_ms)
            ));
        }
        line
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub verdict: Verdict,
    /// One line a person reads: which limit, what was measured.
    pub reason: String,
    pub numbers: Numbers,
}

fn percent(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// Judges `w` against `spec`. Health first (a crash or an unready instance fails at once,
/// whatever the traffic), then the minimum traffic, then the limits.
pub fn judge(spec: &AnalysisSpec, w: &Window) -> Judgement {
    let c = &w.canary;
    let numbers = Numbers {
        canary_requests: c.requests,
        canary_errors: c.server_errors,
        canary_error_rate: c.error_rate(),
        canary_p99_ms: c.latency_quantile_ms(0.99),
        stable_requests: w.stable.map(|s| s.requests),
        stable_error_rate: w.stable.map(|s| s.error_rate()),
        stable_p99_ms: w.stable.and_then(|s| s.latency_quantile_ms(0.99)),
        crashes: w.crashes,
        unready: w.unready,
    };
    let verdict = |verdict, reason: String| Judgement {
        verdict,
        reason,
        numbers: numbers.clone(),
    };
    if w.crashes > 0 {
        return verdict(
            Verdict::Fail,
            format!("new instances exited {} time(s)", w.crashes),
        );
    }
    if w.unready > 0 {
        return verdict(
            Verdict::Fail,
            format!("{} new instance(s) not healthy", w.unready),
        );
    }
    if c.requests < spec.min_requests {
        return verdict(
            Verdict::Inconclusive,
            format!(
                "{} request(s) to the new release{}, fewer than the {} needed to judge",
                c.requests,
                w.stable
                    .map(|s| format!(" ({} to the stable one)", s.requests))
                    .unwrap_or_default(),
                spec.min_requests
            ),
        );
    }
    let rate = c.error_rate();
    if rate > spec.max_error_rate {
        return verdict(
            Verdict::Fail,
            format!(
                "error rate {} ({} of {}) above the limit {}",
                percent(rate),
                c.server_errors,
                c.requests,
                percent(spec.max_error_rate)
            ),
        );
    }
    let p99 = numbers.canary_p99_ms.unwrap_or(0.0);
    if let Some(max) = spec.max_p99 {
        let max_ms = max.as_secs_f64() * 1000.0;
        if p99 > max_ms {
            return verdict(
                Verdict::Fail,
                format!("p99 {p99:.0} ms above the limit {max_ms:.0} ms"),
            );
        }
    }
    if let (Some(ratio), Some(stable)) = (spec.max_p99_vs_stable, &w.stable)
        && stable.requests >= spec.min_requests
        && let Some(stable_p99) = stable.latency_quantile_ms(0.99)
        && p99 > stable_p99 * ratio
        && p99 - stable_p99 > MIN_P99_GAP_MS
    {
        return verdict(
            Verdict::Fail,
            format!(
                "p99 {p99:.0} ms is {:.1}× the stable release's {stable_p99:.0} ms (limit {ratio}×)",
                p99 / stable_p99.max(f64::MIN_POSITIVE)
            ),
        );
    }
    verdict(
        Verdict::Pass,
        format!(
            "{} requests, error rate {}, p99 {p99:.0} ms",
            c.requests,
            percent(rate)
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn snap(ok: u64, errors: u64, seconds: f64) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        for _ in 0..ok {
            s.observe(200, seconds);
        }
        for _ in 0..errors {
            s.observe(500, seconds);
        }
        s
    }

    fn window(canary: StatsSnapshot, stable: Option<StatsSnapshot>) -> Window {
        Window {
            canary,
            stable,
            ..Window::default()
        }
    }

    #[test]
    fn a_healthy_canary_passes_with_its_numbers() {
        let j = judge(
            &AnalysisSpec::default(),
            &window(snap(100, 0, 0.01), Some(snap(900, 0, 0.01))),
        );
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
        assert_eq!(j.numbers.canary_requests, 100);
        assert_eq!(j.numbers.stable_requests, Some(900));
    }

    #[test]
    fn too_little_traffic_is_inconclusive_even_when_every_request_failed() {
        let j = judge(&AnalysisSpec::default(), &window(snap(0, 5, 0.01), None));
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(j.reason.contains("fewer than the 20"), "{}", j.reason);
    }

    #[test]
    fn an_error_rate_above_the_limit_fails() {
        // 20% errors, the demo app's fail switch.
        let j = judge(&AnalysisSpec::default(), &window(snap(80, 20, 0.01), None));
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reason.contains("20.00% (20 of 100)"), "{}", j.reason);
        // Exactly at the limit passes.
        let j = judge(&AnalysisSpec::default(), &window(snap(99, 1, 0.01), None));
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    }

    #[test]
    fn absolute_and_relative_latency_limits() {
        let spec = AnalysisSpec {
            max_p99: Some(Duration::from_millis(500)),
            ..AnalysisSpec::default()
        };
        let j = judge(&spec, &window(snap(100, 0, 0.8), None));
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reason.contains("above the limit 500 ms"), "{}", j.reason);
        // +300 ms over a 10 ms stable release: relative limit.
        let j = judge(
            &AnalysisSpec::default(),
            &window(snap(100, 0, 0.31), Some(snap(100, 0, 0.01))),
        );
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reason.contains("stable release"), "{}", j.reason);
    }

    #[test]
    fn a_relative_difference_of_a_few_milliseconds_is_noise() {
        let j = judge(
            &AnalysisSpec::default(),
            &window(snap(100, 0, 0.004), Some(snap(100, 0, 0.001))),
        );
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    }

    #[test]
    fn a_quiet_stable_release_is_no_reference() {
        let j = judge(
            &AnalysisSpec::default(),
            &window(snap(100, 0, 0.3), Some(snap(3, 0, 0.001))),
        );
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    }

    #[test]
    fn crashes_and_unready_instances_fail_whatever_the_traffic() {
        let mut w = window(StatsSnapshot::default(), None);
        w.crashes = 2;
        let j = judge(&AnalysisSpec::default(), &w);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reason.contains("exited 2 time(s)"));
        w.crashes = 0;
        w.unready = 1;
        assert_eq!(judge(&AnalysisSpec::default(), &w).verdict, Verdict::Fail);
    }
}
