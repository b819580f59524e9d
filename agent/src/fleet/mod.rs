//! The fleet model: a background poller keeps an immutable [`FleetSnapshot`]
//! of every worker (from the [`WorkerBackend`]) and each worker's Fossa
//! `node_info`, fetched concurrently with a per-request timeout, so a slow or
//! broken worker is marked with its reason and never delays the others. The
//! UI reads the snapshot (it never waits on the network) and dispatches tasks
//! through [`FleetModel`]'s [`Fleet`] implementation.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use fossa_web::model::{
    AgentInfo, ControlError, DispatchError, Dispatched, Event, Fleet, FleetSnapshot, Health,
    TaskRequest, Worker,
};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;

pub mod backend;
pub mod fargate;
pub mod node;

pub use backend::{BackendError, WorkerBackend, WorkerRef};

use crate::duties::driver::Board;
use crate::events::Events;
use node::{NodeClient, NodeError};

/// The running agent: its version, and the SHA-256 of its binary (read once,
/// streamed, so the binary is never all in memory).
pub fn this_agent() -> AgentInfo {
    static SHA256: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sha256 = SHA256.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        std::fs::File::open("/proc/self/exe")
            .and_then(|mut f| std::io::copy(&mut f, &mut hasher))
            .map(|_| hex::encode(hasher.finalize()))
            .unwrap_or_default()
    });
    AgentInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        sha256: sha256.clone(),
    }
}

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

/// How many dispatched tasks are remembered.
const DISPATCH_MEMORY: usize = 1000;

/// The fleet model shared by the poller and the UI.
pub struct FleetModel {
    backend: Arc<dyn WorkerBackend>,
    board: Board,
    snapshot: ArcSwap<FleetSnapshot>,
    events: Events,
    client: NodeClient,
    settings: PollSettings,
    stack: String,
    dispatched: Mutex<VecDeque<Dispatched>>,
    agent: std::sync::OnceLock<AgentInfo>,
}

fn health_of(e: &NodeError) -> Health {
    match e {
        NodeError::Timeout(_) => Health::Timeout(e.to_string()),
        NodeError::Unreachable(_) => Health::Unreachable(e.to_string()),
        NodeError::Status { .. } => Health::Error(e.to_string()),
        NodeError::Garbage(_) => Health::Garbage(e.to_string()),
    }
}

impl FleetModel {
    /// A model over `backend`, showing the duties on `board`; call
    /// [`FleetModel::run`] to keep it fresh.
    pub fn new(
        backend: Arc<dyn WorkerBackend>,
        board: Board,
        events: Events,
        stack: &str,
        settings: PollSettings,
    ) -> Arc<Self> {
        let initial = FleetSnapshot {
            mode: backend.mode().into(),
            stack: stack.into(),
            ..Default::default()
        };
        Arc::new(FleetModel {
            client: NodeClient::new(settings.timeout),
            snapshot: ArcSwap::from_pointee(initial),
            backend,
            board,
            events,
            settings,
            stack: stack.into(),
            dispatched: Mutex::new(VecDeque::new()),
            agent: std::sync::OnceLock::new(),
        })
    }

    /// Says which agent serves this fleet (shown from the next refresh on).
    pub fn set_agent(&self, info: AgentInfo) {
        let _ = self.agent.set(info);
    }

    /// Polls one worker; a poll still running at `deadline` counts as a timeout.
    async fn poll(&self, w: WorkerRef, previous: Option<&Worker>, deadline: Instant) -> Worker {
        let t = Instant::now();
        let result = tokio::time::timeout_at(deadline.into(), self.client.node_info(&w.address))
            .await
            .unwrap_or(Err(NodeError::Timeout(
                self.settings.timeout.as_millis() as u64
            )));
        let poll_ms = Some(t.elapsed().as_millis() as u64);
        let (health, node) = match result {
            Ok(info) => (Health::Ok, Some(info)),
            Err(e) => (health_of(&e), previous.and_then(|p| p.node.clone())),
        };
        Worker {
            id: w.id,
            address: w.address,
            status: w.status,
            health,
            started_at: w.started_at,
            capacity_provider: w.capacity_provider,
            node,
            poll_ms,
        }
    }

    /// Lists the workers, polls each concurrently and swaps in a new snapshot.
    /// Every poll shares one deadline, a node timeout after the listing, so a
    /// refresh takes at most one timeout however many workers hang and however
    /// long launching thousands of requests takes.
    pub async fn refresh(&self) {
        let t = Instant::now();
        let previous = self.snapshot.load_full();
        let refs = match self.backend.list().await {
            Ok(r) => r,
            Err(e) => {
                self.events.push(
                    "fleet",
                    true,
                    format!("cannot list workers: {}", crate::duties::driver::chain(&e)),
                );
                previous
                    .workers
                    .iter()
                    .map(|w| WorkerRef {
                        id: w.id.clone(),
                        address: w.address.clone(),
                        status: w.status.clone(),
                        started_at: w.started_at,
                        capacity_provider: w.capacity_provider.clone(),
                    })
                    .collect()
            }
        };
        let by_id: std::collections::HashMap<&str, &Worker> = previous
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
        self.store(workers, t.elapsed());
    }

