//! Opening the history when its file may not be usable at once: what kind
//! of trouble an error is, and what the agent does about each.
//!
//! - **Busy**: another process holds the file's lock (a backup, a `sqlite3`
//!   shell, a second agent starting). Waited out, up to
//!   [`fossa_contract::limits::HISTORY_OPEN_WAIT_SECS`].
//! - **Corrupt**: SQLite says the file is not a database, or is damaged, or
//!   `PRAGMA quick_check` finds it damaged. Only then is it set aside
//!   (renamed, never deleted) and a new history started.
//! - **Other** (a full disk, a permission, a read-only filesystem, a lock
//!   never let go): the file is left as it is, and the agent keeps the
//!   history in memory until it restarts, with a red History line saying
//!   why and what to do.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::ErrorCode;

use super::HistoryError;

/// What an error opening the history means for the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Locked by another process: wait.
    Busy,
    /// Damaged: set it aside.
    Corrupt,
    /// Anything else: leave the file alone.
    Other,
}

/// The kind of trouble `e` is.
pub fn classify(e: &HistoryError) -> Unusable {
    let source = match e {
        HistoryError::Open { source, .. } | HistoryError::Query(source) => source,
        HistoryError::Damaged { .. } => return Unusable::Corrupt,
        _ => return Unusable::Other,
    };
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Unusable::Busy,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Unusable::Corrupt,
        _ => Unusable::Other,
    }
}

