//! The UI process's side: a [`Fleet`] whose every call is a request to the
//! agent's core. The snapshot and the events are copies the core pushes as
//! they change (and an action's answer waits for the one it made), so
//! pages never wait on the core for them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fossa_contract::config::Autoscale;
use fossa_contract::limits::UI_ANSWER_WAIT_SECS;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch, Mutex};

use super::wire::{self, Answer, Call, Frame, Refreshed, Refusal, WireError};
use crate::model::{
    Attempt, ControlError, DispatchError, Event, Fleet, FleetSnapshot, HistoryPage, HistoryQuery,
    LogLine, LogQuery, QueueState, Submitted, TaskRequest,
};
use crate::task::TaskRow;

type Pending = std::sync::Mutex<HashMap<u64, oneshot::Sender<Answer>>>;

/// The fleet as the UI process sees it, through the core.
pub struct RemoteFleet {
    snapshot: ArcSwap<FleetSnapshot>,
    events: ArcSwap<Vec<Event>>,
    writer: Mutex<Box<dyn AsyncWrite + Unpin + Send>>,
    pending: Arc<Pending>,
    next: AtomicU64,
    password: watch::Sender<String>,
    scrape_token: watch::Sender<String>,
}

/// Where the core's updates of the secrets arrive.
pub struct SecretUpdates {
    /// New UI passwords.
    pub password: watch::Receiver<String>,
    /// New scraper tokens.
    pub scrape_token: watch::Receiver<String>,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Unanswered {
    /// The connection to the core failed.
    #[error("the agent's core cannot be reached")]
    Gone(#[source] WireError),
    /// The core is gone (the UI process ends with it).
    #[error("the agent's core hung up")]
    HungUp,
    /// No answer in time.
    #[error("the agent's core did not answer within {0} s")]
    Late(u64),
    /// An answer of another kind.
    #[error("the agent's core answered something else")]
    Mismatched,
}

impl RemoteFleet {
    /// Connects over `reader`/`writer`, takes the first snapshot, and keeps
    /// refreshing it. `hung_up` resolves when the core is gone.
    pub async fn connect<R, W>(
        reader: R,
        writer: W,
    ) -> Result<(Arc<RemoteFleet>, SecretUpdates, oneshot::Receiver<()>), Unanswered>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let pending: Arc<Pending> = Arc::default();
        let (gone_tx, gone_rx) = oneshot::channel();
        let fleet = Arc::new(RemoteFleet {
            snapshot: ArcSwap::from_pointee(FleetSnapshot::default()),
            events: ArcSwap::from_pointee(Vec::new()),
            writer: Mutex::new(Box::new(writer)),
            pending: pending.clone(),
            next: AtomicU64::new(1),
            password: watch::Sender::new(String::new()),
            scrape_token: watch::Sender::new(String::new()),
        });
        let updates = SecretUpdates {
            password: fleet.password.subscribe(),
            scrape_token: fleet.scrape_token.subscribe(),
        };
        tokio::spawn(read_answers(
            reader,
            pending,
            Arc::downgrade(&fleet),
            gone_tx,
        ));
        fleet.refresh().await?;
        Ok((fleet, updates, gone_rx))
    }

    /// Takes what changed in the core: the snapshot, the events, secrets.
    async fn refresh(&self) -> Result<(), Unanswered> {
        let Answer::Refreshed(r) = self.call(Call::Refresh).await? else {
            return Err(Unanswered::Mismatched);
        };
        self.take(*r);
        Ok(())
    }

    /// Takes what changed.
    fn take(&self, r: Refreshed) {
        if let Some(s) = r.snapshot {
            self.snapshot.store(Arc::new(s));
        }
        if let Some(e) = r.events {
            self.events.store(Arc::new(e));
        }
        if let Some(p) = r.secrets.password {
            self.password.send_replace(p);
        }
        if let Some(t) = r.secrets.scrape_token {
            self.scrape_token.send_replace(t);
        }
    }

    /// After an action: the snapshot it changed, before the answer goes
    /// out, so the page or the API call that follows shows it.
    async fn catch_up(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!("cannot refresh the snapshot after an action: {e}");
        }
    }

    /// Sends `call` and waits for its answer.
    pub async fn call(&self, call: Call) -> Result<Answer, Unanswered> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let sent = {
            let mut w = self.writer.lock().await;
            let frame = Frame { id, body: call };
            wire::write(&mut *w, &frame, wire::REQUEST_MAX_BYTES).await
        };
        let forget = || {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        };
        if let Err(e) = sent {
            forget();
            return Err(Unanswered::Gone(e));
        }
        match tokio::time::timeout(Duration::from_secs(UI_ANSWER_WAIT_SECS), rx).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(_)) => Err(Unanswered::HungUp),
            Err(_) => {
                forget();
                Err(Unanswered::Late(UI_ANSWER_WAIT_SECS))
            }
        }
    }

    async fn done(&self, call: Call) -> Result<String, ControlError> {
        let answer = self.call(call).await;
        self.catch_up().await;
        match answer {
            Ok(Answer::Done(r)) => r.map_err(refused),
            Ok(_) => Err(failed(Unanswered::Mismatched)),
            Err(e) => Err(failed(e)),
        }
    }
}

