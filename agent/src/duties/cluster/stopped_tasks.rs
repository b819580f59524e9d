//! Worker tasks that stopped on their own: a container that exited, or a task
//! that never started (its image could not be pulled, its secret not read).
//! ECS replaces them, so they never show as workers; the cluster duty reports
//! them instead, with ECS's own reason, so a crash loop is visible. Tasks
//! that Fargate Spot took back are reported too: each as an event, and for
//! a while as a stopped row among the workers.

use aws_sdk_ecs::types::Task;
use fossa_contract::aws::AwsError;
use fossa_contract::limits::TASK_FAILURE_WINDOW_SECS;
use fossa_contract::StackName;

/// ECS stop codes that mean the task failed, not that it was stopped on purpose
/// (scale-in, a deployment, StopTask) or interrupted (Spot).
const FAILURE_CODES: [&str; 2] = ["EssentialContainerExited", "TaskFailedToStart"];

/// A task that stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedTask {
    /// Its id (the last part of its ARN).
    pub id: String,
    /// ECS's `stoppedReason`.
    pub reason: String,
    /// The worker container's exit code, when it ran.
    pub exit_code: Option<i32>,
    /// When it stopped, seconds since the epoch.
    pub stopped_at: i64,
}

/// ECS's stop code for a task Fargate Spot took back.
pub const SPOT_INTERRUPTION: &str = "SpotInterruption";

/// The task as a [`StoppedTask`], if it failed.
pub fn failed(t: &Task) -> Option<StoppedTask> {
    let code = t.stop_code()?.as_str();
    if !FAILURE_CODES.contains(&code) {
        return None;
    }
    stopped(t)
}

/// The task as a [`StoppedTask`], if Fargate Spot interrupted it.
pub fn interrupted(t: &Task) -> Option<StoppedTask> {
    if t.stop_code()?.as_str() != SPOT_INTERRUPTION {
        return None;
    }
    stopped(t)
}

fn stopped(t: &Task) -> Option<StoppedTask> {
    let arn = t.task_arn()?;
    Some(StoppedTask {
        id: fossa_contract::aws::arn_resource_id(arn).to_owned(),
        reason: t
            .stopped_reason()
            .unwrap_or_else(|| t.stop_code().map_or("stopped", |c| c.as_str()))
            .to_owned(),
        exit_code: t.containers().first().and_then(|c| c.exit_code()),
        stopped_at: t.stopped_at().map_or(0, |d| d.secs()),
    })
}

/// One line about the failures within the window before `now`, newest
/// described; `None` when there are none.
pub fn summary(failures: &[StoppedTask], now: i64) -> Option<String> {
    let recent: Vec<&StoppedTask> = failures
        .iter()
        .filter(|f| now - f.stopped_at <= TASK_FAILURE_WINDOW_SECS)
        .collect();
    let last = recent.iter().max_by_key(|f| f.stopped_at)?;
    let exit = last
        .exit_code
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default();
    let n = recent.len();
    Some(format!(
        "{n} worker task{} stopped on {} own in the last {} min; the latest, {}: {}{exit}",
        if n == 1 { "" } else { "s" },
        if n == 1 { "its" } else { "their" },
        TASK_FAILURE_WINDOW_SECS / 60,
        last.id,
        last.reason
    ))
}

/// The service's stopped tasks (ECS keeps them for about an hour), at most
/// [`STOPPED_TASKS_READ`]: every page, so the newest are not missed behind
/// a crash loop's hundred.
pub async fn list(ecs: &aws_sdk_ecs::Client, stack: &StackName) -> Result<Vec<Task>, AwsError> {
    super::tasks::service_tasks(
        ecs,
        stack,
        aws_sdk_ecs::types::DesiredStatus::Stopped,
        STOPPED_TASKS_READ,
    )
    .await
}

/// The most stopped tasks one look reads.
pub const STOPPED_TASKS_READ: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{Container, TaskStopCode};
    use aws_smithy_types::DateTime;

    fn task(code: TaskStopCode, reason: &str, exit: Option<i32>, at: i64) -> Task {
        Task::builder()
            .task_arn(format!("arn:aws:ecs:eu-west-2:1:task/fossa-s/{at:032x}"))
            .stop_code(code)
            .stopped_reason(reason)
            .stopped_at(DateTime::from_secs(at))
            .containers(Container::builder().set_exit_code(exit).build())
            .build()
    }

    #[test]
    fn only_tasks_that_failed_count() {
        let exited = task(
            TaskStopCode::EssentialContainerExited,
            "Essential container in task exited",
            Some(3),
            100,
        );
        let scaled = task(
            TaskStopCode::ServiceSchedulerInitiated,
            "Scaling activity initiated by (deployment ecs-svc/1)",
            Some(0),
            101,
        );
        let spot = task(
            TaskStopCode::SpotInterruption,
            "Your Spot Task was interrupted.",
            None,
            102,
        );
        assert_eq!(failed(&exited).unwrap().exit_code, Some(3));
        assert!(failed(&scaled).is_none());
        assert!(failed(&spot).is_none());
        let i = interrupted(&spot).unwrap();
        assert_eq!(i.reason, "Your Spot Task was interrupted.");
        assert!(interrupted(&exited).is_none() && interrupted(&scaled).is_none());
    }

    #[test]
    fn the_summary_names_the_latest_reason_within_the_window() {
        let now = 10_000;
        let old = StoppedTask {
            id: "old".into(),
            reason: "Essential container in task exited".into(),
            exit_code: Some(1),
            stopped_at: now - TASK_FAILURE_WINDOW_SECS - 1,
        };
        assert_eq!(summary(std::slice::from_ref(&old), now), None);
        let pull = StoppedTask {
            id: "abc".into(),
            reason: "CannotPullContainerError: registry unreachable".into(),
            exit_code: None,
            stopped_at: now - 5,
        };
        let exited = StoppedTask {
            id: "def".into(),
            reason: "Essential container in task exited".into(),
            exit_code: Some(3),
            stopped_at: now - 1,
        };
        assert_eq!(
            summary(&[old, pull.clone()], now).unwrap(),
            "1 worker task stopped on its own in the last 10 min; the latest, abc: CannotPullContainerError: registry unreachable"
        );
        assert_eq!(
            summary(&[pull, exited], now).unwrap(),
            "2 worker tasks stopped on their own in the last 10 min; the latest, def: Essential container in task exited (exit code 3)"
        );
    }
}
