//! The plain data the UI shows: an immutable [`FleetSnapshot`] the agent's
//! poller replaces as a whole, and the requests the UI hands back to the
//! agent through the [`Fleet`] trait. The same structs serialise to JSON for
//! `/api/v1`.

pub use crate::worker_status::{STOPPED, STOPPING_STATUSES};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::task::{FossaTask, TaskRow, TaskStatus, PUT_BACK};

/// Where the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// ECS tasks on Fargate, behind the gateway instance.
    #[default]
    Fargate,
    /// Processes or containers on this machine (`fossa-agent local`).
    Local,
}

impl Mode {
    /// The word (`fargate`, `local`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fargate => "fargate",
            Mode::Local => "local",
        }
    }

    /// The most workers this mode runs.
    pub fn max_workers(self) -> u32 {
        match self {
            Mode::Fargate => fossa_contract::limits::MAX_WORKERS,
            Mode::Local => fossa_contract::limits::LOCAL_MAX_WORKERS,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node's `/api/0.01/node_info` said.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's own identifier.
    pub node_ident: String,
    /// Task slots.
    pub max_concurrent_tasks: u32,
    /// Free slots.
    pub available_processing_capacity: u32,
    /// Tasks running now.
    pub running_tasks: Vec<FossaTask>,
    /// Tasks finished recently.
    pub recent_completed_tasks: Vec<FossaTask>,
}

/// How the last poll of a worker went.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Health {
    /// Not polled yet.
    #[default]
    Unknown,
    /// Answered with a valid node_info.
    Ok,
    /// Did not answer within the timeout.
    Timeout(String),
    /// Answered with an HTTP error.
    Error(String),
    /// Answered with something that is not node_info.
    Garbage(String),
    /// Could not be connected to.
    Unreachable(String),
}

impl Health {
    /// A short word for badges.
    pub fn word(&self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Timeout(_) => "timeout",
            Health::Error(_) => "error",
            Health::Garbage(_) => "garbage",
            Health::Unreachable(_) => "unreachable",
        }
    }

    /// The reason, if not healthy.
    pub fn reason(&self) -> &str {
        match self {
            Health::Unknown | Health::Ok => "",
            Health::Timeout(r) | Health::Error(r) | Health::Garbage(r) | Health::Unreachable(r) => {
                r
            }
        }
    }
}

/// One worker: an ECS task or a local process.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Worker {
    /// Stable id (ECS task id, or `local-N`).
    pub id: String,
    /// `ip:port` of its Fossa API.
    pub address: String,
    /// Backend status (`RUNNING`, `PENDING`, `STOPPED`, …).
    pub status: String,
    /// Result of the last poll.
    pub health: Health,
    /// When it started, seconds since the epoch.
    pub started_at: Option<i64>,
    /// `FARGATE`, `FARGATE_SPOT` or `local`.
    pub capacity_provider: String,
    /// The last good node_info (kept while a poll fails).
    pub node: Option<NodeInfo>,
    /// Milliseconds the last poll took.
    pub poll_ms: Option<u64>,
    /// Kept from scale-in while it runs work: ECS task scale-in protection
    /// on Fargate; in local mode, stopped last.
    #[serde(default)]
    pub protected: bool,
    /// Why it stopped, for a worker shown after it stopped (a Spot interruption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
}

impl Worker {
    /// On its way out (see [`STOPPING_STATUSES`]).
    pub fn stopping(&self) -> bool {
        STOPPING_STATUSES.contains(&self.status.as_str())
    }

    /// Answering, and not on its way out: it may be given work, and counts
    /// as the fleet's capacity.
    pub fn takes_work(&self) -> bool {
        self.health == Health::Ok && !self.stopping()
    }

    /// Free task slots, when known.
    pub fn free(&self) -> Option<u32> {
        self.node.as_ref().map(|n| n.available_processing_capacity)
    }
}

/// A part of the stack (one of the agent's duties) and whether it is well.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Component {
    /// The duty's key (`nat`): the overview API shows the component under it.
    pub name: String,
    /// Its label (`NAT`).
    pub title: String,
    /// Whether it is working.
    pub ok: bool,
    /// One line about it.
    pub detail: String,
    /// When its last round succeeded, seconds since the epoch (none yet, or
    /// a line no duty here runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok_at: Option<i64>,
    /// Rounds that failed since the last that succeeded.
    #[serde(default)]
    pub failures: u32,
}

