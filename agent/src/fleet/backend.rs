//! Where workers run: the one trait the Fargate and local modes implement,
//! and its errors.

use async_trait::async_trait;
use fossa_contract::aws::AwsError;
use fossa_web::model::{ControlError, Cost, LogLine, LogQuery, Mode};

use crate::duties::cluster::ClusterError;

/// A worker as the backend knows it, before polling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRef {
    /// Stable id.
    pub id: String,
    /// `ip:port` of its Fossa API.
    pub address: String,
    /// Backend status.
    pub status: String,
    /// Start time, seconds since the epoch.
    pub started_at: Option<i64>,
    /// `FARGATE`, `FARGATE_SPOT` or `local`.
    pub capacity_provider: String,
    /// Kept from scale-in (see [`WorkerBackend::protect`]).
    pub protected: bool,
    /// Why it stopped, for a stopped worker still listed (a Spot interruption).
    pub stopped_reason: Option<String>,
}

impl From<&fossa_web::model::Worker> for WorkerRef {
    fn from(w: &fossa_web::model::Worker) -> Self {
        WorkerRef {
            id: w.id.clone(),
            address: w.address.clone(),
            status: w.status.clone(),
            started_at: w.started_at,
            capacity_provider: w.capacity_provider.clone(),
            protected: w.protected,
            stopped_reason: w.stopped_reason.clone(),
        }
    }
}

/// Where workers run: ECS tasks or local processes. The only place the two modes differ.
#[async_trait]
pub trait WorkerBackend: Send + Sync + 'static {
    /// Where its workers run.
    fn mode(&self) -> Mode;
    /// The most workers it runs: its mode's limit unless it knows fewer.
    fn most_workers(&self) -> u32 {
        self.mode().max_workers()
    }
    /// Every current worker.
    async fn list(&self) -> Result<Vec<WorkerRef>, BackendError>;
    /// Workers wanted.
    fn desired(&self) -> u32;
    /// Sets the number of workers.
    async fn scale(&self, workers: u32) -> Result<String, BackendError>;
    /// Rebuilds the worker image (Fargate) or restarts the workers (local).
    async fn rebuild(&self) -> Result<String, BackendError>;
    /// Model classes the workers accept.
    fn models(&self) -> Vec<String>;
    /// Hourly cost, where known.
    fn cost(&self) -> Option<Cost> {
        None
    }
    /// The NAT's figures, where the gateway is the NAT.
    fn nat(&self) -> Option<fossa_web::nat::NatFigures> {
        None
    }
    /// The broker's URL, with the workers' credentials, once known.
    fn broker_url(&self) -> Option<String> {
        None
    }
    /// The token its workers require on their Fossa API (local mode's,
    /// which listen on a loopback any local account reaches).
    fn worker_token(&self) -> Option<String> {
        None
    }
    /// Subtasks waiting in the broker's task queue, if the broker answers.
    async fn broker_waiting(&self) -> Option<u32> {
        broker_waiting_at(&self.broker_url()?).await
    }
    /// Keeps the `busy` workers from scale-in and lets the `idle` ones go
    /// (workers in neither, those not answering, keep what they had).
    async fn protect(&self, _busy: &[String], _idle: &[String]) -> Result<(), BackendError> {
        Ok(())
    }
    /// Lines worker `id` wrote that `query` asks for.
    async fn logs(&self, _id: &str, _query: &LogQuery) -> Result<Vec<LogLine>, BackendError> {
        Ok(Vec::new())
    }
}

/// Why a backend could not list, scale or rebuild.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The service could not be changed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// More workers than this mode runs.
    #[error("{mode} mode runs at most {max} workers; ask for {max} or fewer")]
    TooMany {
        /// Where the workers run.
        mode: Mode,
        /// The most it runs.
        max: u32,
    },
    /// Local workers could not be started or their models listed.
    #[error("{what}")]
    Local {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: Box<crate::Error>,
    },
}

impl From<BackendError> for ControlError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::TooMany { .. } => ControlError::Invalid(e.to_string()),
            e => ControlError::Failed(Box::new(e)),
        }
    }
}

