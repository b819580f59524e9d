//! The history's SQL: the schema, one connection's settings, and the
//! statements the recorder, the pages and the queue share. Plain functions
//! over a [`Connection`], tested on an in-memory database.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// SQLite's quick check found the file damaged.
    #[error("the task history {path} is damaged: {found}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What `PRAGMA quick_check` said.
        found: String,
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

pub(crate) const SCHEMA: &str = "
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

/// A write transaction that takes the write lock at its start. A deferred
/// one that reads, then writes, fails at once with "database is locked" when
/// another connection (the recorder) committed meanwhile: SQLite cannot
/// upgrade its stale read snapshot, and the busy timeout does not apply
/// (<https://www.sqlite.org/lang_transaction.html>, BEGIN IMMEDIATE).
pub(crate) fn immediate(c: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

pub(crate) fn connect(path: &Path) -> Result<Connection, rusqlite::Error> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(5))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed queue change survives a power cut, not only a kill.
    c.pragma_update(None, "synchronous", "FULL")?;
    // A small page cache: the agent's idle memory stays small.
    c.pragma_update(None, "cache_size", -512)?;
    Ok(c)
}

pub(crate) const COLUMNS: &str =
    "task_id, worker_id, model_class, method, method_kwargs, status, started, finished, results, id";

fn json_of(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

pub(crate) fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
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
            spec: Default::default(),
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
    // The requests kept for another attempt go with the same age and count.
    c.execute("DELETE FROM submissions WHERE sent_at < ?1", [oldest])?;
    c.execute(
        "DELETE FROM submissions WHERE rowid <= (SELECT rowid FROM submissions ORDER BY rowid DESC LIMIT 1 OFFSET ?1)",
        [limits.max_tasks],
    )?;
    Ok(n)
}

/// The page query (kept apart for the bench and the tests).
pub fn page(c: &Connection, q: &HistoryQuery) -> Result<HistoryPage, HistoryError> {
    let limit = match q.limit {
        0 => fossa_contract::limits::HISTORY_PAGE_ROWS,
        n => n.min(fossa_contract::limits::HISTORY_PAGE_MAX),
    };
    // Each row's stored size comes with it, so a page stops at
    // HISTORY_PAGE_BYTES before it reads the rows it would not send.
    let mut sql = format!(
        "SELECT {COLUMNS}, coalesce(length(method_kwargs), 0) + coalesce(length(results), 0) \
         FROM tasks WHERE id < ?1"
    );
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
    let rows = st.query_map(rusqlite::params_from_iter(args.iter()), |r| {
        let id: i64 = r.get(9)?;
        let size: i64 = r.get(10)?;
        Ok((id, usize::try_from(size).unwrap_or(0), row_of(r)?))
    })?;
    // Rows up to `limit`, and up to the byte budget (at least one row): a
    // page of 10,000 rows whose arguments are 64 KiB each would be 640 MB.
    // A page cut short carries the cursor to the next, as a full one does.
    let budget = fossa_contract::limits::HISTORY_PAGE_BYTES;
    let (mut tasks, mut bytes, mut last, mut next) = (Vec::new(), 0usize, None, None);
    for row in rows {
        let (id, size, row) = row?;
        if tasks.len() == limit as usize || (!tasks.is_empty() && bytes + size > budget) {
            next = last;
            break;
        }
        bytes += size;
        last = Some(id);
        tasks.push(row);
    }
    let total: i64 = c.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?;
    Ok(HistoryPage {
        tasks,
        next_before: next,
        total: total as u64,
    })
}

/// The rows of task `id` and of the tasks that may be linked to it.
pub(crate) fn around(c: &Connection, id: &str) -> Result<Vec<TaskRow>, HistoryError> {
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

    /// Two connections to one new database file, as the agent has (the
    /// control connection and the recorder's).
    fn two_connections(name: &str) -> (Connection, Connection, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("fossa-{name}-{}.sqlite3", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let a = connect(&path).unwrap();
        a.execute_batch(SCHEMA).unwrap();
        a.execute_batch(crate::history::attempts::SCHEMA).unwrap();
        let b = connect(&path).unwrap();
        (a, b, path)
    }

    #[test]
    fn a_read_then_write_transaction_survives_a_commit_in_between() {
        let insert = "INSERT INTO queue (request, model_class, enqueued_at) VALUES ('{}', 'E', 1)";
        // Deferred, as the queue was written before: the other connection's
        // commit between the read and the write fails it at once.
        let (mut a, b, path) = two_connections("deferred");
        let tx = a.transaction().unwrap();
        let _: u32 = tx
            .query_row("SELECT count(*) FROM queue", [], |r| r.get(0))
            .unwrap();
        b.execute(insert, []).unwrap();
        let e = tx.execute(insert, []).unwrap_err();
        assert!(e.to_string().contains("locked"), "{e}");
        drop(tx);
        drop((a, b));
        let _ = std::fs::remove_file(&path);
        // Immediate: the other writer waits for the commit, and both land.
        let (mut a, b, path) = two_connections("immediate");
        let tx = immediate(&mut a).unwrap();
        let _: u32 = tx
            .query_row("SELECT count(*) FROM queue", [], |r| r.get(0))
            .unwrap();
        let other = std::thread::spawn(move || b.execute(insert, []).map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(200));
        tx.execute(insert, []).unwrap();
        tx.commit().unwrap();
        other.join().unwrap().unwrap();
        let n: u32 = a
            .query_row("SELECT count(*) FROM queue", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        drop(a);
        let _ = std::fs::remove_file(&path);
    }
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
            spec: Default::default(),
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
        c.execute_batch(crate::history::attempts::SCHEMA).unwrap();
        c
    }

    fn write(c: &mut Connection, batch: &[Observed], limits: &HistoryLimits) {
        let tx = c.transaction().unwrap();
        upsert(&tx, batch, limits).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn a_page_stops_at_its_byte_budget_and_says_where_to_go_on() {
        let mut c = db();
        let l = HistoryLimits::default();
        // 20 tasks whose arguments are 1 MB each: 20 MB in all.
        let big = "x".repeat(1_000_000);
        let batch: Vec<Observed> = (0..20)
            .map(|i| {
                let mut t = task(&format!("t{i}"), "E", "running", i);
                t.method_kwargs = json!({ "blob": big });
                obs(t, "w1")
            })
            .collect();
        write(&mut c, &batch, &l);
        let per_page = fossa_contract::limits::HISTORY_PAGE_BYTES / 1_000_000;
        let (mut seen, mut pages) = (0, 0);
        let mut q = HistoryQuery {
            limit: 10_000,
            ..Default::default()
        };
        loop {
            let p = page(&c, &q).unwrap();
            assert!(
                !p.tasks.is_empty() && p.tasks.len() <= per_page.max(1),
                "{}",
                p.tasks.len()
            );
            seen += p.tasks.len();
            pages += 1;
            match p.next_before {
                Some(b) => q.before = Some(b),
                None => break,
            }
        }
        assert_eq!(seen, 20, "every row once");
        assert!(pages >= 3, "over several pages: {pages}");
        // The row limit still holds, with its cursor.
        let p = page(
            &c,
            &HistoryQuery {
                limit: 3,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.tasks.len(), 3);
        assert!(p.next_before.is_some());
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
