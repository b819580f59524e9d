//! The cluster duty: the stack's ECS cluster (FARGATE and FARGATE_SPOT), its
//! log group (7 days), the worker task definition and the service in the
//! private subnets. The desired task definition is plain data whose hash is
//! kept as a tag on each revision, so a new revision is registered only when
//! the image or the config changed, and the service is only updated then.
//! Scaling changes desiredCount and nothing else.

pub mod ecs;
pub mod rollout;
pub mod service_events;
pub mod stopped_tasks;
pub mod tasks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fossa_contract::config::StackConfig;
use tokio::sync::watch;

use super::{watched, Duty, DutyError, Next, Outcome, Shared, WorkerImage};
use crate::settings::Settings;
pub use ecs::{
    ensure_cluster, ensure_log_group, ensure_service, ensure_task_definition, scale, ClusterError,
    ServiceChange, ServiceSeen, TaskSpec, LOG_RETENTION_DAYS,
};

/// How soon the cluster duty looks again while worker tasks keep failing.
const FAILING_RECHECK: Duration = Duration::from_secs(15);

/// What [`reconcile`] did and saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// What changed, or that nothing did.
    pub summary: String,
    /// The service's desiredCount.
    pub desired: i32,
    /// Its running tasks and its events (newest first), as ECS reports them.
    pub running: i32,
    /// See `running`.
    pub events: Vec<service_events::ServiceEvent>,
    /// Why the service's deployment failed, while nothing changed to start another.
    pub failed: Option<String>,
}

/// Converges cluster, log group, task definition and service, knowing
/// nothing of deployments started before.
pub async fn reconcile(
    ecs: &aws_sdk_ecs::Client,
    logs: &aws_sdk_cloudwatchlogs::Client,
    cfg: &StackConfig,
    image: &str,
) -> Result<Reconciled, ClusterError> {
    reconcile_tracked(ecs, logs, cfg, image, &mut rollout::Tracker::default()).await
}

/// [`reconcile`] with what the duty remembers of the deployments it started.
pub async fn reconcile_tracked(
    ecs: &aws_sdk_ecs::Client,
    logs: &aws_sdk_cloudwatchlogs::Client,
    cfg: &StackConfig,
    image: &str,
    tracker: &mut rollout::Tracker,
) -> Result<Reconciled, ClusterError> {
    let mut changes = Vec::new();
    if ensure_log_group(logs, &cfg.stack).await? {
        changes.push("created the log group".to_owned());
    }
    if ensure_cluster(ecs, &cfg.stack).await? {
        changes.push("created the cluster".to_owned());
    }
    let spec = TaskSpec::new(cfg, image);
    let (arn, registered) = ensure_task_definition(ecs, &cfg.stack, &spec).await?;
    if registered {
        changes.push(format!(
            "registered {}",
            fossa_contract::aws::arn_resource_id(&arn)
        ));
    }
    let seen = ensure_service(ecs, cfg, &arn, tracker).await?;
    let desired = seen.desired;
    match seen.change {
        ServiceChange::Created => {
            changes.push(format!("created the service with {desired} workers"))
        }
        ServiceChange::Updated => changes.push("updated the service to the new revision".into()),
        ServiceChange::Providers { revision } => changes.push(format!(
            "moved the service to {}{} (a new deployment)",
            if cfg.spot {
                "Fargate with Fargate Spot"
            } else {
                "Fargate only"
            },
            if revision {
                " and the new revision"
            } else {
                ""
            }
        )),
        ServiceChange::Redeployed => changes.push(
            "started a new deployment: the last one failed, and NAT, the broker or the image recovered since".into(),
        ),
        ServiceChange::None => {}
    }
    let summary = if changes.is_empty() {
        format!(
            "cluster up to date ({})",
            fossa_contract::aws::arn_resource_id(&arn)
        )
    } else {
        changes.join(", ")
    };
    Ok(Reconciled {
        summary,
        desired,
        running: seen.running,
        events: seen.events,
        failed: seen.failed,
    })
}

