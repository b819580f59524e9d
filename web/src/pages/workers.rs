//! A worker's page and the workers API (`/workers/<id>`, `/api/v1/workers`).

use askama::Template;
use rocket::http::{ContentType, Status};
use rocket::response::content::RawJson;
use rocket::response::status::Custom;
use rocket::serde::json::Json;
use rocket::{get, State};

use super::{api_error, base, not_found_page, render, ApiResult, Base, FleetState, Html};
use crate::auth::User;
use crate::model::{LogQuery, Worker};

use super::lines::{log_view, task_line, LogView, TaskLine};
use super::overview::SummaryCache;

/// The workers with their addresses and last node_info, [`WORKERS_PER_PAGE`]
/// a page (`?page=N`; `paging.pages` says how many there are).
#[get("/api/v1/workers?<page>")]
pub fn api_workers(
    _user: User,
    fleet: &State<FleetState>,
    cache: &State<SummaryCache>,
    page: Option<usize>,
) -> RawJson<String> {
    let s = cache.get(fleet.0.snapshot());
    RawJson(s.page(page).0.workers_json.clone())
}

#[derive(Template)]
#[template(path = "worker.html")]
struct WorkerPage {
    base: Base,
    worker: Worker,
    tasks: Vec<TaskLine>,
    log: Vec<LogView>,
    log_error: String,
}

/// Lines the worker page shows (its tail).
pub const PAGE_LOG_LINES: u32 = 200;
/// Lines a download or an API call returns at most.
pub const MAX_LOG_LINES: u32 = 10_000;

/// Whether `id` can name a worker (ECS task ids, `local-N`).
fn valid_worker_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 100 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// One worker's page, with the tail of its log.
#[get("/workers/<id>")]
pub async fn worker(user: User, fleet: &State<FleetState>, id: &str) -> Result<Html, Custom<Html>> {
    let snap = fleet.0.snapshot();
    let Some(w) = snap.workers.iter().find(|w| w.id == id).cloned() else {
        return Err(not_found_page(
            &snap,
            &user,
            &format!("No worker {id}; it may have stopped."),
        ));
    };
    let tasks = snap
        .tasks()
        .iter()
        .filter(|t| t.worker_id == w.id)
        .map(task_line)
        .collect();
    let q = LogQuery {
        limit: PAGE_LOG_LINES,
        ..Default::default()
    };
    let (log, log_error) = match fleet.0.logs(&w.id, q).await {
        Ok(lines) => (lines.iter().map(log_view).collect(), String::new()),
        Err(e) => (Vec::new(), e.message()),
    };
    Ok(render(&WorkerPage {
        base: base(&snap, Some(&user)),
        worker: w,
        tasks,
        log,
        log_error,
    }))
}

/// A worker's log lines as JSON: `?since=<ms>` for the lines after it
/// (oldest first; follow with `next_since`), else the last `limit`.
#[get("/api/v1/workers/<id>/logs?<since>&<until>&<limit>")]
pub async fn api_logs(
    _user: User,
    fleet: &State<FleetState>,
    id: &str,
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<u32>,
) -> ApiResult {
    if !valid_worker_id(id) {
        return api_error(
            Status::BadRequest,
            "not a worker id: use letters, digits and - only",
        );
    }
    let limit = match limit {
        None => PAGE_LOG_LINES,
        Some(n) if (1..=MAX_LOG_LINES).contains(&n) => n,
        Some(n) => {
            return api_error(
                Status::BadRequest,
                format!("limit {n} is out of range: use 1 to {MAX_LOG_LINES}"),
            )
        }
    };
    let q = LogQuery {
        since_ms: since,
        until_ms: until,
        limit,
    };
    match fleet.0.logs(id, q).await {
        Ok(lines) => {
            let next = lines.last().map(|l| l.at).or(since);
            Custom(
                Status::Ok,
                Json(serde_json::json!({ "worker": id, "lines": lines, "next_since": next })),
            )
        }
        Err(e) => api_error(
            Status::BadGateway,
            format!("cannot read the log of {id}: {}", e.message()),
        ),
    }
}

/// A worker's log (its last lines) as a text download.
#[get("/workers/<id>/logs.txt")]
pub async fn logs_text(
    _user: User,
    fleet: &State<FleetState>,
    id: &str,
) -> Result<(ContentType, rocket::response::content::RawText<String>), ApiResult> {
    if !valid_worker_id(id) {
        return Err(api_error(
            Status::BadRequest,
            "not a worker id: use letters, digits and - only",
        ));
    }
    let q = LogQuery {
        limit: MAX_LOG_LINES,
        ..Default::default()
    };
    let lines = fleet.0.logs(id, q).await.map_err(|e| {
        api_error(
            Status::BadGateway,
            format!("cannot read the log of {id}: {}", e.message()),
        )
    })?;
    let mut text = String::with_capacity(lines.len() * 80);
    for l in &lines {
        text.push_str(&crate::fmt::iso_time(l.at.div_euclid(1000)));
        text.push(' ');
        text.push_str(&l.text);
        text.push('\n');
    }
    Ok((ContentType::Plain, rocket::response::content::RawText(text)))
}

/// One worker as JSON.
#[get("/api/v1/workers/<id>")]
pub fn api_worker(
    _user: User,
    fleet: &State<FleetState>,
    id: &str,
) -> Result<Json<Worker>, ApiResult> {
    let snap = fleet.0.snapshot();
    snap.workers
        .iter()
        .find(|w| w.id == id)
        .cloned()
        .map(Json)
        .ok_or_else(|| api_error(Status::NotFound, format!("no worker {id}")))
}
