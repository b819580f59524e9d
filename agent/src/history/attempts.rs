//! Attempts: a task the gateway sent is kept with its request, so that when
//! it is lost with its node (its reply queue gone with it, so its subtasks'
//! replies can no longer reach it) it can be submitted again, through the
//! queue, as a new attempt linked to the one before. The lost row of the
//! first attempt names the next ("submitted again as queued task #N"), then
//! the task it became; the new task's attempt and the first one are kept
//! here and shown on its page. Every change is one transaction with the
//! queue row or the history row it concerns, so a kill between them
//! submits nothing twice.

use std::sync::Arc;

use fossa_web::model::{Attempt, Dispatched, TaskRequest};
use rusqlite::{params, OptionalExtension, Transaction};

use super::store::{immediate, HistoryError};
use super::History;

/// The tables (added to the history's schema; an older file gets them at
/// its next start).
pub(crate) const SCHEMA: &str = "
-- Each task the gateway sent: its request and its attempt.
CREATE TABLE IF NOT EXISTS submissions (
    task_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    request TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    first_task_id TEXT NOT NULL,
    previous_task_id TEXT,
    sent_at INTEGER NOT NULL,
    -- The next attempt's queue id, once this one was submitted again.
    again_queue_id INTEGER,
    PRIMARY KEY (task_id, worker_id)
);
CREATE INDEX IF NOT EXISTS submissions_by_first ON submissions (first_task_id);
-- A queued next attempt: which attempt it is, and of what.
CREATE TABLE IF NOT EXISTS queued_attempts (
    queue_id INTEGER PRIMARY KEY,
    attempt INTEGER NOT NULL,
    first_task_id TEXT NOT NULL,
    previous_task_id TEXT NOT NULL
);
";

/// What became of a lost task the gateway had sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Again {
    /// Queued again as `queue_id`, attempt `attempt` of `of`.
    Queued {
        /// The new queue row.
        queue_id: i64,
        /// This attempt's number (2 for the first retry).
        attempt: u32,
        /// Attempts allowed.
        of: u32,
    },
    /// Already `of` attempts: not again.
    Exhausted {
        /// Attempts allowed.
        of: u32,
    },
    /// Not sent by this gateway, or already submitted again: nothing to do.
    NotOurs,
    /// Its lost row is not written yet: ask again after the recorder.
    NotYet,
}

/// Appends `note` to the reason of the newest lost row of `task_id` on
/// `worker_id`.
fn note_on_lost(
    tx: &Transaction<'_>,
    task_id: &str,
    worker_id: &str,
    note: &str,
) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE tasks SET results = json_set(coalesce(results, '{}'), '$.payload.reason',
             coalesce(json_extract(results, '$.payload.reason'), 'lost') || '; ' || ?3)
         WHERE id = (SELECT id FROM tasks WHERE task_id = ?1 AND worker_id = ?2
                     AND status = 'lost' ORDER BY id DESC LIMIT 1)",
        params![task_id, worker_id, note],
    )
}

