//! Views derived from a snapshot: every task across the fleet, and a task
//! with the subtasks it spawned on other nodes grouped under it.
//!
//! Fossa does not publish which parent a subtask belongs to. Siblings share a
//! `pool_id` and a `reply_to` (from the subtask id `"{pool_id}:{n}::{reply_to}"`);
//! a group is linked to a parent of the same model class whose run covers the
//! group's. When more than one parent fits, the link is marked uncertain
//! instead of guessed.

use serde::Serialize;

use crate::model::{FleetSnapshot, FossaTask, TaskRow, TaskStatus};

/// Seconds of clock slack allowed between nodes (Fossa's dates have 1 s resolution).
const SLACK: i64 = 2;

/// Subtasks sharing a pool and reply queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// The pool id.
    pub pool_id: String,
    /// The parent's reply queue.
    pub reply_to: String,
    /// Model class of the subtasks.
    pub model_class: String,
    /// The subtasks, by index.
    pub subtasks: Vec<TaskRow>,
    /// Distinct workers that ran them.
    pub workers: Vec<String>,
    /// Whether the parent link is unambiguous.
    pub certain: bool,
    /// Ids of every parent that fits.
    pub candidates: Vec<String>,
}

impl Group {
    fn span(&self) -> (Option<i64>, Option<i64>) {
        let start = self.subtasks.iter().filter_map(|s| s.task.started).min();
        let end = self
            .subtasks
            .iter()
            .filter_map(|s| s.task.finished.or(s.task.started))
            .max();
        (start, end)
    }
}

fn covers(parent: &FossaTask, group: &Group) -> bool {
    if parent.model_class != group.model_class {
        return false;
    }
    let (start, end) = group.span();
    let (Some(ps), Some(gs)) = (parent.started, start) else {
        return false;
    };
    if gs.saturating_add(SLACK) < ps {
        return false;
    }
    match (parent.finished, end) {
        (Some(pf), Some(ge)) => ge <= pf.saturating_add(SLACK),
        _ => true,
    }
}

/// Groups every subtask and links each group to the parents that fit.
pub fn groups(tasks: &[TaskRow]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    // Each group's place in `out`, by (pool, reply queue): a worker
    // reporting thousands of pools costs a lookup each, not a scan.
    let mut at: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
    for row in tasks {
        let Some((pool, _, reply)) = row.task.subtask_parts() else {
            continue;
        };
        match at.get(&(pool, reply)) {
            Some(&i) => out[i].subtasks.push(row.clone()),
            None => {
                at.insert((pool, reply), out.len());
                out.push(Group {
                    pool_id: pool.to_owned(),
                    reply_to: reply.to_owned(),
                    model_class: row.task.model_class.clone(),
                    subtasks: vec![row.clone()],
                    workers: Vec::new(),
                    certain: false,
                    candidates: Vec::new(),
                });
            }
        }
    }
    let parents: Vec<&TaskRow> = tasks
        .iter()
        .filter(|r| r.task.subtask_parts().is_none())
        .collect();
    for g in &mut out {
        g.subtasks
            .sort_by_key(|s| s.task.subtask_parts().map(|p| p.1));
        let mut workers: Vec<String> = g.subtasks.iter().map(|s| s.worker_id.clone()).collect();
        workers.sort();
        workers.dedup();
        g.workers = workers;
        g.candidates = parents
            .iter()
            .filter(|p| covers(&p.task, g))
            .map(|p| p.task.task_id.clone())
            .collect();
        g.certain = g.candidates.len() == 1;
    }
    out
}

/// A task with its subtasks, or a subtask with its parent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskDetail {
    /// The task.
    pub task: TaskRow,
    /// For a parent: the subtask groups linked to it.
    pub groups: Vec<Group>,
    /// For a subtask: its group (with the parent candidates).
    pub group: Option<Group>,
    /// For a running parent that can never finish: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck: Option<String>,
    /// For a task the gateway submitted again after it was lost with its
    /// node: every attempt, first first (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<crate::model::Attempt>,
}

