//! The subtasks the nodes took, as their notes say.
//!
//! The gateway learns what a worker runs from its `node_info`, every poll.
//! A subtask taken and lost between two polls (or lost while it waited in
//! the node's sidecar for a free slot, where `node_info` does not list it)
//! was seen by nobody, and Fossa had already acked it: lost for good, its
//! parent waiting for ever. So each node notes every subtask it takes on
//! [`TAKEN_QUEUE`](fossa_contract::names::TAKEN_QUEUE), in one transaction
//! with its ack (the generated node module), named by its `node_ident`.
//! The gateway reads the notes each poll and keeps each one until its node
//! lists the subtask (then the usual tracking has it) or its worker is gone
//! without ever listing it: then the subtask is lost, with the definition
//! the note holds, and is put back as any other.
//!
//! Plan, then apply: [`settle`] is plain data over what was seen.

use std::collections::HashMap;

use fossa_web::model::{FleetSnapshot, FossaTask, TaskStatus, Worker, STOPPED};
use serde_json::{json, Value};

use crate::host::amqp::get::Got;

/// A subtask a node said it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// The subtask, as its node would list it while it runs.
    pub task: FossaTask,
    /// The `node_ident` of the node that took it.
    pub node: String,
    /// When it was taken (or read, if the note has no time).
    pub at: i64,
}

impl Note {
    /// A note as read from the broker: `None` when it is not a subtask's
    /// (no correlation id, reply queue or JSON object body).
    pub fn read(got: &Got, now: i64) -> Option<Note> {
        if got.correlation_id.is_empty() || got.reply_to.is_empty() {
            return None;
        }
        let body: Value = serde_json::from_slice(&got.body).ok()?;
        let field = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
        let task = FossaTask {
            task_id: format!("{}::{}", got.correlation_id, got.reply_to),
            model_class: body.get("model_class")?.as_str()?.to_owned(),
            method: body
                .get("method")
                .and_then(Value::as_str)
                .map(str::to_owned),
            method_kwargs: field("method_kwargs"),
            status: TaskStatus::Running,
            started: got.timestamp,
            finished: None,
            results: None,
            spec: json!({
                "resolver_context": field("resolver_context"),
                "model_construction_kwargs": field("model_construction_kwargs"),
                "partition_initialise_kwargs": field("partition_initialise_kwargs"),
            }),
        };
        Some(Note {
            task,
            node: got.app_id.clone(),
            at: got.timestamp.unwrap_or(now),
        })
    }
}

/// A note whose worker went without ever listing its subtask.
#[derive(Debug, Clone, PartialEq)]
pub struct Unseen {
    /// The worker that took it.
    pub worker: String,
    /// The subtask, with its definition.
    pub task: FossaTask,
    /// Why it is lost.
    pub reason: String,
    /// When it was taken.
    pub at: i64,
}

/// What [`settle`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Settled {
    /// Lost without ever being listed.
    pub lost: Vec<Unseen>,
    /// Still taken: their node is up and has not listed them yet (or it
    /// has not been reached, within [`fossa_contract::limits::TAKEN_UNKNOWN_NODE_SECS`]).
    pub still: HashMap<String, Note>,
    /// Notes given up: their node was never reached.
    pub unplaced: Vec<Note>,
}

/// The worker a node runs on, and when a snapshot last showed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The worker's id.
    pub worker: String,
    /// When a snapshot last showed this node.
    pub shown: i64,
}

/// The workers whose nodes `snap` shows at `now`, by `node_ident`, added
/// to `known` (a worker stopped since keeps its last node).
pub fn learn(known: &mut HashMap<String, Node>, snap: &FleetSnapshot, now: i64) {
    for w in &snap.workers {
        if let Some(n) = &w.node {
            if !n.node_ident.is_empty() {
                let node = Node {
                    worker: w.id.clone(),
                    shown: now,
                };
                known.insert(n.node_ident.clone(), node);
            }
        }
    }
}

/// The notes not settled yet, by subtask id, and the nodes known.
#[derive(Debug, Default)]
pub struct Notes {
    pending: HashMap<String, Note>,
    nodes: HashMap<String, Node>,
}

impl Notes {
    /// Adds a note just read (a second note of one subtask is its first).
    pub fn add(&mut self, n: Note) {
        self.pending.entry(n.task.task_id.clone()).or_insert(n);
    }

