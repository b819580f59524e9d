//! Durable task history and the submission queue, in one SQLite database in
//! the state directory (`history.sqlite3`, WAL).
//!
//! Why SQLite (rusqlite, bundled): the history is read by filters (model,
//! status) and pages, exported, and trimmed by count and age; SQL indexes do
//! that without hand-built secondary tables, the file survives a kill -9 at
//! any point (WAL with full sync), and the bundled build links statically
//! into the musl agent. redb would need every index written by hand.
//!
//! Writers: the fleet poller's observations go to one recorder thread over a
//! bounded channel it never waits on ([`History::record`]); queue changes and
//! dispatches are written at once, in a transaction each, on the control
//! connection ([`queue`]). Pages read on a connection of their own.

pub mod queue;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fossa_contract::config::HistoryLimits;
use fossa_web::model::{FossaTask, HistoryPage, HistoryQuery, TaskRow, TaskStatus};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

/// Why the history could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database file could not be opened or set up.
    #[error("cannot open the task history {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("task history query failed")]
    Query(#[from] rusqlite::Error),
    /// A stored request is not JSON any more.
    #[error("a queued request is unreadable")]
    Json(#[from] serde_json::Error),
    /// The blocking task was cancelled.
    #[error("the history task stopped")]
    Stopped,
}

/// One observation for the recorder.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The task as its node reported it (or as the gateway marked it).
    pub task: FossaTask,
    /// Where it ran.
    pub worker_id: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    model_class TEXT NOT NULL,
    method TEXT,
    method_kwargs TEXT,
    status TEXT NOT NULL,
    started INTEGER,
    finished INTEGER,
    results TEXT,
    recorded_at INTEGER NOT NULL,
    queue_id INTEGER,
    -- 0 for the live row of a task on a worker; a lost run is moved aside
    -- (run = its id), so the same task run again there gets a row of its own.
    run INTEGER NOT NULL DEFAULT 0,
    UNIQUE (task_id, worker_id, run)
);
CREATE INDEX IF NOT EXISTS tasks_by_model ON tasks (model_class, id);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, id);
CREATE INDEX IF NOT EXISTS tasks_by_started ON tasks (started);
CREATE INDEX IF NOT EXISTS tasks_by_task_id ON tasks (task_id);
CREATE INDEX IF NOT EXISTS tasks_by_queue_id ON tasks (queue_id) WHERE queue_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request TEXT NOT NULL,
    model_class TEXT NOT NULL,
    enqueued_at INTEGER NOT NULL,
    sending_to TEXT,
    sending_at INTEGER
);
CREATE TABLE IF NOT EXISTS meter (
    month TEXT PRIMARY KEY,
    hours REAL NOT NULL,
    dollars REAL NOT NULL,
    gateway_dollars REAL NOT NULL,
    nat_gateway_hour_dollars REAL NOT NULL,
    updated_at INTEGER NOT NULL
);
-- Settings changed in the UI that outlive a restart (autoscaling's bounds).
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
PRAGMA user_version = 1;
";

fn connect(path: &Path) -> Result<Connection, rusqlite::Error> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(5))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed queue change survives a power cut, not only a kill.
    c.pragma_update(None, "synchronous", "FULL")?;
    // A small page cache: the agent's idle memory stays small.
    c.pragma_update(None, "cache_size", -512)?;
    Ok(c)
}

/// The history and queue database.
pub struct History {
    path: PathBuf,
    limits: HistoryLimits,
    control: Mutex<Connection>,
    reader: Mutex<Connection>,
    recorder: SyncSender<Vec<Observed>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("path", &self.path).finish()
    }
}

/// Observation batches the recorder may fall behind by before the poller
/// skips sending (it sends the changes again on its next refresh).
const RECORDER_BACKLOG: usize = 64;

