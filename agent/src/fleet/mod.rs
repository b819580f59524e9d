//! The fleet model: a background poller keeps an immutable [`FleetSnapshot`]
//! of every worker (from the [`WorkerBackend`]) and each worker's Fossa
//! `node_info`, fetched concurrently with a per-request timeout, so a slow or
//! broken worker is marked with its reason and never delays the others. The
//! UI reads the snapshot (it never waits on the network) and dispatches tasks
//! through [`FleetModel`]'s [`Fleet`] implementation.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use fossa_contract::config::Autoscale;
use fossa_web::model::{
    AgentInfo, ControlError, Cost, DispatchError, Dispatched, Event, Fleet, FleetSnapshot,
    FossaTask, Health, HistoryPage, HistoryQuery, LogLine, LogQuery, QueueState, Queued,
    SlotSample, Submitted, TaskRequest, Worker,
};
use fossa_web::views::TaskRow;
use futures::{FutureExt, StreamExt};
use serde_json::json;
use tokio::sync::watch;

pub mod autoscale;
pub mod backend;
pub mod fargate;
pub mod log_cache;
pub mod logs;
pub mod node;

pub use backend::{BackendError, WorkerBackend, WorkerRef};

use crate::duties::driver::Board;
use crate::events::Events;
use crate::history::queue::{EnqueueError, Entry};
use crate::history::{status, History, HistoryError, Meter, Observed};
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
    history: Arc<History>,
    /// What the history holds of each task in view: its status, and since when.
    seen: Mutex<HashMap<(String, String), (String, i64)>>,
    /// The queue as last read, for the snapshot.
    queue: Mutex<Vec<Queued>>,
    /// One drain of the queue at a time.
    draining: tokio::sync::Mutex<()>,
    /// Slots in use, one sample per [`SLOT_SAMPLE_SECS`], the last hour.
    slots: Mutex<VecDeque<SlotSample>>,
    /// This month's cost meter, when last ticked, and when last kept.
    meter: Mutex<Option<(Meter, Instant, Instant)>>,
    /// Autoscaling, when on: its policy and what it remembers.
    autoscale: Mutex<Option<(autoscale::Policy, autoscale::State)>>,
    /// Autoscaling as configured (the stack config or local mode's flags).
    configured_autoscale: Mutex<Option<Autoscale>>,
    /// Task slots of one worker, as the last answering worker said.
    slots_per_worker: std::sync::atomic::AtomicU32,
    /// The last failure to protect busy workers, said once.
    protect_error: Mutex<Option<String>>,
}

/// The history setting that keeps autoscaling set in the UI.
const AUTOSCALE_SETTING: &str = "autoscale";

/// Autoscaling set in the UI, over what was configured then.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct AutoscaleOverride {
    /// The configured autoscaling it replaced.
    configured: Option<Autoscale>,
    /// What the UI set (`None`: off).
    set: Option<Autoscale>,
}

/// The longest gap between two refreshes the cost meter counts (a stalled
/// or stopped agent does not invent hours).
const METER_MAX_GAP: Duration = Duration::from_secs(60);
/// How often the meter is written to the history database.
const METER_SAVE_EVERY: Duration = Duration::from_secs(60);

/// Seconds each slots-in-use sample covers (its peak is kept).
const SLOT_SAMPLE_SECS: i64 = 30;
/// Samples kept: one hour.
const SLOT_SAMPLES: usize = 120;

