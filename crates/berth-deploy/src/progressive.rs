//! Canary and blue-green: the new release shares the app's route with the stable one at the
//! rollout's weight (blue-green: weight 0, reachable by the preview header or cookie), and
//! every analysis interval the edge's counts for both are judged ([`crate::analysis`]); the
//! state machine ([`crate::rollout`]) says what to do. Operator commands are taken at once.
//!
//! A failed analysis rolls back within the window it was seen in: the route goes back to the
//! stable release alone before the new instances are stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use berth_config::app::{AppSpec, CanaryStep, Strategy};
use berth_edge::spec::PoolSpec;
use berth_edge::stats::StatsSnapshot;
use serde_json::json;
use tokio::sync::mpsc;

use crate::analysis::{Window, judge};
use crate::error::DeployError;
use crate::flow::{Journal, app_route};
use crate::rollout::{Command, Next, Rollout};
use crate::run::ReleaseRun;
use crate::{AppKey, Deployer, Slot, lock};

/// Which releases a progressive deploy moves traffic between.
pub(crate) struct Pair<'a> {
    pub key: &'a AppKey,
    pub spec: &'a AppSpec,
    pub new: &'a Arc<ReleaseRun>,
    pub old: &'a Arc<ReleaseRun>,
}

impl Deployer {
    /// Runs the rollout until the new release should take all traffic (`Ok`) or has been
    /// rolled back (`Err`, with the route back on the old release and the new one stopped).
    pub(crate) async fn progressive(
        &self,
        slot: &Slot,
        pair: Pair<'_>,
        strategy: Strategy,
        journal: &mut Journal,
    ) -> Result<(), DeployError> {
        let rollout_spec = &pair.spec.rollout;
        let steps = match strategy {
            Strategy::BlueGreen => vec![CanaryStep {
                weight: 0,
                pause: rollout_spec.promote_after,
            }],
            _ => rollout_spec.steps.clone(),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        *lock(&slot.control) = Some(tx);
        let analysis = rollout_spec.analysis.clone();
        let mut rollout = Rollout::new(steps, &analysis, Instant::now());
        let opened = self.set_weight(&pair, rollout.weight()).await;
        let mut preview = match strategy {
            Strategy::BlueGreen => format!(
                "; preview it with the header `{}: {}`",
                berth_edge::spec::defaults::FORCE_HEADER,
                pair.new.release.version
            ),
            _ => String::new(),
        };
        if let Some(host) = rollout_spec.preview_hosts.first() {
            let sep = if preview.is_empty() {
                "; preview it"
            } else {
                " or"
            };
            preview.push_str(&format!("{sep} at host {host}"));
        }
        self.record(
            journal,
            strategy.as_str(),
            "proceed",
            format!(
                "{}: {}% of traffic on {}{preview}",
                rollout.describe(),
                rollout.weight(),
                pair.new.release.version
            ),
            json!({ "weight": rollout.weight(), "connections_opened": opened }),
        )
        .await;

        let new_version = pair.new.release.version.clone();
        let old_version = pair.old.release.version.clone();
        let mut last_new = self.stats(pair.key, &new_version);
        let mut last_old = self.stats(pair.key, &old_version);
        let mut last_restarts = pair.new.health().0;
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + analysis.interval,
            analysis.interval,
        );
        let outcome = loop {
            let next = tokio::select! {
                _ = tick.tick() => {
                    let mut probes = StatsSnapshot::default();
                    self.probe(&pair, &mut probes).await;
                    let now_new = self.stats(pair.key, &new_version);
                    let now_old = self.stats(pair.key, &old_version);
                    let (restarts, unready) = pair.new.health();
                    let mut canary = now_new.since(&last_new);
                    canary.add(&probes);
                    let window = Window {
                        canary,
                        stable: Some(now_old.since(&last_old)),
                        crashes: restarts.saturating_sub(last_restarts),
                        unready,
                    };
                    (last_new, last_old, last_restarts) = (now_new, now_old, restarts);
                    let judged = judge(&analysis, &window);
                    let next = rollout.analysed(judged.verdict, &judged.reason, Instant::now());
                    self.record(
                        journal,
                        "analysis",
                        judged.verdict.as_str(),
                        format!(
                            "{}: {} -> {} [{}]",
                            rollout.describe(),
                            judged.reason,
                            describe(&next),
                            judged.numbers.summary()
                        ),
                        json!({ "numbers": judged.numbers, "next": next, "probes": probes.requests }),
                    )
                    .await;
                    next
                }
                Some(cmd) = rx.recv() => {
                    let what = format!("{cmd:?}").to_lowercase();
                    let next = rollout.command(cmd, Instant::now());
                    self.record(
                        journal,
                        "command",
                        "proceed",
                        format!("{what}: {}", describe(&next)),
                        json!({ "next": next }),
                    )
                    .await;
                    next
                }
            };
            match next {
                Next::Hold(_) => {}
                Next::Weight(w) => {
                    let opened = self.set_weight(&pair, w).await;
                    // The decision was recorded before the weight moved; this says it did.
                    self.record(
                        journal,
                        "weight",
                        "proceed",
                        format!(
                            "{w}% of traffic on {new_version}{}",
                            crate::opened_ahead(opened)
                        ),
                        json!({ "weight": w, "connections_opened": opened }),
                    )
                    .await;
                }
                Next::Complete => break Ok(()),
                Next::RollBack(why) => break Err(why),
            }
        };
        *lock(&slot.control) = None;
        let Err(why) = outcome else {
            journal.announce("promoted", &format!("{new_version} passed its rollout"));
            return Ok(());
        };
        // All traffic back first, then the new instances go.
        self.publisher
            .publish(pair.key, app_route(pair.spec, pair.old));
        slot.starting.set(None);
        pair.new.stop().await;
        self.record(
            journal,
            "rollback",
            "rollback",
            format!("rolled back: {why}; all traffic on {old_version}, {new_version} stopped"),
            json!({ "reason": why }),
        )
        .await;
        Err(DeployError::RolledBack(format!(
            "release {new_version} was rolled back: {why}\n{old_version} serves all traffic; \
             every decision: berth deploys {} --env {}",
            pair.key.app, pair.key.env
        )))
    }

