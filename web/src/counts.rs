//! The fleet's figures that more than one view shows: the overview's counts,
//! its JSON and the metrics. One computation from a snapshot, so a page and a
//! scrape never disagree.

use std::collections::BTreeMap;

use crate::model::{FleetSnapshot, Health, Worker};

/// What a worker is, as the overview and the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkerState {
    /// Its node answered the last poll with a valid node_info.
    Answering,
    /// Not running yet, or running and not polled yet.
    Starting,
    /// Running, and its last poll timed out, failed or was refused.
    Unreachable,
    /// Answered with something that is not a Fossa node.
    Garbage,
    /// Stopping or stopped (shown for a while after a Spot interruption).
    Stopped,
}

impl WorkerState {
    /// Every state, in the order they are listed.
    pub const ALL: [WorkerState; 5] = [
        WorkerState::Answering,
        WorkerState::Starting,
        WorkerState::Unreachable,
        WorkerState::Garbage,
        WorkerState::Stopped,
    ];

    /// The state of `w`.
    pub fn of(w: &Worker) -> WorkerState {
        match (&w.health, w.status.as_str()) {
            _ if w.stopping() => WorkerState::Stopped,
            (Health::Ok, _) => WorkerState::Answering,
            (Health::Garbage(_), _) => WorkerState::Garbage,
            (Health::Unknown, _) => WorkerState::Starting,
            (_, "RUNNING") => WorkerState::Unreachable,
            _ => WorkerState::Starting,
        }
    }

    /// The word (`answering`), a metric's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Answering => "answering",
            WorkerState::Starting => "starting",
            WorkerState::Unreachable => "unreachable",
            WorkerState::Garbage => "garbage",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// The counts of one snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Workers with ECS status (or local status) `RUNNING`.
    pub running: usize,
    /// Workers whose last poll was good.
    pub healthy: usize,
    /// Task slots of the nodes that answered (u64: a thousand nodes each
    /// claiming u32::MAX slots must not overflow).
    pub slots: u64,
    /// Of those, in use.
    pub used: u64,
    /// Tasks the nodes run now.
    pub running_tasks: usize,
    /// Workers kept from scale-in while they run work.
    pub protected: usize,
    /// Workers by state and capacity provider (`FARGATE`, `FARGATE_SPOT`, `local`).
    pub by_state: BTreeMap<(WorkerState, String), usize>,
}

impl Counts {
    /// The counts of `snap`.
    pub fn of(snap: &FleetSnapshot) -> Counts {
        let mut c = Counts::default();
        for w in &snap.workers {
            c.running += usize::from(w.status == "RUNNING");
            c.healthy += usize::from(w.health == Health::Ok);
            c.protected += usize::from(w.protected);
            *c.by_state
                .entry((WorkerState::of(w), w.capacity_provider.clone()))
                .or_default() += 1;
            if let Some(n) = &w.node {
                c.slots += u64::from(n.max_concurrent_tasks);
                c.used += u64::from(n.max_concurrent_tasks)
                    .saturating_sub(u64::from(n.available_processing_capacity));
                c.running_tasks += n.running_tasks.len();
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeInfo;

    fn worker(status: &str, health: Health, provider: &str, slots: Option<(u32, u32)>) -> Worker {
        Worker {
            status: status.into(),
            health,
            capacity_provider: provider.into(),
            node: slots.map(|(max, free)| NodeInfo {
                max_concurrent_tasks: max,
                available_processing_capacity: free,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn workers_are_counted_by_state_and_provider() {
        let snap = FleetSnapshot {
            workers: vec![
                Worker {
                    protected: true,
                    ..worker("RUNNING", Health::Ok, "FARGATE", Some((2, 1)))
                },
                worker("RUNNING", Health::Ok, "FARGATE_SPOT", Some((2, 2))),
                worker("PENDING", Health::Unknown, "FARGATE_SPOT", None),
                worker(
                    "RUNNING",
                    Health::Timeout("5 s".into()),
                    "FARGATE",
                    Some((2, 0)),
                ),
                worker("RUNNING", Health::Garbage("html".into()), "FARGATE", None),
                worker("STOPPED", Health::Ok, "FARGATE_SPOT", None),
            ],
            ..Default::default()
        };
        let c = Counts::of(&snap);
        assert_eq!((c.running, c.healthy, c.protected), (4, 3, 1));
        assert_eq!(
            (c.slots, c.used),
            (6, 3),
            "a node that stopped answering keeps its last slots"
        );
        let n = |s: WorkerState, p: &str| c.by_state.get(&(s, p.into())).copied().unwrap_or(0);
        assert_eq!(n(WorkerState::Answering, "FARGATE"), 1);
        assert_eq!(n(WorkerState::Answering, "FARGATE_SPOT"), 1);
        assert_eq!(n(WorkerState::Starting, "FARGATE_SPOT"), 1);
        assert_eq!(n(WorkerState::Unreachable, "FARGATE"), 1);
        assert_eq!(n(WorkerState::Garbage, "FARGATE"), 1);
        assert_eq!(n(WorkerState::Stopped, "FARGATE_SPOT"), 1);
        assert_eq!(c.by_state.values().sum::<usize>(), snap.workers.len());
    }

    #[test]
    fn a_worker_on_its_way_out_answers_but_takes_no_work() {
        let running = worker("RUNNING", Health::Ok, "FARGATE_SPOT", Some((2, 1)));
        let draining = worker("STOPPING", Health::Ok, "FARGATE_SPOT", Some((2, 1)));
        assert!(running.takes_work() && !running.stopping());
        assert!(draining.stopping() && !draining.takes_work());
        assert_eq!(WorkerState::of(&draining), WorkerState::Stopped);
        let silent = worker("RUNNING", Health::Timeout("5 s".into()), "FARGATE", None);
        assert!(!silent.takes_work());
    }
}
