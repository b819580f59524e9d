//! The overview (`/` and `/api/v1/overview`): counts, components and the
//! worker rows, computed once per snapshot ([`SummaryCache`]).

use std::sync::Arc;

use askama::Template;
use rocket::response::content::RawJson;
use rocket::{get, State};
use serde_json::json;

use super::{base, render, Base, FleetState, Html};
use crate::auth::User;
use crate::fmt;
use crate::model::{FleetSnapshot, Worker};

#[derive(Debug, Clone, serde::Serialize)]
struct WorkerRow {
    id: String,
    address: String,
    status: String,
    health: &'static str,
    reason: String,
    capacity: String,
    running: Vec<String>,
    recent: usize,
    started: String,
    provider: String,
    protected: bool,
}

fn worker_row(w: &Worker) -> WorkerRow {
    let (capacity, running, recent) = match &w.node {
        Some(n) => (
            format!(
                "{}/{}",
                n.max_concurrent_tasks
                    .saturating_sub(n.available_processing_capacity),
                n.max_concurrent_tasks
            ),
            n.running_tasks.iter().map(|t| t.task_id.clone()).collect(),
            n.recent_completed_tasks.len(),
        ),
        None => ("-".into(), Vec::new(), 0),
    };
    WorkerRow {
        id: w.id.clone(),
        address: w.address.clone(),
        status: w.status.clone(),
        health: w.health.word(),
        reason: w
            .stopped_reason
            .clone()
            .unwrap_or_else(|| w.health.reason().to_owned()),
        capacity,
        running,
        recent,
        started: fmt::opt_time(w.started_at),
        provider: w.capacity_provider.clone(),
        protected: w.protected,
    }
}

#[derive(Template)]
#[template(path = "worker_rows.html")]
struct WorkerRows<'a> {
    workers: &'a [WorkerRow],
}

/// Workers on one page of the overview and of `/api/v1/{overview,workers}`
/// (`?page=N`), so a page costs the same for 10 or 2000 workers, also to a
/// browser re-fetching it every 2 s.
pub const WORKERS_PER_PAGE: usize = 100;

/// What the overview and the workers API show, computed once per snapshot
/// (every page at once) so that serving them costs the same whatever the
/// number of workers.
#[derive(Debug)]
pub struct Summary {
    snap: Arc<FleetSnapshot>,
    running: usize,
    healthy: usize,
    used: u64,
    slots: u64,
    running_tasks: usize,
    /// Per page: the worker rows as HTML, the overview JSON, the workers JSON.
    pages: Vec<SummaryPage>,
}

#[derive(Debug)]
pub(super) struct SummaryPage {
    pub(super) first: usize,
    pub(super) last: usize,
    pub(super) rows_html: String,
    pub(super) overview_json: String,
    pub(super) workers_json: String,
}

impl Summary {
    /// Page `page` (1-based; out of range is clamped) and its 1-based number.
    pub(super) fn page(&self, page: Option<usize>) -> (&SummaryPage, usize) {
        let n = page.unwrap_or(1).clamp(1, self.pages.len());
        (&self.pages[n - 1], n)
    }
}

/// The [`Summary`] of the latest snapshot.
#[derive(Debug, Default)]
pub struct SummaryCache(std::sync::Mutex<Option<Arc<Summary>>>);

impl SummaryCache {
    /// The summary of `snap`, made now if the cached one is of another snapshot.
    pub fn get(&self, snap: Arc<FleetSnapshot>) -> Arc<Summary> {
        // The lock only guards the swap, so a panic elsewhere cannot poison
        // it in a way that matters: the slot is always a whole summary or none.
        let cached = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(s) = cached.filter(|s| Arc::ptr_eq(&s.snap, &snap)) {
            return s;
        }
        let fresh = Arc::new(summarize(snap));
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fresh.clone());
        fresh
    }
}

