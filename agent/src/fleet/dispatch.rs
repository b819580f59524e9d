//! Dispatch and the queue: a submission goes to the answering worker with
//! the most free slots; when every slot is busy it waits in the gateway's
//! persisted queue, which is drained after each refresh. Each queued task is
//! marked with its worker before the request leaves, so a crash can never
//! send it twice ([`crate::history::queue`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use fossa_web::model::{DispatchError, Dispatched, FleetSnapshot, Queued, TaskRequest, Worker};
use serde_json::json;

use super::node::{NodeClient, NodeError};
use super::observe::Observer;
use crate::events::Events;
use crate::history::queue::{EnqueueError, Entry};
use crate::history::History;

/// How many dispatched tasks are remembered.
const DISPATCH_MEMORY: usize = 1000;

/// Dispatch, the recent dispatches and the queue as last read.
pub struct Dispatcher {
    client: NodeClient,
    history: Arc<History>,
    events: Events,
    /// The last [`DISPATCH_MEMORY`] dispatches, for the snapshot.
    dispatched: Mutex<VecDeque<Dispatched>>,
    /// The queue as last read, for the snapshot.
    queue: Mutex<Vec<Queued>>,
    /// One drain of the queue at a time.
    draining: tokio::sync::Mutex<()>,
}

impl Dispatcher {
    /// A dispatcher sending through `client` and recording into `history`.
    pub fn new(client: NodeClient, history: Arc<History>, events: Events) -> Self {
        Dispatcher {
            client,
            history,
            events,
            dispatched: Mutex::new(VecDeque::new()),
            queue: Mutex::new(Vec::new()),
            draining: tokio::sync::Mutex::new(()),
        }
    }

    /// The recent dispatches, oldest first.
    pub fn recent(&self) -> Vec<Dispatched> {
        self.dispatched
            .lock()
            .expect("lock")
            .iter()
            .cloned()
            .collect()
    }

    /// The queue as last read.
    pub fn queue(&self) -> Vec<Queued> {
        self.queue.lock().expect("lock").clone()
    }

    /// Whether nothing waits in the queue.
    pub fn queue_is_empty(&self) -> bool {
        self.queue.lock().expect("lock").is_empty()
    }

    /// Reads the queue again (the caller shows it in the snapshot).
    pub async fn reload_queue(&self) {
        match self.history.queued().await {
            Ok(q) => *self.queue.lock().expect("lock") = q,
            Err(e) => self.events.failed("queue", "cannot read the queue", &e),
        }
    }

    /// After a start: what the queue was sending when the agent stopped is
    /// marked unknown, never sent again; what waited is kept.
    pub async fn resume(&self) {
        match self.history.recover().await {
            Ok(rows) => {
                for (id, worker) in rows {
                    self.events.push(
                        "queue",
                        true,
                        format!("queued task {id} was being sent to {worker} when the agent stopped; it is marked unknown and not sent again"),
                    );
                }
            }
            Err(e) => self.events.failed("queue", "cannot recover the queue", &e),
        }
        self.reload_queue().await;
        let waiting = self.queue.lock().expect("lock").len();
        if waiting > 0 {
            self.events.push(
                "queue",
                false,
                format!("{waiting} queued tasks kept from before the restart"),
            );
        }
    }

    /// Sends `request` to the answering worker of `snap` with the most free
    /// slots (busy ones last), and records it.
    pub async fn dispatch_now(
        &self,
        snap: &FleetSnapshot,
        request: &TaskRequest,
        observer: &Observer,
    ) -> Result<Dispatched, DispatchError> {
        let mut candidates: Vec<&Worker> = snap.workers.iter().filter(|w| w.takes_work()).collect();
        // Busy but answering workers are tried last: their capacity may have freed up.
        candidates.sort_by_key(|w| std::cmp::Reverse(w.free().unwrap_or(0)));
        if candidates.is_empty() {
            return Err(DispatchError::NoCapacity(format!(
                "no worker is answering ({} known); wait for workers to start or scale up",
                snap.workers.len()
            )));
        }
        let body = node_body(request);
        let mut busy = 0;
        let mut errors = Vec::new();
        for w in candidates {
            match self.client.submit(&w.address, &body).await {
                Ok(task_id) => {
                    let d = Dispatched {
                        task_id,
                        worker_id: w.id.clone(),
                        model_class: request.model_class.clone(),
                        at: fossa_contract::unix_now(),
                    };
                    self.remember(None, &d, request, observer).await;
                    return Ok(d);
                }
                Err(NodeError::Status { status: 503, .. }) => busy += 1,
                Err(
                    e @ NodeError::Status {
                        status: 400 | 412, ..
                    },
                ) => return Err(DispatchError::Invalid(refusal(&request.model_class, &e))),
                Err(e) => errors.push(format!("{}: {e}", w.id)),
            }
        }
        if errors.is_empty() {
            Err(DispatchError::NoCapacity(format!(
                "all {busy} answering workers are at capacity"
            )))
        } else {
            Err(DispatchError::Worker(format!(
                "{busy} workers busy; others failed: {}",
                errors.join("; ")
            )))
        }
    }

    /// Records a dispatch: the history row (and the queue row gone, in the
    /// same transaction), what the observer expects, the recent list and an event.
    async fn remember(
        &self,
        queue_id: Option<i64>,
        d: &Dispatched,
        request: &TaskRequest,
        observer: &Observer,
    ) {
        if let Err(e) = self.history.dispatched(queue_id, d, request).await {
            self.events
                .failed("history", format!("cannot record task {}", d.task_id), &e);
        }
        observer.dispatched(&d.worker_id, &d.task_id, d.at);
        {
            let mut q = self.dispatched.lock().expect("lock");
            if q.len() == DISPATCH_MEMORY {
                q.pop_front();
            }
            q.push_back(d.clone());
        }
        let from_queue = queue_id
            .map(|id| format!(" from the queue (#{id})"))
            .unwrap_or_default();
        self.events.push(
            "dispatch",
            false,
            format!(
                "task {} ({}) sent to {}{from_queue}",
                d.task_id, d.model_class, d.worker_id
            ),
        );
    }