impl History {
    /// Opens (creating) `dir/history.sqlite3` and starts its recorder thread.
    pub fn open(dir: &Path, limits: HistoryLimits) -> Result<Arc<History>, HistoryError> {
        let path = dir.join(fossa_contract::names::HISTORY_FILE);
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Err(HistoryError::Open {
                path,
                source: rusqlite::Error::InvalidPath(format!("{}: {e}", dir.display()).into()),
            });
        }
        Self::open_path(path, limits)
    }

    /// [`History::open`], or, when the file cannot be used (corrupt, disk
    /// full, no permission), a history in memory so the agent still serves:
    /// a corrupt file is first moved aside (kept, never deleted) and a
    /// fresh one made. The second value says what happened, for an event.
    pub fn open_or_fallback(dir: &Path, limits: HistoryLimits) -> (Arc<History>, Option<String>) {
        let first = match Self::open(dir, limits) {
            Ok(h) => return (h, None),
            Err(e) => e,
        };
        let path = dir.join(fossa_contract::names::HISTORY_FILE);
        let aside = dir.join(format!(
            "{}.unreadable-{}",
            fossa_contract::names::HISTORY_FILE,
            fossa_contract::unix_now()
        ));
        if std::fs::rename(&path, &aside).is_ok() {
            if let Ok(h) = Self::open(dir, limits) {
                return (
                    h,
                    Some(format!(
                        "{}; it was moved to {} and a new history started",
                        fossa_contract::aws::chain(&first),
                        aside.display()
                    )),
                );
            }
        }
        let memory = PathBuf::from(format!(
            "file:fossa-history-{}?mode=memory&cache=shared",
            std::process::id()
        ));
        match Self::open_path(memory, limits) {
            Ok(h) => (
                h,
                Some(format!(
                    "{}; the history and queue are kept in memory until the agent restarts",
                    fossa_contract::aws::chain(&first)
                )),
            ),
            Err(e) => panic!("SQLite cannot open a database in memory: {e}"),
        }
    }

    fn open_path(path: PathBuf, limits: HistoryLimits) -> Result<Arc<History>, HistoryError> {
        let open_err = |source| HistoryError::Open {
            path: path.clone(),
            source,
        };
        let control = connect(&path).map_err(open_err)?;
        control.execute_batch(SCHEMA).map_err(open_err)?;
        let reader = connect(&path).map_err(open_err)?;
        let writer = connect(&path).map_err(open_err)?;
        let (tx, rx) = sync_channel(RECORDER_BACKLOG);
        std::thread::Builder::new()
            .name("history-recorder".into())
            .spawn(move || recorder(writer, rx, limits))
            .map_err(|e| open_err(rusqlite::Error::InvalidPath(e.to_string().into())))?;
        Ok(Arc::new(History {
            path,
            limits,
            control: Mutex::new(control),
            reader: Mutex::new(reader),
            recorder: tx,
            dropped: Default::default(),
        }))
    }

    /// The limits it keeps to.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    /// Hands a batch to the recorder without waiting; `false` when it is
    /// behind (the caller keeps the batch's changes to send again).
    pub fn record(&self, batch: Vec<Observed>) -> bool {
        if batch.is_empty() {
            return true;
        }
        match self.recorder.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }

    /// Runs `f` on the control connection in a blocking thread.
    pub(crate) async fn control<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> Result<T, HistoryError> + Send + 'static,
    ) -> Result<T, HistoryError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = me.control.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|_| HistoryError::Stopped)?
    }

    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, HistoryError> + Send + 'static,
    ) -> Result<T, HistoryError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let c = me.reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&c)
        })
        .await
        .map_err(|_| HistoryError::Stopped)?
    }

    /// One page of history, newest first.
    pub async fn page(self: &Arc<Self>, q: HistoryQuery) -> Result<HistoryPage, HistoryError> {
        self.read(move |c| page(c, &q)).await
    }

    /// The rows a task's page needs: the task, and every task that may be
    /// its subtask or its parent (same class, overlapping in time).
    pub async fn around(self: &Arc<Self>, id: String) -> Result<Vec<TaskRow>, HistoryError> {
        self.read(move |c| around(c, &id)).await
    }

    /// The tasks recorded as running or dispatched (to notice the ones lost).
    pub fn unfinished(&self) -> Result<Vec<Observed>, HistoryError> {
        let c = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = c.prepare(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE status IN ('running', ?1)"
        ))?;
        let rows = st
            .query_map([TaskStatus::Dispatched.as_str()], row_of)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|r| Observed {
                task: r.task,
                worker_id: r.worker_id,
            })
            .collect())
    }

    /// Observation batches not recorded because the recorder was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the agent metered in one month: the hours it ran, this stack's cost
/// over them, the gateway instance's share, and what a NAT Gateway's hours
/// would have cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meter {
    /// `2026-11`.
    pub month: String,
    /// Hours metered.
    pub hours: f64,
    /// The stack's cost over them.
    pub dollars: f64,
    /// The gateway instance and its address over them.
    pub gateway_dollars: f64,
    /// A NAT Gateway's hourly charge over them.
    pub nat_gateway_hour_dollars: f64,
}

