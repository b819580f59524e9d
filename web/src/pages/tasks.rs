//! Tasks: the list with the submit form, submitting (form and API), and a
//! task's page with its subtasks grouped under it.

use askama::Template;
use fossa_contract::limits::TASK_LOG_WORKERS;
use rocket::form::{Errors, Form, FromForm};
use rocket::http::Status;
use rocket::response::status::Custom;
use rocket::response::Redirect;
use rocket::serde::json::{Error as JsonError, Json};
use rocket::{delete, get, post, State};
use serde_json::{json, Value};

use super::{
    api_error, base, json_body, not_found_page, render, ApiResult, ApiWriter, Base, FleetState,
    Html,
};
use crate::auth::User;
use crate::fmt;
use crate::model::{
    DispatchError, FleetSnapshot, HistoryPage, HistoryQuery, LogQuery, QueueState, Queued,
    Submitted, TaskRequest,
};
use crate::model::{TaskRow, TaskStatus};
use crate::views;

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

/// A queued submission as the tasks page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct QueueLine {
    id: i64,
    position: u32,
    model_class: String,
    method: String,
    waiting: String,
    sending_to: String,
}

fn queue_line(q: &Queued, now: i64) -> QueueLine {
    QueueLine {
        id: q.id,
        position: q.position,
        model_class: q.model_class.clone(),
        method: q.method.clone().unwrap_or_else(|| "go".into()),
        waiting: fmt::duration(Some(now - q.enqueued_at)),
        sending_to: q.sending_to.clone().unwrap_or_default(),
    }
}

/// The statuses the history filter offers.
const STATUSES: [TaskStatus; 7] = TaskStatus::KNOWN;

#[derive(Template)]
#[template(path = "tasks.html")]
struct TasksPage {
    base: Base,
    models: Vec<String>,
    tasks: Vec<TaskLine>,
    queue: Vec<QueueLine>,
    statuses: Vec<String>,
    filter_model: String,
    filter_status: String,
    filter_query: String,
    next_before: Option<i64>,
    total: u64,
    form_model: String,
    form_method: String,
    form_construction: String,
    form_method_kwargs: String,
    form_resolver: String,
}

/// The history filters of a request, checked.
#[derive(Debug, Clone, Default)]
struct Filters {
    model: Option<String>,
    status: Option<String>,
    before: Option<i64>,
    parents: bool,
}

impl Filters {
    fn new(
        model: Option<&str>,
        status: Option<&str>,
        before: Option<i64>,
        parents: Option<bool>,
    ) -> Result<Filters, String> {
        let clean = |name: &str, v: Option<&str>| -> Result<Option<String>, String> {
            match v.map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v)
                    if v.len() <= 200
                        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    Ok(Some(v.to_owned()))
                }
                Some(_) => Err(format!(
                    "{name} must be a name of letters, digits and _ (at most 200)"
                )),
            }
        };
        Ok(Filters {
            model: clean("model", model)?,
            status: clean("status", status)?,
            before,
            parents: parents.unwrap_or(false),
        })
    }

    fn query(&self, limit: u32) -> HistoryQuery {
        HistoryQuery {
            model: self.model.clone(),
            status: self.status.clone(),
            before: self.before,
            limit,
            parents_only: self.parents,
        }
    }

    /// The filters as a query string (without the cursor).
    fn encoded(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = &self.model {
            parts.push(format!("model={m}"));
        }
        if let Some(s) = &self.status {
            parts.push(format!("status={s}"));
        }
        if self.parents {
            parts.push("parents=true".into());
        }
        parts.join("&")
    }
}

/// Rows per page of the tasks page and of the API by default.
const PAGE_ROWS: u32 = fossa_contract::limits::HISTORY_PAGE_ROWS;

fn tasks_page(snap: &FleetSnapshot, b: Base, page: HistoryPage, f: &Filters) -> TasksPage {
    let now = fossa_contract::unix_now();
    TasksPage {
        base: b,
        models: snap.models.clone(),
        tasks: page.tasks.iter().map(task_line).collect(),
        queue: snap.queue.iter().map(|q| queue_line(q, now)).collect(),
        statuses: STATUSES.iter().map(TaskStatus::to_string).collect(),
        filter_model: f.model.clone().unwrap_or_default(),
        filter_status: f.status.clone().unwrap_or_default(),
        filter_query: f.encoded(),
        next_before: page.next_before,
        total: page.total,
        form_model: snap.models.first().cloned().unwrap_or_default(),
        form_method: "go".into(),
        form_construction: "{}".into(),
        form_method_kwargs: "{}".into(),
        form_resolver: "{}".into(),
    }
}