/// Cost figures, in US dollars, from the list prices in
/// `fossa_contract::prices` and what the agent metered this month.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cost {
    /// This stack per hour: the gateway instance, its address, the workers.
    pub stack_hourly: f64,
    /// What a managed NAT Gateway alone would cost per hour (before data charges).
    pub nat_gateway_hourly: f64,
    /// How the figures were made (prices' source and date, what is not priced).
    pub basis: String,
    /// A NAT Gateway's charge per GB processed.
    #[serde(default)]
    pub nat_gateway_per_gb: f64,
    /// The gateway instance and its public address per hour: what stands in for a NAT Gateway.
    #[serde(default)]
    pub gateway_hourly: f64,
    /// The priced parts.
    #[serde(default)]
    pub parts: Vec<CostPart>,
    /// The month metered (`2026-11`).
    #[serde(default)]
    pub month: String,
    /// Hours the agent metered this month.
    #[serde(default)]
    pub metered_hours: f64,
    /// This stack's cost this month so far, over the metered hours.
    #[serde(default)]
    pub month_to_date: f64,
    /// Bytes the gateway forwarded through NAT this month (its iptables counters).
    #[serde(default)]
    pub nat_bytes: u64,
    /// What a NAT Gateway would have cost this month: its hours plus its per-GB charge on the same bytes.
    #[serde(default)]
    pub nat_gateway_month_to_date: f64,
    /// That, less this month's cost of the gateway instance and its address.
    #[serde(default)]
    pub saved_month_to_date: f64,
}

/// One priced part of the stack.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CostPart {
    /// What it is.
    pub what: String,
    /// Per hour.
    pub hourly: f64,
}

/// One line of the agent's recent actions and errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, as seconds since the epoch.
    pub at: i64,
    /// Which duty (or `agent`).
    pub source: String,
    /// Whether it is an error.
    pub error: bool,
    /// What happened.
    pub message: String,
}

/// A task the gateway dispatched itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatched {
    /// The node's task id.
    pub task_id: String,
    /// The worker it went to.
    pub worker_id: String,
    /// Model class.
    pub model_class: String,
    /// When, seconds since the epoch.
    pub at: i64,
}

/// The running agent: what `status` and an upgrade check compare.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentInfo {
    /// `fossa-agent`'s version.
    pub version: String,
    /// SHA-256 of the running binary (hex), as `launch` records it in SSM.
    pub sha256: String,
    /// When this gateway replaced another on the same data volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<Replacement>,
}

/// The gateway's instance was replaced: a new instance mounted the data
/// volume the previous one used (its history, queue and keys came back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    /// The instance before.
    pub previous: String,
    /// This instance.
    pub current: String,
    /// When this one mounted the volume (UTC, RFC 3339).
    pub at: String,
}

/// Everything the UI shows, replaced atomically by the poller.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FleetSnapshot {
    /// Where the workers run.
    pub mode: Mode,
    /// Stack name.
    pub stack: String,
    /// When this snapshot was completed, seconds since the epoch.
    pub taken_at: i64,
    /// How long the last refresh of every worker took, in milliseconds.
    pub refresh_ms: u64,
    /// Workers, sorted by id.
    pub workers: Vec<Worker>,
    /// Workers wanted.
    pub desired_workers: u32,
    /// Model classes the workers accept.
    pub models: Vec<String>,
    /// Each duty's component (broker, NAT, image, cluster…), in start order.
    pub components: Vec<Component>,
    /// Cost, where known.
    pub cost: Option<Cost>,
    /// Tasks the gateway dispatched, newest last.
    pub dispatched: Vec<Dispatched>,
    /// The agent serving this, when it says.
    #[serde(default)]
    pub agent: Option<AgentInfo>,
    /// Submissions waiting in the gateway for a free slot, first first.
    #[serde(default)]
    pub queue: Vec<Queued>,
    /// Task slots in use over the last hour, oldest first.
    #[serde(default)]
    pub slots: Vec<SlotSample>,
    /// Autoscaling's bounds, when on.
    #[serde(default)]
    pub autoscale: Option<fossa_contract::config::Autoscale>,
    /// Subtasks waiting in the broker's task queue, when it answered.
    #[serde(default)]
    pub broker_waiting: Option<u32>,
    /// The NAT's figures, where the gateway is the NAT.
    #[serde(default)]
    pub nat: Option<crate::nat::NatFigures>,
    /// What the history recorded, counted (for `/metrics`).
    #[serde(default, skip_serializing_if = "crate::tally::Tally::is_empty")]
    pub tally: crate::tally::Tally,
}

