//! The service's deployment as ECS reports it (`rolloutState`) and when the
//! cluster duty starts another. With the deployment circuit breaker on (it
//! is, with rollback), ECS marks a deployment whose tasks keep failing to
//! start FAILED and launches no more of them; with a completed deployment
//! before it, ECS rolls the service back to that one. A first deployment
//! has nothing to go back to, so without the duty the service would stay
//! at zero; and a duty that simply pointed the service at its revision
//! again would fight every rollback.
//!
//! So the duty remembers what it started each deployment with: the task
//! definition, and how many times the parts a worker needs (NAT, the
//! broker, the image) had become well. It starts another only when one of
//! those changed since: a new image or configuration (a new revision), or
//! a part that recovered. Never twice for the same cause.

use aws_sdk_ecs::types::Service;

/// The duties whose recovery can be what let a failed deployment start.
pub const CAUSES: [&str; 3] = ["nat", "broker", "image"];

/// What the service's PRIMARY deployment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// Its task definition ARN.
    pub task_definition: String,
    /// Whether ECS gave up on it.
    pub failed: bool,
    /// ECS's `rolloutStateReason`.
    pub reason: String,
}

impl Rollout {
    /// The PRIMARY deployment of `s`, if it reports one with a rollout state.
    pub fn of(s: &Service) -> Option<Rollout> {
        let d = s
            .deployments()
            .iter()
            .find(|d| d.status() == Some("PRIMARY"))?;
        let state = d.rollout_state()?;
        Some(Rollout {
            task_definition: d.task_definition().unwrap_or_default().to_owned(),
            failed: *state == aws_sdk_ecs::types::DeploymentRolloutState::Failed,
            reason: d.rollout_state_reason().unwrap_or_default().to_owned(),
        })
    }
}

/// What the cluster duty remembers between rounds.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// What it started the service's last deployment with.
    pub started: Option<Cause>,
    /// The recoveries of [`CAUSES`] now.
    pub recoveries: u64,
}

/// What a deployment was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The task definition ARN the duty wants.
    pub task_definition: String,
    /// The recoveries of [`CAUSES`] counted then.
    pub recoveries: u64,
}

/// What to do with the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// It runs, or moves to, what the duty wants.
    Fine,
    /// Point it at the wanted task definition: a new deployment.
    Update,
    /// Its deployment of the wanted task definition failed and something
    /// changed since the duty started it: a new deployment of the same.
    Redeploy,
    /// Its deployment failed, or ECS rolled it back, and nothing changed
    /// since: show why and wait for a change.
    Failed {
        /// ECS's reason, and what happens next.
        reason: String,
    },
}

/// The step for a service on `service_td` whose PRIMARY deployment is
/// `primary`, when the duty wants `wanted` and last started `started`.
/// `failed_event` is ECS's newest "deployment failed" service event, which
/// is all that is left of a deployment ECS rolled back.
pub fn decide(
    wanted: &Cause,
    service_td: &str,
    primary: Option<&Rollout>,
    started: Option<&Cause>,
    failed_event: Option<&str>,
) -> Step {
    let tried = started == Some(wanted);
    let short = |arn: &str| fossa_contract::aws::arn_resource_id(arn).to_owned();
    if service_td != wanted.task_definition {
        if !tried {
            return Step::Update;
        }
        let why = failed_event.unwrap_or("its deployment failed");
        return Step::Failed {
            reason: format!(
                "ECS rolled the service back to {} from {}: {why}; a new deployment starts when NAT, the broker or the image recover, or with a new image or configuration",
                short(service_td),
                short(&wanted.task_definition)
            ),
        };
    }
    match primary {
        Some(p) if p.failed && p.task_definition == wanted.task_definition => {
            if tried {
                Step::Failed {
                    reason: format!(
                        "deployment of {} FAILED: {}; a new one starts when NAT, the broker or the image recover, or with a new image or configuration",
                        short(&wanted.task_definition),
                        p.reason
                    ),
                }
            } else {
                Step::Redeploy
            }
        }
        _ => Step::Fine,
    }
}

