//! Polling: every worker the backend lists is asked for its Fossa
//! `node_info` concurrently, all under one shared deadline, so a slow or
//! broken worker is marked with its reason and never delays the others.
//! Busy workers are then kept from scale-in.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fossa_web::model::{FleetSnapshot, Health, NodeInfo, Worker};
use futures::StreamExt;

use super::backend::{BackendError, WorkerBackend, WorkerRef};
use super::node::{NodeClient, NodeError};
use crate::events::Events;

/// Tuning of the poller.
#[derive(Debug, Clone, Copy)]
pub struct PollSettings {
    /// Per-request timeout of node_info.
    pub timeout: Duration,
    /// Time between refreshes.
    pub interval: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl Default for PollSettings {
    fn default() -> Self {
        PollSettings {
            timeout: Duration::from_secs(2),
            interval: Duration::from_secs(2),
            concurrency: 2048,
        }
    }
}

/// The poller: the node client, its tuning, and the last protection failure.
pub struct Poller {
    client: NodeClient,
    settings: PollSettings,
    /// The last failure to protect busy workers, said once.
    protect_error: Mutex<Option<String>>,
}

impl Poller {
    /// A poller with `settings`, sending `token` to every worker if given.
    pub fn new(settings: PollSettings, token: Option<String>) -> Self {
        Poller {
            client: NodeClient::new(settings.timeout).with_token(token),
            settings,
            protect_error: Mutex::new(None),
        }
    }

    /// Its node client (dispatch shares it).
    pub fn client(&self) -> &NodeClient {
        &self.client
    }

    /// Its tuning.
    pub fn settings(&self) -> PollSettings {
        self.settings
    }

