//! The recorder thread: writes the fleet's task observations, in one
//! transaction per batch. A batch whose write fails (a full disk, a lock
//! that outlasts the busy timeout) is kept and written again, 1 s doubling
//! to 30 s apart, with what arrives meanwhile; it is never counted as
//! recorded, and [`WriteTrouble`] says so on the History line until a write
//! succeeds. Observations are upserts, so writing one twice is harmless.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fossa_contract::config::HistoryLimits;
use rusqlite::Connection;

use super::store::{immediate, trim, upsert, Observed};

/// Writes failing, while they fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteTrouble {
    /// When the first failing write was tried (Unix seconds).
    pub since: i64,
    /// The newest error, its whole chain.
    pub error: String,
    /// Observations waiting to be written.
    pub pending: usize,
    /// Observations given up (beyond the pending limit), oldest first.
    pub lost: usize,
}

impl WriteTrouble {
    /// The History line.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} task observation(s) not yet written, failing for {} s: {}; kept and tried again",
            self.pending,
            (fossa_contract::unix_now() - self.since).max(0),
            self.error
        );
        if self.lost > 0 {
            line += &format!(
                " ({} older observation(s) given up: the newest state of each task is kept)",
                self.lost
            );
        }
        line
    }
}

const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// The recorder's loop, until the history is dropped (whatever is still
/// pending then is tried once more).
pub fn recorder(
    mut c: Connection,
    rx: Receiver<Vec<Observed>>,
    limits: HistoryLimits,
    trouble: Arc<Mutex<Option<WriteTrouble>>>,
) {
    let mut since_trim = Instant::now();
    let mut written = 0usize;
    let mut pending: Vec<Observed> = Vec::new();
    let mut pause = FIRST_PAUSE;
    let mut next_try = Instant::now();
    let mut lost = 0usize;
    loop {
        let open = if pending.is_empty() {
            rx.recv().map(|b| pending.extend(b)).is_ok()
        } else {
            match rx.recv_timeout(next_try.saturating_duration_since(Instant::now())) {
                Ok(b) => {
                    pending.extend(b);
                    true
                }
                Err(RecvTimeoutError::Timeout) => true,
                Err(RecvTimeoutError::Disconnected) => false,
            }
        };
        // Whatever else is waiting goes into the same transaction.
        while let Ok(more) = rx.try_recv() {
            pending.extend(more);
        }
        let max = fossa_contract::limits::HISTORY_PENDING_MAX;
        if pending.len() > max {
            let over = pending.len() - max;
            pending.drain(..over);
            lost += over;
        }
        if open && Instant::now() < next_try {
            continue;
        }
        let r = immediate(&mut c).and_then(|tx| {
            upsert(&tx, &pending, &limits)?;
            tx.commit()
        });
        let mut t = trouble.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(()) => {
                if t.take().is_some() {
                    tracing::info!("the task history is written again");
                }
                written += pending.len();
                pending.clear();
                pause = FIRST_PAUSE;
                lost = 0;
            }
            Err(e) => {
                let error = fossa_contract::aws::chain(&e);
                if t.is_none() {
                    tracing::warn!(error = %error, "cannot record {} task observations; keeping them", pending.len());
                }
                *t = Some(WriteTrouble {
                    since: t
                        .as_ref()
                        .map_or(fossa_contract::unix_now(), |old| old.since),
                    error,
                    pending: pending.len(),
                    lost,
                });
                next_try = Instant::now() + pause;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        }
        drop(t);
        if !open {
            return;
        }
        if written >= 1000 || since_trim.elapsed() > Duration::from_secs(60) {
            if let Err(e) = trim(&c, &limits) {
                tracing::warn!(error = %e, "cannot trim the task history");
            }
            written = 0;
            since_trim = Instant::now();
        }
    }
}