/// Calls `open` until it succeeds or fails with something other than a
/// lock, waiting out a lock for up to `wait` (0.25 s, doubling to 4 s,
/// between tries); says once that it waits.
pub fn waiting_out_locks<T>(
    path: &Path,
    wait: Duration,
    mut open: impl FnMut() -> Result<T, HistoryError>,
) -> Result<T, HistoryError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(250);
    let mut said = false;
    loop {
        match open() {
            Err(e) if classify(&e) == Unusable::Busy && started.elapsed() < wait => {
                if !said {
                    tracing::warn!(
                        file = %path.display(),
                        "the task history is locked by another process; waiting up to {} s",
                        wait.as_secs()
                    );
                    said = true;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            other => return other,
        }
    }
}

/// `PRAGMA quick_check` on `c`: `Ok` when SQLite finds the file sound.
pub fn quick_check(c: &rusqlite::Connection, path: &Path) -> Result<(), HistoryError> {
    let found: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if found == "ok" {
        Ok(())
    } else {
        Err(HistoryError::Damaged {
            path: path.to_owned(),
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: i32) -> HistoryError {
        HistoryError::Open {
            path: "h".into(),
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        }
    }

    #[test]
    fn errors_are_sorted_by_what_they_mean_for_the_file() {
        assert_eq!(
            classify(&sqlite(rusqlite::ffi::SQLITE_BUSY)),
            Unusable::Busy
        );
        assert_eq!(
            classify(&sqlite(rusqlite::ffi::SQLITE_LOCKED)),
            Unusable::Busy
        );
        assert_eq!(
            classify(&sqlite(rusqlite::ffi::SQLITE_CORRUPT)),
            Unusable::Corrupt
        );
        assert_eq!(
            classify(&sqlite(rusqlite::ffi::SQLITE_NOTADB)),
            Unusable::Corrupt
        );
        // A full disk, a permission, a read-only file: never set aside.
        for code in [
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_CANTOPEN,
            rusqlite::ffi::SQLITE_READONLY,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_PERM,
        ] {
            assert_eq!(classify(&sqlite(code)), Unusable::Other, "{code}");
        }
    }

    #[test]
    fn a_lock_is_waited_out_and_nothing_else_is() {
        let mut tries = 0;
        let r = waiting_out_locks(Path::new("h"), Duration::from_secs(5), || {
            tries += 1;
            if tries < 3 {
                Err(sqlite(rusqlite::ffi::SQLITE_BUSY))
            } else {
                Ok(tries)
            }
        });
        assert_eq!(r.unwrap(), 3);
        let mut tries = 0;
        let r: Result<(), _> = waiting_out_locks(Path::new("h"), Duration::from_secs(5), || {
            tries += 1;
            Err(sqlite(rusqlite::ffi::SQLITE_FULL))
        });
        assert!(r.is_err());
        assert_eq!(tries, 1, "a full disk is not waited on");
    }

    mod with_files {
        use std::time::{Duration, Instant};

        use fossa_contract::config::HistoryLimits;
        use fossa_web::model::{FossaTask, HistoryQuery, TaskStatus};

        use crate::history::{History, Observed};
        use crate::testkit::ScratchDir;

        fn observed(id: &str) -> Observed {
            Observed {
                task: FossaTask {
                    task_id: id.into(),
                    model_class: "M".into(),
                    method: Some("go".into()),
                    method_kwargs: serde_json::json!({}),
                    status: TaskStatus::Complete,
                    started: Some(fossa_contract::unix_now()),
                    finished: Some(fossa_contract::unix_now()),
                    results: None,
                    spec: Default::default(),
                },
                worker_id: "w".into(),
            }
        }

        async fn rows(h: &std::sync::Arc<History>) -> usize {
            h.page(HistoryQuery::default()).await.unwrap().tasks.len()
        }

        async fn written(h: &std::sync::Arc<History>, n: usize, within: Duration) {
            let t = Instant::now();
            while rows(h).await < n {
                assert!(t.elapsed() < within, "{} rows, not {n}", rows(h).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        fn set_aside(dir: &std::path::Path) -> Vec<String> {
            std::fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.contains("damaged") || n.contains("unreadable"))
                .collect()
        }

        /// Holds a lock on `path` from another connection for `d`: with
        /// `exclusive`, SQLite's exclusive locking mode (no one else may
        /// open it), else a write transaction (no one else may write).
        fn hold_lock(
            path: std::path::PathBuf,
            d: Duration,
            exclusive: bool,
        ) -> std::thread::JoinHandle<()> {
            let (held, wait) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                let c = rusqlite::Connection::open(path).unwrap();
                if exclusive {
                    c.execute_batch("PRAGMA locking_mode=EXCLUSIVE").unwrap();
                }
                c.execute_batch("BEGIN IMMEDIATE; DELETE FROM settings WHERE key = 'none';")
                    .unwrap();
                held.send(()).unwrap();
                std::thread::sleep(d);
                c.execute_batch("COMMIT").unwrap();
            });
            wait.recv().unwrap();
            t
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn a_lock_held_at_start_is_waited_out_and_nothing_is_set_aside() {
            let dir = ScratchDir::new("history-lock");
            let h = History::open(&dir.0, HistoryLimits::default()).unwrap();
            h.record(vec![observed("kept")]);
            written(&h, 1, Duration::from_secs(5)).await;
            drop(h);
            let path = dir.0.join(fossa_contract::names::HISTORY_FILE);
            let locker = hold_lock(path, Duration::from_secs(7), true);
            let t = Instant::now();
            let (h, trouble) = History::open_or_fallback(&dir.0, HistoryLimits::default());
            let waited = t.elapsed();
            locker.join().unwrap();
            assert_eq!(trouble, None);
            assert!(
                waited >= Duration::from_secs(6),
                "the lock did not hold it: {waited:?}"
            );
            assert!(set_aside(&dir.0).is_empty(), "{:?}", set_aside(&dir.0));
            assert_eq!(rows(&h).await, 1, "the history kept");
            assert_eq!(h.trouble(), None);
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn only_a_damaged_file_is_set_aside() {
            let dir = ScratchDir::new("history-damaged");
            let path = dir.0.join(fossa_contract::names::HISTORY_FILE);
            std::fs::write(&path, vec![7u8; 8192]).unwrap();
            let (h, trouble) = History::open_or_fallback(&dir.0, HistoryLimits::default());
            let trouble = trouble.expect("said");
            assert!(trouble.contains("moved to"), "{trouble}");
            let aside = set_aside(&dir.0);
            assert_eq!(aside.len(), 1, "{aside:?}");
            assert_eq!(
                std::fs::read(dir.0.join(&aside[0])).unwrap(),
                vec![7u8; 8192],
                "kept as it was"
            );
            assert_eq!(h.trouble(), None, "a new file, written");
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn a_file_it_cannot_open_is_left_alone_and_said() {
            let dir = ScratchDir::new("history-cannot");
            // The history's name taken by a folder: SQLite cannot open it,
            // as with a permission or a read-only disk.
            let path = dir.0.join(fossa_contract::names::HISTORY_FILE);
            std::fs::create_dir(&path).unwrap();
            std::fs::write(path.join("mine"), "x").unwrap();
            let (h, trouble) = History::open_or_fallback(&dir.0, HistoryLimits::default());
            let trouble = trouble.expect("said");
            assert!(
                trouble.contains("kept in memory") && trouble.contains("left as it is"),
                "{trouble}"
            );
            assert!(set_aside(&dir.0).is_empty());
            assert!(path.join("mine").exists(), "untouched");
            assert_eq!(h.trouble(), Some(trouble), "the History line says it");
            h.record(vec![observed("in-memory")]);
            written(&h, 1, Duration::from_secs(5)).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn failed_writes_are_kept_said_and_written_later() {
            let dir = ScratchDir::new("history-writes");
            let h = History::open(&dir.0, HistoryLimits::default()).unwrap();
            let path = dir.0.join(fossa_contract::names::HISTORY_FILE);
            // A writer holding the lock longer than the busy timeout (5 s).
            let locker = hold_lock(path, Duration::from_secs(9), false);
            h.record(vec![observed("a"), observed("b")]);
            let t = Instant::now();
            let line = loop {
                if let Some(line) = h.trouble() {
                    break line;
                }
                assert!(t.elapsed() < Duration::from_secs(8), "no trouble said");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert!(
                line.contains("2 task observation(s) not yet written"),
                "{line}"
            );
            assert!(line.contains("kept and tried again"), "{line}");
            h.record(vec![observed("c")]);
            locker.join().unwrap();
            written(&h, 3, Duration::from_secs(20)).await;
            assert_eq!(h.trouble(), None, "the line clears once written");
        }
    }
}
