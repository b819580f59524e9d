//! The rows several pages show: a task line and a log line.

use crate::fmt;
use crate::model::{LogLine, Queued, TaskRow};

#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct TaskLine {
    pub(super) id: String,
    pub(super) model_class: String,
    pub(super) method: String,
    pub(super) status: String,
    pub(super) worker: String,
    pub(super) started: String,
    pub(super) duration: String,
    pub(super) result: String,
    pub(super) result_full: String,
}

pub(super) fn task_line(r: &TaskRow) -> TaskLine {
    TaskLine {
        id: r.task.task_id.clone(),
        model_class: r.task.model_class.clone(),
        method: r.task.method.clone().unwrap_or_default(),
        status: r.task.status.to_string(),
        worker: r.worker_id.clone(),
        started: fmt::opt_time(r.task.started),
        duration: fmt::duration(r.task.duration()),
        result: fmt::result_short(r.task.results.as_ref()),
        result_full: fmt::result_full(r.task.results.as_ref()),
    }
}

/// A log line as pages show it.
#[derive(Debug, Clone)]
pub(super) struct LogView {
    pub(super) time: String,
    pub(super) text: String,
}

pub(super) fn log_view(l: &LogLine) -> LogView {
    LogView {
        time: fmt::time(l.at.div_euclid(1000)),
        text: l.text.clone(),
    }
}

/// A queued submission as the tasks page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct QueueLine {
    pub(super) id: i64,
    pub(super) position: u32,
    pub(super) model_class: String,
    pub(super) method: String,
    pub(super) waiting: String,
    pub(super) sending_to: String,
}

pub(super) fn queue_line(q: &Queued, now: i64) -> QueueLine {
    QueueLine {
        id: q.id,
        position: q.position,
        model_class: q.model_class.clone(),
        method: q.method.clone().unwrap_or_else(|| "go".into()),
        waiting: fmt::duration(Some(now - q.enqueued_at)),
        sending_to: q.sending_to.clone().unwrap_or_default(),
    }
}