impl FleetSnapshot {
    /// Every task the workers report, running first, then newest first (a
    /// task a worker lists twice, running and recently completed, once).
    pub fn tasks(&self) -> Vec<TaskRow> {
        let mut out: Vec<TaskRow> = Vec::new();
        for w in &self.workers {
            let Some(node) = &w.node else { continue };
            let mut listed = std::collections::HashSet::new();
            for t in node
                .running_tasks
                .iter()
                .chain(node.recent_completed_tasks.iter())
            {
                if !listed.insert(t.task_id.as_str()) {
                    continue;
                }
                out.push(TaskRow {
                    task: t.clone(),
                    worker_id: w.id.clone(),
                    worker_address: w.address.clone(),
                });
            }
        }
        let running = |r: &TaskRow| r.task.status == TaskStatus::Running;
        out.sort_by(|a, b| {
            running(b)
                .cmp(&running(a))
                .then(b.task.started.cmp(&a.task.started))
                .then(a.task.task_id.cmp(&b.task.task_id))
        });
        out
    }
}

/// Task slots at one moment (the peak of its 30 s bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSample {
    /// When, seconds since the epoch.
    pub at: i64,
    /// Slots running a task.
    pub used: u32,
    /// Slots of the answering workers.
    pub total: u32,
}

/// A submission waiting in the gateway for a free slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Its queue id (`/api/v1/queue/<id>`).
    pub id: i64,
    /// 1 for the next one sent.
    pub position: u32,
    /// Model class.
    pub model_class: String,
    /// Method, when not `go`.
    pub method: Option<String>,
    /// When it was queued, seconds since the epoch.
    pub enqueued_at: i64,
    /// The worker it is being sent to right now.
    pub sending_to: Option<String>,
}

/// One line a worker wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When, milliseconds since the epoch.
    pub at: i64,
    /// The line (secrets the agent knows are replaced by `***`).
    pub text: String,
}

/// Which lines of a worker's log: after `since_ms` from the oldest on, or
/// else the last `limit`; never after `until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct LogQuery {
    /// Only lines after this, milliseconds since the epoch.
    pub since_ms: Option<i64>,
    /// Only lines up to this.
    pub until_ms: Option<i64>,
    /// At most this many (0: one).
    pub limit: u32,
}

/// Where a queued submission is now (`GET /api/v1/queue/<id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "detail")]
pub enum QueueState {
    /// Still waiting.
    Waiting(Queued),
    /// Out of the queue: its history row (dispatched and then reported by
    /// its node; or refused; or unknown, when the agent stopped while sending it).
    Left(TaskRow),
}

/// What became of a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Submitted {
    /// A worker took it.
    Dispatched(Dispatched),
    /// Every slot is busy: it waits in the gateway's queue.
    Queued(Queued),
}

/// A page of task history: `GET /api/v1/tasks?model=&status=&before=&limit=`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Only this model class.
    pub model: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only rows older than this cursor (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Rows per page (0: the default).
    pub limit: u32,
    /// Leave subtasks out.
    pub parents_only: bool,
}

/// One page of task history, newest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The rows.
    pub tasks: Vec<TaskRow>,
    /// The cursor of the next (older) page, if there is one.
    pub next_before: Option<i64>,
    /// Rows in the whole history.
    pub total: u64,
}

/// One attempt of a task the gateway submitted again after it was lost
/// with its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The attempt's task id.
    pub task_id: String,
    /// 1 for the first.
    pub attempt: u32,
    /// When the gateway sent it, seconds since the epoch.
    pub sent_at: i64,
}

/// A task submission (`POST /api/v1/tasks` body, or the form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// One of [`FleetSnapshot::models`].
    pub model_class: String,
    /// Method to run (default `go`).
    #[serde(default)]
    pub method: Option<String>,
    /// Model construction kwargs (a JSON object).
    #[serde(default = "empty_object")]
    pub model_construction_kwargs: Value,
    /// Method kwargs (a JSON object).
    #[serde(default = "empty_object")]
    pub method_kwargs: Value,
    /// Resolver context (a JSON object).
    #[serde(default = "empty_object")]
    pub resolver_context: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Why a submission was not dispatched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DispatchError {
    /// The request is wrong; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// Every worker is busy or down.
    #[error("{0}")]
    NoCapacity(String),
    /// A worker answered with an error.
    #[error("{0}")]
    Worker(String),
    /// The gateway's queue is full (HTTP 429).
    #[error("{0}")]
    QueueFull(String),
}