    fn store(&self, workers: Vec<Worker>, took: Duration) {
        let snap = FleetSnapshot {
            mode: self.backend.mode().into(),
            stack: self.stack.clone(),
            taken_at: fossa_contract::unix_now(),
            refresh_ms: took.as_millis() as u64,
            workers,
            desired_workers: self.backend.desired(),
            models: self.backend.models(),
            components: self
                .board
                .borrow()
                .iter()
                .map(|s| s.component.clone())
                .collect(),
            cost: self.backend.cost(),
            agent: self.agent.get().cloned(),
            dispatched: self
                .dispatched
                .lock()
                .expect("lock")
                .iter()
                .cloned()
                .collect(),
        };
        self.snapshot.store(Arc::new(snap));
    }

    /// Records a scale or rebuild as an event, with the whole chain of a failure.
    fn log(&self, what: &str, r: Result<String, BackendError>) -> Result<String, ControlError> {
        match r {
            Ok(m) => {
                self.events.push(what, false, &m);
                Ok(m)
            }
            Err(e) => {
                self.events
                    .push(what, true, crate::duties::driver::chain(&e));
                Err(e.into())
            }
        }
    }

    /// Polls one worker at once (after a dispatch) and updates the snapshot.
    async fn refresh_one(&self, id: &str) {
        let snap = self.snapshot.load_full();
        let Some(w) = snap.workers.iter().find(|w| w.id == id) else {
            return;
        };
        let r = WorkerRef {
            id: w.id.clone(),
            address: w.address.clone(),
            status: w.status.clone(),
            started_at: w.started_at,
            capacity_provider: w.capacity_provider.clone(),
        };
        let fresh = self
            .poll(r, Some(w), Instant::now() + self.settings.timeout)
            .await;
        let mut workers = snap.workers.clone();
        if let Some(slot) = workers.iter_mut().find(|w| w.id == id) {
            *slot = fresh;
        }
        self.store(workers, Duration::from_millis(snap.refresh_ms));
    }

    /// Refreshes every `interval` until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.refresh().await;
            tokio::select! {
                _ = tokio::time::sleep(self.settings.interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
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

#[async_trait]
impl Fleet for FleetModel {
    fn snapshot(&self) -> Arc<FleetSnapshot> {
        self.snapshot.load_full()
    }

    fn events(&self) -> Vec<Event> {
        self.events.list()
    }

    async fn submit(&self, request: TaskRequest) -> Result<Dispatched, DispatchError> {
        let snap = self.snapshot.load_full();
        let mut candidates: Vec<&Worker> = snap
            .workers
            .iter()
            .filter(|w| w.health == Health::Ok && w.free().unwrap_or(0) > 0)
            .collect();
        // Busy but answering workers are tried last: their capacity may have freed up.
        candidates.extend(
            snap.workers
                .iter()
                .filter(|w| w.health == Health::Ok && w.free().unwrap_or(0) == 0),
        );
        candidates.sort_by_key(|w| std::cmp::Reverse(w.free().unwrap_or(0)));
        if candidates.is_empty() {
            return Err(DispatchError::NoCapacity(format!(
                "no worker is answering ({} known); wait for workers to start or scale up",
                snap.workers.len()
            )));
        }
        let body = json!({
            "model_class": request.model_class,
            "method": request.method.clone().unwrap_or_else(|| "go".into()),
            "model_construction_kwargs": request.model_construction_kwargs,
            "method_kwargs": request.method_kwargs,
            "resolver_context": request.resolver_context,
        });
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
                    {
                        let mut q = self.dispatched.lock().expect("lock");
                        if q.len() == DISPATCH_MEMORY {
                            q.pop_front();
                        }
                        q.push_back(d.clone());
                    }
                    self.events.push(
                        "dispatch",
                        false,
                        format!(
                            "task {} ({}) sent to {}",
                            d.task_id, d.model_class, d.worker_id
                        ),
                    );
                    self.refresh_one(&d.worker_id).await;
                    return Ok(d);
                }
                Err(NodeError::Status { status: 503, .. }) => busy += 1,
                Err(NodeError::Status { status: 412, .. }) => {
                    return Err(DispatchError::Invalid(format!(
                        "the workers do not accept model class {:?}",
                        request.model_class
                    )))
                }
                Err(NodeError::Status { status: 400, body }) => {
                    return Err(DispatchError::Invalid(format!(
                        "the worker refused the task: {body}"
                    )))
                }
                Err(e) => errors.push(format!("{}: {e}", w.id)),
            }
        }
        if errors.is_empty() {
            Err(DispatchError::NoCapacity(format!("all {busy} answering workers are at capacity; try again when a task finishes, or scale up")))
        } else {
            Err(DispatchError::Worker(format!(
                "{busy} workers busy; others failed: {}",
                errors.join("; ")
            )))
        }
    }

    async fn scale(&self, workers: u32) -> Result<String, ControlError> {
        let r = self.backend.scale(workers).await;
        self.log("scale", r)
    }

    async fn rebuild(&self) -> Result<String, ControlError> {
        let r = self.backend.rebuild().await;
        self.log("rebuild", r)
    }
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
}
