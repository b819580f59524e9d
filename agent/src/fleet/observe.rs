//! History observation: what the history holds of each task in view, so
//! that each snapshot hands the recorder only what changed, and marks lost
//! the running tasks whose worker is gone or no longer lists them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use fossa_web::model::{FleetSnapshot, FossaTask, Health, TaskStatus};
use fossa_web::tally::{Kind, Outcome, Tally};
use serde_json::json;

use super::rescue::{Plan, Rescue};
use super::taken::{Note, Notes};
use crate::events::Events;
use crate::history::{History, Observed};
use crate::host::amqp::get::Got;

/// How long a dispatched task may go unlisted by its (answering) node
/// before the history calls it lost.
const UNLISTED_GRACE_SECS: i64 = 60;

/// Answers in a row in which an answering worker leaves out a task it
/// listed as running before the task is called lost. One is not enough:
/// Fossa's node_info reads the finished tasks before the running ones, and
/// its governor moves a finishing task from one to the other in between,
/// so one answer can list a task that just finished in neither (ayeaye-fossa
/// 0.0.37: `views/controller.py`, `control/governor.py`). Put back on such
/// an answer, the subtask ran twice.
const UNLISTED_RUNNING_ANSWERS: u8 = 2;

/// A task on a worker: `(worker id, task id)`.
type Key = (String, String);

/// What the history holds of each task in view: its status, and since when.
pub struct Observer {
    history: Arc<History>,
    seen: Mutex<HashMap<Key, (TaskStatus, i64)>>,
    /// Running tasks their answering worker left out, and in how many
    /// answers in a row ([`UNLISTED_RUNNING_ANSWERS`]).
    unlisted: Mutex<HashMap<Key, u8>>,
    rescue: Rescue,
    /// What the history recorded, counted (seeded from it at start).
    tally: Mutex<Tally>,
    /// Tasks (not subtasks) recorded lost, `(worker, task)`, for the
    /// fleet to submit again ([`Observer::lost_tasks`]).
    lost_tasks: Mutex<Vec<LostTask>>,
    /// Whether this agent acts for the stack: one that waits records what
    /// it sees but decides no rescue and submits nothing again.
    acting: std::sync::atomic::AtomicBool,
    /// The nodes' notes of subtasks taken and not listed yet, by task id,
    /// and which worker each node is ([`Notes`]).
    notes: Mutex<Notes>,
}

impl Observer {
    /// An observer recording into `history`.
    pub fn new(history: Arc<History>) -> Self {
        Observer {
            history,
            seen: Mutex::new(HashMap::new()),
            unlisted: Mutex::new(HashMap::new()),
            rescue: Rescue::default(),
            tally: Mutex::new(Tally::default()),
            lost_tasks: Mutex::new(Vec::new()),
            acting: std::sync::atomic::AtomicBool::new(true),
            notes: Mutex::new(Default::default()),
        }
    }

    /// The nodes' notes of the subtasks they took, read from the broker.
    pub fn noted(&self, got: &[Got]) {
        let now = fossa_contract::unix_now();
        let mut notes = self.notes.lock().expect("lock");
        for n in got.iter().filter_map(|g| Note::read(g, now)) {
            notes.add(n);
        }
    }

    /// Whether this agent acts for the stack (see [`Observer::observe`]).
    pub fn set_acting(&self, acting: bool) {
        self.acting
            .store(acting, std::sync::atomic::Ordering::Relaxed);
    }

    /// After a start: what the history says ran when the agent stopped.
    pub fn resume(&self, events: &Events) {
        match self.history.unfinished() {
            Ok(rows) => {
                let now = fossa_contract::unix_now();
                let mut seen = self.seen.lock().expect("lock");
                for o in rows {
                    seen.insert((o.worker_id, o.task.task_id), (o.task.status, now));
                }
            }
            Err(e) => events.failed("history", "cannot read the history", &e),
        }
    }

    /// A task this gateway just sent to `worker_id`, at `at`.
    pub fn dispatched(&self, worker_id: &str, task_id: &str, at: i64) {
        self.seen.lock().expect("lock").insert(
            (worker_id.to_owned(), task_id.to_owned()),
            (TaskStatus::Dispatched, at),
        );
    }