    /// Learns the nodes `snap` shows, forgets a node not shown for
    /// [`fossa_contract::limits::TAKEN_UNKNOWN_NODE_SECS`] that no pending
    /// note names (a note is read within a poll of its take), and settles
    /// the pending notes. The caller keeps [`Settled::still`] with
    /// [`Notes::keep`] once the lost ones are recorded.
    pub fn settle(&mut self, snap: &FleetSnapshot, now: i64) -> Settled {
        learn(&mut self.nodes, snap, now);
        let pending = &self.pending;
        self.nodes.retain(|ident, n| {
            now - n.shown <= fossa_contract::limits::TAKEN_UNKNOWN_NODE_SECS
                || pending.values().any(|p| &p.node == ident)
        });
        settle(self.pending.clone(), &self.nodes, snap, now)
    }

    /// The notes still pending after [`Notes::settle`].
    pub fn keep(&mut self, still: HashMap<String, Note>) {
        self.pending = still;
    }

    /// How many nodes are known.
    #[cfg(test)]
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }
}

fn lists(w: &Worker, task_id: &str) -> bool {
    w.node.as_ref().is_some_and(|n| {
        n.running_tasks
            .iter()
            .chain(&n.recent_completed_tasks)
            .any(|t| t.task_id == task_id)
    })
}