/// ECS's newest service event saying a deployment failed, without the
/// `(service …)` prefix.
pub fn failed_event(events: &[super::service_events::ServiceEvent]) -> Option<&str> {
    events
        .iter()
        .map(|e| e.message.as_str())
        .find(|m| m.contains("deployment failed"))
        .map(|m| m.split_once(") ").map_or(m, |(_, rest)| rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(td: &str, recoveries: u64) -> Cause {
        Cause {
            task_definition: format!("arn:aws:ecs:r:1:task-definition/{td}"),
            recoveries,
        }
    }

    fn failed(td: &str) -> Rollout {
        Rollout {
            task_definition: format!("arn:aws:ecs:r:1:task-definition/{td}"),
            failed: true,
            reason: "ECS deployment circuit breaker: tasks failed to start.".into(),
        }
    }

    #[test]
    fn a_failed_first_deployment_is_retried_once_per_cause() {
        let td = cause("w:1", 0).task_definition;
        let p = failed("w:1");
        // Started with NAT not yet well: NAT has recovered since, so once more.
        assert_eq!(
            decide(
                &cause("w:1", 2),
                &td,
                Some(&p),
                Some(&cause("w:1", 1)),
                None
            ),
            Step::Redeploy
        );
        // Started with this cause already: say why and wait.
        match decide(
            &cause("w:1", 2),
            &td,
            Some(&p),
            Some(&cause("w:1", 2)),
            None,
        ) {
            Step::Failed { reason } => {
                assert!(
                    reason.contains(
                        "w:1 FAILED: ECS deployment circuit breaker: tasks failed to start."
                    ),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // After an agent restart it knows nothing it started: one more.
        assert_eq!(
            decide(&cause("w:1", 0), &td, Some(&p), None, None),
            Step::Redeploy
        );
    }

    #[test]
    fn a_rollback_is_not_fought() {
        let old = cause("w:1", 0).task_definition;
        let wanted = cause("w:2", 3);
        // The duty moved the service to w:2; ECS rolled it back to w:1.
        match decide(
            &wanted,
            &old,
            None,
            Some(&wanted),
            Some("(deployment ecs-svc/1) deployment failed: tasks failed to start."),
        ) {
            Step::Failed { reason } => {
                assert!(
                    reason.contains("rolled the service back to w:1 from w:2"),
                    "{reason}"
                );
                assert!(reason.contains("tasks failed to start"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // A recovery since, or a newer revision: move again.
        assert_eq!(
            decide(&cause("w:2", 4), &old, None, Some(&wanted), None),
            Step::Update
        );
        assert_eq!(
            decide(&cause("w:3", 3), &old, None, Some(&wanted), None),
            Step::Update
        );
    }

    #[test]
    fn a_healthy_or_running_deployment_is_left_alone() {
        let wanted = cause("w:2", 0);
        let running = Rollout {
            failed: false,
            ..failed("w:2")
        };
        assert_eq!(
            decide(&wanted, &wanted.task_definition, Some(&running), None, None),
            Step::Fine
        );
        assert_eq!(
            decide(&wanted, &wanted.task_definition, None, None, None),
            Step::Fine
        );
        // A failed deployment of another revision is not this one's.
        assert_eq!(
            decide(
                &wanted,
                &wanted.task_definition,
                Some(&failed("w:1")),
                None,
                None
            ),
            Step::Fine
        );
    }

    #[test]
    fn the_failed_event_loses_its_service_prefix() {
        let e = |m: &str| super::super::service_events::ServiceEvent {
            message: m.into(),
            at: 0,
        };
        let events = [
            e("(service s) has reached a steady state."),
            e("(service s) (deployment ecs-svc/9) deployment failed: tasks failed to start."),
        ];
        assert_eq!(
            failed_event(&events),
            Some("(deployment ecs-svc/9) deployment failed: tasks failed to start.")
        );
    }
}