    /// Hands the recorder every task whose status changed since the last
    /// snapshot, and marks lost the running ones whose worker is gone or no
    /// longer lists them. Never waits: if the recorder is behind, the same
    /// changes go again next time.
    /// A lost subtask's row says what the gateway does about it (put back
    /// on the queue, or given up), and that is committed only with the row.
    pub fn observe(&self, snap: &FleetSnapshot) {
        let now = fossa_contract::unix_now();
        let mut seen = self.seen.lock().expect("lock");
        self.rescue.note(snap);
        let Changes {
            mut batch,
            next,
            cut_off,
        } = {
            let mut unlisted = self.unlisted.lock().expect("lock");
            let (changes, still) = changes(&seen, &unlisted, snap, now);
            *unlisted = still;
            changes
        };
        let mut notes = self.notes.lock().expect("lock");
        let settled = notes.settle(snap, now);
        for u in settled.lost {
            let key = (u.worker.clone(), u.task.task_id.clone());
            // The usual tracking saw it, or the note is of a run already put back.
            if seen.contains_key(&key)
                || next.contains_key(&key)
                || self.rescue.put_back_after(&u.task.task_id, u.at)
            {
                continue;
            }
            let mut row = lost_task(&u.task.task_id, &u.reason);
            row.model_class.clone_from(&u.task.model_class);
            row.method.clone_from(&u.task.method);
            row.method_kwargs.clone_from(&u.task.method_kwargs);
            row.started = u.task.started;
            self.rescue.keep(u.task);
            batch.push(Observed {
                task: row,
                worker_id: u.worker,
            });
        }
        for n in &settled.unplaced {
            tracing::warn!(task = %n.task.task_id, node = %n.node, "a node noted a subtask it took, but the gateway never reached that node: not followed");
        }
        let mut plans = Vec::new();
        let acting = self.acting.load(std::sync::atomic::Ordering::Relaxed);
        for o in batch
            .iter_mut()
            .filter(|o| acting && o.task.status == TaskStatus::Lost)
        {
            let Some(plan) = self.rescue.decide(&o.task.task_id) else {
                continue;
            };
            if let Some(reason) = o
                .task
                .results
                .as_mut()
                .and_then(|r| r.pointer_mut("/payload/reason"))
            {
                *reason = json!(format!(
                    "{}; {}",
                    reason.as_str().unwrap_or_default(),
                    plan.said()
                ));
            }
            plans.push(plan);
        }
        let counted = count(&seen, &batch, &plans);
        let lost_tasks: Vec<LostTask> = batch
            .iter()
            .filter(|o| {
                acting
                    && o.task.status == TaskStatus::Lost
                    && Kind::of(&o.task.task_id) == Kind::Task
            })
            .map(|o| LostTask {
                worker: o.worker_id.clone(),
                task: o.task.task_id.clone(),
                cut_off: cut_off.contains(&(o.worker_id.clone(), o.task.task_id.clone())),
            })
            .collect();
        if self.history.record(batch) {
            notes.keep(settled.still);
            self.lost_tasks.lock().expect("lock").extend(lost_tasks);
            *seen = next;
            self.rescue.commit(plans);
            let mut tally = self.tally.lock().expect("lock");
            for c in counted {
                match c {
                    Count::Add(kind, outcome) => tally.add(kind, outcome, 1),
                    Count::Finished(t) => tally.finished(&t),
                }
            }
        }
    }

    /// Counts from what the history holds ([`History::tally`], read at
    /// start), plus whatever was counted meanwhile.
    pub fn seed(&self, from_history: Tally) {
        let mut t = self.tally.lock().expect("lock");
        let meanwhile = std::mem::replace(&mut *t, from_history);
        t.absorb(meanwhile);
    }

    /// The tasks recorded lost since the last call, `(worker, task)`.
    pub fn lost_tasks(&self) -> Vec<LostTask> {
        std::mem::take(&mut *self.lost_tasks.lock().expect("lock"))
    }

