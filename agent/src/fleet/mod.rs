//! The fleet model: the wiring of the fleet's parts, each owning its state.
//! [`poll`] keeps the workers' `node_info`, [`observe`] hands the history
//! what changed, [`dispatch`] sends tasks and drains the queue,
//! [`autoscaler`] follows the bounds and decides, [`meter`] keeps the slots
//! chart and the month's cost. The model composes an immutable
//! [`FleetSnapshot`] from them after each refresh; the UI reads it (it never
//! waits on the network) and acts through the model's [`Fleet`] implementation.
//! Its loops are duties on the agent's driver ([`loops`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use fossa_contract::config::Autoscale;
use fossa_web::model::{
    AgentInfo, ControlError, DispatchError, Event, Fleet, FleetSnapshot, HistoryPage, HistoryQuery,
    LogLine, LogQuery, QueueState, Submitted, TaskRequest, TaskRow, Worker,
};
use tokio::sync::watch;

pub mod autoscale;
pub mod autoscaler;
pub mod backend;
pub mod dispatch;
pub mod fargate;
pub mod log_cache;
pub mod log_pages;
pub mod logs;
pub mod loops;
pub mod meter;
pub mod node;
pub mod observe;
pub mod poll;
pub mod rescue;
pub mod stuck;
pub mod taken;

pub use backend::{BackendError, WorkerBackend, WorkerRef};
pub use poll::PollSettings;

use crate::duties::driver::Board;
use crate::events::Events;
use crate::history::attempts::Again;
use crate::history::{History, HistoryError};
use autoscaler::Autoscaler;
use dispatch::Dispatcher;
use meter::{CostMeter, SlotSamples};
use observe::Observer;
use poll::{busy_and_idle, Poller};

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
        replaced: None,
    }
}

/// The fleet model shared by the poller and the UI: the parts and the
/// snapshot composed from them.
pub struct FleetModel {
    backend: Arc<dyn WorkerBackend>,
    board: Board,
    snapshot: ArcSwap<FleetSnapshot>,
    events: Events,
    stack: String,
    agent: std::sync::OnceLock<AgentInfo>,
    /// Which agent acts for the stack (none in local mode: this one).
    lease: std::sync::OnceLock<watch::Receiver<crate::duties::lease::Lease>>,
    history: Arc<History>,
    poller: Poller,
    observer: Observer,
    dispatcher: Dispatcher,
    autoscaler: Autoscaler,
    slots: SlotSamples,
    cost: CostMeter,
    /// Bumped after each refresh; the queue and autoscale duties wait on it.
    refreshed: watch::Sender<u64>,
    /// The broker's task queue as last read, and when.
    broker: std::sync::Mutex<(Option<u32>, Option<Instant>)>,
    /// The running parents that can never finish, as last looked at.
    stuck: stuck::Stuck,
}

/// How often the broker's queue is read while autoscaling is off (for
/// `/metrics`); with it on, the autoscaler reads it after every refresh.
const BROKER_READ_EVERY: Duration = Duration::from_secs(15);

impl FleetModel {
    /// A model over `backend`, showing the duties on `board`; register its
    /// [`loops`] on the driver to keep it fresh.
    pub fn new(
        backend: Arc<dyn WorkerBackend>,
        board: Board,
        events: Events,
        stack: &str,
        settings: PollSettings,
        history: Arc<History>,
    ) -> Arc<Self> {
        let initial = FleetSnapshot {
            mode: backend.mode(),
            stack: stack.into(),
            ..Default::default()
        };
        let poller = Poller::new(settings, backend.worker_token());
        let dispatcher = Dispatcher::new(poller.client().clone(), history.clone(), events.clone());
        Arc::new(FleetModel {
            snapshot: ArcSwap::from_pointee(initial),
            autoscaler: Autoscaler::new(
                backend.mode(),
                backend.most_workers(),
                history.clone(),
                events.clone(),
            ),
            observer: Observer::new(history.clone()),
            cost: CostMeter::new(history.clone()),
            slots: SlotSamples::default(),
            backend,
            board,
            events,
            stack: stack.into(),
            agent: std::sync::OnceLock::new(),
            lease: std::sync::OnceLock::new(),
            history,
            poller,
            dispatcher,
            refreshed: watch::Sender::new(0),
            broker: std::sync::Mutex::new((None, None)),
            stuck: stuck::Stuck::default(),
        })
    }

