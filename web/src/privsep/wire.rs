//! What the UI process and the agent's core say to each other: a small set
//! of typed requests and answers, each a length-prefixed JSON frame. The
//! core reads only frames of [`REQUEST_MAX_BYTES`] or less and only these
//! requests; anything else ends the connection.

use std::net::SocketAddr;

use fossa_contract::config::Autoscale;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::model::{
    Attempt, DispatchError, Event, FleetSnapshot, HistoryPage, HistoryQuery, LogLine, LogQuery,
    QueueState, Submitted, TaskRequest,
};
use crate::task::TaskRow;

pub use fossa_contract::limits::{
    UI_ANSWER_MAX_BYTES as ANSWER_MAX_BYTES, UI_REQUEST_MAX_BYTES as REQUEST_MAX_BYTES,
};

/// The first frame: what the UI process needs to serve, sent by the core
/// over the socket (never in argv, the environment or a file).
#[derive(Serialize, Deserialize)]
pub struct Hello {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The UI password.
    pub password: String,
    /// Cookie key.
    pub cookie_key: Vec<u8>,
    /// PEM certificate and key (`None`: plain HTTP, tests only).
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// The scraper's token.
    pub scrape_token: Option<String>,
    /// Whether descriptor 4 is the session-state file, opened for it.
    pub session_file: bool,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A request of the UI process: one of the [`crate::model::Fleet`] calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Call {
    /// What changed since the last `Refresh`: snapshot, events, secrets.
    Refresh,
    /// Submit a task.
    Submit(TaskRequest),
    /// A page of history.
    History(HistoryQuery),
    /// Recorded rows around a task.
    Recorded(String),
    /// A task's attempts.
    Attempts(String),
    /// A worker's log lines.
    Logs {
        /// The worker.
        worker: String,
        /// Which lines.
        query: LogQuery,
    },
    /// Where a queued submission is.
    QueueState(i64),
    /// Take a submission off the queue.
    Cancel(i64),
    /// Set the number of workers.
    Scale(u32),
    /// Rebuild the image.
    Rebuild,
    /// Autoscaling on (bounds) or off.
    SetAutoscale(Option<Autoscale>),
}

/// Why the core did not do what was asked: [`crate::model::ControlError`]
/// as plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The request is wrong (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The agent tried and failed (HTTP 502).
    #[error("{0}")]
    Failed(String),
}

/// Secrets that changed (a rotation in SSM).
#[derive(Default, Serialize, Deserialize)]
pub struct Secrets {
    /// The new UI password.
    pub password: Option<String>,
    /// The new scraper's token.
    pub scrape_token: Option<String>,
}

/// What changed since the last refresh (`None`: nothing).
#[derive(Default, Serialize, Deserialize)]
pub struct Refreshed {
    /// The new snapshot.
    pub snapshot: Option<FleetSnapshot>,
    /// The new list of events.
    pub events: Option<Vec<Event>>,
    /// New secrets.
    pub secrets: Secrets,
}

impl Refreshed {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.events.is_none()
            && self.secrets.password.is_none()
            && self.secrets.scrape_token.is_none()
    }
}

/// The id of a frame the core sends unasked: what changed ([`Refreshed`]).
/// Requests are numbered from 1.
pub const PUSH_ID: u64 = 0;

/// The core's answer to a [`Call`] of the same kind.
#[derive(Serialize, Deserialize)]
pub enum Answer {
    /// To `Refresh`.
    Refreshed(Box<Refreshed>),
    /// To `Submit`.
    Submitted(Result<Submitted, DispatchError>),
    /// To `History`.
    History(Result<HistoryPage, Refusal>),
    /// To `Recorded`.
    Rows(Vec<TaskRow>),
    /// To `Attempts`.
    Attempts(Vec<Attempt>),
    /// To `Logs`.
    Logs(Result<Vec<LogLine>, Refusal>),
    /// To `QueueState`.
    QueueState(Result<Option<QueueState>, Refusal>),
    /// To `Cancel`.
    Cancelled(Result<bool, Refusal>),
    /// To `Scale`, `Rebuild` and `SetAutoscale`.
    Done(Result<String, Refusal>),
}

/// One frame: a request or an answer, with the id that pairs them.
#[derive(Serialize, Deserialize)]
pub struct Frame<T> {
    /// Chosen by the UI process; the answer carries it back.
    pub id: u64,
    /// The request or the answer.
    pub body: T,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The other side is gone, or the socket failed.
    #[error("the socket to the other process failed")]
    Io(#[source] std::io::Error),
    /// A frame over the limit.
    #[error("a frame of {0} bytes is over the limit of {1}")]
    TooLarge(usize, usize),
    /// A frame that is not a known request or answer.
    #[error("a frame is not one this side reads")]
    Malformed(#[source] serde_json::Error),
}

/// Writes `frame`.
pub async fn write<W, T>(w: &mut W, frame: &Frame<T>, max: usize) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(frame).map_err(WireError::Malformed)?;
    if body.len() > max {
        return Err(WireError::TooLarge(body.len(), max));
    }
    w.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .map_err(WireError::Io)?;
    w.write_all(&body).await.map_err(WireError::Io)?;
    w.flush().await.map_err(WireError::Io)
}

/// Reads one frame of at most `max` bytes; `Ok(None)` at a clean end.
pub async fn read<R, T>(r: &mut R, max: usize) -> Result<Option<Frame<T>>, WireError>
where
    R: AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(WireError::Io(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(WireError::TooLarge(len, max));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(WireError::Io)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(WireError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let f = Frame {
            id: 7,
            body: Call::Scale(3),
        };
        write(&mut a, &f, 1024).await.unwrap();
        let got: Frame<Call> = read(&mut b, 1024).await.unwrap().unwrap();
        assert_eq!((got.id, got.body), (7, Call::Scale(3)));
        // A length over the limit is refused before anything is allocated.
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let e = read::<_, Call>(&mut b, 1024).await.err().unwrap();
        assert!(matches!(e, WireError::TooLarge(_, 1024)), "{e}");
        // Something that is not a request is refused.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&5u32.to_be_bytes()).await.unwrap();
        a.write_all(b"hello").await.unwrap();
        assert!(matches!(
            read::<_, Call>(&mut b, 1024).await,
            Err(WireError::Malformed(_))
        ));
        drop(a);
        assert!(read::<_, Call>(&mut b, 1024).await.unwrap().is_none());
    }
}