    /// Lost tasks to hand out again at the next [`Observer::lost_tasks`].
    pub fn lost_later(&self, tasks: Vec<LostTask>) {
        self.lost_tasks.lock().expect("lock").extend(tasks);
    }

    /// What the history has recorded, counted.
    pub fn tally(&self) -> Tally {
        self.tally.lock().expect("lock").clone()
    }

    /// Publishes the lost subtasks committed to go back on the queue.
    pub async fn rescue(&self, broker_url: Option<String>, events: &Events) {
        self.rescue.apply(broker_url, events).await;
    }
}

/// One addition to the tally.
enum Count {
    /// One more of this kind and outcome.
    Add(Kind, Outcome),
    /// A run that reached a final status: its outcome and duration.
    Finished(Box<FossaTask>),
}

/// What a batch adds to the tally once the history takes it: a run first
/// seen started (as the history fills its `started`), a run that reached a
/// final status (with the task, for its duration), and each subtask put
/// back on the queue.
fn count(seen: &HashMap<Key, (TaskStatus, i64)>, batch: &[Observed], plans: &[Plan]) -> Vec<Count> {
    let mut out = Vec::new();
    for o in batch {
        let kind = Kind::of(&o.task.task_id);
        let before = seen
            .get(&(o.worker_id.clone(), o.task.task_id.clone()))
            .map(|(st, _)| st);
        let was_started = matches!(before, Some(st) if *st != TaskStatus::Dispatched);
        if o.task.started.is_some() && !was_started {
            out.push(Count::Add(kind, Outcome::Started));
        }
        if o.task.status.is_final() && before.is_none_or(|st| !st.is_final()) {
            out.push(Count::Finished(Box::new(o.task.clone())));
        }
    }
    for p in plans {
        if let Plan::Requeue { task_id, .. } = p {
            out.push(Count::Add(Kind::of(task_id), Outcome::Redelivered));
        }
    }
    out
}

/// What one snapshot changed.
struct Changes {
    /// The recorder's batch.
    batch: Vec<Observed>,
    /// What is seen after it.
    next: HashMap<Key, (TaskStatus, i64)>,
    /// The tasks in `batch` marked lost because the broker cut them off.
    cut_off: HashSet<Key>,
}

/// What changed between `seen` and `snap`, and the running tasks left out
/// by answering workers, with the answers in a row so far (`unlisted`
/// before this snapshot).
fn changes(
    seen: &HashMap<Key, (TaskStatus, i64)>,
    unlisted: &HashMap<Key, u8>,
    snap: &FleetSnapshot,
    now: i64,
) -> (Changes, HashMap<Key, u8>) {
    let mut batch = Vec::new();
    let mut cut_off = HashSet::new();
    let mut next: HashMap<Key, (TaskStatus, i64)> = HashMap::new();
    let mut still: HashMap<Key, u8> = HashMap::new();
    for w in &snap.workers {
        let Some(node) = &w.node else { continue };
        for t in node
            .running_tasks
            .iter()
            .chain(&node.recent_completed_tasks)
        {
            let key = (w.id.clone(), t.task_id.clone());
            let since = match seen.get(&key) {
                Some((st, since)) if *st == t.status => *since,
                _ => {
                    // A task cut off from the broker can never have
                    // finished its work: lost, so it is submitted again.
                    let task = match cut_off_from_broker(t) {
                        Some(why) => {
                            cut_off.insert(key.clone());
                            lost_task(
                                &t.task_id,
                                &format!("cut off from the broker while it ran ({why})"),
                            )
                        }
                        None => t.clone(),
                    };
                    batch.push(Observed {
                        task,
                        worker_id: w.id.clone(),
                    });
                    now
                }
            };
            next.insert(key, (t.status.clone(), since));
        }
    }
    for (key, (st, since)) in seen.iter() {
        if next.contains_key(key) || st.is_final() {
            continue;
        }
        let worker = snap.workers.iter().find(|w| w.id == key.0);
        let reason = match worker {
            None => format!("worker {} is gone (stopped, replaced or scaled in)", key.0),
            Some(w) if w.status == fossa_web::model::STOPPED => format!(
                "worker {} stopped while it ran: {}",
                key.0,
                w.stopped_reason.as_deref().unwrap_or_default()
            ),
            Some(w) if w.health == Health::Ok && *st == TaskStatus::Running => {
                let answers = unlisted.get(key).copied().unwrap_or(0) + 1;
                if answers < UNLISTED_RUNNING_ANSWERS {
                    still.insert(key.clone(), answers);
                    next.insert(key.clone(), (st.clone(), *since));
                    continue;
                }
                format!(
                    "worker {} no longer lists it: the worker restarted while it ran",
                    key.0
                )
            }
            Some(w) if w.health == Health::Ok && now - since > UNLISTED_GRACE_SECS => {
                format!("worker {} accepted it but never listed it", key.0)
            }
            // Not answering now, or still within the grace: wait.
            Some(_) => {
                next.insert(key.clone(), (st.clone(), *since));
                continue;
            }
        };
        batch.push(Observed {
            task: lost_task(&key.1, &reason),
            worker_id: key.0.clone(),
        });
    }
    (
        Changes {
            batch,
            next,
            cut_off,
        },
        still,
    )
}

