//! The submission queue: tasks waiting in the gateway for a free slot, in
//! arrival order, each change committed before it is acted on.
//!
//! A queued request is marked with the worker it is being sent to before the
//! HTTP request leaves, and deleted (with its history row written) in one
//! transaction once the worker accepted it. A row still marked after a crash
//! may or may not have reached the worker, so it is never sent again: it
//! becomes a history row with status `unknown` and a reason. So a kill at
//! any point dispatches nothing twice and loses nothing unannounced.

use std::sync::Arc;

use fossa_web::model::{Dispatched, FossaTask, QueueState, Queued, TaskRequest, TaskStatus};
use rusqlite::{params, Connection};
use serde_json::{json, Value};

use super::store::{immediate, row_of, upsert, HistoryError, Observed, COLUMNS};
use super::History;

/// Why a request was not queued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The queue holds its maximum.
    #[error("the queue is full ({0} tasks wait)")]
    Full(u32),
    /// The database failed.
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// A queued request with what is needed to send it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its queue id.
    pub id: i64,
    /// The request as submitted.
    pub request: TaskRequest,
    /// When it was queued.
    pub enqueued_at: i64,
}

fn waiting_rows(c: &Connection) -> Result<Vec<Queued>, HistoryError> {
    let mut st = c.prepare_cached(
        "SELECT id, model_class, request, enqueued_at, sending_to FROM queue ORDER BY id",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(n, (id, model_class, request, enqueued_at, sending_to))| {
            let method = serde_json::from_str::<TaskRequest>(&request)
                .ok()
                .and_then(|r| r.method);
            Queued {
                id,
                position: n as u32 + 1,
                model_class,
                method,
                enqueued_at,
                sending_to,
            }
        })
        .collect())
}

/// A history row for a request that never became a node's task.
fn unsent_row(
    id: i64,
    request: &TaskRequest,
    status: TaskStatus,
    reason: &str,
    worker: &str,
) -> Observed {
    Observed {
        task: FossaTask {
            task_id: format!("queued-{id}"),
            model_class: request.model_class.clone(),
            method: request.method.clone().or_else(|| Some("go".into())),
            method_kwargs: request.method_kwargs.clone(),
            status,
            started: None,
            finished: Some(fossa_contract::unix_now()),
            results: Some(json!({"type": "NotDispatched", "payload": {"reason": reason}})),
            spec: Default::default(),
        },
        worker_id: worker.into(),
    }
}

impl History {
    /// Queues `request` at the back; refused when `max` wait already.
    pub async fn enqueue(
        self: &Arc<Self>,
        request: &TaskRequest,
        max: u32,
    ) -> Result<Queued, EnqueueError> {
        let text = serde_json::to_string(request).map_err(HistoryError::from)?;
        let class = request.model_class.clone();
        let r = self
            .control(move |c| {
                let tx = immediate(c)?;
                let n: u32 = tx.query_row("SELECT count(*) FROM queue", [], |r| r.get(0))?;
                if n >= max {
                    return Ok(Err(n));
                }
                tx.execute(
                    "INSERT INTO queue (request, model_class, enqueued_at) VALUES (?1, ?2, ?3)",
                    params![text, class, fossa_contract::unix_now()],
                )?;
                let id = tx.last_insert_rowid();
                let rows = waiting_rows(&tx)?;
                tx.commit()?;
                Ok(Ok(rows
                    .into_iter()
                    .find(|q| q.id == id)
                    .expect("the row just inserted")))
            })
            .await?;
        r.map_err(EnqueueError::Full)
    }

    /// Every queued request, in order, with its position.
    pub async fn queued(self: &Arc<Self>) -> Result<Vec<Queued>, HistoryError> {
        self.control(|c| waiting_rows(c)).await
    }