/// Why a scale or rebuild was not done.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is wrong; the message says what to change (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The agent tried and failed (HTTP 502).
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl ControlError {
    /// The error and every cause, on one line, for the page or the API.
    pub fn message(&self) -> String {
        fossa_contract::aws::chain(self)
    }
}

/// What the UI asks of the agent.
#[rocket::async_trait]
pub trait Fleet: Send + Sync + 'static {
    /// The current snapshot (never waits on the network).
    fn snapshot(&self) -> std::sync::Arc<FleetSnapshot>;
    /// Recent events, newest last.
    fn events(&self) -> Vec<Event>;
    /// Dispatches a task to the worker with the most free capacity, or
    /// queues it when every slot is busy.
    async fn submit(&self, request: TaskRequest) -> Result<Submitted, DispatchError>;
    /// A page of the task history (default: the tasks the snapshot holds).
    async fn history(&self, query: HistoryQuery) -> Result<HistoryPage, ControlError> {
        let snap = self.snapshot();
        let rows: Vec<_> = snap
            .tasks()
            .into_iter()
            .filter(|r| {
                query
                    .model
                    .as_ref()
                    .is_none_or(|m| &r.task.model_class == m)
            })
            .filter(|r| {
                query
                    .status
                    .as_ref()
                    .is_none_or(|s| r.task.status.as_str() == s)
            })
            .filter(|r| !query.parents_only || r.task.subtask_parts().is_none())
            .collect();
        Ok(HistoryPage {
            total: rows.len() as u64,
            tasks: rows,
            next_before: None,
        })
    }
    /// Recorded rows of task `id` and of the tasks that may be linked to it
    /// (its subtasks or parent), for when its node no longer lists them.
    async fn recorded(&self, _id: &str) -> Vec<TaskRow> {
        Vec::new()
    }
    /// Every attempt of the task `id` belongs to, when the gateway submitted
    /// it again after it was lost with its node (empty otherwise).
    async fn attempts(&self, _id: &str) -> Vec<Attempt> {
        Vec::new()
    }
    /// Lines worker `worker` wrote (its CloudWatch stream, or a local
    /// worker's output).
    async fn logs(&self, _worker: &str, _query: LogQuery) -> Result<Vec<LogLine>, ControlError> {
        Ok(Vec::new())
    }
    /// Where queued submission `id` is now.
    async fn queue_state(&self, _id: i64) -> Result<Option<QueueState>, ControlError> {
        Ok(None)
    }
    /// Takes queued submission `id` off the queue; `Ok(false)` when it is
    /// no longer waiting.
    async fn cancel(&self, _id: i64) -> Result<bool, ControlError> {
        Ok(false)
    }
    /// Sets the number of workers.
    async fn scale(&self, workers: u32) -> Result<String, ControlError>;
    /// Rebuilds the worker image (or restarts local workers).
    async fn rebuild(&self) -> Result<String, ControlError>;
    /// Turns autoscaling on with new bounds, or off (`None`: the current
    /// count stays).
    async fn set_autoscale(
        &self,
        _autoscale: Option<fossa_contract::config::Autoscale>,
    ) -> Result<String, ControlError> {
        Err(ControlError::Invalid(
            "this fleet does not autoscale".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtask_ids_split_into_pool_index_and_reply_queue() {
        let t = FossaTask {
            task_id: "zsxke:6::amq.gen-dBKn".into(),
            model_class: String::new(),
            method: None,
            method_kwargs: Value::Null,
            status: TaskStatus::default(),
            started: None,
            finished: None,
            results: None,
            spec: Default::default(),
        };
        assert_eq!(t.subtask_parts(), Some(("zsxke", 6, "amq.gen-dBKn")));
        let parent = FossaTask {
            task_id: "pxdrk".into(),
            ..t
        };
        assert_eq!(parent.subtask_parts(), None);
    }

    #[test]
    fn task_requests_refuse_unknown_fields() {
        let e =
            serde_json::from_str::<TaskRequest>(r#"{"model_class":"X","kwargs":{}}"#).unwrap_err();
        assert!(e.to_string().contains("kwargs"));
        let ok: TaskRequest = serde_json::from_str(r#"{"model_class":"X"}"#).unwrap();
        assert!(ok.method_kwargs.is_object());
    }
}