/// Why a running parent can never finish, if it cannot, once nothing of its
/// groups runs any more: some subtask was lost with its worker (Fossa takes
/// a subtask off the queue when it starts it, so nobody runs it again) and
/// no other run of it exists; or a subtask was never seen at all while a
/// later one of its group was. The queue is first in, first out, so a
/// worker took that one first and was lost before the gateway's next look.
/// The parent then waits for a reply forever.
pub fn stuck(parent: &TaskRow, groups: &[Group]) -> Option<String> {
    if parent.task.status != TaskStatus::Running {
        return None;
    }
    let mut lost: Vec<(u32, &TaskRow)> = Vec::new();
    let mut unseen: Vec<u32> = Vec::new();
    for g in groups {
        if g.subtasks
            .iter()
            .any(|s| s.task.status == TaskStatus::Running)
        {
            return None;
        }
        let ns: std::collections::BTreeSet<u32> = g
            .subtasks
            .iter()
            .filter_map(|s| s.task.subtask_parts().map(|p| p.1))
            .collect();
        if let (Some(&low), Some(&high)) = (ns.first(), ns.last()) {
            unseen.extend((low..high).filter(|n| !ns.contains(n)));
        }
        for s in &g.subtasks {
            let Some((_, n, _)) = s.task.subtask_parts() else {
                continue;
            };
            let replaced = g.subtasks.iter().any(|o| {
                o.task.subtask_parts().map(|p| p.1) == Some(n) && o.task.status != TaskStatus::Lost
            });
            let put_back = s
                .task
                .results
                .as_ref()
                .and_then(|r| r["payload"]["reason"].as_str())
                .is_some_and(|r| r.contains(crate::task::PUT_BACK));
            if s.task.status == TaskStatus::Lost && !replaced && !put_back {
                lost.push((n, s));
            }
        }
    }
    let Some((_, first)) = lost.first() else {
        let (s, list) = plural(&unseen)?;
        return Some(format!(
            "stuck: subtask{s} {list} never seen running, though later ones of {} were: a worker took it from the queue (first in, first out) and was lost before the gateway's next look, so nothing can put it back, and this task waits for {} forever. Submit it again.",
            if unseen.len() == 1 { "its group" } else { "their group" },
            if unseen.len() == 1 { "its reply" } else { "their replies" },
        ));
    };
    let mut ns: Vec<u32> = lost.iter().map(|(n, _)| *n).collect();
    ns.sort_unstable();
    ns.dedup();
    let why = first
        .task
        .results
        .as_ref()
        .and_then(|r| r["payload"]["reason"].as_str())
        .unwrap_or("its worker stopped");
    let (s, list) = plural(&ns)?;
    Some(format!(
        "stuck: subtask{s} {list} lost ({why}) and not put back on the queue (Fossa does not run a lost subtask again), so this task waits for {} forever. Submit it again.",
        if ns.len() == 1 { "its reply" } else { "their replies" },
    ))
}

/// `"s"` or `""` for the numbers `ns`, and them listed, `None` when empty.
fn plural(ns: &[u32]) -> Option<(&'static str, String)> {
    let list: Vec<String> = ns.iter().map(u32::to_string).collect();
    match ns.len() {
        0 => None,
        1 => Some(("", format!("{} was", list[0]))),
        _ => Some(("s", format!("{} were", list.join(", ")))),
    }
}

/// A task this gateway dispatched, as a row, for the moment before its node reports it.
fn dispatched_row(snap: &FleetSnapshot, id: &str) -> Option<TaskRow> {
    let d = snap.dispatched.iter().rev().find(|d| d.task_id == id)?;
    Some(TaskRow {
        task: FossaTask {
            task_id: d.task_id.clone(),
            model_class: d.model_class.clone(),
            method: None,
            method_kwargs: serde_json::Value::Null,
            status: TaskStatus::Dispatched,
            started: Some(d.at),
            finished: None,
            results: None,
            spec: Default::default(),
        },
        worker_id: d.worker_id.clone(),
        worker_address: snap
            .workers
            .iter()
            .find(|w| w.id == d.worker_id)
            .map(|w| w.address.clone())
            .unwrap_or_default(),
    })
}

/// The detail view of task `id`, if any worker reports it or this gateway dispatched it.
pub fn task_detail(snap: &FleetSnapshot, id: &str) -> Option<TaskDetail> {
    task_detail_with(snap, Vec::new(), id)
}

