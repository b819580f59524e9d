//! The core's side: answers the UI process's requests from the real
//! [`Fleet`]. It trusts nothing it reads: frames are bounded, only the
//! [`Call`]s exist, at most [`UI_REQUESTS_AT_ONCE`] run at once, and each is
//! checked again by the fleet as any caller's would be.

use std::sync::Arc;

use fossa_contract::limits::{UI_PUSH_MS, UI_REQUESTS_AT_ONCE};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, Mutex, Semaphore};

use super::wire::{self, Answer, Call, Frame, Refreshed, Refusal, Secrets, WireError};
use crate::model::{ControlError, Event, Fleet, FleetSnapshot};

impl From<ControlError> for Refusal {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid(m) => Refusal::Invalid(m),
            e @ ControlError::Failed(_) => Refusal::Failed(e.message()),
        }
    }
}

/// What the UI process was last sent, so a refresh sends only what changed.
struct Sent {
    snapshot: Option<Arc<FleetSnapshot>>,
    events: Vec<Event>,
    password: watch::Receiver<String>,
    scrape_token: watch::Receiver<String>,
}

/// Serves one UI process on `reader`/`writer` until it hangs up or sends
/// something that is not a request. `secrets` are the password's and the
/// scraper token's updates, passed on at the next refresh.
pub async fn serve<R, W>(
    mut reader: R,
    mut writer: W,
    fleet: Arc<dyn Fleet>,
    secrets: (watch::Receiver<String>, watch::Receiver<String>),
) -> Result<(), WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (mut password, mut scrape_token) = secrets;
    password.mark_unchanged();
    scrape_token.mark_unchanged();
    let sent = Arc::new(Mutex::new(Sent {
        snapshot: None,
        events: Vec::new(),
        password,
        scrape_token,
    }));
    let (tx, mut rx) = mpsc::channel::<Frame<Answer>>(UI_REQUESTS_AT_ONCE);
    let writing = AbortOnDrop(tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            wire::write(&mut writer, &frame, wire::ANSWER_MAX_BYTES).await?;
        }
        Ok::<(), WireError>(())
    }));
    // What changes is pushed as it changes (frame id 0), so the UI's copy
    // is never more than a moment behind the core's.
    let pushing = {
        let (fleet, sent, tx) = (fleet.clone(), sent.clone(), tx.clone());
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(UI_PUSH_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let r = refresh(fleet.as_ref(), &mut *sent.lock().await);
                if r.is_empty() {
                    continue;
                }
                let push = Frame {
                    id: wire::PUSH_ID,
                    body: Answer::Refreshed(Box::new(r)),
                };
                if tx.send(push).await.is_err() {
                    return;
                }
            }
        }))
    };
    let turns = Arc::new(Semaphore::new(UI_REQUESTS_AT_ONCE));
    let result = loop {
        let frame: Frame<Call> = match wire::read(&mut reader, wire::REQUEST_MAX_BYTES).await {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let Ok(turn) = turns.clone().acquire_owned().await else {
            break Ok(());
        };
        let (fleet, sent, tx) = (fleet.clone(), sent.clone(), tx.clone());
        tokio::spawn(async move {
            let body = answer(frame.body, fleet.as_ref(), &sent).await;
            let _ = tx.send(Frame { id: frame.id, body }).await;
            drop(turn);
        });
    };
    drop((tx, pushing, writing));
    result
}

/// A task that ends with its handle, however `serve` ends (a return, an
/// abort of its own task, a panic): nothing it spawned outlives it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn answer(call: Call, fleet: &dyn Fleet, sent: &Mutex<Sent>) -> Answer {
    match call {
        Call::Refresh => Answer::Refreshed(Box::new(refresh(fleet, &mut *sent.lock().await))),
        Call::Submit(request) => Answer::Submitted(fleet.submit(request).await),
        Call::History(query) => Answer::History(fleet.history(query).await.map_err(Into::into)),
        Call::Recorded(id) => Answer::Rows(fleet.recorded(&id).await),
        Call::Attempts(id) => Answer::Attempts(fleet.attempts(&id).await),
        Call::Logs { worker, query } => {
            Answer::Logs(fleet.logs(&worker, query).await.map_err(Into::into))
        }
        Call::QueueState(id) => Answer::QueueState(fleet.queue_state(id).await.map_err(Into::into)),
        Call::Cancel(id) => Answer::Cancelled(fleet.cancel(id).await.map_err(Into::into)),
        Call::Scale(n) => Answer::Done(fleet.scale(n).await.map_err(Into::into)),
        Call::Rebuild => Answer::Done(fleet.rebuild().await.map_err(Into::into)),
        Call::SetAutoscale(a) => Answer::Done(fleet.set_autoscale(a).await.map_err(Into::into)),
    }
}

fn refresh(fleet: &dyn Fleet, sent: &mut Sent) -> Refreshed {
    let snap = fleet.snapshot();
    let snapshot = match &sent.snapshot {
        Some(last) if Arc::ptr_eq(last, &snap) => None,
        _ => {
            sent.snapshot = Some(snap.clone());
            Some(snap.as_ref().clone())
        }
    };
    let now = fleet.events();
    let events = (now != sent.events).then(|| {
        sent.events = now.clone();
        now
    });
    let changed = |rx: &mut watch::Receiver<String>| {
        rx.has_changed()
            .unwrap_or(false)
            .then(|| rx.borrow_and_update().clone())
    };
    Refreshed {
        snapshot,
        events,
        secrets: Secrets {
            password: changed(&mut sent.password),
            scrape_token: changed(&mut sent.scrape_token),
        },
    }
}