async fn read_answers<R: AsyncRead + Unpin>(
    mut reader: R,
    pending: Arc<Pending>,
    fleet: std::sync::Weak<RemoteFleet>,
    gone: oneshot::Sender<()>,
) {
    loop {
        match wire::read::<_, Answer>(&mut reader, wire::ANSWER_MAX_BYTES).await {
            Ok(Some(Frame {
                id: wire::PUSH_ID,
                body: Answer::Refreshed(r),
            })) => match fleet.upgrade() {
                Some(f) => f.take(*r),
                None => break,
            },
            Ok(Some(Frame { id, body })) => {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(body);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!("the connection to the agent's core failed: {e}");
                break;
            }
        }
    }
    // Every waiter learns the core is gone.
    pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let _ = gone.send(());
}

fn refused(r: Refusal) -> ControlError {
    match r {
        Refusal::Invalid(m) => ControlError::Invalid(m),
        f @ Refusal::Failed(_) => ControlError::Failed(Box::new(f)),
    }
}

fn failed(e: Unanswered) -> ControlError {
    ControlError::Failed(Box::new(e))
}

#[rocket::async_trait]
impl Fleet for RemoteFleet {
    fn snapshot(&self) -> Arc<FleetSnapshot> {
        self.snapshot.load_full()
    }

    fn events(&self) -> Vec<Event> {
        self.events.load().as_ref().clone()
    }

    async fn submit(&self, request: TaskRequest) -> Result<Submitted, DispatchError> {
        let answer = self.call(Call::Submit(request)).await;
        self.catch_up().await;
        match answer {
            Ok(Answer::Submitted(r)) => r,
            Ok(_) => Err(DispatchError::Worker(Unanswered::Mismatched.to_string())),
            Err(e) => Err(DispatchError::Worker(e.to_string())),
        }
    }

    async fn history(&self, query: HistoryQuery) -> Result<HistoryPage, ControlError> {
        match self.call(Call::History(query)).await {
            Ok(Answer::History(r)) => r.map_err(refused),
            Ok(_) => Err(failed(Unanswered::Mismatched)),
            Err(e) => Err(failed(e)),
        }
    }

    async fn recorded(&self, id: &str) -> Vec<TaskRow> {
        match self.call(Call::Recorded(id.to_owned())).await {
            Ok(Answer::Rows(rows)) => rows,
            _ => Vec::new(),
        }
    }

    async fn attempts(&self, id: &str) -> Vec<Attempt> {
        match self.call(Call::Attempts(id.to_owned())).await {
            Ok(Answer::Attempts(a)) => a,
            _ => Vec::new(),
        }
    }

    async fn logs(&self, worker: &str, query: LogQuery) -> Result<Vec<LogLine>, ControlError> {
        let call = Call::Logs {
            worker: worker.to_owned(),
            query,
        };
        match self.call(call).await {
            Ok(Answer::Logs(r)) => r.map_err(refused),
            Ok(_) => Err(failed(Unanswered::Mismatched)),
            Err(e) => Err(failed(e)),
        }
    }

    async fn queue_state(&self, id: i64) -> Result<Option<QueueState>, ControlError> {
        match self.call(Call::QueueState(id)).await {
            Ok(Answer::QueueState(r)) => r.map_err(refused),
            Ok(_) => Err(failed(Unanswered::Mismatched)),
            Err(e) => Err(failed(e)),
        }
    }

    async fn cancel(&self, id: i64) -> Result<bool, ControlError> {
        let answer = self.call(Call::Cancel(id)).await;
        self.catch_up().await;
        match answer {
            Ok(Answer::Cancelled(r)) => r.map_err(refused),
            Ok(_) => Err(failed(Unanswered::Mismatched)),
            Err(e) => Err(failed(e)),
        }
    }

    async fn scale(&self, workers: u32) -> Result<String, ControlError> {
        self.done(Call::Scale(workers)).await
    }

    async fn rebuild(&self) -> Result<String, ControlError> {
        self.done(Call::Rebuild).await
    }

    async fn set_autoscale(&self, autoscale: Option<Autoscale>) -> Result<String, ControlError> {
        self.done(Call::SetAutoscale(autoscale)).await
    }
}