/// Within a dispatch's transaction: keeps the request of the task just
/// sent, as the attempt its queue row says (1 when it is not a retry), and
/// names the new task on the lost row of the attempt before.
pub(crate) fn sent(
    tx: &Transaction<'_>,
    queue_id: Option<i64>,
    d: &Dispatched,
    request: &TaskRequest,
) -> Result<(), HistoryError> {
    let retry: Option<(u32, String, String)> = match queue_id {
        Some(id) => tx
            .query_row(
                "SELECT attempt, first_task_id, previous_task_id FROM queued_attempts WHERE queue_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?,
        None => None,
    };
    let (attempt, first, previous) = match retry {
        Some((a, f, p)) => (a, f, Some(p)),
        None => (1, d.task_id.clone(), None),
    };
    tx.execute(
        "INSERT OR REPLACE INTO submissions (task_id, worker_id, request, attempt, first_task_id, previous_task_id, sent_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            d.task_id,
            d.worker_id,
            serde_json::to_string(request)?,
            attempt,
            first,
            previous,
            d.at
        ],
    )?;
    if let (Some(id), Some(previous)) = (queue_id, previous) {
        tx.execute("DELETE FROM queued_attempts WHERE queue_id = ?1", [id])?;
        let worker: Option<String> = tx
            .query_row(
                "SELECT worker_id FROM submissions WHERE task_id = ?1 AND again_queue_id = ?2",
                params![previous, id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(worker) = worker {
            let note = format!("it ran again as task {} (attempt {attempt})", d.task_id);
            note_on_lost(tx, &previous, &worker, &note)?;
        }
    }
    Ok(())
}

impl History {
    /// Task `task_id`, lost on `worker_id`: queued again as the next
    /// attempt when the gateway sent it and fewer than `1 + retries`
    /// attempts were made; its lost row says so, in the same transaction
    /// (so it waits until the recorder has written that row).
    pub async fn submit_again(
        self: &Arc<Self>,
        task_id: String,
        worker_id: String,
        retries: u32,
    ) -> Result<Again, HistoryError> {
        self.control(move |c| {
            let tx = immediate(c)?;
            let row: Option<(String, u32, String, Option<i64>)> = tx
                .query_row(
                    "SELECT request, attempt, first_task_id, again_queue_id FROM submissions
                     WHERE task_id = ?1 AND worker_id = ?2",
                    params![task_id, worker_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((request, attempt, first, None)) = row else {
                return Ok(Again::NotOurs);
            };
            let recorded: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE task_id = ?1 AND worker_id = ?2 AND status = 'lost')",
                params![task_id, worker_id],
                |r| r.get(0),
            )?;
            if !recorded {
                return Ok(Again::NotYet);
            }
            let of = 1 + retries;
            if attempt >= of {
                let note = if retries == 0 {
                    "not submitted again (parent_retries is 0)".to_owned()
                } else {
                    format!("not submitted again: that was attempt {attempt} of {of}")
                };
                note_on_lost(&tx, &task_id, &worker_id, &note)?;
                tx.commit()?;
                return Ok(Again::Exhausted { of });
            }
            let model_class: String = serde_json::from_str::<TaskRequest>(&request)?.model_class;
            tx.execute(
                "INSERT INTO queue (request, model_class, enqueued_at) VALUES (?1, ?2, ?3)",
                params![request, model_class, fossa_contract::unix_now()],
            )?;
            let queue_id = tx.last_insert_rowid();
            let next = attempt + 1;
            tx.execute(
                "INSERT INTO queued_attempts (queue_id, attempt, first_task_id, previous_task_id) VALUES (?1, ?2, ?3, ?4)",
                params![queue_id, next, first, task_id],
            )?;
            tx.execute(
                "UPDATE submissions SET again_queue_id = ?3 WHERE task_id = ?1 AND worker_id = ?2",
                params![task_id, worker_id, queue_id],
            )?;
            let note = format!(
                "submitted again as queued task #{queue_id} (attempt {next} of {of})"
            );
            note_on_lost(&tx, &task_id, &worker_id, &note)?;
            tx.commit()?;
            Ok(Again::Queued {
                queue_id,
                attempt: next,
                of,
            })
        })
        .await
    }

    /// The attempts of the task `task_id` belongs to, first first (empty
    /// for a task the gateway did not send, or sent once).
    pub async fn attempts(self: &Arc<Self>, task_id: String) -> Result<Vec<Attempt>, HistoryError> {
        self.read(move |c| {
            let first: Option<String> = c
                .query_row(
                    "SELECT first_task_id FROM submissions WHERE task_id = ?1 LIMIT 1",
                    [&task_id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(first) = first else {
                return Ok(Vec::new());
            };
            let mut st = c.prepare_cached(
                "SELECT task_id, attempt, sent_at FROM submissions WHERE first_task_id = ?1 ORDER BY attempt",
            )?;
            let rows = st
                .query_map([&first], |r| {
                    Ok(Attempt {
                        task_id: r.get(0)?,
                        attempt: r.get(1)?,
                        sent_at: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if rows.len() > 1 { rows } else { Vec::new() })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::store::Observed;
    use fossa_web::model::{FossaTask, TaskStatus};

    fn request() -> TaskRequest {
        serde_json::from_value(
            serde_json::json!({"model_class": "Spread", "method_kwargs": {"n": 2}}),
        )
        .unwrap()
    }

    fn sent_to(task_id: &str, worker: &str) -> Dispatched {
        Dispatched {
            task_id: task_id.into(),
            worker_id: worker.into(),
            model_class: "Spread".into(),
            at: 100,
        }
    }

    fn lost(task_id: &str, worker: &str) -> Observed {
        Observed {
            task: FossaTask {
                task_id: task_id.into(),
                model_class: String::new(),
                method: None,
                method_kwargs: serde_json::Value::Null,
                status: TaskStatus::Lost,
                started: None,
                finished: Some(110),
                results: Some(
                    serde_json::json!({"type": "Lost", "payload": {"reason": "worker w1 is gone"}}),
                ),
                spec: Default::default(),
            },
            worker_id: worker.into(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_lost_task_is_queued_again_once_and_each_attempt_names_the_next() {
        let scratch = crate::testkit::scratch_history();
        let h = scratch.history.clone();
        h.dispatched(None, &sent_to("first", "w1"), &request())
            .await
            .unwrap();
        assert_eq!(
            h.submit_again("first".into(), "w1".into(), 1)
                .await
                .unwrap(),
            Again::NotYet,
            "not before its lost row is written"
        );
        h.record(vec![lost("first", "w1")]);
        recorded_lost(&h, "first").await;
        let again = h
            .submit_again("first".into(), "w1".into(), 1)
            .await
            .unwrap();
        let Again::Queued {
            queue_id,
            attempt: 2,
            of: 2,
        } = again
        else {
            panic!("{again:?}")
        };
        // Twice is not twice: the first attempt is already submitted again.
        assert_eq!(
            h.submit_again("first".into(), "w1".into(), 1)
                .await
                .unwrap(),
            Again::NotOurs
        );
        let q = h.head().await.unwrap().expect("queued");
        assert_eq!((q.id, q.request.model_class.as_str()), (queue_id, "Spread"));
        assert_eq!(q.request.method_kwargs, serde_json::json!({"n": 2}));
        // The queue sends it: attempt 2, linked both ways.
        h.dispatched(Some(queue_id), &sent_to("second", "w2"), &q.request)
            .await
            .unwrap();
        let attempts = h.attempts("second".into()).await.unwrap();
        assert_eq!(
            attempts
                .iter()
                .map(|a| (a.task_id.as_str(), a.attempt))
                .collect::<Vec<_>>(),
            [("first", 1), ("second", 2)]
        );
        let rows = h.around("first".into()).await.unwrap();
        let reason = rows
            .iter()
            .find(|r| r.task.task_id == "first")
            .and_then(|r| r.task.results.clone())
            .unwrap()["payload"]["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            reason.contains("submitted again as queued task #")
                && reason.contains("(attempt 2 of 2)")
                && reason.contains("it ran again as task second (attempt 2)"),
            "{reason}"
        );
        // Lost again: attempt 2 of 2 was the last.
        h.record(vec![lost("second", "w2")]);
        recorded_lost(&h, "second").await;
        assert_eq!(
            h.submit_again("second".into(), "w2".into(), 1)
                .await
                .unwrap(),
            Again::Exhausted { of: 2 }
        );
        // A task the gateway did not send (a subtask, or sent to a node
        // directly) is not its to submit.
        assert_eq!(
            h.submit_again("other".into(), "w1".into(), 1)
                .await
                .unwrap(),
            Again::NotOurs
        );
    }

    /// Waits until the recorder wrote `task_id`'s lost row.
    async fn recorded_lost(h: &Arc<History>, task_id: &str) {
        for _ in 0..200 {
            let rows = h.around(task_id.to_owned()).await.unwrap();
            if rows
                .iter()
                .any(|r| r.task.task_id == task_id && r.task.status == TaskStatus::Lost)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{task_id} not recorded lost");
    }
}