fn summarize(snap: Arc<FleetSnapshot>) -> Summary {
    let rows: Vec<WorkerRow> = snap.workers.iter().map(worker_row).collect();
    let crate::counts::Counts {
        running,
        healthy,
        slots,
        used,
        running_tasks,
        ..
    } = crate::counts::Counts::of(&snap);
    let total = rows.len();
    let count = total.div_ceil(WORKERS_PER_PAGE).max(1);
    let pages = (0..count)
        .map(|i| {
            let range = i * WORKERS_PER_PAGE..((i + 1) * WORKERS_PER_PAGE).min(total);
            let paging = json!({ "page": i + 1, "pages": count, "per_page": WORKERS_PER_PAGE, "total_workers": total });
            let mut overview_json = json!({
                "mode": snap.mode, "stack": snap.stack, "taken_at": snap.taken_at, "refresh_ms": snap.refresh_ms,
                "desired_workers": snap.desired_workers, "running_workers": running, "healthy_workers": healthy,
                "slots": slots, "slots_used": used, "running_tasks": running_tasks,
                "cost": snap.cost, "models": snap.models, "workers": &rows[range.clone()], "paging": paging,
                "duties": snap.components, "agent": snap.agent,
                "queued": snap.queue.len(), "slots_history": snap.slots, "autoscale": snap.autoscale,
            });
            // Each duty's component also under its name (`"nat": {"ok": …}`).
            if let Some(o) = overview_json.as_object_mut() {
                for c in &snap.components {
                    o.entry(c.name.clone()).or_insert_with(|| json!(c));
                }
            }
            let overview_json = overview_json.to_string();
            let workers_json = json!({
                "workers": &snap.workers[range.clone()], "desired_workers": snap.desired_workers,
                "taken_at": snap.taken_at, "paging": paging,
            })
            .to_string();
            SummaryPage {
                first: range.start + 1,
                last: range.end,
                rows_html: WorkerRows {
                    workers: &rows[range],
                }
                .render()
                .unwrap_or_default(),
                overview_json,
                workers_json,
            }
        })
        .collect();
    Summary {
        snap,
        running,
        healthy,
        used,
        slots,
        running_tasks,
        pages,
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
pub(super) struct OverviewPage {
    base: Base,
    snap: Arc<FleetSnapshot>,
    s: Arc<Summary>,
    first: usize,
    last: usize,
    page: usize,
    pages: usize,
    /// Slots in use over the last hour (inline SVG), or empty.
    slots_chart: String,
}

impl OverviewPage {
    /// This page's worker rows, rendered once per snapshot.
    fn rows_html(&self) -> &str {
        &self.s.pages[self.page - 1].rows_html
    }
}

pub(super) fn overview_page(
    cache: &SummaryCache,
    snap: Arc<FleetSnapshot>,
    b: Base,
    page: Option<usize>,
) -> OverviewPage {
    let s = cache.get(snap.clone());
    let (p, n) = s.page(page);
    OverviewPage {
        base: b,
        first: p.first,
        last: p.last,
        page: n,
        pages: s.pages.len(),
        s: s.clone(),
        slots_chart: crate::charts::slots(&snap.slots).unwrap_or_default(),
        snap,
    }
}

/// Overview page; `?page=N` for workers beyond the first [`WORKERS_PER_PAGE`].
#[get("/?<page>")]
pub fn overview(
    user: User,
    fleet: &State<FleetState>,
    cache: &State<SummaryCache>,
    page: Option<usize>,
) -> Html {
    let snap = fleet.0.snapshot();
    let b = base(&snap, Some(&user));
    render(&overview_page(cache, snap, b, page))
}

/// Overview as JSON, paged like the page (`paging` says where you are).
#[get("/api/v1/overview?<page>")]
pub fn api_overview(
    _user: User,
    fleet: &State<FleetState>,
    cache: &State<SummaryCache>,
    page: Option<usize>,
) -> RawJson<String> {
    let s = cache.get(fleet.0.snapshot());
    RawJson(s.page(page).0.overview_json.clone())
}