/// How long a dispatched task may go unlisted by its (answering) node
/// before the history calls it lost.
const UNLISTED_GRACE_SECS: i64 = 60;

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
        history: Arc<History>,
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
            history,
            seen: Mutex::new(HashMap::new()),
            queue: Mutex::new(Vec::new()),
            draining: tokio::sync::Mutex::new(()),
            slots: Mutex::new(VecDeque::new()),
            meter: Mutex::new(None),
            autoscale: Mutex::new(None),
            configured_autoscale: Mutex::new(None),
            slots_per_worker: std::sync::atomic::AtomicU32::new(0),
            protect_error: Mutex::new(None),
        })
    }

    /// Autoscaling's bounds now, when on.
    pub fn autoscale_bounds(&self) -> Option<Autoscale> {
        self.autoscale
            .lock()
            .expect("lock")
            .as_ref()
            .map(|(p, _)| Autoscale {
                min_workers: p.min,
                max_workers: p.max,
                idle_window_secs: p.idle_window.as_secs(),
            })
    }

    /// The most workers this fleet's mode runs.
    fn mode_limit(&self) -> u32 {
        if self.backend.mode() == "local" {
            fossa_contract::limits::LOCAL_MAX_WORKERS
        } else {
            fossa_contract::limits::MAX_WORKERS
        }
    }

    /// The policy of `a` in this fleet's mode (its scale-up cooldown).
    fn policy_of(&self, a: &Autoscale) -> autoscale::Policy {
        let secs = if self.backend.mode() == "local" {
            fossa_contract::limits::LOCAL_AUTOSCALE_UP_COOLDOWN_SECS
        } else {
            fossa_contract::limits::AUTOSCALE_UP_COOLDOWN_SECS
        };
        autoscale::Policy::of(a, Duration::from_secs(secs))
    }

    /// Follows the configured autoscaling (the stack config, or local
    /// mode's flags): on, off or new bounds. Bounds set in the UI since
    /// (kept in the history database) win until the configured ones change.
    pub fn follow_autoscale(&self, configured: Option<Autoscale>) {
        let kept = self
            .history
            .setting(AUTOSCALE_SETTING)
            .and_then(|v| serde_json::from_str::<AutoscaleOverride>(&v).ok());
        let (wanted, why) = match kept {
            Some(o) if o.configured == configured => (o.set, "as set in the UI"),
            Some(_) => {
                // The configuration changed since: it wins, and the UI's goes.
                let _ = self.history.set_setting(AUTOSCALE_SETTING, None);
                (configured, "as configured")
            }
            None => (configured, "as configured"),
        };
        *self.configured_autoscale.lock().expect("lock") = configured;
        self.apply_autoscale(wanted, why);
    }

    /// Turns autoscaling on with `wanted` or off, keeping what it remembers
    /// while the bounds stay the same. Says so once, with `why`.
    fn apply_autoscale(&self, wanted: Option<Autoscale>, why: &str) -> Option<String> {
        let wanted = wanted.map(|a| self.policy_of(&a));
        let mut a = self.autoscale.lock().expect("lock");
        let now = a.as_ref().map(|x| x.0);
        if now == wanted {
            return None;
        }
        let msg = match &wanted {
            Some(p) => format!(
                "autoscaling between {} and {} workers (idle window {} s), {why}",
                p.min,
                p.max,
                p.idle_window.as_secs()
            ),
            None => format!(
                "autoscaling off, {why}: {} workers run until changed",
                self.backend.desired()
            ),
        };
        *a = wanted.map(|p| (p, autoscale::State::default()));
        drop(a);
        // Shown at once, not at the next refresh.
        let mut snap = (*self.snapshot.load_full()).clone();
        snap.autoscale = self.autoscale_bounds();
        self.snapshot.store(Arc::new(snap));
        self.events.push("autoscale", false, msg.clone());
        Some(msg)
    }

    /// Autoscaling from the UI or API: checked against the mode's limit,
    /// applied, and kept over the configured bounds until those change.
    fn set_autoscale_now(&self, wanted: Option<Autoscale>) -> Result<String, ControlError> {
        if let Some(a) = &wanted {
            a.check(self.mode_limit())
                .map_err(|e| ControlError::Invalid(e.to_string()))?;
        }
        let configured = *self.configured_autoscale.lock().expect("lock");
        let kept = AutoscaleOverride {
            configured,
            set: wanted,
        };
        let json = serde_json::to_string(&kept).expect("serialises");
        self.history
            .set_setting(AUTOSCALE_SETTING, Some(&json))
            .map_err(history_failed)?;
        Ok(self
            .apply_autoscale(wanted, "as set in the UI")
            .unwrap_or_else(|| "autoscaling unchanged".into()))
    }

    fn autoscaling(&self) -> bool {
        self.autoscale.lock().expect("lock").is_some()
    }

    /// One look of the autoscaler: the signals now, a decision, and the
    /// scale it asks for, as an event with its reason.
    pub async fn autoscale(&self) {
        if !self.autoscaling() {
            return;
        }
        let snap = self.snapshot.load_full();
        let mut s = autoscale::Signals {
            gateway_queued: snap.queue.len() as u32,
            desired: snap.desired_workers,
            ..Default::default()
        };
        for w in snap.workers.iter().filter(|w| w.health == Health::Ok) {
            if let Some(n) = &w.node {
                s.answering += 1;
                s.free_slots += n.available_processing_capacity;
                s.busy_slots += n
                    .max_concurrent_tasks
                    .saturating_sub(n.available_processing_capacity);
                self.slots_per_worker
                    .store(n.max_concurrent_tasks, std::sync::atomic::Ordering::Relaxed);
            }
        }
        s.slots_per_worker = self
            .slots_per_worker
            .load(std::sync::atomic::Ordering::Relaxed);
        s.busy_workers = busy_and_idle(&snap.workers).0.len() as u32;
        s.broker_waiting = self.backend.broker_waiting().await;
        let decision = {
            let mut a = self.autoscale.lock().expect("lock");
            let Some((p, st)) = a.as_mut() else { return };
            autoscale::decide(p, &s, st, Instant::now())
        };
        let Some(d) = decision else { return };
        let mut target = d.target;
        if target < s.desired {
            // Scale-in follows an idle window. Look once more (which also
            // protects the workers busy now), so a task sent a moment ago
            // neither loses its worker nor leaves too few.
            self.refresh().await;
            let snap = self.snapshot.load_full();
            if !snap.queue.is_empty() {
                return;
            }
            let (busy, _) = busy_and_idle(&snap.workers);
            target = target.max(busy.len() as u32);
            if target >= s.desired {
                return;
            }
        }
        match self.backend.scale(target).await {
            Ok(_) => self.events.push("autoscale", false, d.reason),
            Err(e) => self.events.push(
                "autoscale",
                true,
                format!("{}: {}", d.reason, crate::duties::driver::chain(&e)),
            ),
        }
    }

    /// Its history and queue.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Says which agent serves this fleet (shown from the next refresh on).
    pub fn set_agent(&self, info: AgentInfo) {
        let _ = self.agent.set(info);
    }

    /// Polls one worker; a poll still running at `deadline` counts as a timeout.
    async fn poll(&self, w: WorkerRef, previous: Option<&Worker>, deadline: Instant) -> Worker {
        if w.stopped_reason.is_some() {
            // Shown for a while after it stopped; nothing answers there.
            return Worker {
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
        }
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
            protected: w.protected,
            stopped_reason: w.stopped_reason,
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
                previous.workers.iter().map(WorkerRef::from).collect()
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
        let (busy, idle) = busy_and_idle(&workers);
        self.store(workers, t.elapsed());
        match self.backend.protect(&busy, &idle).await {
            Ok(()) => *self.protect_error.lock().expect("lock") = None,
            Err(e) => self.protect_failed(&e),
        }
    }

    /// Says once (until it works again) that scale-in protection failed.
    fn protect_failed(&self, e: &BackendError) {
        let msg = format!(
            "cannot protect busy workers from scale-in: {}",
            crate::duties::driver::chain(e)
        );
        let mut last = self.protect_error.lock().expect("lock");
        if last.as_deref() != Some(msg.as_str()) {
            self.events.push("autoscale", true, msg.clone());
            *last = Some(msg);
        }
    }

    /// Adds the time since the last refresh to this month's meter, at
    /// `cost`'s hourly figures, and fills in the month-to-date figures.
    fn metered(&self, mut cost: Cost) -> Cost {
        let now = Instant::now();
        let month = crate::duties::nat_traffic::month_of(fossa_contract::unix_now());
        let mut slot = self.meter.lock().expect("lock");
        let (m, last, saved) = slot.get_or_insert_with(|| (self.history.meter(&month), now, now));
        if m.month != month {
            *m = Meter {
                month: month.clone(),
                ..Default::default()
            };
        }
        let gap = now.duration_since(*last);
        if gap <= METER_MAX_GAP {
            let h = gap.as_secs_f64() / 3600.0;
            m.hours += h;
            m.dollars += h * cost.stack_hourly;
            m.gateway_dollars += h * cost.gateway_hourly;
            m.nat_gateway_hour_dollars += h * cost.nat_gateway_hourly;
        }
        *last = now;
        if now.duration_since(*saved) >= METER_SAVE_EVERY {
            *saved = now;
            self.history.save_meter(m.clone());
        }
        // NAT bytes count for the month the NAT duty counted them in.
        if cost.month != m.month {
            cost.nat_bytes = 0;
        }
        let gb = cost.nat_bytes as f64 / 1e9;
        cost.month = m.month.clone();
        cost.metered_hours = m.hours;
        cost.month_to_date = m.dollars;
        cost.nat_gateway_month_to_date = m.nat_gateway_hour_dollars + gb * cost.nat_gateway_per_gb;
        cost.saved_month_to_date = cost.nat_gateway_month_to_date - m.gateway_dollars;
        cost
    }

    /// Keeps the meter now (on the way out).
    pub fn save_meter(&self) {
        if let Some((m, _, _)) = self.meter.lock().expect("lock").as_ref() {
            self.history.save_meter_now(m);
        }
    }

    /// Adds the slots in use now to the last hour's samples.
    fn sample_slots(&self, workers: &[Worker]) -> Vec<SlotSample> {
        let (mut used, mut total) = (0u32, 0u32);
        for w in workers.iter().filter(|w| w.health == Health::Ok) {
            if let Some(n) = &w.node {
                total += n.max_concurrent_tasks;
                used += n
                    .max_concurrent_tasks
                    .saturating_sub(n.available_processing_capacity);
            }
        }
        let now = fossa_contract::unix_now();
        let mut q = self.slots.lock().expect("lock");
        match q.back_mut() {
            Some(last) if now - last.at < SLOT_SAMPLE_SECS => {
                last.used = last.used.max(used);
                last.total = total;
            }
            _ => {
                if q.len() == SLOT_SAMPLES {
                    q.pop_front();
                }
                q.push_back(SlotSample {
                    at: now,
                    used,
                    total,
                });
            }
        }
        q.iter().copied().collect()
    }

    fn store(&self, workers: Vec<Worker>, took: Duration) {
        let slots = self.sample_slots(&workers);
        let snap = FleetSnapshot {
            slots,
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
            cost: self.backend.cost().map(|c| self.metered(c)),
            agent: self.agent.get().cloned(),
            dispatched: self
                .dispatched
                .lock()
                .expect("lock")
                .iter()
                .cloned()
                .collect(),
            queue: self.queue.lock().expect("lock").clone(),
            autoscale: self.autoscale_bounds(),
        };
        self.observe(&snap);
        self.snapshot.store(Arc::new(snap));
    }

    /// Hands the recorder every task whose status changed since the last
    /// snapshot, and marks lost the running ones whose worker is gone or no
    /// longer lists them. Never waits: if the recorder is behind, the same
    /// changes go again next time.
    fn observe(&self, snap: &FleetSnapshot) {
        let now = fossa_contract::unix_now();
        let mut seen = self.seen.lock().expect("lock");
        let mut batch = Vec::new();
        let mut next: HashMap<(String, String), (String, i64)> = HashMap::new();
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
                        batch.push(Observed {
                            task: t.clone(),
                            worker_id: w.id.clone(),
                        });
                        now
                    }
                };
                next.insert(key, (t.status.clone(), since));
            }
        }
        for (key, (st, since)) in seen.iter() {
            if next.contains_key(key) || status::is_final(st) {
                continue;
            }
            let worker = snap.workers.iter().find(|w| w.id == key.0);
            let reason = match worker {
                None => format!("worker {} is gone (stopped, replaced or scaled in)", key.0),
                Some(w) if w.stopped_reason.is_some() => format!(
                    "worker {} stopped while it ran: {}",
                    key.0,
                    w.stopped_reason.as_deref().unwrap_or_default()
                ),
                Some(w) if w.health == Health::Ok && st == "running" => format!(
                    "worker {} no longer lists it: the worker restarted while it ran",
                    key.0
                ),
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
        if self.history.record(batch) {
            *seen = next;
        }
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
        let r = WorkerRef::from(w);
        let fresh = self
            .poll(r, Some(w), Instant::now() + self.settings.timeout)
            .await;
        let mut workers = snap.workers.clone();
        if let Some(slot) = workers.iter_mut().find(|w| w.id == id) {
            *slot = fresh;
        }
        self.store(workers, Duration::from_millis(snap.refresh_ms));
    }

    /// Sends `request` to the answering worker with the most free slots
    /// (busy ones last), and records it.
    async fn dispatch_now(&self, request: &TaskRequest) -> Result<Dispatched, DispatchError> {
        let snap = self.snapshot.load_full();
        let mut candidates: Vec<&Worker> = snap
            .workers
            .iter()
            .filter(|w| w.health == Health::Ok)
            .collect();
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
                    self.remember(None, &d, request).await;
                    self.refresh_one(&d.worker_id).await;
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
    /// same transaction), the recent list and an event.
    async fn remember(&self, queue_id: Option<i64>, d: &Dispatched, request: &TaskRequest) {
        if let Err(e) = self.history.dispatched(queue_id, d, request).await {
            self.events.push(
                "history",
                true,
                format!(
                    "cannot record task {}: {}",
                    d.task_id,
                    crate::duties::driver::chain(&e)
                ),
            );
        }
        self.seen.lock().expect("lock").insert(
            (d.worker_id.clone(), d.task_id.clone()),
            (status::DISPATCHED.into(), d.at),
        );
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

    async fn enqueue(&self, request: &TaskRequest) -> Result<Queued, DispatchError> {
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
                    crate::duties::driver::chain(&e)
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

    /// Reads the queue again and shows it in the snapshot.
    async fn reload_queue(&self) {
        match self.history.queued().await {
            Ok(q) => *self.queue.lock().expect("lock") = q,
            Err(e) => self.events.push(
                "queue",
                true,
                format!(
                    "cannot read the queue: {}",
                    crate::duties::driver::chain(&e)
                ),
            ),
        }
        let snap = self.snapshot.load_full();
        let mut next = (*snap).clone();
        next.queue = self.queue.lock().expect("lock").clone();
        self.snapshot.store(Arc::new(next));
    }

    /// Sends queued tasks, oldest first, while answering workers have free
    /// slots. Each is marked with its worker before the request leaves, so
    /// a crash can never send it twice ([`crate::history::queue`]).
    pub async fn drain(&self) {
        let _one = self.draining.lock().await;
        if self.queue.lock().expect("lock").is_empty() {
            return;
        }
        let snap = self.snapshot.load_full();
        let mut free: Vec<(String, String, u32)> = snap
            .workers
            .iter()
            .filter(|w| w.health == Health::Ok && w.free().unwrap_or(0) > 0)
            .map(|w| (w.id.clone(), w.address.clone(), w.free().unwrap_or(0)))
            .collect();
        free.sort_by_key(|f| std::cmp::Reverse(f.2));
        while let Some((worker, address, _)) = free.first().cloned() {
            let entry: Entry = match self.history.head().await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    self.events.push(
                        "queue",
                        true,
                        format!(
                            "cannot read the queue: {}",
                            crate::duties::driver::chain(&e)
                        ),
                    );
                    break;
                }
            };
            if let Err(e) = self.history.sending(entry.id, &worker).await {
                self.events.push(
                    "queue",
                    true,
                    format!(
                        "cannot mark queued task {}: {}",
                        entry.id,
                        crate::duties::driver::chain(&e)
                    ),
                );
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
                    self.remember(Some(entry.id), &d, &entry.request).await;
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
                        self.events.push(
                            "queue",
                            true,
                            format!(
                                "cannot record queued task {}: {}",
                                entry.id,
                                crate::duties::driver::chain(&e)
                            ),
                        );
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
                        self.events.push(
                            "queue",
                            true,
                            format!(
                                "cannot put queued task {} back: {}",
                                entry.id,
                                crate::duties::driver::chain(&e)
                            ),
                        );
                        break;
                    }
                }
            }
        }
        self.reload_queue().await;
    }

    /// After a start: what the history says ran when the agent stopped,
    /// and what the queue was sending. Called once by [`FleetModel::run`].
    async fn resume(&self) {
        match self.history.unfinished() {
            Ok(rows) => {
                let now = fossa_contract::unix_now();
                let mut seen = self.seen.lock().expect("lock");
                for o in rows {
                    seen.insert((o.worker_id, o.task.task_id), (o.task.status, now));
                }
            }
            Err(e) => self.events.push(
                "history",
                true,
                format!(
                    "cannot read the history: {}",
                    crate::duties::driver::chain(&e)
                ),
            ),
        }
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
            Err(e) => self.events.push(
                "queue",
                true,
                format!(
                    "cannot recover the queue: {}",
                    crate::duties::driver::chain(&e)
                ),
            ),
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

    /// Refreshes every `interval` until `shutdown` turns true, sending
    /// queued tasks after each refresh.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        self.resume().await;
        loop {
            self.refresh().await;
            // A bug in the queue or the autoscaler must not stop the poller.
            for (what, step) in [
                (
                    "queue",
                    Box::pin(self.drain())
                        as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>,
                ),
                ("autoscale", Box::pin(self.autoscale())),
            ] {
                if let Err(p) = std::panic::AssertUnwindSafe(step).catch_unwind().await {
                    let why = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    self.events.push(
                        what,
                        true,
                        format!("the {what} step failed and is skipped this round: {why}"),
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.interval) => {}
                _ = shutdown.changed() => {
                    self.save_meter();
                    return;
                }
            }
        }
    }
}