/// A task this gateway may submit again: lost with its worker, or cut off
/// from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostTask {
    /// The worker it ran on.
    pub worker: String,
    /// Its task id.
    pub task: String,
    /// True when its node lost the broker (it was not lost with the node).
    pub cut_off: bool,
}

/// Why a task failed because its node lost the broker, if it did: a
/// partitioned parent's reply queue is exclusive and goes with the
/// connection (the broker restarted, or the gateway was replaced), so
/// Fossa ends the run with pika's error. Only tasks, not subtasks: a
/// subtask's parent is cut off too, and runs it again.
fn cut_off_from_broker(t: &FossaTask) -> Option<String> {
    if t.status != TaskStatus::Failed || Kind::of(&t.task_id) != Kind::Task {
        return None;
    }
    let payload = t.results.as_ref()?.get("payload")?;
    let class = payload.get("exception_class_name")?.as_str()?;
    let pika = class
        .trim_start_matches("<class '")
        .trim_end_matches("'>")
        .strip_prefix("pika.exceptions.")?;
    Some(pika.to_owned())
}

/// The history row of a task that stopped being reported before it finished.
fn lost_task(task_id: &str, reason: &str) -> FossaTask {
    FossaTask {
        task_id: task_id.to_owned(),
        model_class: String::new(),
        method: None,
        method_kwargs: serde_json::Value::Null,
        status: TaskStatus::Lost,
        started: None,
        finished: Some(fossa_contract::unix_now()),
        results: Some(json!({"type": "Lost", "payload": {"reason": reason}})),
        spec: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fossa_web::model::{NodeInfo, Worker};

    fn task(id: &str, st: TaskStatus) -> FossaTask {
        FossaTask {
            task_id: id.into(),
            model_class: "E".into(),
            method: None,
            method_kwargs: serde_json::Value::Null,
            status: st,
            started: Some(1),
            finished: None,
            results: None,
            spec: Default::default(),
        }
    }

    fn answering(id: &str, running: Vec<FossaTask>) -> Worker {
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

    /// [`super::changes`] as a tuple: the batch, what is seen after it,
    /// and the unlisted answers.
    #[allow(clippy::type_complexity)]
    fn changes(
        seen: &HashMap<Key, (TaskStatus, i64)>,
        unlisted: &HashMap<Key, u8>,
        snap: &FleetSnapshot,
        now: i64,
    ) -> (
        Vec<Observed>,
        HashMap<Key, (TaskStatus, i64)>,
        HashMap<Key, u8>,
    ) {
        let (c, still) = super::changes(seen, unlisted, snap, now);
        (c.batch, c.next, still)
    }

    fn snap(workers: Vec<Worker>) -> FleetSnapshot {
        FleetSnapshot {
            workers,
            ..Default::default()
        }
    }

    #[test]
    fn a_run_counts_once_started_and_once_finished() {
        let s = snap(vec![answering(
            "w1",
            vec![task("p:0::q", TaskStatus::Running)],
        )]);
        let (batch, seen, _) = changes(&HashMap::new(), &HashMap::new(), &s, 100);
        let c = count(&HashMap::new(), &batch, &[]);
        assert!(matches!(
            c[..],
            [Count::Add(Kind::Subtask, Outcome::Started)]
        ));
        let mut done = task("p:0::q", TaskStatus::Complete);
        done.finished = Some(5);
        let s = snap(vec![answering("w1", vec![done])]);
        let (batch, next, _) = changes(&seen, &HashMap::new(), &s, 101);
        let c = count(&seen, &batch, &[]);
        assert!(matches!(c[..], [Count::Finished(_)]), "started once only");
        let (batch, _, _) = changes(&next, &HashMap::new(), &s, 102);
        assert!(count(&next, &batch, &[]).is_empty(), "finished once only");
        // Seen complete at once (it ran between two polls): started and finished.
        let (batch, _, _) = changes(&HashMap::new(), &HashMap::new(), &s, 103);
        assert_eq!(count(&HashMap::new(), &batch, &[]).len(), 2);
    }

    #[test]
    fn a_task_cut_off_from_the_broker_is_lost_and_other_failures_are_not() {
        let failed = |id: &str, class: &str| FossaTask {
            results: Some(json!({"type": "TaskFailed", "payload": {
                "exception_class_name": class, "traceback": ["x"]}})),
            ..task(id, TaskStatus::Failed)
        };
        let cut = failed("abc", "<class 'pika.exceptions.StreamLostError'>");
        assert_eq!(
            cut_off_from_broker(&cut).as_deref(),
            Some("StreamLostError")
        );
        let mut w = answering("w1", vec![]);
        if let Some(n) = w.node.as_mut() {
            n.recent_completed_tasks = vec![cut.clone()];
        }
        let (c, _) = super::changes(&HashMap::new(), &HashMap::new(), &snap(vec![w]), 10);
        assert_eq!(c.batch[0].task.status, TaskStatus::Lost);
        assert!(format!("{:?}", c.batch[0].task.results).contains("cut off from the broker"));
        assert!(c.cut_off.contains(&("w1".to_owned(), "abc".to_owned())));
        // A task lost with its worker is not cut off.
        let s = snap(vec![answering("w1", vec![task("a", TaskStatus::Running)])]);
        let (_, seen, _) = changes(&HashMap::new(), &HashMap::new(), &s, 100);
        let (c, _) = super::changes(&seen, &HashMap::new(), &snap(vec![]), 101);
        assert_eq!(c.batch[0].task.status, TaskStatus::Lost);
        assert!(c.cut_off.is_empty());
        // A model's own error, and a subtask cut off, stay as they are.
        assert!(cut_off_from_broker(&failed("abc", "<class 'ValueError'>")).is_none());
        assert!(cut_off_from_broker(&failed(
            "p:1::amq.gen-x",
            "<class 'pika.exceptions.StreamLostError'>"
        ))
        .is_none());
        assert!(cut_off_from_broker(&task("abc", TaskStatus::Complete)).is_none());
    }

    #[test]
    fn only_changes_go_to_the_recorder() {
        let s = snap(vec![answering("w1", vec![task("a", TaskStatus::Running)])]);
        let (batch, seen, _) = changes(&HashMap::new(), &HashMap::new(), &s, 100);
        assert_eq!(batch.len(), 1);
        let (batch, _, _) = changes(&seen, &HashMap::new(), &s, 101);
        assert!(batch.is_empty(), "the same status again is not recorded");
    }

    #[test]
    fn a_running_task_is_lost_with_its_worker_or_its_restart() {
        let s = snap(vec![answering("w1", vec![task("a", TaskStatus::Running)])]);
        let (_, seen, _) = changes(&HashMap::new(), &HashMap::new(), &s, 100);
        let (batch, next, _) = changes(&seen, &HashMap::new(), &snap(vec![]), 101);
        assert_eq!(batch[0].task.status, TaskStatus::Lost);
        assert!(batch[0].task.results.as_ref().unwrap()["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("is gone"));
        assert!(next.is_empty());
        // Answering without it: once may be Fossa between its two lists (a
        // task that just finished in neither); twice in a row, it is lost.
        let restarted = snap(vec![answering("w1", vec![])]);
        let (batch, next, still) = changes(&seen, &HashMap::new(), &restarted, 101);
        assert!(batch.is_empty(), "one answer without it: wait");
        assert_eq!(next.len(), 1);
        let (batch, _, _) = changes(&next, &still, &restarted, 103);
        assert!(batch[0].task.results.as_ref().unwrap()["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("restarted"));
    }

    #[test]
    fn a_task_missing_from_one_answer_then_listed_finished_is_not_lost() {
        let s = snap(vec![answering(
            "w1",
            vec![task("p:0::q", TaskStatus::Running)],
        )]);
        let (_, seen, _) = changes(&HashMap::new(), &HashMap::new(), &s, 100);
        // Fossa read its finished list before the task moved, its running
        // list after: the task is in neither.
        let between = snap(vec![answering("w1", vec![])]);
        let (batch, next, still) = changes(&seen, &HashMap::new(), &between, 102);
        assert!(batch.is_empty());
        let mut done = task("p:0::q", TaskStatus::Complete);
        done.finished = Some(101);
        let mut w = answering("w1", vec![]);
        w.node.as_mut().unwrap().recent_completed_tasks = vec![done];
        let (batch, next, still) = changes(&next, &still, &snap(vec![w]), 104);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].task.status, TaskStatus::Complete, "never lost");
        assert!(still.is_empty() && next.len() == 1);
    }

    #[test]
    fn a_dispatched_task_has_a_grace_and_a_silent_worker_is_waited_for() {
        let mut seen = HashMap::new();
        seen.insert(("w1".into(), "d".into()), (TaskStatus::Dispatched, 100));
        let (batch, next, _) = changes(
            &seen,
            &HashMap::new(),
            &snap(vec![answering("w1", vec![])]),
            130,
        );
        assert!(batch.is_empty(), "within the grace");
        assert_eq!(next.len(), 1);
        let silent = Worker {
            id: "w1".into(),
            health: Health::Timeout("slow".into()),
            ..Default::default()
        };
        let (batch, _, _) = changes(&seen, &HashMap::new(), &snap(vec![silent]), 1000);
        assert!(batch.is_empty(), "not answering: wait");
        let (batch, _, _) = changes(
            &seen,
            &HashMap::new(),
            &snap(vec![answering("w1", vec![])]),
            100 + 61,
        );
        assert_eq!(batch[0].task.status, TaskStatus::Lost);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_note_never_listed_is_put_back_once_its_worker_stops_and_only_once() {
        let dir = crate::testkit::ScratchDir::new("observe-notes");
        let h = History::open(&dir.0, fossa_contract::config::HistoryLimits::default()).unwrap();
        let o = Observer::new(h);
        let got = Got {
            body: br#"{"model_class":"E","method":"work","method_kwargs":{"n":1}}"#.to_vec(),
            correlation_id: "p:1".into(),
            reply_to: "amq.gen-r".into(),
            app_id: "9:abc".into(),
            timestamp: Some(fossa_contract::unix_now() - 5),
        };
        let mut up = answering("w1", vec![]);
        up.node.as_mut().unwrap().node_ident = "9:abc".into();
        o.observe(&snap(vec![up.clone()]));
        o.noted(std::slice::from_ref(&got));
        o.observe(&snap(vec![up.clone()]));
        let planned = || o.rescue.planned();
        assert!(planned().is_empty(), "its node is up: it runs it, or will");
        let stopped = Worker {
            status: fossa_web::model::STOPPED.into(),
            node: None,
            ..up
        };
        o.observe(&snap(vec![stopped.clone()]));
        let p = planned();
        assert!(
            matches!(&p[..], [Plan::Requeue { task_id, attempt: 2, .. }] if task_id == "p:1::amq.gen-r"),
            "{p:?}"
        );
        // The same note read again late: that run was put back after it
        // was taken, so it is not put back twice.
        o.noted(&[got]);
        o.observe(&snap(vec![stopped]));
        assert_eq!(planned().len(), 1);
    }
}