/// Each note against `snap`: dropped once its node lists the subtask, lost
/// once its worker is gone, stopped or restarted without listing it, kept
/// otherwise. `known` maps a `node_ident` to its worker ([`learn`]).
pub fn settle(
    notes: HashMap<String, Note>,
    known: &HashMap<String, Node>,
    snap: &FleetSnapshot,
    now: i64,
) -> Settled {
    let mut out = Settled::default();
    for (id, note) in notes {
        let Some(worker) = known.get(&note.node).map(|n| &n.worker) else {
            if now - note.at > fossa_contract::limits::TAKEN_UNKNOWN_NODE_SECS {
                out.unplaced.push(note);
            } else {
                out.still.insert(id, note);
            }
            continue;
        };
        let w = snap.workers.iter().find(|w| &w.id == worker);
        if w.is_some_and(|w| lists(w, &id)) {
            continue;
        }
        let taken = "it took the subtask, before any look at it saw it run";
        let reason = match w {
            None => format!("worker {worker} is gone (stopped, replaced or scaled in): {taken}"),
            Some(w) if w.status == STOPPED => format!(
                "worker {worker} stopped after {taken}: {}",
                w.stopped_reason.as_deref().unwrap_or_default()
            ),
            Some(w) if w.node.as_ref().is_some_and(|n| n.node_ident != note.node) => {
                format!("worker {worker} restarted after {taken}")
            }
            // Up (or not answering now): it runs it, or will once a slot frees.
            Some(_) => {
                out.still.insert(id, note);
                continue;
            }
        };
        out.lost.push(Unseen {
            worker: worker.clone(),
            task: note.task,
            reason,
            at: note.at,
        });
    }
    out.lost.sort_by(|a, b| a.task.task_id.cmp(&b.task.task_id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fossa_web::model::NodeInfo;

    fn got(corr: &str, node: &str) -> Got {
        Got {
            body: br#"{"model_class":"ScaleEtl","method":"one","method_kwargs":{"n":3},"resolver_context":{},"model_construction_kwargs":{},"partition_initialise_kwargs":{"k":1}}"#.to_vec(),
            correlation_id: corr.into(),
            reply_to: "amq.gen-r".into(),
            app_id: node.into(),
            timestamp: Some(100),
        }
    }

    fn worker(id: &str, status: &str, node: Option<(&str, Vec<FossaTask>)>) -> Worker {
        Worker {
            id: id.into(),
            status: status.into(),
            stopped_reason: Some("Essential container in task exited".into()),
            node: node.map(|(ident, running)| NodeInfo {
                node_ident: ident.into(),
                running_tasks: running,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn snap(workers: Vec<Worker>) -> FleetSnapshot {
        FleetSnapshot {
            workers,
            ..Default::default()
        }
    }

    #[test]
    fn a_note_holds_what_it_takes_to_put_the_subtask_back() {
        let n = Note::read(&got("p:3", "9:abc"), 500).unwrap();
        assert_eq!(n.task.task_id, "p:3::amq.gen-r");
        assert_eq!(n.node, "9:abc");
        assert_eq!(n.at, 100);
        let body: Value = serde_json::from_slice(&super::super::rescue::body(&n.task)).unwrap();
        let sent: Value = serde_json::from_slice(&got("p:3", "").body).unwrap();
        assert_eq!(body, sent, "the same body its parent sent");
        let mut bad = got("p:3", "n");
        bad.body = b"not json".to_vec();
        assert!(Note::read(&bad, 0).is_none());
        assert!(Note::read(&got("", "n"), 0).is_none());
    }

    #[test]
    fn a_note_is_kept_until_listed_and_lost_only_with_its_worker() {
        let note = Note::read(&got("p:3", "9:abc"), 0).unwrap();
        let id = note.task.task_id.clone();
        let notes = || HashMap::from([(id.clone(), note.clone())]);
        let mut known = HashMap::new();
        learn(
            &mut known,
            &snap(vec![worker("w1", "RUNNING", Some(("9:abc", vec![])))]),
            100,
        );
        // Up and not listing it yet (waiting for a slot): kept.
        let s = settle(
            notes(),
            &known,
            &snap(vec![worker("w1", "RUNNING", Some(("9:abc", vec![])))]),
            110,
        );
        assert!(s.lost.is_empty() && s.still.contains_key(&id));
        // Not answering now: kept.
        let s = settle(
            notes(),
            &known,
            &snap(vec![worker("w1", "RUNNING", None)]),
            110,
        );
        assert!(s.lost.is_empty() && s.still.contains_key(&id));
        // Listed: dropped, the usual tracking has it.
        let listed = worker("w1", "RUNNING", Some(("9:abc", vec![note.task.clone()])));
        let s = settle(notes(), &known, &snap(vec![listed]), 110);
        assert_eq!(s, Settled::default());
        // Stopped, gone or restarted without listing it: lost, with its definition.
        for (w, says) in [
            (
                vec![worker("w1", STOPPED, None)],
                "stopped after it took the subtask",
            ),
            (vec![], "is gone"),
            (
                vec![worker("w1", "RUNNING", Some(("10:new", vec![])))],
                "restarted after",
            ),
        ] {
            let s = settle(notes(), &known, &snap(w), 110);
            assert!(s.still.is_empty());
            assert_eq!(s.lost.len(), 1);
            assert!(s.lost[0].reason.contains(says), "{}", s.lost[0].reason);
            assert_eq!(s.lost[0].worker, "w1");
            assert_eq!(s.lost[0].task, note.task);
        }
    }

    #[test]
    fn a_note_from_a_node_never_reached_is_kept_a_while_then_given_up() {
        let note = Note::read(&got("p:3", "7:unknown"), 0).unwrap();
        let notes = || HashMap::from([("x".to_owned(), note.clone())]);
        let s = settle(notes(), &HashMap::new(), &snap(vec![]), 200);
        assert_eq!(s.still.len(), 1);
        let late = 100 + fossa_contract::limits::TAKEN_UNKNOWN_NODE_SECS + 1;
        let s = settle(notes(), &HashMap::new(), &snap(vec![]), late);
        assert!(s.still.is_empty() && s.lost.is_empty());
        assert_eq!(s.unplaced, vec![note]);
    }

    #[test]
    fn workers_are_known_by_their_nodes() {
        let mut known = HashMap::new();
        learn(
            &mut known,
            &snap(vec![
                worker("w1", "RUNNING", Some(("9:abc", vec![]))),
                worker("w2", "RUNNING", None),
            ]),
            100,
        );
        let w1 = Node {
            worker: "w1".into(),
            shown: 100,
        };
        assert_eq!(known, HashMap::from([("9:abc".to_owned(), w1)]));
    }

    #[test]
    fn a_node_long_gone_is_forgotten_unless_a_note_names_it() {
        let limit = fossa_contract::limits::TAKEN_UNKNOWN_NODE_SECS;
        let mut notes = Notes::default();
        let shown = snap(vec![
            worker("w1", "RUNNING", Some(("9:abc", vec![]))),
            worker("w2", "RUNNING", Some(("10:def", vec![]))),
        ]);
        notes.settle(&shown, 100);
        assert_eq!(notes.nodes(), 2);
        // w1 still runs; w2's node went, and a note of it waits.
        let now = snap(vec![worker("w1", "RUNNING", Some(("9:abc", vec![])))]);
        let mut note = Note::read(&got("p:3", "10:def"), 0).unwrap();
        note.at = 100 + limit;
        notes.add(note);
        let s = notes.settle(&now, 100 + limit + 1);
        assert_eq!(notes.nodes(), 2, "a pending note names 10:def");
        assert_eq!(s.lost.len(), 1, "{s:?}");
        notes.keep(s.still);
        notes.settle(&now, 100 + limit + 2);
        assert_eq!(notes.nodes(), 1, "10:def forgotten");
    }
}