    /// Time between refreshes.
    pub fn poll_interval(&self) -> Duration {
        self.poller.settings().interval
    }

    /// Changes after each refresh.
    pub fn refreshed(&self) -> watch::Receiver<u64> {
        self.refreshed.subscribe()
    }

    /// Autoscaling's bounds now, when on.
    pub fn autoscale_bounds(&self) -> Option<Autoscale> {
        self.autoscaler.bounds()
    }

    /// Follows the configured autoscaling (the stack config, or local
    /// mode's flags): on, off or new bounds. Bounds set in the UI since
    /// win until the configured ones change.
    pub fn follow_autoscale(&self, configured: Option<Autoscale>) {
        if self
            .autoscaler
            .follow(configured, self.backend.desired())
            .is_some()
        {
            self.show_autoscale();
        }
    }

    /// Shows autoscaling's bounds at once, not at the next refresh.
    fn show_autoscale(&self) {
        self.snapshot.rcu(|snap| {
            let mut next = (**snap).clone();
            next.autoscale = self.autoscaler.bounds();
            next
        });
    }

    /// Shows the queue as the dispatcher last read it.
    fn show_queue(&self) {
        self.snapshot.rcu(|snap| {
            let mut next = (**snap).clone();
            next.queue = self.dispatcher.queue();
            next
        });
    }

