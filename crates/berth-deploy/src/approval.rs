//! `requires_approval`: a deploy is recorded (release and deployment) and then waits, holding
//! the app's deploy lock, until `berth approve` lets it start or `berth abort` cancels it.
//! Nothing of the new release runs while it waits. Once someone else may deploy to the
//! environment, the approver must be someone other than the deployer.

use std::time::Duration;

use berth_store::{Actor, Role, StoreError};
use serde_json::json;
use tokio::sync::oneshot;

use crate::error::DeployError;
use crate::{AppKey, Deployer, Slot, lock};

/// A deploy waiting for its answer.
pub(crate) struct Pending {
    pub deployment: i64,
    pub requested_by: String,
    answer: oneshot::Sender<Answer>,
}

enum Answer {
    /// By whom.
    Approved(String),
    Cancelled(String),
}

/// Why `approver` may not approve a deploy `requested_by` started, or `None` when they may.
/// Deployers approve their own deploys only while nobody else could (`others` is whether
/// another user may deploy to the environment): a lone admin is not locked out.
pub fn self_approval(requested_by: &str, approver: &str, others: bool) -> Option<String> {
    (requested_by == approver && others).then(|| {
        format!(
            "{approver} started this deploy and cannot approve it too: another user with the \
             deployer role on the environment must run berth approve"
        )
    })
}

/// `berth approve shop --env production 12`.
pub(crate) fn approve_command(key: &AppKey, deployment: i64) -> String {
    format!("berth approve {} --env {} {deployment}", key.app, key.env)
}

impl Deployer {
    /// Records that `deployment` waits for approval, then waits for the answer: `Ok` once
    /// approved (the store already says by whom), `Err(Cancelled)` after `berth abort` or
    /// when nobody approved within `wait` (`[deploy] approval_timeout`).
    pub(crate) async fn await_approval(
        &self,
        slot: &Slot,
        key: &AppKey,
        actor: &Actor,
        deployment: i64,
        wait: Duration,
        steps: &mut Vec<String>,
    ) -> Result<(), DeployError> {
        let (tx, rx) = oneshot::channel();
        *lock(&slot.approval) = Some(Pending {
            deployment,
            requested_by: actor.name.clone(),
            answer: tx,
        });
        let who = if self.others_deploy(key, &actor.name).await? {
            format!("a deployer other than {}", actor.name)
        } else {
            "a deployer".to_owned()
        };
        let within = humantime::format_duration(wait);
        let waiting = format!(
            "waiting for approval ([deploy] requires_approval): {who} runs `{}` within {}; \
             `berth abort {} --env {}` cancels the deploy",
            approve_command(key, deployment),
            within,
            key.app,
            key.env
        );
        self.step(deployment, "approval", "pause", &waiting, steps)
            .await;
        let answer = match tokio::time::timeout(wait, rx).await {
            Ok(answer) => answer,
            Err(_elapsed) => {
                // Take the pending approval back first, so a `berth approve` racing the
                // timeout is answered "nothing waits" rather than approving a dead deploy.
                lock(&slot.approval).take();
                let why = format!(
                    "not approved within {within} ([deploy] approval_timeout); nothing of the \
                     release was started"
                );
                self.step(deployment, "approval", "abort", &why, steps)
                    .await;
                self.finish(key, actor, deployment, "cancelled", &why).await;
                return Err(DeployError::Cancelled(format!(
                    "deployment {deployment} of {key} was {why}; deploy again to retry"
                )));
            }
        };
        match answer {
            Ok(Answer::Approved(by)) => {
                self.step(
                    deployment,
                    "approval",
                    "proceed",
                    &format!("approved by {by}"),
                    steps,
                )
                .await;
                Ok(())
            }
            Ok(Answer::Cancelled(by)) => {
                let why = format!(
                    "cancelled by {by} before approval; nothing of the release was started"
                );
                self.step(deployment, "approval", "abort", &why, steps)
                    .await;
                self.finish(key, actor, deployment, "cancelled", &why).await;
                Err(DeployError::Cancelled(format!(
                    "deployment {deployment} of {key} was {why}; deploy again to retry"
                )))
            }
            Err(_) => {
                let why = "the approval was dropped; nothing of the release was started";
                self.finish(key, actor, deployment, "cancelled", why).await;
                Err(DeployError::Cancelled(format!(
                    "deployment {deployment} of {key}: {why}; deploy again"
                )))
            }
        }
    }

    async fn step(
        &self,
        deployment: i64,
        step: &str,
        decision: &str,
        reason: &str,
        steps: &mut Vec<String>,
    ) {
        self.log_step(deployment, step, decision, reason, json!({}))
            .await;
        steps.push(reason.to_owned());
    }

    /// Lets the deploy of `key` that waits for approval start (`deployment`, when given,
    /// must be the one waiting). Returns its id.
    pub async fn approve(
        &self,
        key: &AppKey,
        deployment: Option<i64>,
        approver: &Actor,
    ) -> Result<i64, DeployError> {
        let nothing = || {
            DeployError::Conflict(format!(
                "no deploy of {key} is waiting for approval (berth deploys {} --env {} lists \
                 its deployments)",
                key.app, key.env
            ))
        };
        let slot = self.existing_slot(key).ok_or_else(nothing)?;
        let waiting = lock(&slot.approval)
            .as_ref()
            .map(|p| (p.deployment, p.requested_by.clone()));
        let (id, requested_by) = waiting.ok_or_else(nothing)?;
        if let Some(asked) = deployment
            && asked != id
        {
            return Err(DeployError::Conflict(format!(
                "deployment {asked} is not waiting for approval; deployment {id} of {key} is: {}",
                approve_command(key, id)
            )));
        }
        let others = self.others_deploy(key, &approver.name).await?;
        if let Some(why) = self_approval(&requested_by, &approver.name, others) {
            return Err(DeployError::SelfApproval(why));
        }
        // A lock taken while the deploy waited still holds it back.
        if let Some(held) = self.store.deploy_lock(&key.env, &key.app).await? {
            return Err(StoreError::Locked(Box::new(held)).into());
        }
        let mut tx = self.store.transaction().await?;
        tx.approve_deployment(approver, id).await?;
        tx.commit().await?;
        self.deployment_changed();
        if let Some(p) = lock(&slot.approval).take_if(|p| p.deployment == id) {
            // The deploy's task is gone only if berth is shutting down; the next start
            // cancels the deployment then.
            let _ = p.answer.send(Answer::Approved(approver.name.clone()));
        }
        Ok(id)
    }

    /// Whether a user other than `name` may deploy to the app's environment.
    async fn others_deploy(&self, key: &AppKey, name: &str) -> Result<bool, DeployError> {
        let users = self.store.list_users().await?;
        Ok(users
            .iter()
            .any(|u| u.name != name && u.can(Role::Deployer, &key.env)))
    }

    /// `berth abort` of a deploy waiting for approval: `Some(id)` when there was one.
    pub(crate) fn cancel_approval(&self, slot: &Slot, by: &str) -> Option<i64> {
        let pending = lock(&slot.approval).take()?;
        let id = pending.deployment;
        let _ = pending.answer.send(Answer::Cancelled(by.to_owned()));
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployer_approves_their_own_deploy_only_while_nobody_else_could() {
        assert!(self_approval("alice", "bob", true).is_none());
        assert!(self_approval("admin", "admin", false).is_none());
        let why = self_approval("admin", "admin", true).expect("refused");
        assert!(why.contains("another user"), "{why}");
        assert!(self_approval("alice", "alice", true).is_some());
    }
}