    /// The oldest request not being sent.
    pub async fn head(self: &Arc<Self>) -> Result<Option<Entry>, HistoryError> {
        self.control(|c| {
            let row = c
                .query_row(
                    "SELECT id, request, enqueued_at FROM queue WHERE sending_to IS NULL ORDER BY id LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)),
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            row.map(|(id, text, enqueued_at)| {
                Ok(Entry {
                    id,
                    request: serde_json::from_str(&text)?,
                    enqueued_at,
                })
            })
            .transpose()
        })
        .await
    }

    /// Marks `id` as being sent to `worker` (committed before the request leaves).
    pub async fn sending(self: &Arc<Self>, id: i64, worker: &str) -> Result<(), HistoryError> {
        let worker = worker.to_owned();
        self.control(move |c| {
            c.execute(
                "UPDATE queue SET sending_to = ?2, sending_at = ?3 WHERE id = ?1",
                params![id, worker, fossa_contract::unix_now()],
            )?;
            Ok(())
        })
        .await
    }

    /// The worker said no (busy) or could not be reached: `id` waits again.
    pub async fn not_sent(self: &Arc<Self>, id: i64) -> Result<(), HistoryError> {
        self.control(move |c| {
            c.execute(
                "UPDATE queue SET sending_to = NULL, sending_at = NULL WHERE id = ?1",
                [id],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a dispatch: removes queue row `id` (if it came from the
    /// queue) and writes the task's history row, in one transaction.
    pub async fn dispatched(
        self: &Arc<Self>,
        id: Option<i64>,
        d: &Dispatched,
        request: &TaskRequest,
    ) -> Result<(), HistoryError> {
        let row = Observed {
            task: FossaTask {
                task_id: d.task_id.clone(),
                model_class: d.model_class.clone(),
                method: request.method.clone().or_else(|| Some("go".into())),
                method_kwargs: request.method_kwargs.clone(),
                status: TaskStatus::Dispatched,
                started: Some(d.at),
                finished: None,
                results: None,
                spec: Default::default(),
            },
            worker_id: d.worker_id.clone(),
        };
        let limits = self.limits;
        let (d, request) = (d.clone(), request.clone());
        self.control(move |c| {
            let tx = immediate(c)?;
            upsert(&tx, std::slice::from_ref(&row), &limits)?;
            super::attempts::sent(&tx, id, &d, &request)?;
            if let Some(id) = id {
                tx.execute("DELETE FROM queue WHERE id = ?1", [id])?;
                tx.execute(
                    "UPDATE tasks SET queue_id = ?1 WHERE task_id = ?2 AND worker_id = ?3 AND run = 0",
                    params![id, row.task.task_id, row.worker_id],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The workers refused `id` for good (bad class or body): it leaves the
    /// queue as a `refused` history row with the reason.
    pub async fn refused(
        self: &Arc<Self>,
        e: &Entry,
        worker: &str,
        reason: &str,
    ) -> Result<(), HistoryError> {
        let row = unsent_row(e.id, &e.request, TaskStatus::Refused, reason, worker);
        let (id, limits) = (e.id, self.limits);
        self.control(move |c| {
            let tx = immediate(c)?;
            tx.execute("DELETE FROM queue WHERE id = ?1", [id])?;
            upsert(&tx, &[row], &limits)?;
            tx.execute(
                "UPDATE tasks SET queue_id = ?1 WHERE task_id = ?2",
                params![id, format!("queued-{id}")],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// What became of queued submission `id`: still waiting, or its
    /// history row (dispatched, refused or unknown); `None` if never queued
    /// or trimmed away.
    pub async fn queue_state(
        self: &Arc<Self>,
        id: i64,
    ) -> Result<Option<QueueState>, HistoryError> {
        self.control(move |c| {
            if let Some(q) = waiting_rows(c)?.into_iter().find(|q| q.id == id) {
                return Ok(Some(QueueState::Waiting(q)));
            }
            let row = c
                .query_row(
                    &format!("SELECT {} FROM tasks WHERE queue_id = ?1", COLUMNS),
                    [id],
                    row_of,
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            Ok(row.map(QueueState::Left))
        })
        .await
    }

    /// Takes `id` off the queue (the user cancelled it); `false` if it is
    /// gone or already being sent.
    pub async fn cancel(self: &Arc<Self>, id: i64) -> Result<bool, HistoryError> {
        self.control(move |c| {
            Ok(c.execute(
                "DELETE FROM queue WHERE id = ?1 AND sending_to IS NULL",
                [id],
            )? == 1)
        })
        .await
    }

    /// After a restart: requests that were being sent when the agent
    /// stopped leave the queue as `unknown` history rows (they may have
    /// reached the worker, so they are not sent again). Returns them.
    pub async fn recover(self: &Arc<Self>) -> Result<Vec<(i64, String)>, HistoryError> {
        let limits = self.limits;
        self.control(move |c| {
            let tx = immediate(c)?;
            let rows = {
                let mut st = tx.prepare(
                    "SELECT id, request, sending_to FROM queue WHERE sending_to IS NOT NULL",
                )?;
                let rows = st
                    .query_map([], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows
            };
            let mut out = Vec::new();
            for (id, text, worker) in rows {
                let request: TaskRequest = serde_json::from_str(&text).unwrap_or(TaskRequest {
                    model_class: "?".into(),
                    method: None,
                    model_construction_kwargs: Value::Null,
                    method_kwargs: Value::Null,
                    resolver_context: Value::Null,
                });
                let reason = format!(
                    "the agent stopped while sending it to {worker}; it may have run there \
                     (see that worker's tasks). It was not sent again: submit it again if it did not run"
                );
                upsert(&tx, &[unsent_row(id, &request, TaskStatus::Unknown, &reason, &worker)], &limits)?;
                tx.execute(
                    "UPDATE tasks SET queue_id = ?1 WHERE task_id = ?2",
                    params![id, format!("queued-{id}")],
                )?;
                tx.execute("DELETE FROM queue WHERE id = ?1", [id])?;
                out.push((id, worker));
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fossa_contract::config::HistoryLimits;

    fn request(class: &str) -> TaskRequest {
        serde_json::from_value(json!({"model_class": class})).unwrap()
    }

    #[tokio::test]
    async fn the_queue_keeps_order_refuses_when_full_and_survives_a_reopen() {
        let scratch = tempdir();
        let dir = &scratch.0;
        let h = History::open(dir, HistoryLimits::default()).unwrap();
        for n in 0..3 {
            let q = h.enqueue(&request(&format!("M{n}")), 3).await.unwrap();
            assert_eq!(q.position, n + 1);
        }
        assert!(matches!(
            h.enqueue(&request("M9"), 3).await,
            Err(EnqueueError::Full(3))
        ));
        let head = h.head().await.unwrap().unwrap();
        assert_eq!(head.request.model_class, "M0");
        h.sending(head.id, "w1").await.unwrap();
        // The one being sent is skipped by the next head.
        assert_eq!(h.head().await.unwrap().unwrap().request.model_class, "M1");
        drop(h);

        // A crash while sending: after a reopen it is not sent again.
        let h = History::open(dir, HistoryLimits::default()).unwrap();
        let recovered = h.recover().await.unwrap();
        assert_eq!(recovered, vec![(head.id, "w1".to_owned())]);
        let left: Vec<_> = h
            .queued()
            .await
            .unwrap()
            .into_iter()
            .map(|q| q.model_class)
            .collect();
        assert_eq!(left, ["M1", "M2"]);
        let page = h.page(Default::default()).await.unwrap();
        assert_eq!(page.tasks[0].task.status, TaskStatus::Unknown);
        assert!(page.tasks[0]
            .task
            .results
            .as_ref()
            .unwrap()
            .to_string()
            .contains("not sent again"));

        // A dispatch leaves the queue and enters the history in one step.
        let e = h.head().await.unwrap().unwrap();
        let d = Dispatched {
            task_id: "abcde".into(),
            worker_id: "w2".into(),
            model_class: "M1".into(),
            at: 5,
        };
        h.dispatched(Some(e.id), &d, &e.request).await.unwrap();
        assert_eq!(h.queued().await.unwrap().len(), 1);
        match h.queue_state(e.id).await.unwrap() {
            Some(QueueState::Left(row)) => assert_eq!(row.task.task_id, "abcde"),
            other => panic!("{other:?}"),
        }
        match h.queue_state(head.id).await.unwrap() {
            Some(QueueState::Left(row)) => assert_eq!(row.task.status, TaskStatus::Unknown),
            other => panic!("{other:?}"),
        }
        let page = h.page(Default::default()).await.unwrap();
        assert_eq!(page.tasks[0].task.task_id, "abcde");
        assert_eq!(page.tasks[0].task.status, TaskStatus::Dispatched);
        // Cancel takes the last one away.
        let last = h.queued().await.unwrap()[0].id;
        assert!(h.cancel(last).await.unwrap());
        assert!(!h.cancel(last).await.unwrap());
    }

    fn tempdir() -> crate::testkit::ScratchDir {
        crate::testkit::ScratchDir::new("history")
    }
}