impl History {
    /// The meter of `month` (zero if none was kept).
    pub fn meter(&self, month: &str) -> Meter {
        let c = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        c.query_row(
            "SELECT hours, dollars, gateway_dollars, nat_gateway_hour_dollars FROM meter WHERE month = ?1",
            [month],
            |r| {
                Ok(Meter {
                    month: month.to_owned(),
                    hours: r.get(0)?,
                    dollars: r.get(1)?,
                    gateway_dollars: r.get(2)?,
                    nat_gateway_hour_dollars: r.get(3)?,
                })
            },
        )
        .unwrap_or_else(|_| Meter {
            month: month.to_owned(),
            ..Default::default()
        })
    }

    /// Keeps `m` (in a blocking thread of its own; the caller does not wait).
    pub fn save_meter(self: &Arc<Self>, m: Meter) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.save_meter_now(&m));
    }

    /// Keeps `m` now.
    pub fn save_meter_now(&self, m: &Meter) {
        {
            let c = self.control.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = c.execute(
                "INSERT INTO meter (month, hours, dollars, gateway_dollars, nat_gateway_hour_dollars, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (month) DO UPDATE SET hours = excluded.hours, dollars = excluded.dollars,
                    gateway_dollars = excluded.gateway_dollars,
                    nat_gateway_hour_dollars = excluded.nat_gateway_hour_dollars, updated_at = excluded.updated_at",
                params![m.month, m.hours, m.dollars, m.gateway_dollars, m.nat_gateway_hour_dollars, fossa_contract::unix_now()],
            ) {
                tracing::warn!(error = %e, "cannot keep the cost meter");
            }
        }
    }
}

impl History {
    /// The setting kept under `key`, if any.
    pub fn setting(&self, key: &str) -> Option<String> {
        let c = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .ok()
    }

    /// Keeps `value` under `key` (`None`: forgets it).
    pub fn set_setting(&self, key: &str, value: Option<&str>) -> Result<(), HistoryError> {
        let c = self.control.lock().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(v) => c.execute(
                "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![key, v, fossa_contract::unix_now()],
            ),
            None => c.execute("DELETE FROM settings WHERE key = ?1", [key]),
        }
        .map_err(HistoryError::from)?;
        Ok(())
    }
}

/// The columns a [`TaskRow`] is read from, in [`row_of`]'s order.
const COLUMNS: &str =
    "task_id, worker_id, model_class, method, method_kwargs, status, started, finished, results, id";

fn json_of(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        task: FossaTask {
            task_id: r.get(0)?,
            model_class: r.get(2)?,
            method: r.get(3)?,
            method_kwargs: json_of(r.get(4)?),
            status: TaskStatus::parse(&r.get::<_, String>(5)?),
            started: r.get(6)?,
            finished: r.get(7)?,
            results: r.get::<_, Option<String>>(8)?.map(|t| json_of(Some(t))),
        },
        worker_id: r.get(1)?,
        worker_address: String::new(),
    })
}

/// A result payload as stored: its JSON, or, beyond the limit, a string
/// holding its start and how long it was.
pub fn bounded_results(results: &Value, max: usize) -> String {
    let text = results.to_string();
    if text.len() <= max {
        return text;
    }
    let mut cut = max.saturating_sub(80);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Value::String(format!(
        "{}… (truncated: {} bytes in all, {max} kept)",
        &text[..cut],
        text.len()
    ))
    .to_string()
}

