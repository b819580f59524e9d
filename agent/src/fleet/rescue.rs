//! Lost subtasks back on the broker's queue.
//!
//! A Fossa node acks a subtask's message before it runs it, and a parent
//! waits on silence for ever, so a worker that dies mid-subtask (a Spot
//! interruption, scale-in, an out-of-memory kill, kill -9) loses the
//! subtask for good. Its node listed the subtask with its whole definition
//! while it ran ([`FossaTask::spec`]), and its id `{pool}:{n}::{reply_to}`
//! carries the parent's correlation id and reply queue; so once the worker
//! is certainly gone (the observer's loss: stopped, gone, or answering
//! again without it, never a timeout alone) the gateway publishes it again
//! as the parent did: the same body, correlation id and reply queue. The
//! parent counts every completion, so a subtask is put back once per loss
//! and only on a loss. After [`MAX_ATTEMPTS`] runs it is failed: the
//! gateway sends the parent Fossa's `TaskFailed` reply for it, as a node
//! whose subtask raised would. Fossa's parent runs a failed subtask once
//! more itself, and fails at the next failure, so the parent ends instead of
//! waiting (and keeping its worker) for ever.
//!
//! Plan, then apply: [`Rescue::decide`] is plain data over what was seen;
//! only [`Rescue::apply`] talks to the broker.

use std::collections::HashMap;
use std::sync::Mutex;

use fossa_web::model::{FleetSnapshot, FossaTask, TaskStatus};
use serde_json::{json, Value};

use super::backend;
use crate::events::Events;
use crate::host::amqp::AmqpError;

/// Runs of one subtask before the gateway stops putting it back.
pub const MAX_ATTEMPTS: u32 = 3;

/// What to do about one lost subtask.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Publish it again: its body, correlation id and reply queue; this is
    /// run `attempt` of [`MAX_ATTEMPTS`].
    Requeue {
        /// The subtask's id, `{pool}:{n}::{reply_to}`.
        task_id: String,
        /// The JSON body its parent sent.
        body: Vec<u8>,
        /// `{pool}:{n}`.
        correlation_id: String,
        /// The parent's reply queue.
        reply_to: String,
        /// The run this will be.
        attempt: u32,
    },
    /// Lost [`MAX_ATTEMPTS`] times: not put back, but failed: a
    /// `TaskFailed` sent to the parent's reply queue.
    Fail {
        /// The subtask's id.
        task_id: String,
        /// Fossa's `TaskFailed` message, JSON.
        body: Vec<u8>,
        /// `{pool}:{n}`.
        correlation_id: String,
        /// The parent's reply queue.
        reply_to: String,
    },
}

impl Plan {
    /// What the history's lost row and the event add about it.
    pub fn said(&self) -> String {
        match self {
            Plan::Requeue { attempt, .. } => {
                format!("{} (run {attempt} of {MAX_ATTEMPTS})", fossa_web::model::PUT_BACK)
            }
            Plan::Fail { .. } => format!(
                "not put back: lost {MAX_ATTEMPTS} times, so failed; its parent is told (Fossa runs a failed subtask once more, then fails the parent)"
            ),
        }
    }
}

/// The definitions of the subtasks seen running, and the runs of each.
#[derive(Default)]
pub struct Rescue {
    specs: Mutex<HashMap<String, FossaTask>>,
    /// Each subtask committed to go back on the queue: its latest run.
    put_back: Mutex<HashMap<String, PutBack>>,
    planned: Mutex<Vec<Plan>>,
}

/// A subtask's latest put-back.
#[derive(Debug, Clone, Copy)]
struct PutBack {
    /// The run it went back for (the first run is 1).
    run: u32,
    /// When it was committed.
    at: i64,
}

impl Rescue {
    /// Keeps the definition of every running subtask in `snap`, and forgets
    /// those that finished.
    pub fn note(&self, snap: &FleetSnapshot) {
        let mut specs = self.specs.lock().expect("lock");
        for w in &snap.workers {
            let Some(node) = &w.node else { continue };
            for t in &node.running_tasks {
                if t.status == TaskStatus::Running && !t.spec.is_null() {
                    specs.insert(t.task_id.clone(), t.clone());
                }
            }
            for t in &node.recent_completed_tasks {
                specs.remove(&t.task_id);
            }
        }
    }

    /// Keeps the definition of a subtask its node noted taking but never
    /// listed ([`super::taken`]).
    pub fn keep(&self, t: FossaTask) {
        self.specs
            .lock()
            .expect("lock")
            .insert(t.task_id.clone(), t);
    }

    /// The plans committed and not yet applied.
    #[cfg(test)]
    pub fn planned(&self) -> Vec<Plan> {
        self.planned.lock().expect("lock").clone()
    }

    /// Whether subtask `task_id` was put back after `at` (a note taken at
    /// `at` is then about an earlier run, already put back).
    pub fn put_back_after(&self, task_id: &str, at: i64) -> bool {
        let put_back = self.put_back.lock().expect("lock");
        put_back.get(task_id).is_some_and(|p| p.at > at)
    }