    /// Puts `request` in the gateway's queue.
    pub async fn enqueue(&self, request: &TaskRequest) -> Result<Queued, DispatchError> {
        let max = self.history.limits().queue_max;
        let q = match self.history.enqueue(request, max).await {
            Ok(q) => q,
            Err(EnqueueError::Full(n)) => {
                return Err(DispatchError::QueueFull(format!(
                    "every worker slot is busy and the gateway's queue is full ({n} tasks wait, \
                     the limit is [history] queue_max in agent.toml); try again when some have run, or scale up"
                )))
            }
            Err(EnqueueError::History(e)) => {
                return Err(DispatchError::Worker(format!(
                    "every worker slot is busy and the task could not be queued: {}",
                    fossa_contract::aws::chain(&e)
                )))
            }
        };
        self.events.push(
            "queue",
            false,
            format!(
                "every slot is busy: task {} ({}) queued at position {}",
                q.id, q.model_class, q.position
            ),
        );
        self.reload_queue().await;
        Ok(q)
    }

    /// Sends queued tasks, oldest first, while answering workers of `snap`
    /// have free slots, then reads the queue again.
    pub async fn drain(&self, snap: &FleetSnapshot, observer: &Observer) {
        let _one = self.draining.lock().await;
        if self.queue_is_empty() {
            return;
        }
        let mut free: Vec<(String, String, u32)> = snap
            .workers
            .iter()
            .filter(|w| w.takes_work() && w.free().unwrap_or(0) > 0)
            .map(|w| (w.id.clone(), w.address.clone(), w.free().unwrap_or(0)))
            .collect();
        free.sort_by_key(|f| std::cmp::Reverse(f.2));
        while let Some((worker, address, _)) = free.first().cloned() {
            let entry: Entry = match self.history.head().await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    self.events.failed("queue", "cannot read the queue", &e);
                    break;
                }
            };
            if let Err(e) = self.history.sending(entry.id, &worker).await {
                let what = format!("cannot mark queued task {}", entry.id);
                self.events.failed("queue", what, &e);
                break;
            }
            fossa_contract::fault::exit_at(fossa_contract::fault::Point::QueueSending);
            match self
                .client
                .submit(&address, &node_body(&entry.request))
                .await
            {
                Ok(task_id) => {
                    fossa_contract::fault::exit_at(fossa_contract::fault::Point::QueueSent);
                    let d = Dispatched {
                        task_id,
                        worker_id: worker.clone(),
                        model_class: entry.request.model_class.clone(),
                        at: fossa_contract::unix_now(),
                    };
                    self.remember(Some(entry.id), &d, &entry.request, observer)
                        .await;
                    free[0].2 -= 1;
                    if free[0].2 == 0 {
                        free.remove(0);
                    }
                }
                Err(
                    e @ NodeError::Status {
                        status: 400 | 412, ..
                    },
                ) => {
                    let why = refusal(&entry.request.model_class, &e);
                    if let Err(e) = self.history.refused(&entry, &worker, &why).await {
                        let what = format!("cannot record queued task {}", entry.id);
                        self.events.failed("queue", what, &e);
                        break;
                    }
                    self.events.push(
                        "queue",
                        true,
                        format!("queued task {} refused by {worker}: {why}", entry.id),
                    );
                }
                Err(e) => {
                    if !matches!(e, NodeError::Status { status: 503, .. }) {
                        self.events.push(
                            "queue",
                            true,
                            format!("queued task {} not sent to {worker}: {e}", entry.id),
                        );
                    }
                    free.remove(0);
                    if let Err(e) = self.history.not_sent(entry.id).await {
                        let what = format!("cannot put queued task {} back", entry.id);
                        self.events.failed("queue", what, &e);
                        break;
                    }
                }
            }
        }
        self.reload_queue().await;
    }
}

/// Why the workers refused a task (HTTP 400 or 412), for the user.
fn refusal(model_class: &str, e: &NodeError) -> String {
    match e {
        NodeError::Status { status: 412, .. } => {
            format!("the workers do not accept model class {model_class:?}")
        }
        NodeError::Status { body, .. } => format!("the worker refused the task: {body}"),
        other => other.to_string(),
    }
}

/// The body Fossa's submit endpoint takes for `request`.
fn node_body(request: &TaskRequest) -> serde_json::Value {
    json!({
        "model_class": request.model_class,
        "method": request.method.clone().unwrap_or_else(|| "go".into()),
        "model_construction_kwargs": request.model_construction_kwargs,
        "method_kwargs": request.method_kwargs,
        "resolver_context": request.resolver_context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_why() {
        let e = NodeError::Status {
            status: 412,
            body: String::new(),
        };
        assert_eq!(
            refusal("Etl", &e),
            "the workers do not accept model class \"Etl\""
        );
        let e = NodeError::Status {
            status: 400,
            body: "bad kwargs".into(),
        };
        assert_eq!(
            refusal("Etl", &e),
            "the worker refused the task: bad kwargs"
        );
    }

    #[test]
    fn the_body_defaults_the_method_to_go() {
        let r: TaskRequest = serde_json::from_str(r#"{"model_class":"Etl"}"#).unwrap();
        assert_eq!(node_body(&r)["method"], "go");
    }
}
