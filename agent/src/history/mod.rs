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

pub mod attempts;
mod open;
pub mod queue;
mod recorder;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fossa_contract::config::HistoryLimits;
use fossa_web::model::{HistoryPage, HistoryQuery, TaskRow, TaskStatus};
use fossa_web::tally::{Kind, Outcome, Tally};
use rusqlite::{params, Connection};

use open::Unusable;
use recorder::{recorder, WriteTrouble};
use store::{around, connect, row_of, COLUMNS, SCHEMA};
pub use store::{bounded_results, page, HistoryError, Observed};

/// The history and queue database.
pub struct History {
    path: PathBuf,
    limits: HistoryLimits,
    control: Mutex<Connection>,
    reader: Mutex<Connection>,
    recorder: SyncSender<Vec<Observed>>,
    dropped: std::sync::atomic::AtomicU64,
    /// Why the history is in memory, when its file could not be used.
    in_memory: Mutex<Option<String>>,
    /// The recorder's failing writes, while they fail.
    writes: Arc<Mutex<Option<WriteTrouble>>>,
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
    /// Opens (creating) `dir/history.sqlite3` and starts its recorder
    /// thread, waiting out another process's lock on the file for up to
    /// [`fossa_contract::limits::HISTORY_OPEN_WAIT_SECS`].
    pub fn open(dir: &Path, limits: HistoryLimits) -> Result<Arc<History>, HistoryError> {
        let path = dir.join(fossa_contract::names::HISTORY_FILE);
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Err(HistoryError::Open {
                path,
                source: rusqlite::Error::InvalidPath(format!("{}: {e}", dir.display()).into()),
            });
        }
        let wait = Duration::from_secs(fossa_contract::limits::HISTORY_OPEN_WAIT_SECS);
        open::waiting_out_locks(&path, wait, || Self::open_path(path.clone(), limits))
    }

    /// [`History::open`]; when the file cannot be used, still a history, so
    /// the agent serves. Only a damaged file (SQLite says so, or its quick
    /// check does) is set aside (renamed, never deleted) for a new one; a
    /// lock that outlasts the wait, a full disk or a permission leaves the
    /// file as it is, and the history is kept in memory until the agent
    /// restarts, said on the History line ([`History::trouble`]). The second
    /// value says what happened, for an event.
    pub fn open_or_fallback(dir: &Path, limits: HistoryLimits) -> (Arc<History>, Option<String>) {
        let first = match Self::open(dir, limits) {
            Ok(h) => return (h, None),
            Err(e) => e,
        };
        let path = dir.join(fossa_contract::names::HISTORY_FILE);
        if open::classify(&first) == Unusable::Corrupt {
            let aside = dir.join(format!(
                "{}.damaged-{}",
                fossa_contract::names::HISTORY_FILE,
                fossa_contract::unix_now()
            ));
            if std::fs::rename(&path, &aside).is_ok() {
                for wal in ["-wal", "-shm"] {
                    let from = PathBuf::from(format!("{}{wal}", path.display()));
                    let _ = std::fs::rename(&from, format!("{}{wal}", aside.display()));
                }
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
        }
        let memory = PathBuf::from(format!(
            "file:fossa-history-{}?mode=memory&cache=shared",
            std::process::id()
        ));
        let why = format!(
            "{}; the file is left as it is, and the history and queue are kept in memory until \
             the agent restarts: free the disk, fix the file's permissions or stop what holds its \
             lock, then restart the agent",
            fossa_contract::aws::chain(&first)
        );
        match Self::open_path(memory, limits) {
            Ok(h) => {
                *h.in_memory.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                (h, Some(why))
            }
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
        control.execute_batch(attempts::SCHEMA).map_err(open_err)?;
        open::quick_check(&control, &path)?;
        let reader = connect(&path).map_err(open_err)?;
        let writer = connect(&path).map_err(open_err)?;
        let (tx, rx) = sync_channel(RECORDER_BACKLOG);
        let writes = Arc::new(Mutex::new(None));
        let trouble = writes.clone();
        std::thread::Builder::new()
            .name("history-recorder".into())
            .spawn(move || recorder(writer, rx, limits, trouble))
            .map_err(|e| open_err(rusqlite::Error::InvalidPath(e.to_string().into())))?;
        Ok(Arc::new(History {
            path,
            limits,
            control: Mutex::new(control),
            reader: Mutex::new(reader),
            recorder: tx,
            dropped: Default::default(),
            in_memory: Mutex::new(None),
            writes,
        }))
    }

    /// What is wrong with the history, for a red History line: kept in
    /// memory (why), or writes failing (since when, why, how many
    /// observations wait to be written); `None` when all is recorded.
    pub fn trouble(&self) -> Option<String> {
        if let Some(why) = self
            .in_memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(why);
        }
        let writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        writes.as_ref().map(WriteTrouble::line)
    }

    /// The file it keeps (or the in-memory name).
    pub fn path(&self) -> &Path {
        &self.path
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

    /// What the history holds, counted as [`Tally`] counts it (one pass at
    /// start; the observer adds each batch after). Durations are not read
    /// back: those series start empty with the agent.
    pub fn tally(&self) -> Result<Tally, HistoryError> {
        let c = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = c.prepare(
            "SELECT instr(task_id, '::') > 0, count(started),
                    sum(status = 'complete'), sum(status = 'failed'), sum(status = 'lost'),
                    sum(status = 'lost' AND instr(results, ?1) > 0)
             FROM tasks GROUP BY 1",
        )?;
        let mut tally = Tally::default();
        let rows = st.query_map([fossa_web::model::PUT_BACK], |r| {
            Ok((
                r.get::<_, bool>(0)?,
                [
                    r.get::<_, Option<i64>>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ],
            ))
        })?;
        for row in rows {
            let (subtask, counts) = row?;
            let kind = if subtask { Kind::Subtask } else { Kind::Task };
            for (outcome, n) in Outcome::ALL.into_iter().zip(counts) {
                tally.add(kind, outcome, n.unwrap_or(0).max(0) as u64);
            }
        }
        Ok(tally)
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