/// Inserts or updates observations; a final status is never replaced by an
/// earlier one (a stale poll).
pub(crate) fn upsert(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Observed],
    limits: &HistoryLimits,
) -> Result<(), rusqlite::Error> {
    let mut st = tx.prepare_cached(
        "INSERT INTO tasks (task_id, worker_id, model_class, method, method_kwargs, status, started, finished, results, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (task_id, worker_id, run) DO UPDATE SET
            model_class = CASE excluded.model_class WHEN '' THEN tasks.model_class ELSE excluded.model_class END,
            method = coalesce(excluded.method, tasks.method),
            method_kwargs = coalesce(excluded.method_kwargs, tasks.method_kwargs),
            status = excluded.status,
            started = coalesce(excluded.started, tasks.started),
            finished = coalesce(excluded.finished, tasks.finished),
            results = coalesce(excluded.results, tasks.results),
            recorded_at = excluded.recorded_at
         WHERE excluded.status != 'dispatched'
            AND (tasks.status NOT IN ('complete', 'failed', 'lost', 'unknown', 'refused')
                 OR excluded.status IN ('complete', 'failed'))",
    )?;
    let mut lose = tx.prepare_cached(
        "UPDATE tasks SET status = ?3, finished = ?4, results = ?5, recorded_at = ?6, run = id
         WHERE task_id = ?1 AND worker_id = ?2 AND run = 0
           AND status NOT IN ('complete', 'failed', 'lost', 'unknown', 'refused')",
    )?;
    let now = fossa_contract::unix_now();
    for o in batch {
        let t = &o.task;
        if t.status == TaskStatus::Lost {
            lose.execute(params![
                t.task_id,
                o.worker_id,
                t.status.as_str(),
                t.finished,
                t.results
                    .as_ref()
                    .map(|r| bounded_results(r, limits.result_bytes)),
                now,
            ])?;
            continue;
        }
        let kwargs = (!t.method_kwargs.is_null()).then(|| t.method_kwargs.to_string());
        st.execute(params![
            t.task_id,
            o.worker_id,
            t.model_class,
            t.method,
            kwargs,
            t.status.as_str(),
            t.started,
            t.finished,
            t.results
                .as_ref()
                .map(|r| bounded_results(r, limits.result_bytes)),
            now,
        ])?;
    }
    Ok(())
}

/// Deletes what is beyond the count or older than the age.
pub(crate) fn trim(c: &Connection, limits: &HistoryLimits) -> Result<usize, rusqlite::Error> {
    let oldest = fossa_contract::unix_now() - i64::from(limits.max_age_days) * 86_400;
    let mut n = c.execute(
        "DELETE FROM tasks WHERE coalesce(finished, started, recorded_at) < ?1 AND status NOT IN ('running', 'dispatched')",
        [oldest],
    )?;
    n += c.execute(
        "DELETE FROM tasks WHERE id <= (SELECT id FROM tasks ORDER BY id DESC LIMIT 1 OFFSET ?1)",
        [limits.max_tasks],
    )?;
    Ok(n)
}

