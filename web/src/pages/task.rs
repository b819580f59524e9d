//! One task's page (`/tasks/<id>`, `/api/v1/tasks/<id>`): its subtasks grouped
//! under it, progress, the task stream and its workers' log lines.

use askama::Template;
use fossa_contract::limits::TASK_LOG_WORKERS;
use rocket::http::Status;
use rocket::response::status::Custom;
use rocket::serde::json::Json;
use rocket::{get, State};

use super::lines::{log_view, task_line, LogView, TaskLine};
use super::{api_error, base, not_found_page, render, ApiResult, Base, FleetState, Html};
use crate::auth::User;
use crate::fmt;
use crate::model::LogQuery;
use crate::model::TaskStatus;
use crate::views;

#[derive(Debug, Clone, serde::Serialize)]
struct SubRow {
    index: u32,
    id: String,
    short_id: String,
    method: String,
    status: String,
    worker: String,
    started: String,
    duration: String,
    result: String,
}

#[derive(Debug, Clone, serde::Serialize)]
struct GroupView {
    pool_id: String,
    count: usize,
    workers: usize,
    certain: bool,
    rows: Vec<SubRow>,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    base: Base,
    task: TaskLine,
    parent: Option<String>,
    parent_certain: bool,
    parent_candidates: Vec<String>,
    groups: Vec<GroupView>,
    /// Subtasks done and seen, for a parent with subtasks.
    done: usize,
    seen: usize,
    /// The parent still runs, so more subtasks may wait in the broker.
    running: bool,
    /// The task stream picture (inline SVG, escaped inside).
    stream: String,
    /// What each worker involved wrote during the task.
    logs: Vec<WorkerLog>,
    /// Workers involved whose output is not shown.
    logs_more: usize,
    /// Why a running parent can never finish, or empty.
    stuck: String,
    /// Its attempts, when the gateway submitted it again (empty otherwise).
    attempts: Vec<crate::model::Attempt>,
}

/// A worker's lines within a task's time.
struct WorkerLog {
    worker: String,
    lines: Vec<LogView>,
    error: String,
}

/// Lines shown per worker on a task's page.
const TASK_LOG_LINES: u32 = 300;

/// The lines each worker of the task (its own first, then its subtasks')
/// wrote between its start and its end (a second of slack each side:
/// Fossa's times have a resolution of one second), read together, for at
/// most [`TASK_LOG_WORKERS`] workers; the second value counts the others.
async fn task_logs(fleet: &FleetState, d: &views::TaskDetail) -> (Vec<WorkerLog>, usize) {
    let t = &d.task.task;
    let Some(start) = t.started else {
        return (Vec::new(), 0);
    };
    // In order of first appearance, each once (a set, not a scan per
    // subtask: a wide task has thousands of subtasks on hundreds of workers).
    let mut seen = std::collections::HashSet::new();
    let mut workers = Vec::new();
    let subtask_workers = d
        .groups
        .iter()
        .chain(d.group.iter())
        .flat_map(|g| g.subtasks.iter().map(|s| &s.worker_id));
    for w in std::iter::once(&d.task.worker_id).chain(subtask_workers) {
        if seen.insert(w) {
            workers.push(w.clone());
        }
    }
    workers.retain(|w| !w.is_empty());
    let more = workers.len().saturating_sub(TASK_LOG_WORKERS);
    workers.truncate(TASK_LOG_WORKERS);
    // A running task's window is open: the same query on every refresh,
    // so the backend can reuse its read.
    let q = LogQuery {
        since_ms: Some(start.saturating_sub(1).saturating_mul(1000)),
        until_ms: t
            .finished
            .map(|end| end.saturating_add(1).saturating_mul(1000)),
        limit: TASK_LOG_LINES,
    };
    let reads = workers.into_iter().map(|w| async move {
        let (lines, error) = match fleet.0.logs(&w, q).await {
            Ok(l) => (l.iter().map(log_view).collect(), String::new()),
            Err(e) => (Vec::new(), e.message()),
        };
        WorkerLog {
            worker: w,
            lines,
            error,
        }
    });
    (futures::future::join_all(reads).await, more)
}

fn group_view(g: &views::Group) -> GroupView {
    GroupView {
        pool_id: g.pool_id.clone(),
        count: g.subtasks.len(),
        workers: g.workers.len(),
        certain: g.certain,
        rows: g
            .subtasks
            .iter()
            .map(|s| {
                let (pool, n, _) = s.task.subtask_parts().unwrap_or(("", 0, ""));
                SubRow {
                    index: n,
                    id: s.task.task_id.clone(),
                    short_id: format!("{pool}:{n}"),
                    method: s.task.method.clone().unwrap_or_default(),
                    status: s.task.status.to_string(),
                    worker: s.worker_id.clone(),
                    started: fmt::opt_time(s.task.started),
                    duration: fmt::duration(s.task.duration()),
                    result: fmt::result_short(s.task.results.as_ref()),
                }
            })
            .collect(),
    }
}

/// One task, with its subtasks or its parent.
#[get("/tasks/<id>")]
pub async fn task(user: User, fleet: &State<FleetState>, id: &str) -> Result<Html, Custom<Html>> {
    let snap = fleet.0.snapshot();
    if !views::valid_task_id(id) {
        return Err(Custom(
            Status::BadRequest,
            not_found_page(&snap, &user, "That is not a task id.").1,
        ));
    }
    let recorded = fleet.0.recorded(id).await;
    let Some(mut d) = views::task_detail_with(&snap, recorded, id) else {
        return Err(not_found_page(&snap, &user, &format!("No worker reports task {id} and the history has no record of it (yet). Tasks appear within a few seconds of starting.")));
    };
    let (parent, parent_certain, parent_candidates) = match &d.group {
        Some(g) => (
            g.candidates.first().cloned().or(Some(String::new())),
            g.certain,
            g.candidates.clone(),
        ),
        None => (None, false, Vec::new()),
    };
    d.attempts = fleet.0.attempts(id).await;
    let (logs, logs_more) = task_logs(fleet, &d).await;
    let (done, seen) = crate::charts::progress(&d.groups);
    let stream = crate::charts::task_stream(&d.task, &d.groups, fossa_contract::unix_now())
        .filter(|_| seen > 0)
        .unwrap_or_default();
    Ok(render(&TaskPage {
        base: base(&snap, Some(&user)),
        task: task_line(&d.task),
        parent,
        parent_certain,
        parent_candidates,
        groups: d.groups.iter().map(group_view).collect(),
        done,
        seen,
        running: matches!(
            d.task.task.status,
            TaskStatus::Running | TaskStatus::Dispatched
        ),
        stream,
        logs,
        logs_more,
        stuck: d.stuck.clone().unwrap_or_default(),
        attempts: d.attempts.clone(),
    }))
}

/// One task as JSON, with its subtask groups.
#[get("/api/v1/tasks/<id>")]
pub async fn api_task(
    _user: User,
    fleet: &State<FleetState>,
    id: &str,
) -> Result<Json<views::TaskDetail>, ApiResult> {
    if !views::valid_task_id(id) {
        return Err(api_error(
            Status::BadRequest,
            "not a task id: use letters, digits and : . _ - only",
        ));
    }
    let snap = fleet.0.snapshot();
    let recorded = fleet.0.recorded(id).await;
    let mut d = views::task_detail_with(&snap, recorded, id)
        .ok_or_else(|| api_error(Status::NotFound, format!("no worker reports task {id}")))?;
    d.attempts = fleet.0.attempts(id).await;
    Ok(Json(d))
}
