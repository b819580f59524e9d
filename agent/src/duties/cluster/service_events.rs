//! What ECS says about the service in its events. A task ECS cannot place
//! is never created, so it is never a stopped task either: beyond the
//! account's Fargate vCPU quota, or while Fargate (Spot) has no capacity,
//! the service just runs fewer tasks than it wants. ECS says why only in the
//! service's events ("(service …) was unable to place a task. Reason: …"),
//! so the cluster duty reads them and puts the reason, with what to do, on
//! the Cluster line.

use fossa_contract::limits::{
    FARGATE_ON_DEMAND_VCPU_QUOTA, FARGATE_SPOT_VCPU_QUOTA, TASK_FAILURE_WINDOW_SECS,
};

/// What ECS writes when it could not place a task of the service.
const UNPLACED: [&str; 2] = ["was unable to place a task", "failed to launch a task"];

/// What ECS writes once the service runs what it wants.
const STEADY: &str = "has reached a steady state";

/// One service event: when (seconds since the epoch) and ECS's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEvent {
    /// When ECS wrote it.
    pub at: i64,
    /// What it says.
    pub message: String,
}

impl ServiceEvent {
    /// From the SDK's type.
    pub fn of(e: &aws_sdk_ecs::types::ServiceEvent) -> ServiceEvent {
        ServiceEvent {
            at: e.created_at().map_or(0, |d| d.secs()),
            message: e.message().unwrap_or_default().to_owned(),
        }
    }
}

/// The Cluster line's reason when the service runs fewer than `desired`
/// tasks and the newest word from ECS in the last 10 minutes is that it
/// could not place one (a later steady state clears it). `None` otherwise.
pub fn unplaced(events: &[ServiceEvent], running: i32, desired: i32, now: i64) -> Option<String> {
    if running >= desired {
        return None;
    }
    let newest = events
        .iter()
        .filter(|e| now - e.at <= TASK_FAILURE_WINDOW_SECS)
        .filter(|e| e.message.contains(STEADY) || UNPLACED.iter().any(|u| e.message.contains(u)))
        .max_by_key(|e| e.at)?;
    if newest.message.contains(STEADY) {
        return None;
    }
    let reason = reason_of(&newest.message);
    let what_to_do = if reason.contains("vCPU") {
        format!(
            "ask AWS for more Fargate vCPUs (Service Quotas, codes {FARGATE_ON_DEMAND_VCPU_QUOTA} \
             on-demand and {FARGATE_SPOT_VCPU_QUOTA} Spot), or run fewer or smaller workers"
        )
    } else if reason.contains("apacity is unavailable") {
        "Fargate has no capacity for these tasks in the stack's zones now, and ECS keeps \
         trying; with Spot, `fossa-bootstrap launch --no-spot` moves them to on-demand Fargate"
            .to_owned()
    } else {
        "ECS keeps trying; see the service's events in the ECS console".to_owned()
    };
    Some(format!(
        "{} of {desired} workers cannot be placed: {reason} ({} s ago); {what_to_do}",
        desired - running.max(0),
        (now - newest.at).max(0),
    ))
}

/// ECS's reason in `message`: what follows "Reason: ", without the pointer
/// to the troubleshooting guide; the whole message when it has none.
fn reason_of(message: &str) -> String {
    let reason = message
        .split_once("Reason: ")
        .map_or(message, |(_, r)| r)
        .split(" For more information")
        .next()
        .unwrap_or_default()
        .trim();
    let reason = reason.strip_suffix('.').unwrap_or(reason);
    // One line, and not a page of it.
    reason
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const QUOTA: &str = "(service fossa-dev-workers) was unable to place a task. Reason: You've reached the limit on the number of vCPUs you can run concurrently. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.";

    fn ev(ago: i64, message: &str) -> ServiceEvent {
        ServiceEvent {
            at: NOW - ago,
            message: message.into(),
        }
    }

    #[test]
    fn a_quota_refusal_names_the_shortfall_the_reason_and_the_quota() {
        let line = unplaced(&[ev(20, QUOTA)], 4, 6, NOW).unwrap();
        assert_eq!(
            line,
            "2 of 6 workers cannot be placed: You've reached the limit on the number of vCPUs \
             you can run concurrently (20 s ago); ask AWS for more Fargate vCPUs (Service \
             Quotas, codes L-3032A538 on-demand and L-36FBB829 Spot), or run fewer or smaller workers"
        );
    }

    #[test]
    fn spot_capacity_says_ecs_keeps_trying_and_how_to_leave_spot() {
        let msg = "(service fossa-dev-workers) was unable to place a task. Reason: Capacity is unavailable at this time. Please try again later or in a different availability zone. For more information, see the Troubleshooting section.";
        let line = unplaced(&[ev(5, msg)], 0, 1, NOW).unwrap();
        assert!(line.starts_with("1 of 1 workers cannot be placed: Capacity is unavailable at this time. Please try again later or in a different availability zone (5 s ago)"), "{line}");
        assert!(line.contains("--no-spot"), "{line}");
    }

    #[test]
    fn nothing_is_said_when_the_service_is_whole_or_the_word_is_old_or_superseded() {
        assert_eq!(
            unplaced(&[ev(20, QUOTA)], 6, 6, NOW),
            None,
            "running all it wants"
        );
        assert_eq!(
            unplaced(&[ev(TASK_FAILURE_WINDOW_SECS + 1, QUOTA)], 4, 6, NOW),
            None,
            "older than 10 minutes"
        );
        let steady = "(service fossa-dev-workers) has reached a steady state.";
        assert_eq!(
            unplaced(&[ev(5, steady), ev(60, QUOTA)], 4, 6, NOW),
            None,
            "a steady state since (starting tasks, not refused)"
        );
        assert!(unplaced(&[ev(60, steady), ev(5, QUOTA)], 4, 6, NOW).is_some());
        let other = "(service fossa-dev-workers) registered 1 targets in (target-group …)";
        assert_eq!(unplaced(&[ev(5, other)], 4, 6, NOW), None);
        assert_eq!(unplaced(&[], 0, 6, NOW), None);
    }

    #[test]
    fn a_reason_without_the_usual_shape_is_kept_whole_on_one_line() {
        let msg =
            "(service x) failed to launch a task with\n(error ECS was unable to assume the role)";
        let line = unplaced(&[ev(1, msg)], 0, 2, NOW).unwrap();
        assert!(
            line.starts_with("2 of 2 workers cannot be placed: (service x) failed to launch a task with (error ECS was unable to assume the role) (1 s ago); ECS keeps trying"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