/// One history page, or the snapshot's tasks with the reason when the
/// history cannot be read.
async fn history_or_flash(fleet: &FleetState, q: HistoryQuery, b: &mut Base) -> HistoryPage {
    match fleet.0.history(q).await {
        Ok(p) => p,
        Err(e) => {
            b.flash = format!(
                "The task history cannot be read ({}); showing what the workers report now.",
                e.message()
            );
            b.flash_kind = "error";
            let snap = fleet.0.snapshot();
            HistoryPage {
                tasks: snap.tasks(),
                next_before: None,
                total: 0,
            }
        }
    }
}

/// The task history (newest first, filtered, paged) with the queue and the
/// submit form.
#[get("/tasks?<model>&<status>&<before>&<parents>")]
pub async fn tasks(
    user: User,
    fleet: &State<FleetState>,
    model: Option<&str>,
    status: Option<&str>,
    before: Option<i64>,
    parents: Option<bool>,
) -> Result<Html, Custom<Html>> {
    let snap = fleet.0.snapshot();
    let mut b = base(&snap, Some(&user));
    let f = match Filters::new(model, status, before, parents) {
        Ok(f) => f,
        Err(e) => {
            b.flash = e;
            b.flash_kind = "error";
            let p = tasks_page(&snap, b, HistoryPage::default(), &Filters::default());
            return Err(Custom(Status::BadRequest, render(&p)));
        }
    };
    let page = history_or_flash(fleet, f.query(PAGE_ROWS), &mut b).await;
    Ok(render(&tasks_page(&snap, b, page, &f)))
}

/// Submit form fields.
#[derive(Debug, FromForm)]
pub struct SubmitForm<'r> {
    model_class: &'r str,
    method: Option<&'r str>,
    model_construction_kwargs: Option<&'r str>,
    method_kwargs: Option<&'r str>,
    resolver_context: Option<&'r str>,
    csrf_token: &'r str,
}

fn json_object(field: &str, text: Option<&str>) -> Result<Value, DispatchError> {
    let text = text
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("{}");
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(DispatchError::Invalid(format!(
            "{field} must be a JSON object such as {{\"key\": 1}}"
        ))),
        Err(e) => Err(DispatchError::Invalid(format!(
            "{field} is not valid JSON: {e}"
        ))),
    }
}

/// Checks a request against what the workers accept.
pub fn validate(snap: &FleetSnapshot, req: &TaskRequest) -> Result<(), DispatchError> {
    if req.model_class.is_empty() {
        return Err(DispatchError::Invalid("model_class is required".into()));
    }
    if !snap.models.is_empty() && !snap.models.contains(&req.model_class) {
        return Err(DispatchError::Invalid(format!(
            "model_class {:?} is not accepted by the workers; choose one of: {}",
            req.model_class,
            snap.models.join(", ")
        )));
    }
    for (name, v) in [
        ("model_construction_kwargs", &req.model_construction_kwargs),
        ("method_kwargs", &req.method_kwargs),
        ("resolver_context", &req.resolver_context),
    ] {
        if !v.is_object() {
            return Err(DispatchError::Invalid(format!(
                "{name} must be a JSON object"
            )));
        }
    }
    if let Some(m) = &req.method {
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(DispatchError::Invalid(format!(
                "method {m:?} is not a Python method name"
            )));
        }
    }
    Ok(())
}

fn dispatch_status(e: &DispatchError) -> Status {
    match e {
        DispatchError::Invalid(_) => Status::BadRequest,
        DispatchError::NoCapacity(_) => Status::ServiceUnavailable,
        DispatchError::Worker(_) => Status::BadGateway,
        DispatchError::QueueFull(_) => Status::TooManyRequests,
    }
}