/// [`task_detail`] over what the workers report now plus `recorded` rows
/// from the history (what the workers report wins; recorded rows fill in
/// what restarted or replaced workers forgot).
pub fn task_detail_with(
    snap: &FleetSnapshot,
    recorded: Vec<TaskRow>,
    id: &str,
) -> Option<TaskDetail> {
    let mut tasks = snap.tasks();
    // A parent of many subtasks brings as many recorded rows: looked up,
    // not compared with every reported task.
    let reported: std::collections::HashSet<(String, String)> = tasks
        .iter()
        .map(|t| (t.worker_id.clone(), t.task.task_id.clone()))
        .collect();
    for r in recorded {
        if !reported.contains(&(r.worker_id.clone(), r.task.task_id.clone())) {
            tasks.push(r);
        }
    }
    let Some(task) = tasks.iter().find(|t| t.task.task_id == id).cloned() else {
        return dispatched_row(snap, id).map(|task| TaskDetail {
            task,
            groups: Vec::new(),
            group: None,
            stuck: None,
            attempts: Vec::new(),
        });
    };
    let all = groups(&tasks);
    if task.task.subtask_parts().is_some() {
        let group = all
            .into_iter()
            .find(|g| g.subtasks.iter().any(|s| s.task.task_id == id));
        Some(TaskDetail {
            task,
            groups: Vec::new(),
            group,
            stuck: None,
            attempts: Vec::new(),
        })
    } else {
        let linked: Vec<Group> = all
            .into_iter()
            .filter(|g| g.candidates.iter().any(|c| c == id))
            .collect();
        Some(TaskDetail {
            stuck: stuck(&task, &linked),
            task,
            groups: linked,
            group: None,
            attempts: Vec::new(),
        })
    }
}