    fn stats(&self, key: &AppKey, release: &str) -> StatsSnapshot {
        self.publisher.stats(key, release).unwrap_or_default()
    }

    /// Both releases on the app's route, the new one first with `weight` percent. Returns
    /// how many connections to the new one were opened ahead.
    async fn set_weight(&self, pair: &Pair<'_>, weight: u32) -> usize {
        let Some(mut route) = app_route(pair.spec, pair.new) else {
            return 0;
        };
        route.sticky = true;
        route.pools = vec![
            PoolSpec {
                release: pair.new.release.version.clone(),
                weight,
                upstreams: pair.new.web_addrs(),
            },
            PoolSpec {
                release: pair.old.release.version.clone(),
                weight: 100 - weight.min(100),
                upstreams: pair.old.web_addrs(),
            },
        ];
        route.release_dirs = [&pair.new, &pair.old]
            .map(|run| PathBuf::from(&run.release.artifact))
            .into();
        crate::switch_traffic(&*self.publisher, pair.key, Some(route)).await
    }

    /// The spec's synthetic requests, sent to the new instances in turn.
    async fn probe(&self, pair: &Pair<'_>, into: &mut StatsSnapshot) {
        let addrs = pair.new.web_addrs();
        if addrs.is_empty() {
            return;
        }
        let host = pair.spec.hosts.first().map_or("localhost", String::as_str);
        // All the probes of a window share a quarter of it, so a canary that hangs cannot
        // stretch the window (and the time to a rollback) past one interval.
        let budget = pair.spec.rollout.analysis.interval / 4;
        let deadline = Instant::now() + budget;
        let mut n = 0usize;
        for probe in &pair.spec.rollout.probes {
            for _ in 0..probe.count {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                let addr = addrs[n % addrs.len()];
                n += 1;
                match crate::http::get(addr, host, &probe.path, left).await {
                    Ok(a) => into.observe(a.status, a.took.as_secs_f64()),
                    // No answer is a server error as far as a user is concerned.
                    Err(_) => into.observe(599, left.as_secs_f64()),
                }
            }
        }
    }

    /// Sends `command` to the app's rollout in progress.
    pub fn control(&self, key: &AppKey, command: Command) -> Result<(), DeployError> {
        if let Some(slot) = self.existing_slot(key) {
            let waiting = lock(&slot.approval).as_ref().map(|p| p.deployment);
            if let Some(id) = waiting {
                return match command {
                    Command::Abort(by) => {
                        self.cancel_approval(&slot, &by);
                        Ok(())
                    }
                    _ => Err(DeployError::Conflict(format!(
                        "deployment {id} of {key} is waiting for approval, not rolling out: \
                         `{}` lets it start, `berth abort {} --env {}` cancels it",
                        crate::approval::approve_command(key, id),
                        key.app,
                        key.env
                    ))),
                };
            }
        }
        let sender = self
            .existing_slot(key)
            .and_then(|slot| lock(&slot.control).clone());
        let no_rollout = || {
            DeployError::Conflict(format!(
                "no canary or blue-green deploy of {key} is in progress; promote, abort, pause \
                 and resume act on one (berth ps {} --env {} shows what runs)",
                key.app, key.env
            ))
        };
        let sender = sender.ok_or_else(no_rollout)?;
        sender.send(command).map_err(|_| no_rollout())
    }
}

fn describe(next: &Next) -> String {
    match next {
        Next::Weight(w) => format!("moving {w}% of traffic to the new release"),
        Next::Hold(why) => why.clone(),
        Next::Complete => "promoting: all traffic to the new release".into(),
        Next::RollBack(why) => format!("rolling back: {why}"),
    }
}
