//! Parents that can never finish keep no worker (#25). A parent is stuck
//! when [`fossa_web::views::stuck`] says so: a subtask of it was lost and
//! not put back, or was never seen at all, and nothing of its groups runs.
//! A worker whose running tasks are all stuck parents counts as idle
//! ([`super::poll::busy_and_idle`]): its scale-in protection is released,
//! the autoscaler may take the fleet to zero, and a scale to 0 stops it.
//! The parent is then lost with its worker, and the gateway submits it
//! again while its retries last (`[history] parent_retries`).
//!
//! Looking costs a read of the history around the parent, so only parents
//! that have run a while and whose model class has no subtask running
//! anywhere are looked at, each at most every [`LOOK_EVERY`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fossa_web::model::{FleetSnapshot, TaskStatus};
use fossa_web::tally::Kind;

use crate::events::Events;
use crate::history::History;

/// How often one running parent is looked at again.
pub const LOOK_EVERY: Duration = Duration::from_secs(30);

/// Seconds a parent runs before it is looked at: its first subtasks are
/// on their way through the queue before that.
pub const RUNNING_FOR_SECS: i64 = 30;

/// The running parents looked at, and which of them are stuck.
#[derive(Default)]
pub struct Stuck {
    /// Each parent looked at: when, and why it is stuck (`None`: it is not).
    looked: Mutex<HashMap<String, (Instant, Option<String>)>>,
    /// What the last [`Stuck::look`] found.
    last: Mutex<HashSet<String>>,
}

/// A running parent worth a look: its id and its worker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The parent's task id.
    pub task: String,
    /// The worker it runs on.
    pub worker: String,
}

/// The running parents in `snap` (at `now`, seconds since the epoch) that
/// may be stuck: tasks, not subtasks, running for [`RUNNING_FOR_SECS`] on a
/// worker that takes work, whose model class has no subtask running on any
/// worker (one running is either its own, so it is not stuck, or another
/// parent's of the same class, and then it waits: never a wrong release).
pub fn candidates(snap: &FleetSnapshot, now: i64) -> Vec<Candidate> {
    let running = || {
        snap.workers.iter().flat_map(|w| {
            w.node
                .iter()
                .flat_map(|n| n.running_tasks.iter())
                .map(move |t| (w, t))
        })
    };
    let busy_classes: HashSet<&str> = running()
        .filter(|(_, t)| Kind::of(&t.task_id) == Kind::Subtask)
        .map(|(_, t)| t.model_class.as_str())
        .collect();
    running()
        .filter(|(w, t)| {
            w.takes_work()
                && t.status == TaskStatus::Running
                && Kind::of(&t.task_id) == Kind::Task
                && t.started.is_some_and(|s| now - s >= RUNNING_FOR_SECS)
                && !busy_classes.contains(t.model_class.as_str())
        })
        .map(|(w, t)| Candidate {
            task: t.task_id.clone(),
            worker: w.id.clone(),
        })
        .collect()
}

impl Stuck {
    /// The stuck parents in `snap`, each looked at again at most every
    /// [`LOOK_EVERY`]; a parent found stuck is said once, as an event.
    pub async fn look(
        &self,
        snap: &FleetSnapshot,
        history: &Arc<History>,
        events: &Events,
    ) -> HashSet<String> {
        let found = candidates(snap, fossa_contract::unix_now());
        let mut stuck = HashSet::new();
        for c in &found {
            let known = self.looked.lock().expect("lock").get(&c.task).cloned();
            let why = match known {
                Some((at, why)) if at.elapsed() < LOOK_EVERY => why,
                before => {
                    let why = why_stuck(snap, history, &c.task).await;
                    if let (Some(why), None | Some((_, None))) = (&why, before) {
                        events.push("autoscale", true, released(c, why));
                    }
                    self.looked
                        .lock()
                        .expect("lock")
                        .insert(c.task.clone(), (Instant::now(), why.clone()));
                    why
                }
            };
            if why.is_some() {
                stuck.insert(c.task.clone());
            }
        }
        // Parents no longer candidates (finished, gone, or busy again) are
        // looked at afresh should they come back.
        self.looked
            .lock()
            .expect("lock")
            .retain(|id, _| found.iter().any(|c| &c.task == id));
        *self.last.lock().expect("lock") = stuck.clone();
        stuck
    }

    /// The stuck parents the last [`Stuck::look`] found.
    pub fn last(&self) -> HashSet<String> {
        self.last.lock().expect("lock").clone()
    }
}

/// Why parent `id` is stuck, read from what the workers report and the
/// history around it; `None` when it is not, or the history cannot say.
async fn why_stuck(snap: &FleetSnapshot, history: &Arc<History>, id: &str) -> Option<String> {
    let recorded = match history.around(id.to_owned()).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(
                "cannot read task {id} from the history to see whether it is stuck: {}",
                fossa_contract::aws::chain(&e)
            );
            return None;
        }
    };
    fossa_web::views::task_detail_with(snap, recorded, id)?.stuck
}

/// The event for a parent found stuck.
fn released(c: &Candidate, why: &str) -> String {
    format!(
        "task {} on worker {} can never finish ({why}); the worker is no longer kept from scale-in, so the autoscaler or a scale to 0 may stop it, and the gateway then submits the task again while its retries last",
        c.task, c.worker
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fossa_web::model::{FossaTask, Health, NodeInfo, Worker};

    fn task(id: &str, class: &str, started: i64) -> FossaTask {
        FossaTask {
            task_id: id.into(),
            model_class: class.into(),
            method: None,
            method_kwargs: serde_json::Value::Null,
            status: TaskStatus::Running,
            started: Some(started),
            finished: None,
            results: None,
            spec: Default::default(),
        }
    }

    fn worker(id: &str, running: Vec<FossaTask>) -> Worker {
        Worker {
            id: id.into(),
            health: Health::Ok,
            node: Some(NodeInfo {
                running_tasks: running,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_parents_that_ran_a_while_with_nothing_of_their_class_running_are_looked_at() {
        let snap = FleetSnapshot {
            workers: vec![
                worker("a", vec![task("p1", "Etl", 100), task("p2", "Other", 100)]),
                worker("b", vec![task("zz:3::amq.q", "Other", 120)]),
                worker("c", vec![task("p3", "Etl", 125)]),
            ],
            ..Default::default()
        };
        let ids = |now| -> Vec<String> {
            candidates(&snap, now)
                .into_iter()
                .map(|c| format!("{}@{}", c.task, c.worker))
                .collect()
        };
        assert_eq!(
            ids(130),
            vec!["p1@a"],
            "p2's class runs a subtask; p3 is young"
        );
        assert_eq!(ids(200), vec!["p1@a", "p3@c"]);
        let mut silent = snap.clone();
        silent.workers[0].health = Health::Timeout("slow".into());
        assert!(!candidates(&silent, 200).iter().any(|c| c.worker == "a"));
    }
}