fn recorder(mut c: Connection, rx: Receiver<Vec<Observed>>, limits: HistoryLimits) {
    let mut since_trim = Instant::now();
    let mut written = 0usize;
    while let Ok(mut batch) = rx.recv() {
        // Whatever else is waiting goes into the same transaction.
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        let r = c.transaction().and_then(|tx| {
            upsert(&tx, &batch, &limits)?;
            tx.commit()
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot record {} task observations", batch.len());
            continue;
        }
        written += batch.len();
        if written >= 1000 || since_trim.elapsed() > Duration::from_secs(60) {
            if let Err(e) = trim(&c, &limits) {
                tracing::warn!(error = %e, "cannot trim the task history");
            }
            written = 0;
            since_trim = Instant::now();
        }
    }
}

/// The page query (kept apart for the bench and the tests).
pub fn page(c: &Connection, q: &HistoryQuery) -> Result<HistoryPage, HistoryError> {
    let limit = match q.limit {
        0 => fossa_contract::limits::HISTORY_PAGE_ROWS,
        n => n.min(fossa_contract::limits::HISTORY_PAGE_MAX),
    };
    let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE id < ?1");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(q.before.unwrap_or(i64::MAX))];
    if let Some(m) = q.model.as_deref().filter(|m| !m.is_empty()) {
        args.push(Box::new(m.to_owned()));
        sql += &format!(" AND model_class = ?{}", args.len());
    }
    if let Some(s) = q.status.as_deref().filter(|s| !s.is_empty()) {
        args.push(Box::new(s.to_owned()));
        sql += &format!(" AND status = ?{}", args.len());
    }
    if q.parents_only {
        sql += " AND task_id NOT LIKE '%::%'";
    }
    sql += &format!(" ORDER BY id DESC LIMIT {}", limit + 1);
    let mut st = c.prepare_cached(&sql)?;
    let mut ids = Vec::new();
    let mut tasks = st
        .query_map(rusqlite::params_from_iter(args.iter()), |r| {
            let id: i64 = r.get(9)?;
            Ok((id, row_of(r)?))
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|(id, row)| {
            ids.push(id);
            row
        })
        .collect::<Vec<_>>();
    let next = if tasks.len() > limit as usize {
        tasks.truncate(limit as usize);
        ids.get(limit as usize - 1).copied()
    } else {
        None
    };
    let total: i64 = c.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?;
    Ok(HistoryPage {
        tasks,
        next_before: next,
        total: total as u64,
    })
}

/// The rows of task `id` and of the tasks that may be linked to it.
fn around(c: &Connection, id: &str) -> Result<Vec<TaskRow>, HistoryError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE task_id = ?1 ORDER BY id DESC LIMIT 1"
    ))?;
    let Some(me) = st.query_row([id], row_of).optional()? else {
        return Ok(Vec::new());
    };
    let slack = 2;
    let (from, to) = match me.task.subtask_parts() {
        // A subtask: its siblings, and the parents that started before them.
        Some(_) => (
            me.task.started.unwrap_or(0).saturating_sub(86_400),
            me.task
                .finished
                .or(me.task.started)
                .unwrap_or(i64::MAX)
                .saturating_add(slack),
        ),
        None => (
            me.task.started.unwrap_or(0).saturating_sub(slack),
            me.task
                .finished
                .map(|f| f.saturating_add(slack))
                .unwrap_or(i64::MAX),
        ),
    };
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE model_class = ?1 AND started BETWEEN ?2 AND ?3 ORDER BY id DESC LIMIT 20000"
    ))?;
    let mut rows = st
        .query_map(params![me.task.model_class, from, to], row_of)?
        .collect::<Result<Vec<_>, _>>()?;
    if !rows.iter().any(|r| r.task.task_id == id) {
        rows.push(me);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn task(
        id: &str,
        class: &str,
        status: impl Into<TaskStatus>,
        started: i64,
    ) -> FossaTask {
        let status = status.into();
        let complete = status == TaskStatus::Complete;
        FossaTask {
            task_id: id.into(),
            model_class: class.into(),
            method: Some("go".into()),
            method_kwargs: json!({}),
            status,
            started: Some(started),
            finished: complete.then_some(started + 5),
            results: complete.then(|| json!({"type": "TaskComplete", "payload": {"n": 1}})),
        }
    }

    fn obs(t: FossaTask, w: &str) -> Observed {
        Observed {
            task: t,
            worker_id: w.into(),
        }
    }

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    fn write(c: &mut Connection, batch: &[Observed], limits: &HistoryLimits) {
        let tx = c.transaction().unwrap();
        upsert(&tx, batch, limits).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn a_finished_task_is_not_set_back_by_a_stale_poll() {
        let mut c = db();
        let l = HistoryLimits::default();
        write(&mut c, &[obs(task("a", "E", "running", 10), "w1")], &l);
        write(&mut c, &[obs(task("a", "E", "complete", 10), "w1")], &l);
        write(&mut c, &[obs(task("a", "E", "running", 10), "w1")], &l);
        let p = page(&c, &HistoryQuery::default()).unwrap();
        assert_eq!(p.tasks.len(), 1);
        assert_eq!(p.tasks[0].task.status, TaskStatus::Complete);
        assert!(p.tasks[0].task.results.is_some());
    }

    #[test]
    fn a_late_dispatch_record_does_not_set_back_what_the_node_reported() {
        let mut c = db();
        let l = HistoryLimits::default();
        write(&mut c, &[obs(task("a", "E", "running", 10), "w1")], &l);
        write(
            &mut c,
            &[obs(task("a", "E", TaskStatus::Dispatched, 10), "w1")],
            &l,
        );
        let p = page(&c, &HistoryQuery::default()).unwrap();
        assert_eq!(p.tasks[0].task.status, TaskStatus::Running);
    }

    #[test]
    fn a_lost_run_stays_when_the_task_runs_again_on_that_worker() {
        let mut c = db();
        let l = HistoryLimits::default();
        write(&mut c, &[obs(task("p:0::q", "E", "running", 10), "w1")], &l);
        let mut lost = task("p:0::q", "", TaskStatus::Lost, 10);
        lost.results =
            Some(serde_json::json!({"type": "Lost", "payload": {"reason": "w1 restarted"}}));
        write(&mut c, &[obs(lost, "w1")], &l);
        let p = page(&c, &HistoryQuery::default()).unwrap();
        assert_eq!(p.tasks.len(), 1, "{:?}", p.tasks);
        assert_eq!(p.tasks[0].task.status, TaskStatus::Lost);
        write(&mut c, &[obs(task("p:0::q", "E", "running", 20), "w1")], &l);
        write(
            &mut c,
            &[obs(task("p:0::q", "E", "complete", 20), "w1")],
            &l,
        );
        let p = page(&c, &HistoryQuery::default()).unwrap();
        let st: Vec<_> = p.tasks.iter().map(|t| t.task.status.as_str()).collect();
        assert_eq!(st, ["complete", "lost"], "{st:?}");
        assert_eq!(
            p.tasks[1].task.model_class, "E",
            "the lost row keeps its class"
        );
    }

    #[test]
    fn pages_follow_the_cursor_and_the_filters() {
        let mut c = db();
        let l = HistoryLimits::default();
        let batch: Vec<_> = (0..25)
            .map(|n| {
                let class = if n % 2 == 0 { "Even" } else { "Odd" };
                let status = if n % 5 == 0 { "failed" } else { "complete" };
                obs(task(&format!("t{n}"), class, status, n), "w")
            })
            .collect();
        write(&mut c, &batch, &l);
        let q = |before, model: Option<&str>, status: Option<&str>| HistoryQuery {
            before,
            model: model.map(str::to_owned),
            status: status.map(str::to_owned),
            limit: 10,
            parents_only: false,
        };
        let p1 = page(&c, &q(None, None, None)).unwrap();
        assert_eq!(p1.tasks.len(), 10);
        assert_eq!(p1.tasks[0].task.task_id, "t24");
        assert_eq!(p1.total, 25);
        let p2 = page(&c, &q(p1.next_before, None, None)).unwrap();
        assert_eq!(p2.tasks[0].task.task_id, "t14");
        let p3 = page(&c, &q(p2.next_before, None, None)).unwrap();
        assert_eq!(p3.tasks.len(), 5);
        assert_eq!(p3.next_before, None);
        let even_failed = page(&c, &q(None, Some("Even"), Some("failed"))).unwrap();
        let ids: Vec<_> = even_failed
            .tasks
            .iter()
            .map(|t| t.task.task_id.as_str())
            .collect();
        assert_eq!(ids, ["t20", "t10", "t0"]);
    }

    #[test]
    fn retention_keeps_the_newest_by_count_and_drops_the_old_by_age() {
        let mut c = db();
        let l = HistoryLimits {
            max_tasks: 10,
            max_age_days: 1,
            ..Default::default()
        };
        let now = fossa_contract::unix_now();
        let mut batch: Vec<_> = (0..20)
            .map(|n| obs(task(&format!("t{n}"), "E", "complete", now - 100 + n), "w"))
            .collect();
        batch.push(obs(task("old", "E", "complete", now - 3 * 86_400), "w"));
        batch.push(obs(
            task("old-running", "E", "running", now - 3 * 86_400),
            "w",
        ));
        write(&mut c, &batch, &l);
        trim(&c, &l).unwrap();
        let p = page(
            &c,
            &HistoryQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
        let ids: Vec<_> = p.tasks.iter().map(|t| t.task.task_id.clone()).collect();
        assert_eq!(ids.len(), 10, "{ids:?}");
        assert!(!ids.contains(&"old".to_owned()));
        assert_eq!(ids[0], "old-running", "the newest rows are kept");
    }

    #[test]
    fn big_results_are_cut_to_the_bound_and_say_so() {
        let big = json!({"payload": "x".repeat(10_000)});
        let s = bounded_results(&big, 4096);
        assert!(s.len() <= 4096 + 100, "{}", s.len());
        assert!(s.contains("truncated: 10"), "{s}");
        let small = json!({"a": 1});
        assert_eq!(bounded_results(&small, 4096), small.to_string());
        // Multi-byte text is cut on a character boundary.
        let wide = json!("é".repeat(5000));
        assert!(serde_json::from_str::<Value>(&bounded_results(&wide, 4096)).is_ok());
    }

    #[test]
    fn a_subtask_page_finds_its_siblings_and_its_parent() {
        let mut c = db();
        let l = HistoryLimits::default();
        write(
            &mut c,
            &[
                obs(task("parent", "E", "complete", 100), "a"),
                obs(task("pl:0::amq.q", "E", "complete", 101), "a"),
                obs(task("pl:1::amq.q", "E", "complete", 102), "b"),
                obs(task("other", "F", "complete", 101), "b"),
            ],
            &l,
        );
        let rows = around(&c, "pl:1::amq.q").unwrap();
        let ids: Vec<_> = rows.iter().map(|r| r.task.task_id.as_str()).collect();
        assert!(
            ids.contains(&"parent") && ids.contains(&"pl:0::amq.q"),
            "{ids:?}"
        );
        assert!(!ids.contains(&"other"));
        assert!(around(&c, "nope").unwrap().is_empty());
    }
}