/// Submits a task from the form.
#[post("/tasks", data = "<form>")]
pub async fn submit(
    user: User,
    fleet: &State<FleetState>,
    form: Result<Form<SubmitForm<'_>>, Errors<'_>>,
) -> Result<Redirect, Custom<Html>> {
    let snap = fleet.0.snapshot();
    let fail = |status: Status, msg: String, form: Option<&SubmitForm<'_>>| {
        let mut b = base(&snap, Some(&user));
        b.flash = msg;
        b.flash_kind = "error";
        let mut p = tasks_page(&snap, b, HistoryPage::default(), &Filters::default());
        if let Some(f) = form {
            p.form_model = f.model_class.to_owned();
            p.form_method = f.method.unwrap_or("go").to_owned();
            p.form_construction = f.model_construction_kwargs.unwrap_or("{}").to_owned();
            p.form_method_kwargs = f.method_kwargs.unwrap_or("{}").to_owned();
            p.form_resolver = f.resolver_context.unwrap_or("{}").to_owned();
        }
        Custom(status, render(&p))
    };
    let form = match form {
        Ok(f) => f,
        Err(e) => {
            return Err(fail(
                e.status(),
                format!("The form is incomplete: {e}"),
                None,
            ))
        }
    };
    if !user.csrf_ok(Some(form.csrf_token)) {
        return Err(fail(
            Status::Forbidden,
            "The form expired (missing or wrong CSRF token). Reload the page and submit again."
                .into(),
            Some(&form),
        ));
    }
    let parsed = (|| {
        Ok::<_, DispatchError>(TaskRequest {
            model_class: form.model_class.to_owned(),
            method: form
                .method
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned),
            model_construction_kwargs: json_object(
                "model_construction_kwargs",
                form.model_construction_kwargs,
            )?,
            method_kwargs: json_object("method_kwargs", form.method_kwargs)?,
            resolver_context: json_object("resolver_context", form.resolver_context)?,
        })
    })();
    let req = match parsed.and_then(|r| validate(&snap, &r).map(|()| r)) {
        Ok(r) => r,
        Err(e) => return Err(fail(Status::BadRequest, e.to_string(), Some(&form))),
    };
    match fleet.0.submit(req).await {
        Ok(Submitted::Dispatched(d)) => Ok(Redirect::to(format!("/tasks/{}", d.task_id))),
        Ok(Submitted::Queued(q)) => Ok(Redirect::to(format!("/queue/{}", q.id))),
        Err(e) => Err(fail(dispatch_status(&e), e.to_string(), Some(&form))),
    }
}

/// A page of the task history as JSON, newest first:
/// `?model=&status=&parents=true&limit=&before=` (`next_before` is the next page's cursor).
#[get("/api/v1/tasks?<model>&<status>&<before>&<limit>&<parents>")]
pub async fn api_tasks(
    _user: User,
    fleet: &State<FleetState>,
    model: Option<&str>,
    status: Option<&str>,
    before: Option<i64>,
    limit: Option<u32>,
    parents: Option<bool>,
) -> ApiResult {
    let f = match Filters::new(model, status, before, parents) {
        Ok(f) => f,
        Err(e) => return api_error(Status::BadRequest, e),
    };
    let max = fossa_contract::limits::HISTORY_PAGE_MAX;
    let limit = match limit {
        None => PAGE_ROWS,
        Some(n) if (1..=max).contains(&n) => n,
        Some(n) => {
            return api_error(
                Status::BadRequest,
                format!("limit {n} is out of range: use 1 to {max}"),
            )
        }
    };
    let page = match fleet.0.history(f.query(limit)).await {
        Ok(p) => p,
        Err(e) => {
            return api_error(
                Status::InternalServerError,
                format!("the task history cannot be read: {}", e.message()),
            )
        }
    };
    let snap = fleet.0.snapshot();
    let filters = f.encoded();
    let next = page.next_before.map(|b| {
        let sep = if filters.is_empty() { "" } else { "&" };
        format!("/api/v1/tasks?{filters}{sep}before={b}&limit={limit}")
    });
    Custom(
        Status::Ok,
        Json(json!({
            "tasks": page.tasks,
            "next_before": page.next_before,
            "total": page.total,
            "queue": snap.queue,
            "dispatched": snap.dispatched,
            "links": { "next": next },
        })),
    )
}

type Lines = std::pin::Pin<Box<dyn rocket::futures::Stream<Item = String> + Send>>;

/// The whole filtered history as a download.
pub struct Export {
    content_type: rocket::http::ContentType,
    file_name: &'static str,
    lines: Lines,
}

impl<'r> rocket::response::Responder<'r, 'r> for Export {
    fn respond_to(self, req: &'r rocket::Request<'_>) -> rocket::response::Result<'r> {
        let mut r = rocket::response::stream::TextStream(self.lines).respond_to(req)?;
        r.set_header(self.content_type);
        r.set_raw_header(
            "Content-Disposition",
            format!("attachment; filename=\"{}\"", self.file_name),
        );
        Ok(r)
    }
}

