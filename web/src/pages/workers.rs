//! A worker's page and the workers API (`/workers/<id>`, `/api/v1/workers`).

use askama::Template;
use rocket::http::Status;
use rocket::response::content::RawJson;
use rocket::response::status::Custom;
use rocket::serde::json::Json;
use rocket::{get, State};

use super::{api_error, base, not_found_page, render, ApiResult, Base, FleetState, Html};
use crate::auth::User;
use crate::model::Worker;
use crate::views::{self};

use super::overview::SummaryCache;
use super::tasks::{task_line, TaskLine};

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
}

/// One worker's page.
#[get("/workers/<id>")]
pub fn worker(user: User, fleet: &State<FleetState>, id: &str) -> Result<Html, Custom<Html>> {
    let snap = fleet.0.snapshot();
    let Some(w) = snap.workers.iter().find(|w| w.id == id).cloned() else {
        return Err(not_found_page(
            &snap,
            &user,
            &format!("No worker {id}; it may have stopped."),
        ));
    };
    let tasks = views::all_tasks(&snap)
        .iter()
        .filter(|t| t.worker_id == w.id)
        .map(task_line)
        .collect();
    Ok(render(&WorkerPage {
        base: base(&snap, Some(&user)),
        worker: w,
        tasks,
    }))
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