    /// Lists the workers and polls each concurrently, sorted by id. Every
    /// poll shares one deadline, a node timeout after the listing, so this
    /// takes at most one timeout however many workers hang and however long
    /// launching thousands of requests takes. A failed listing keeps the
    /// workers of `previous`.
    pub async fn poll_all(
        &self,
        backend: &dyn WorkerBackend,
        previous: &FleetSnapshot,
        events: &Events,
    ) -> Vec<Worker> {
        let refs = match backend.list().await {
            Ok(r) => r,
            Err(e) => {
                events.failed("fleet", "cannot list workers", &e);
                previous.workers.iter().map(WorkerRef::from).collect()
            }
        };
        let by_id: HashMap<&str, &Worker> = previous
            .workers
            .iter()
            .map(|w| (w.id.as_str(), w))
            .collect();
        let deadline = Instant::now() + self.settings.timeout;
        let mut workers: Vec<Worker> = futures::stream::iter(refs)
            .map(|r| {
                let prev = by_id.get(r.id.as_str()).copied();
                self.poll(r, prev, deadline)
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        workers.sort_by_cached_key(|w| natural_key(&w.id));
        workers
    }

    /// Polls worker `w` again at once (after a dispatch).
    pub async fn poll_one(&self, w: &Worker) -> Worker {
        let deadline = Instant::now() + self.settings.timeout;
        self.poll(WorkerRef::from(w), Some(w), deadline).await
    }

    /// Polls one worker; a poll still running at `deadline` counts as a timeout.
    async fn poll(&self, w: WorkerRef, previous: Option<&Worker>, deadline: Instant) -> Worker {
        let mut worker = Worker {
            id: w.id,
            address: w.address,
            status: w.status,
            health: Health::Unknown,
            started_at: w.started_at,
            capacity_provider: w.capacity_provider,
            node: None,
            poll_ms: None,
            protected: false,
            stopped_reason: w.stopped_reason,
        };
        if worker.status == fossa_web::model::STOPPED {
            // Shown for a while after it stopped; nothing answers there.
            return worker;
        }
        let t = Instant::now();
        let result =
            tokio::time::timeout_at(deadline.into(), self.client.node_info(&worker.address))
                .await
                .unwrap_or(Err(NodeError::Timeout(
                    self.settings.timeout.as_millis() as u64
                )));
        worker.poll_ms = Some(t.elapsed().as_millis() as u64);
        worker.protected = w.protected;
        (worker.health, worker.node) = match result {
            Ok(info) => (Health::Ok, Some(info)),
            Err(e) => (health_of(&e), previous.and_then(|p| p.node.clone())),
        };
        worker
    }

    /// Keeps the busy workers among `workers` from scale-in and lets the
    /// idle ones go (a worker running only `stuck` parents is idle); says
    /// once (until it works again) when that fails.
    pub async fn protect(
        &self,
        backend: &dyn WorkerBackend,
        workers: &[Worker],
        stuck: &HashSet<String>,
        events: &Events,
    ) {
        let (busy, idle) = busy_and_idle(workers, stuck);
        match backend.protect(&busy, &idle).await {
            Ok(()) => *self.protect_error.lock().expect("lock") = None,
            Err(e) => self.protect_failed(&e, events),
        }
    }

    fn protect_failed(&self, e: &BackendError, events: &Events) {
        let msg = format!(
            "cannot protect busy workers from scale-in: {}",
            fossa_contract::aws::chain(e)
        );
        let mut last = self.protect_error.lock().expect("lock");
        if last.as_deref() != Some(msg.as_str()) {
            events.push("autoscale", true, msg.clone());
            *last = Some(msg);
        }
    }
}

fn health_of(e: &NodeError) -> Health {
    match e {
        NodeError::Timeout(_) => Health::Timeout(e.to_string()),
        NodeError::Unreachable(_) => Health::Unreachable(e.to_string()),
        NodeError::Status { .. } => Health::Error(e.to_string()),
        NodeError::Garbage(_) => Health::Garbage(e.to_string()),
    }
}

/// The answering workers running work, and those running none but `stuck`
/// parents (which can never finish: [`super::stuck`]). A worker that does
/// not answer is in neither: its protection stays as it was; nor is one on
/// its way out, which ECS no longer protects.
pub fn busy_and_idle(workers: &[Worker], stuck: &HashSet<String>) -> (Vec<String>, Vec<String>) {
    let mut busy = Vec::new();
    let mut idle = Vec::new();
    for w in workers.iter().filter(|w| w.takes_work()) {
        let Some(n) = &w.node else { continue };
        if working_slots(n, stuck) > 0
            || n.running_tasks.iter().any(|t| !stuck.contains(&t.task_id))
        {
            busy.push(w.id.clone());
        } else {
            idle.push(w.id.clone());
        }
    }
    (busy, idle)
}

/// The task slots of node `n` in use by anything but `stuck` parents.
pub fn working_slots(n: &NodeInfo, stuck: &HashSet<String>) -> u32 {
    let stuck_here = n
        .running_tasks
        .iter()
        .filter(|t| stuck.contains(&t.task_id))
        .count() as u32;
    n.max_concurrent_tasks
        .saturating_sub(n.available_processing_capacity)
        .saturating_sub(stuck_here)
}

/// Sorts `local-10` after `local-9`.
fn natural_key(id: &str) -> (String, u64, String) {
    let digits: String = id
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let head = id[..id.len() - digits.len()].to_owned();
    (head, digits.parse().unwrap_or(0), id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_naturally() {
        let mut ids = vec!["local-10", "local-2", "local-1"];
        ids.sort_by_key(|a| natural_key(a));
        assert_eq!(ids, ["local-1", "local-2", "local-10"]);
    }

    #[test]
    fn busy_idle_and_silent_workers() {
        let w = |id: &str, health: Health, free: u32| Worker {
            id: id.into(),
            health,
            node: Some(NodeInfo {
                max_concurrent_tasks: 2,
                available_processing_capacity: free,
                ..Default::default()
            }),
            ..Default::default()
        };
        let none = HashSet::new();
        let (busy, idle) = busy_and_idle(
            &[
                w("a", Health::Ok, 1),
                w("b", Health::Ok, 2),
                w("c", Health::Timeout("slow".into()), 0),
            ],
            &none,
        );
        assert_eq!((busy, idle), (vec!["a".to_owned()], vec!["b".to_owned()]));
    }

    #[test]
    fn a_worker_running_only_stuck_parents_is_idle() {
        let running = |id: &str| fossa_web::model::FossaTask {
            task_id: id.into(),
            model_class: "Etl".into(),
            method: None,
            method_kwargs: serde_json::Value::Null,
            status: fossa_web::model::TaskStatus::Running,
            started: Some(1),
            finished: None,
            results: None,
            spec: Default::default(),
        };
        let w = |id: &str, tasks: &[&str]| Worker {
            id: id.into(),
            health: Health::Ok,
            node: Some(NodeInfo {
                max_concurrent_tasks: 2,
                available_processing_capacity: 2 - tasks.len() as u32,
                running_tasks: tasks.iter().map(|t| running(t)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let stuck = HashSet::from(["p1".to_owned()]);
        let workers = [w("a", &["p1"]), w("b", &["p1", "t2"]), w("c", &["p3"])];
        let (busy, idle) = busy_and_idle(&workers, &stuck);
        assert_eq!(busy, ["b", "c"]);
        assert_eq!(idle, ["a"]);
        let slots: Vec<u32> = workers
            .iter()
            .map(|w| working_slots(w.node.as_ref().unwrap(), &stuck))
            .collect();
        assert_eq!(slots, [0, 1, 1]);
        // Nothing stuck: a worker running anything is busy, as before.
        assert_eq!(busy_and_idle(&workers, &HashSet::new()).0.len(), 3);
    }
}