/// Subtasks waiting in [`fossa_contract::names::FOSSA_TASK_QUEUE`] on the
/// broker at `url` (`amqp://user:pass@host:port/%2F`), or `None` when it
/// does not answer within 2 s.
pub async fn broker_waiting_at(url: &str) -> Option<u32> {
    let (c, address) = crate::duties::broker::parse_url(url)?;
    crate::host::amqp::queue_depth(
        &login(&c, &address),
        &[
            fossa_contract::names::FOSSA_TASK_QUEUE,
            fossa_contract::names::AGAIN_QUEUE,
        ],
        std::time::Duration::from_secs(2),
    )
    .await
    .ok()
}

/// Why a lost subtask could not be put back on the queue, or the nodes'
/// notes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker's URL has no user, password or address.
    #[error("the broker's URL cannot be read")]
    Url,
    /// The broker refused it or did not answer.
    #[error(transparent)]
    Amqp(#[from] crate::host::amqp::AmqpError),
}

/// Puts a lost subtask back at the broker at `url`, as its parent sent it,
/// confirmed by the broker within 5 s: on [`fossa_contract::names::AGAIN_QUEUE`],
/// which the nodes take from first, or on
/// [`fossa_contract::names::FOSSA_TASK_QUEUE`] while no node has declared that.
pub async fn publish_task(
    url: &str,
    body: &[u8],
    correlation_id: &str,
    reply_to: &str,
) -> Result<(), PublishError> {
    let again = fossa_contract::names::AGAIN_QUEUE;
    match publish_to(url, again, body, correlation_id, reply_to).await {
        // No node declared it (none runs this gateway's node module yet):
        // the task queue, which every node reads.
        Err(PublishError::Amqp(crate::host::amqp::AmqpError::Refused { .. })) => {
            let queue = fossa_contract::names::FOSSA_TASK_QUEUE;
            publish_to(url, queue, body, correlation_id, reply_to).await
        }
        r => r,
    }
}

/// Sends a subtask's reply (Fossa's `TaskFailed`) to its parent's reply
/// queue `reply_to`, as a node would; refused when that queue is gone.
pub async fn publish_reply(
    url: &str,
    body: &[u8],
    correlation_id: &str,
    reply_to: &str,
) -> Result<(), PublishError> {
    publish_to(url, reply_to, body, correlation_id, reply_to).await
}

async fn publish_to(
    url: &str,
    queue: &str,
    body: &[u8],
    correlation_id: &str,
    reply_to: &str,
) -> Result<(), PublishError> {
    let (c, address) = crate::duties::broker::parse_url(url).ok_or(PublishError::Url)?;
    let login = login(&c, &address);
    let message = crate::host::amqp::Message {
        queue,
        body,
        correlation_id,
        reply_to,
    };
    crate::host::amqp::publish(&login, &message, std::time::Duration::from_secs(5)).await?;
    Ok(())
}

/// The most notes read from the broker in one poll.
const NOTES_PER_READ: usize = 2_000;

/// Takes the nodes' notes of the subtasks they took
/// ([`fossa_contract::names::TAKEN_QUEUE`]) from the broker at `url`:
/// taken is taken, so the caller keeps them.
pub async fn take_notes(url: &str) -> Result<Vec<crate::host::amqp::get::Got>, PublishError> {
    let (c, address) = crate::duties::broker::parse_url(url).ok_or(PublishError::Url)?;
    let login = login(&c, &address);
    let queue = fossa_contract::names::TAKEN_QUEUE;
    let limit = std::time::Duration::from_secs(5);
    Ok(crate::host::amqp::get::take_all(&login, queue, NOTES_PER_READ, limit).await?)
}

/// The workers' login at the broker: `c` at `address`, on vhost `/`.
fn login<'a>(
    c: &'a crate::duties::broker::Credentials,
    address: &'a str,
) -> crate::host::amqp::Login<'a> {
    crate::host::amqp::Login {
        address,
        user: &c.user,
        password: &c.password,
        vhost: "/",
    }
}