    /// One look of the autoscaler: the signals now, a decision, and the
    /// scale it asks for, as an event with its reason.
    pub async fn autoscale(&self) {
        let on = self.autoscaler.is_on();
        let last = self.broker.lock().expect("lock").1;
        if !on && last.is_some_and(|t| t.elapsed() < BROKER_READ_EVERY) {
            return;
        }
        let broker_waiting = self.backend.broker_waiting().await;
        *self.broker.lock().expect("lock") = (broker_waiting, Some(Instant::now()));
        self.snapshot.rcu(|snap| {
            let mut next = (**snap).clone();
            next.broker_waiting = broker_waiting;
            next
        });
        if !on {
            return;
        }
        let snap = self.snapshot.load_full();
        let stuck = self.stuck.last();
        let s = self.autoscaler.signals(&snap, broker_waiting, &stuck);
        let Some(d) = self.autoscaler.decide(&s) else {
            return;
        };
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
            let (busy, _) = busy_and_idle(&snap.workers, &self.stuck.last());
            target = target.max(busy.len() as u32);
            if target >= s.desired {
                return;
            }
        }
        match self.backend.scale(target).await {
            Ok(_) => self.events.push("autoscale", false, d.reason),
            Err(e) => self.events.failed("autoscale", d.reason, &e),
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

    /// Acts only while `lease` says this agent holds it: lost work is put
    /// back and busy workers protected by one agent, never two.
    pub fn follow_lease(&self, lease: watch::Receiver<crate::duties::lease::Lease>) {
        let _ = self.lease.set(lease);
    }

    /// Whether this agent acts for the stack now.
    fn acting(&self) -> bool {
        self.lease.get().is_none_or(|l| l.borrow().held())
    }

    /// Polls every worker, swaps in a new snapshot, then (when this agent
    /// acts) puts lost work back and keeps the busy workers from scale-in.
    pub async fn refresh(&self) {
        let t = Instant::now();
        let previous = self.snapshot.load_full();
        let workers = self
            .poller
            .poll_all(self.backend.as_ref(), &previous, &self.events)
            .await;
        let acting = self.acting();
        self.observer.set_acting(acting);
        if acting {
            self.read_notes().await;
        }
        self.store(workers, t.elapsed());
        if acting {
            self.observer
                .rescue(self.backend.broker_url(), &self.events)
                .await;
            self.submit_lost_again().await;
            let snap = self.snapshot.load_full();
            let stuck = self.stuck.look(&snap, &self.history, &self.events).await;
            self.poller
                .protect(self.backend.as_ref(), &snap.workers, &stuck, &self.events)
                .await;
        }
        self.refreshed.send_modify(|n| *n += 1);
    }

    /// Hands the observer the nodes' notes of the subtasks they took
    /// ([`taken`]). Only the acting agent reads them: reading takes them.
    async fn read_notes(&self) {
        let Some(url) = self.backend.broker_url() else {
            return;
        };
        match backend::take_notes(&url).await {
            Ok(got) => self.observer.noted(&got),
            Err(e) => {
                tracing::warn!(error = %fossa_contract::aws::chain(&e), "cannot read the nodes' notes of the subtasks they took")
            }
        }
    }

    /// Submits again, through the queue, each task this gateway sent that
    /// was lost with its node (its reply queue went with it, so it can
    /// never finish), up to `[history] parent_retries` times.
    async fn submit_lost_again(&self) {
        let lost = self.observer.lost_tasks();
        if lost.is_empty() {
            return;
        }
        let retries = self.history.limits().parent_retries;
        let mut later = Vec::new();
        for lost in lost {
            let task = lost.task.clone();
            let how = if lost.cut_off {
                "was cut off from the broker (restarted, or the gateway replaced)"
            } else {
                "was lost with its worker"
            };
            let r = self
                .history
                .submit_again(task.clone(), lost.worker.clone(), retries)
                .await;
            match r {
                Ok(Again::Queued { queue_id, attempt, of }) => self.events.push(
                    "queue",
                    false,
                    format!("task {task} {how}: submitted again as queued task {queue_id} (attempt {attempt} of {of})"),
                ),
                Ok(Again::Exhausted { of }) => self.events.push(
                    "queue",
                    true,
                    format!("task {task} {how} and is not submitted again ({of} attempt(s) made; [history] parent_retries)"),
                ),
                Ok(Again::NotOurs) => {}
                Ok(Again::NotYet) => later.push(lost),
                Err(e) => self.events.failed("history", format!("cannot submit lost task {task} again"), &e),
            }
        }
        self.observer.lost_later(later);
        self.dispatcher.reload_queue().await;
        self.show_queue();
    }

    /// Polls one worker at once (after a dispatch) and updates the snapshot.
    async fn refresh_one(&self, id: &str) {
        let snap = self.snapshot.load_full();
        let Some(w) = snap.workers.iter().find(|w| w.id == id) else {
            return;
        };
        let fresh = self.poller.poll_one(w).await;
        let mut workers = snap.workers.clone();
        if let Some(slot) = workers.iter_mut().find(|w| w.id == id) {
            *slot = fresh;
        }
        self.store(workers, Duration::from_millis(snap.refresh_ms));
    }

    /// Composes the snapshot from the parts, hands the history what changed
    /// and swaps it in.
    fn store(&self, workers: Vec<Worker>, took: Duration) {
        let now = fossa_contract::unix_now();
        let mut snap = FleetSnapshot {
            slots: self.slots.sample(&workers, now),
            mode: self.backend.mode(),
            stack: self.stack.clone(),
            taken_at: now,
            refresh_ms: took.as_millis() as u64,
            workers,
            desired_workers: self.backend.desired(),
            models: self.backend.models(),
            components: self
                .board
                .borrow()
                .iter()
                .map(|s| fossa_web::model::Component {
                    last_ok_at: s.last_success_at,
                    failures: s.failures,
                    ..s.component.clone()
                })
                .collect(),
            cost: self.backend.cost().map(|c| self.cost.tick(c)),
            agent: self.agent.get().cloned(),
            dispatched: self.dispatcher.recent(),
            queue: self.dispatcher.queue(),
            autoscale: self.autoscaler.bounds(),
            broker_waiting: self.broker.lock().expect("lock").0,
            nat: self.backend.nat(),
            tally: Default::default(),
        };
        self.observer.observe(&snap);
        snap.tally = self.observer.tally();
        self.snapshot.store(Arc::new(snap));
    }

    /// Sends queued tasks while answering workers have free slots.
    pub async fn drain(&self) {
        let snap = self.snapshot.load_full();
        self.dispatcher.drain(&snap, &self.observer).await;
        self.show_queue();
    }

    /// Keeps this month's cost now (on the way out).
    pub fn save_meter(&self) {
        self.cost.save();
    }

    /// Records a scale or rebuild as an event, with the whole chain of a failure.
    fn log(&self, what: &str, r: Result<String, BackendError>) -> Result<String, ControlError> {
        match r {
            Ok(m) => {
                self.events.push(what, false, &m);
                Ok(m)
            }
            Err(e) => {
                self.events.push(what, true, fossa_contract::aws::chain(&e));
                Err(e.into())
            }
        }
    }

    /// After a start: what the history says ran when the agent stopped,
    /// and what the queue was sending. The fleet duty calls it once, before
    /// its first refresh.
    pub async fn resume(&self) {
        // One pass over the history for /metrics' counters (0.8 s at a
        // million rows), off the runtime's threads.
        let h = self.history.clone();
        match tokio::task::spawn_blocking(move || h.tally()).await {
            Ok(Ok(t)) => self.observer.seed(t),
            Ok(Err(e)) => self
                .events
                .failed("history", "cannot count the history", &e),
            Err(_) => self
                .events
                .push("history", true, "counting the history stopped"),
        }
        self.observer.resume(&self.events);
        self.dispatcher.resume().await;
        self.show_queue();
    }
}

fn history_failed(e: HistoryError) -> ControlError {
    ControlError::Failed(Box::new(e))
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
        if self.dispatcher.queue_is_empty() {
            let snap = self.snapshot.load_full();
            match self
                .dispatcher
                .dispatch_now(&snap, &request, &self.observer)
                .await
            {
                Ok(d) => {
                    self.refresh_one(&d.worker_id).await;
                    return Ok(Submitted::Dispatched(d));
                }
                Err(DispatchError::NoCapacity(why)) => {
                    // With no worker and none wanted, only the autoscaler
                    // would ever start one: queue for it, or say so.
                    if snap.workers.is_empty()
                        && snap.desired_workers == 0
                        && !self.autoscaler.is_on()
                    {
                        return Err(DispatchError::NoCapacity(why));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let queued = self.dispatcher.enqueue(&request).await;
        self.show_queue();
        queued.map(Submitted::Queued)
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
                    fossa_contract::aws::chain(&e)
                );
                Vec::new()
            }
        }
    }

    async fn attempts(&self, id: &str) -> Vec<fossa_web::model::Attempt> {
        match self.history.attempts(id.to_owned()).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(
                    "cannot read the attempts of task {id}: {}",
                    fossa_contract::aws::chain(&e)
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
        self.dispatcher.reload_queue().await;
        self.show_queue();
        Ok(r)
    }

    async fn scale(&self, workers: u32) -> Result<String, ControlError> {
        let r = self.backend.scale(workers).await;
        self.log("scale", r)
    }

    async fn set_autoscale(&self, wanted: Option<Autoscale>) -> Result<String, ControlError> {
        let r = self.autoscaler.set(wanted, self.backend.desired());
        self.show_autoscale();
        r
    }

    async fn rebuild(&self) -> Result<String, ControlError> {
        let r = self.backend.rebuild().await;
        self.log("rebuild", r)
    }
}