/// Whether `id` looks like a Fossa task id (refuses path tricks and junk).
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.contains("..")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-' | '+' | '='))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Health, NodeInfo, Worker};
    use serde_json::Value;

    fn task(id: &str, class: &str, status: &str, started: i64, finished: Option<i64>) -> FossaTask {
        FossaTask {
            task_id: id.into(),
            model_class: class.into(),
            method: Some("go".into()),
            method_kwargs: Value::Null,
            status: status.into(),
            started: Some(started),
            finished,
            results: None,
            spec: Default::default(),
        }
    }

    fn worker(id: &str, running: Vec<FossaTask>, done: Vec<FossaTask>) -> Worker {
        Worker {
            id: id.into(),
            address: format!("{id}:2345"),
            status: "RUNNING".into(),
            health: Health::Ok,
            started_at: None,
            capacity_provider: "local".into(),
            node: Some(NodeInfo {
                node_ident: id.into(),
                max_concurrent_tasks: 4,
                available_processing_capacity: 4,
                running_tasks: running,
                recent_completed_tasks: done,
            }),
            poll_ms: Some(1),
            protected: false,
            stopped_reason: None,
        }
    }

    #[test]
    fn subtasks_are_grouped_under_the_one_parent_that_fits() {
        let snap = FleetSnapshot {
            workers: vec![
                worker(
                    "a",
                    vec![],
                    vec![
                        task("pxdrk", "Etl", "complete", 100, Some(120)),
                        task("zs:0::amq.q1", "Etl", "complete", 101, Some(105)),
                    ],
                ),
                worker(
                    "b",
                    vec![],
                    vec![
                        task("zs:1::amq.q1", "Etl", "complete", 101, Some(110)),
                        task("zs:2::amq.q1", "Etl", "complete", 105, Some(118)),
                    ],
                ),
                worker(
                    "c",
                    vec![],
                    vec![task("other", "Other", "complete", 100, Some(130))],
                ),
            ],
            ..Default::default()
        };
        let d = task_detail(&snap, "pxdrk").unwrap();
        assert_eq!(d.groups.len(), 1);
        let g = &d.groups[0];
        assert!(g.certain);
        assert_eq!(g.subtasks.len(), 3);
        assert_eq!(g.workers, ["a", "b"]);
        let sub = task_detail(&snap, "zs:2::amq.q1").unwrap();
        assert_eq!(sub.group.unwrap().candidates, ["pxdrk"]);
        assert!(task_detail(&snap, "other").unwrap().groups.is_empty());
    }

    #[test]
    fn overlapping_parents_of_one_class_make_the_link_uncertain() {
        let snap = FleetSnapshot {
            workers: vec![
                worker("a", vec![task("p1", "Etl", "running", 100, None)], vec![]),
                worker(
                    "b",
                    vec![task("p2", "Etl", "running", 101, None)],
                    vec![task("zz:0::amq.q", "Etl", "complete", 102, Some(103))],
                ),
            ],
            ..Default::default()
        };
        let d = task_detail(&snap, "p1").unwrap();
        assert_eq!(d.groups.len(), 1);
        assert!(!d.groups[0].certain);
        assert_eq!(d.groups[0].candidates.len(), 2);
    }

    #[test]
    fn running_tasks_come_first() {
        let snap = FleetSnapshot {
            workers: vec![worker(
                "a",
                vec![task("r", "E", "running", 50, None)],
                vec![task("d", "E", "complete", 90, Some(95))],
            )],
            ..Default::default()
        };
        let ids: Vec<_> = snap.tasks().into_iter().map(|t| t.task.task_id).collect();
        assert_eq!(ids, ["r", "d"]);
    }

    #[test]
    fn a_dispatched_task_is_shown_until_its_node_reports_it() {
        let mut snap = FleetSnapshot {
            workers: vec![worker("local-2", vec![], vec![])],
            dispatched: vec![crate::model::Dispatched {
                task_id: "araid".into(),
                worker_id: "local-2".into(),
                model_class: "QuickPartitionedEtl".into(),
                at: 100,
            }],
            ..Default::default()
        };
        let d = task_detail(&snap, "araid").expect("the dispatched task is known");
        assert_eq!(d.task.task.status, TaskStatus::Dispatched);
        assert_eq!(d.task.worker_id, "local-2");
        assert!(task_detail(&snap, "other").is_none());
        // Once the node lists it, the node's own record wins.
        snap.workers = vec![worker(
            "local-2",
            vec![task("araid", "QuickPartitionedEtl", "running", 101, None)],
            vec![],
        )];
        let d = task_detail(&snap, "araid").unwrap();
        assert_eq!(d.task.task.status, TaskStatus::Running);
    }

    #[test]
    fn a_parent_whose_subtask_was_lost_for_good_is_stuck() {
        let mut lost = task("zz:1::amq.q", "Etl", "lost", 102, Some(104));
        lost.results = Some(
            serde_json::json!({"type": "Lost", "payload": {"reason": "worker b no longer lists it: the worker restarted while it ran"}}),
        );
        let mut snap = FleetSnapshot {
            workers: vec![
                worker(
                    "a",
                    vec![task("p1", "Etl", "running", 100, None)],
                    vec![task("zz:0::amq.q", "Etl", "complete", 101, Some(103))],
                ),
                worker("b", vec![], vec![lost.clone()]),
            ],
            ..Default::default()
        };
        let d = task_detail(&snap, "p1").unwrap();
        let why = d.stuck.expect("stuck");
        assert!(
            why.contains("subtask 1 was lost (worker b no longer lists it"),
            "{why}"
        );
        // Put back on the queue by the gateway, waiting there: not stuck.
        let mut put_back = snap.clone();
        put_back.workers[1]
            .node
            .as_mut()
            .unwrap()
            .recent_completed_tasks[0]
            .results = Some(
            serde_json::json!({"type": "Lost", "payload": {"reason": "worker b stopped; put back on the queue (run 2 of 3)"}}),
        );
        assert_eq!(task_detail(&put_back, "p1").unwrap().stuck, None);
        // A second run of the lost subtask elsewhere: not stuck.
        snap.workers[0]
            .node
            .as_mut()
            .unwrap()
            .running_tasks
            .push(task("zz:1::amq.q", "Etl", "running", 105, None));
        assert_eq!(task_detail(&snap, "p1").unwrap().stuck, None);
    }

    #[test]
    fn a_parent_missing_a_subtask_before_a_later_one_is_stuck() {
        let done = |n: u32| task(&format!("zz:{n}::amq.q"), "Etl", "complete", 101, Some(103));
        let mut snap = FleetSnapshot {
            workers: vec![worker(
                "a",
                vec![task("p1", "Etl", "running", 100, None)],
                vec![done(0), done(2), done(4)],
            )],
            ..Default::default()
        };
        let why = task_detail(&snap, "p1").unwrap().stuck.expect("stuck");
        assert!(
            why.contains("subtasks 1, 3 were never seen running"),
            "{why}"
        );
        // While one of its group runs, it may still take the rest: not yet.
        let node = snap.workers[0].node.as_mut().unwrap();
        node.running_tasks
            .push(task("zz:5::amq.q", "Etl", "running", 105, None));
        assert_eq!(task_detail(&snap, "p1").unwrap().stuck, None);
        // Nothing missing below the last seen (the rest may be unsent): not stuck.
        let node = snap.workers[0].node.as_mut().unwrap();
        node.running_tasks.truncate(1);
        node.recent_completed_tasks = vec![done(0), done(1), done(2)];
        assert_eq!(task_detail(&snap, "p1").unwrap().stuck, None);
    }

    #[test]
    fn task_ids_are_checked() {
        assert!(valid_task_id("zsxke:6::amq.gen-dBKn_x"));
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            "<script>",
            "a b",
            &"x".repeat(201),
        ] {
            assert!(!valid_task_id(bad), "{bad}");
        }
    }
}