    /// What to do about subtask `task_id`, lost: `None` when it is not a
    /// subtask or was never seen running with its definition.
    pub fn decide(&self, task_id: &str) -> Option<Plan> {
        let specs = self.specs.lock().expect("lock");
        let t = specs.get(task_id)?;
        let (correlation_id, reply_to) = t.task_id.split_once("::")?;
        let run = self
            .put_back
            .lock()
            .expect("lock")
            .get(task_id)
            .map_or(1, |p| p.run);
        if run >= MAX_ATTEMPTS {
            return Some(Plan::Fail {
                task_id: task_id.to_owned(),
                body: failed(t),
                correlation_id: correlation_id.to_owned(),
                reply_to: reply_to.to_owned(),
            });
        }
        Some(Plan::Requeue {
            task_id: task_id.to_owned(),
            body: body(t),
            correlation_id: correlation_id.to_owned(),
            reply_to: reply_to.to_owned(),
            attempt: run + 1,
        })
    }

    /// Commits decided plans (once their lost rows are recorded): counts the
    /// runs and keeps the plans for [`Rescue::apply`].
    pub fn commit(&self, plans: Vec<Plan>) {
        let mut put_back = self.put_back.lock().expect("lock");
        let mut specs = self.specs.lock().expect("lock");
        let at = fossa_contract::unix_now();
        for p in &plans {
            match p {
                Plan::Requeue {
                    task_id, attempt, ..
                } => {
                    let run = *attempt;
                    put_back.insert(task_id.clone(), PutBack { run, at });
                }
                Plan::Fail { task_id, .. } => {
                    specs.remove(task_id);
                }
            }
        }
        self.planned.lock().expect("lock").extend(plans);
    }

    /// Publishes the committed requeues to the broker at `broker_url`, each
    /// with publisher confirms; one that fails is kept for the next call.
    pub async fn apply(&self, broker_url: Option<String>, events: &Events) {
        let plans = std::mem::take(&mut *self.planned.lock().expect("lock"));
        if plans.is_empty() {
            return;
        }
        let mut retry = Vec::new();
        for p in plans {
            let Some(url) = broker_url.as_deref() else {
                retry.push(p);
                continue;
            };
            let (sent, done, trouble) = match &p {
                Plan::Requeue {
                    task_id,
                    body,
                    correlation_id,
                    reply_to,
                    attempt,
                } => (
                    backend::publish_task(url, body, correlation_id, reply_to).await,
                    format!("subtask {task_id} lost with its worker: put back on the queue (run {attempt} of {MAX_ATTEMPTS})"),
                    format!("cannot put lost subtask {task_id} back yet"),
                ),
                Plan::Fail {
                    task_id,
                    body,
                    correlation_id,
                    reply_to,
                } => (
                    backend::publish_reply(url, body, correlation_id, reply_to).await,
                    format!("subtask {task_id} lost {MAX_ATTEMPTS} times: failed, and its parent told"),
                    format!("cannot tell subtask {task_id}'s parent that it failed yet"),
                ),
            };
            match sent {
                Ok(()) => events.push("rescue", matches!(p, Plan::Fail { .. }), done),
                // The parent's reply queue is gone with its node: nobody waits.
                Err(backend::PublishError::Amqp(AmqpError::Refused { reason, .. }))
                    if matches!(p, Plan::Fail { .. }) =>
                {
                    events.push(
                        "rescue",
                        true,
                        format!("subtask {} lost {MAX_ATTEMPTS} times; its parent is gone too ({reason})", id_of(&p)),
                    );
                }
                Err(e) => {
                    events.push(
                        "rescue",
                        true,
                        format!(
                            "{trouble}: {}; trying again",
                            fossa_contract::aws::chain(&e)
                        ),
                    );
                    retry.push(p);
                }
            }
        }
        self.planned.lock().expect("lock").extend(retry);
    }
}

fn id_of(p: &Plan) -> &str {
    match p {
        Plan::Requeue { task_id, .. } | Plan::Fail { task_id, .. } => task_id,
    }
}

/// The body a parent sends for subtask `t` (Fossa's `task_definition`).
pub fn body(t: &FossaTask) -> Vec<u8> {
    let spec = |k: &str| t.spec.get(k).cloned().unwrap_or(Value::Null);
    let or_empty = |v: Value| if v.is_null() { json!({}) } else { v };
    json!({
        "model_class": t.model_class,
        "method": t.method,
        "method_kwargs": or_empty(t.method_kwargs.clone()),
        "resolver_context": or_empty(spec("resolver_context")),
        "model_construction_kwargs": or_empty(spec("model_construction_kwargs")),
        "partition_initialise_kwargs": or_empty(spec("partition_initialise_kwargs")),
    })
    .to_string()
    .into_bytes()
}