/// The answering workers running work, and those running none. A worker
/// that does not answer is in neither: its protection stays as it was.
fn busy_and_idle(workers: &[Worker]) -> (Vec<String>, Vec<String>) {
    let mut busy = Vec::new();
    let mut idle = Vec::new();
    for w in workers.iter().filter(|w| w.health == Health::Ok) {
        let Some(n) = &w.node else { continue };
        if n.available_processing_capacity < n.max_concurrent_tasks || !n.running_tasks.is_empty() {
            busy.push(w.id.clone());
        } else {
            idle.push(w.id.clone());
        }
    }
    (busy, idle)
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

/// The history row of a task that stopped being reported before it finished.
fn lost_task(task_id: &str, reason: &str) -> FossaTask {
    FossaTask {
        task_id: task_id.to_owned(),
        model_class: String::new(),
        method: None,
        method_kwargs: serde_json::Value::Null,
        status: status::LOST.into(),
        started: None,
        finished: Some(fossa_contract::unix_now()),
        results: Some(json!({"type": "Lost", "payload": {"reason": reason}})),
    }
}

fn node_body(request: &TaskRequest) -> serde_json::Value {
    json!({
        "model_class": request.model_class,
        "method": request.method.clone().unwrap_or_else(|| "go".into()),
        "model_construction_kwargs": request.model_construction_kwargs,
        "method_kwargs": request.method_kwargs,
        "resolver_context": request.resolver_context,
    })
}

fn history_failed(e: HistoryError) -> ControlError {
    ControlError::Failed(Box::new(e))
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

    async fn submit(&self, request: TaskRequest) -> Result<Submitted, DispatchError> {
        // First come, first served: while others wait, a new one waits behind them.
        if self.queue.lock().expect("lock").is_empty() {
            match self.dispatch_now(&request).await {
                Ok(d) => return Ok(Submitted::Dispatched(d)),
                Err(DispatchError::NoCapacity(why)) => {
                    let snap = self.snapshot.load_full();
                    // With no worker and none wanted, only the autoscaler
                    // would ever start one: queue for it, or say so.
                    if snap.workers.is_empty() && snap.desired_workers == 0 && !self.autoscaling() {
                        return Err(DispatchError::NoCapacity(why));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.enqueue(&request).await.map(Submitted::Queued)
    }

    async fn history(&self, query: HistoryQuery) -> Result<HistoryPage, ControlError> {
        self.history.page(query).await.map_err(history_failed)
    }

    async fn recorded(&self, id: &str) -> Vec<TaskRow> {
        match self.history.around(id.to_owned()).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(
                    "cannot read task {id} from the history: {}",
                    crate::duties::driver::chain(&e)
                );
                Vec::new()
            }
        }
    }

    async fn logs(&self, worker: &str, query: LogQuery) -> Result<Vec<LogLine>, ControlError> {
        self.backend
            .logs(worker, &query)
            .await
            .map_err(ControlError::from)
    }

    async fn queue_state(&self, id: i64) -> Result<Option<QueueState>, ControlError> {
        self.history.queue_state(id).await.map_err(history_failed)
    }

    async fn cancel(&self, id: i64) -> Result<bool, ControlError> {
        let r = self.history.cancel(id).await.map_err(history_failed)?;
        if r {
            self.events
                .push("queue", false, format!("queued task {id} cancelled"));
        }
        self.reload_queue().await;
        Ok(r)
    }

    async fn scale(&self, workers: u32) -> Result<String, ControlError> {
        let r = self.backend.scale(workers).await;
        self.log("scale", r)
    }

    async fn set_autoscale(&self, wanted: Option<Autoscale>) -> Result<String, ControlError> {
        self.set_autoscale_now(wanted)
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