/// The cluster duty: waits for the image duty's first image, then converges
/// the cluster, log group, task definition and service onto it.
pub struct ClusterDuty {
    image: watch::Receiver<Option<WorkerImage>>,
    desired: Arc<watch::Sender<Option<u32>>>,
    /// The configuration's worker count this duty last saw: a new one
    /// (`launch --workers`, `fossa-bootstrap scale`) becomes the service's.
    configured_workers: Option<u32>,
    events: crate::events::Events,
    /// Spot interruptions, for the workers list.
    interrupted: Arc<watch::Sender<Vec<stopped_tasks::StoppedTask>>>,
    /// The interruptions already told as events.
    told: std::collections::HashSet<String>,
    /// What it started the last deployment with.
    tracker: rollout::Tracker,
    recoveries: Arc<super::driver::Recoveries>,
}

impl ClusterDuty {
    /// The duty, watching `shared`'s image.
    pub fn new(shared: &Shared) -> Self {
        ClusterDuty {
            image: shared.image.subscribe(),
            desired: shared.desired.clone(),
            configured_workers: None,
            events: shared.events.clone(),
            interrupted: shared.interrupted.clone(),
            told: std::collections::HashSet::new(),
            tracker: rollout::Tracker::default(),
            recoveries: shared.recoveries.clone(),
        }
    }

    /// Tells each new Spot interruption once, and shows the recent ones.
    fn interruptions(&mut self, stopped: &[aws_sdk_ecs::types::Task], now: i64) {
        let recent: Vec<_> = stopped
            .iter()
            .filter_map(stopped_tasks::interrupted)
            .filter(|t| now - t.stopped_at <= fossa_contract::limits::TASK_FAILURE_WINDOW_SECS)
            .collect();
        for t in &recent {
            if self.told.insert(t.id.clone()) {
                self.events.push(
                    "workers",
                    true,
                    format!(
                        "worker {} on Fargate Spot was interrupted: {}; the service starts a replacement",
                        t.id, t.reason
                    ),
                );
            }
        }
        self.told.retain(|id| recent.iter().any(|t| t.id == *id));
        self.interrupted.send_replace(recent);
    }
}

#[async_trait]
impl Duty<Settings> for ClusterDuty {
    async fn reconcile(&mut self, s: &Settings) -> Result<Outcome, DutyError> {
        if let Some(o) = super::standing_down(s) {
            return Ok(o);
        }
        let Some(image) = self.image.borrow_and_update().clone() else {
            return Ok(Outcome::waiting("waiting for the worker image"));
        };
        let c = &s.clients;
        self.tracker.recoveries = self.recoveries.of(&rollout::CAUSES);
        let Reconciled {
            mut summary,
            desired,
            running,
            events,
            failed,
        } = reconcile_tracked(
            &c.ecs,
            &c.logs,
            &s.stack,
            &image.reference,
            &mut self.tracker,
        )
        .await?;
        let mut desired = desired.max(0) as u32;
        let wanted = s.stack.workers;
        if self.configured_workers.is_some_and(|seen| seen != wanted) && desired != wanted {
            scale(&c.ecs, &s.stack.stack, wanted).await?;
            summary =
                format!("{summary}; desired workers {desired} → {wanted} from the configuration");
            desired = wanted;
        }
        self.configured_workers = Some(wanted);
        self.desired.send_replace(Some(desired));
        let mut outcome = Outcome::done(summary);
        let stopped = stopped_tasks::list(&c.ecs, &s.stack.stack)
            .await
            .map_err(ClusterError::from)?;
        let now = fossa_contract::unix_now();
        // Against the count just set, so a scale-down from the configuration
        // is not reported as workers that cannot be placed.
        let unplaced = service_events::unplaced(&events, running, desired as i32, now);
        self.interruptions(&stopped, now);
        let failures: Vec<_> = stopped.iter().filter_map(stopped_tasks::failed).collect();
        let trouble: Vec<String> = failed
            .into_iter()
            .chain(stopped_tasks::summary(&failures, now))
            .chain(unplaced)
            .collect();
        if !trouble.is_empty() {
            // Unwell while tasks fail or cannot be placed; look again soon,
            // to see them recover.
            outcome.detail = Some(trouble.join("; "));
            outcome.healthy = false;
            outcome.next = Next::After(FAILING_RECHECK);
        }
        Ok(outcome)
    }
    async fn changed(&mut self) {
        watched(&mut self.image).await
    }
}