/// One CSV field: quoted, and a leading `= + - @` made inert (a
/// spreadsheet would run it as a formula).
fn csv_field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    format!("\"{}\"", v.replace('"', "\"\""))
}

fn csv_row(r: &TaskRow) -> String {
    let t = &r.task;
    let fields = [
        t.task_id.clone(),
        t.model_class.clone(),
        t.method.clone().unwrap_or_default(),
        t.status.to_string(),
        r.worker_id.clone(),
        t.started.map(fmt::iso_time).unwrap_or_default(),
        t.finished.map(fmt::iso_time).unwrap_or_default(),
        t.duration().map(|d| d.to_string()).unwrap_or_default(),
        t.results.as_ref().map(Value::to_string).unwrap_or_default(),
    ];
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// The task history (filtered like `/api/v1/tasks`) as CSV or JSON,
/// streamed page by page so a long history never sits in memory whole.
#[get("/api/v1/tasks/export?<format>&<model>&<status>&<parents>")]
pub fn export(
    _user: User,
    fleet: &State<FleetState>,
    format: Option<&str>,
    model: Option<&str>,
    status: Option<&str>,
    parents: Option<bool>,
) -> Result<Export, ApiResult> {
    let f =
        Filters::new(model, status, None, parents).map_err(|e| api_error(Status::BadRequest, e))?;
    let csv = match format.unwrap_or("csv") {
        "csv" => true,
        "json" => false,
        other => {
            return Err(api_error(
                Status::BadRequest,
                format!("format {other:?} is not offered: use csv or json"),
            ))
        }
    };
    let fleet = fleet.0.clone();
    let mut q = f.query(1000);
    let stream = rocket::response::stream::stream! {
        if csv {
            yield "task_id,model_class,method,status,worker,started,finished,duration_s,result\r\n".to_owned();
        } else {
            yield "[".to_owned();
        }
        let mut first = true;
        loop {
            let page = match fleet.history(q.clone()).await {
                Ok(p) => p,
                Err(e) => {
                    // The download ends with the reason instead of looking complete.
                    yield format!("\nexport stopped: the task history cannot be read: {}\n", e.message());
                    return;
                }
            };
            for row in &page.tasks {
                if csv {
                    yield csv_row(row);
                } else {
                    let sep = if first { "" } else { "," };
                    yield format!("{sep}\n{}", serde_json::to_string(row).unwrap_or_default());
                }
                first = false;
            }
            match page.next_before {
                Some(b) => q.before = Some(b),
                None => break,
            }
        }
        if !csv {
            yield "\n]\n".to_owned();
        }
    };
    let (content_type, file_name) = if csv {
        (rocket::http::ContentType::CSV, "fossa-tasks.csv")
    } else {
        (rocket::http::ContentType::JSON, "fossa-tasks.json")
    };
    Ok(Export {
        content_type,
        file_name,
        lines: Box::pin(stream),
    })
}

/// Submits a task: `{"model_class": …, "method_kwargs": {…}, …}`.
#[post("/api/v1/tasks", data = "<body>")]
pub async fn api_submit(
    _writer: ApiWriter,
    fleet: &State<FleetState>,
    body: Result<Json<TaskRequest>, JsonError<'_>>,
) -> ApiResult {
    let req = match json_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let snap = fleet.0.snapshot();
    if let Err(e) = validate(&snap, &req) {
        return api_error(Status::BadRequest, e.to_string());
    }
    match fleet.0.submit(req).await {
        Ok(Submitted::Dispatched(d)) => Custom(
            Status::Created,
            Json(
                json!({ "task_id": d.task_id, "worker_id": d.worker_id, "model_class": d.model_class, "links": { "task": format!("/api/v1/tasks/{}", d.task_id), "page": format!("/tasks/{}", d.task_id) } }),
            ),
        ),
        Ok(Submitted::Queued(q)) => Custom(
            Status::Accepted,
            Json(json!({
                "queued": q,
                "message": format!("every worker slot is busy: queued at position {}; it is sent when a slot frees", q.position),
                "links": { "queue": format!("/api/v1/queue/{}", q.id), "page": format!("/queue/{}", q.id) },
            })),
        ),
        Err(e) => api_error(dispatch_status(&e), e.to_string()),
    }
}

/// Where a queued submission is: waiting (with its position) or its task.
#[get("/api/v1/queue/<id>")]
pub async fn api_queued(_user: User, fleet: &State<FleetState>, id: i64) -> ApiResult {
    match fleet.0.queue_state(id).await {
        Ok(Some(state)) => Custom(Status::Ok, Json(json!(state))),
        Ok(None) => api_error(Status::NotFound, format!("no queued task {id}: it was never queued, or its record has aged out of the history")),
        Err(e) => api_error(Status::InternalServerError, e.message()),
    }
}

/// Takes a waiting submission off the queue.
#[delete("/api/v1/queue/<id>")]
pub async fn api_cancel(_writer: ApiWriter, fleet: &State<FleetState>, id: i64) -> ApiResult {
    match fleet.0.cancel(id).await {
        Ok(true) => Custom(Status::Ok, Json(json!({ "cancelled": id }))),
        Ok(false) => api_error(
            Status::Conflict,
            format!("queued task {id} is not waiting (already sent, or unknown)"),
        ),
        Err(e) => api_error(Status::InternalServerError, e.message()),
    }
}

#[derive(Template)]
#[template(path = "queued.html")]
struct QueuedPage {
    base: Base,
    q: QueueLine,
    waiting: usize,
}

/// A queued submission's page: its position, live, until it is sent
/// (then its task's page).
#[get("/queue/<id>")]
pub async fn queued(
    user: User,
    fleet: &State<FleetState>,
    id: i64,
) -> Result<Html, Result<Redirect, Custom<Html>>> {
    let snap = fleet.0.snapshot();
    match fleet.0.queue_state(id).await {
        Ok(Some(QueueState::Waiting(q))) => Ok(render(&QueuedPage {
            base: base(&snap, Some(&user)),
            q: queue_line(&q, fossa_contract::unix_now()),
            waiting: snap.queue.len(),
        })),
        Ok(Some(QueueState::Left(row))) => Err(Ok(Redirect::to(format!("/tasks/{}", row.task.task_id)))),
        Ok(None) => Err(Err(not_found_page(&snap, &user, &format!("No queued task {id}: it was never queued, or its record has aged out of the history.")))),
        Err(e) => Err(Err(not_found_page(&snap, &user, &format!("The queue cannot be read: {}", e.message())))),
    }
}

/// Cancels a waiting submission from its page.
#[post("/queue/<id>/cancel", data = "<form>")]
pub async fn cancel(
    user: User,
    fleet: &State<FleetState>,
    id: i64,
    form: Form<super::TokenForm<'_>>,
) -> Result<Redirect, Custom<Html>> {
    let snap = fleet.0.snapshot();
    if !user.csrf_ok(Some(form.csrf_token)) {
        return Err(Custom(
            Status::Forbidden,
            not_found_page(
                &snap,
                &user,
                "The form expired (missing or wrong CSRF token). Reload the page and try again.",
            )
            .1,
        ));
    }
    match fleet.0.cancel(id).await {
        Ok(_) => Ok(Redirect::to("/tasks")),
        Err(e) => Err(not_found_page(&snap, &user, &e.message())),
    }
}

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
}