/// Fossa's `TaskFailed` reply for subtask `t`, lost [`MAX_ATTEMPTS`] times
/// (ayeaye's `task_message.TaskFailed`, as `to_json` writes it).
pub fn failed(t: &FossaTask) -> Vec<u8> {
    let spec = |k: &str| t.spec.get(k).cloned().unwrap_or(Value::Null);
    let or_empty = |v: Value| if v.is_null() { json!({}) } else { v };
    json!({
        "type": "TaskFailed",
        "payload": {
            "model_class_name": t.model_class,
            "model_construction_kwargs": or_empty(spec("model_construction_kwargs")),
            "partition_initialise_kwargs": or_empty(spec("partition_initialise_kwargs")),
            "method_name": t.method,
            "method_kwargs": or_empty(t.method_kwargs.clone()),
            "resolver_context": or_empty(spec("resolver_context")),
            "exception_class_name": "WorkerLost",
            "traceback": [format!(
                "fossa-gateway: subtask {} was lost with its worker {MAX_ATTEMPTS} times (stopped, \
                 replaced or killed while it ran), so it is failed",
                t.task_id
            )],
            "task_id": t.task_id,
            "failure_origin_task_id": t.task_id,
        }
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fossa_web::model::{Health, NodeInfo, Worker};

    fn subtask(id: &str, status: TaskStatus) -> FossaTask {
        FossaTask {
            task_id: id.into(),
            model_class: "Spread".into(),
            method: Some("part".into()),
            method_kwargs: json!({"n": 3}),
            status,
            started: Some(1),
            finished: None,
            results: None,
            spec: json!({"resolver_context": {"env": "x"}, "model_construction_kwargs": null, "partition_initialise_kwargs": {"p": 1}}),
        }
    }

    fn snap(running: Vec<FossaTask>, done: Vec<FossaTask>) -> FleetSnapshot {
        FleetSnapshot {
            workers: vec![Worker {
                id: "w1".into(),
                health: Health::Ok,
                node: Some(NodeInfo {
                    running_tasks: running,
                    recent_completed_tasks: done,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_lost_subtask_goes_back_as_its_parent_sent_it_up_to_three_runs() {
        let r = Rescue::default();
        let id = "abcde:3::amq.gen-XYZ";
        r.note(&snap(vec![subtask(id, TaskStatus::Running)], vec![]));
        let Some(Plan::Requeue {
            body,
            correlation_id,
            reply_to,
            attempt,
            ..
        }) = r.decide(id)
        else {
            panic!("a requeue")
        };
        assert_eq!(
            (correlation_id.as_str(), reply_to.as_str(), attempt),
            ("abcde:3", "amq.gen-XYZ", 2)
        );
        let b: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            b,
            json!({"model_class": "Spread", "method": "part", "method_kwargs": {"n": 3},
                   "resolver_context": {"env": "x"}, "model_construction_kwargs": {},
                   "partition_initialise_kwargs": {"p": 1}})
        );
        // Deciding twice without committing (the lost row not recorded
        // yet) plans the same run: nothing is counted twice.
        assert_eq!(r.decide(id), r.decide(id));
        r.commit(vec![r.decide(id).unwrap()]);
        assert!(matches!(
            r.decide(id),
            Some(Plan::Requeue { attempt: 3, .. })
        ));
        r.commit(vec![r.decide(id).unwrap()]);
        let Some(Plan::Fail {
            body,
            correlation_id,
            reply_to,
            ..
        }) = r.decide(id)
        else {
            panic!("failed after {MAX_ATTEMPTS} runs")
        };
        assert_eq!(
            (correlation_id.as_str(), reply_to.as_str()),
            ("abcde:3", "amq.gen-XYZ")
        );
        // Exactly the fields of ayeaye's TaskFailed dataclass, so Fossa's
        // task_message_factory builds it (checked against Fossa itself in
        // tests/tests/autoscale.rs).
        let b: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(b["type"], "TaskFailed");
        let mut keys: Vec<&str> = b["payload"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "exception_class_name",
                "failure_origin_task_id",
                "method_kwargs",
                "method_name",
                "model_class_name",
                "model_construction_kwargs",
                "partition_initialise_kwargs",
                "resolver_context",
                "task_id",
                "traceback"
            ]
        );
        assert_eq!(b["payload"]["method_kwargs"], json!({"n": 3}));
    }

    #[test]
    fn only_subtasks_seen_running_with_their_definition_are_put_back() {
        let r = Rescue::default();
        let parent = FossaTask {
            spec: Value::Null,
            task_id: "pxdrk".into(),
            ..subtask("x", TaskStatus::Running)
        };
        r.note(&snap(vec![parent], vec![]));
        assert_eq!(r.decide("pxdrk"), None, "a parent has no spec");
        assert_eq!(r.decide("never:1::seen"), None);
        // One that finished is forgotten.
        let id = "abcde:1::q";
        r.note(&snap(vec![subtask(id, TaskStatus::Running)], vec![]));
        r.note(&snap(vec![], vec![subtask(id, TaskStatus::Complete)]));
        assert_eq!(r.decide(id), None);
    }
}