/// A worker's lines within a task's time.
struct WorkerLog {
    worker: String,
    lines: Vec<super::workers::LogView>,
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
            Ok(l) => (
                l.iter().map(super::workers::log_view).collect(),
                String::new(),
            ),
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
    let Some(d) = views::task_detail_with(&snap, recorded, id) else {
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
    views::task_detail_with(&snap, recorded, id)
        .map(Json)
        .ok_or_else(|| api_error(Status::NotFound, format!("no worker reports task {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_made_inert() {
        assert_eq!(csv_field("plain"), "\"plain\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        for f in ["=HYPERLINK(\"x\")", "+1", "-1", "@SUM(A1)"] {
            assert!(csv_field(f).starts_with("\"'"), "{f}");
        }
    }

    #[test]
    fn filters_refuse_what_is_not_a_name() {
        assert!(Filters::new(Some("QuickEtl"), Some("complete"), None, None).is_ok());
        for bad in ["a b", "<b>", "x'; DROP TABLE tasks"] {
            assert!(Filters::new(Some(bad), None, None, None).is_err(), "{bad}");
            assert!(Filters::new(None, Some(bad), None, None).is_err(), "{bad}");
        }
        let f = Filters::new(Some("M"), Some("failed"), Some(5), Some(true)).unwrap();
        assert_eq!(f.encoded(), "model=M&status=failed&parents=true");
    }
}
