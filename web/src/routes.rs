//! Pages and the JSON API. Every page reads the current snapshot (no network
//! wait) and has a JSON twin under `/api/v1/`.

use std::sync::Arc;

use askama::Template;
use rocket::form::{Errors, Form, FromForm};
use rocket::http::{ContentType, CookieJar, Status};
use rocket::request::Request;
use rocket::response::content::{RawHtml, RawJson};
use rocket::response::status::Custom;
use rocket::response::Redirect;
use rocket::serde::json::{Error as JsonError, Json};
use rocket::{catch, get, post, State};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, Auth, User};
use crate::fmt;
use crate::model::{DispatchError, Fleet, FleetSnapshot, TaskRequest, Worker};
use crate::views::{self, TaskRow};

/// The fleet behind the routes.
pub struct FleetState(pub Arc<dyn Fleet>);

type Html = RawHtml<String>;
type ApiResult = Custom<Json<Value>>;

fn api_error(status: Status, message: impl Into<String>) -> ApiResult {
    Custom(status, Json(json!({ "error": message.into() })))
}

fn render(t: &impl Template) -> Html {
    RawHtml(
        t.render()
            .unwrap_or_else(|e| format!("<p>template error: {}</p>", fmt_escape(&e.to_string()))),
    )
}

fn fmt_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Fields every page shows.
#[derive(Debug, Clone, Default)]
pub struct Base {
    stack: String,
    mode: String,
    logged_in: bool,
    csrf: String,
    flash: String,
    flash_kind: &'static str,
}

/// What every page shows; before login nothing about the stack.
fn base(snap: &FleetSnapshot, user: Option<&User>) -> Base {
    let known = |s: &String| {
        if user.is_some() {
            s.clone()
        } else {
            String::new()
        }
    };
    Base {
        stack: known(&snap.stack),
        mode: known(&snap.mode),
        logged_in: user.is_some(),
        csrf: user.map(|u| u.csrf().to_owned()).unwrap_or_default(),
        flash: String::new(),
        flash_kind: "",
    }
}

// ---------- health and login ----------

/// The only unauthenticated route; says nothing secret.
#[get("/healthz")]
pub fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    base: Base,
    login_csrf: String,
}

/// The login form.
#[get("/login")]
pub fn login_page(fleet: &State<FleetState>, auth: &State<Auth>, jar: &CookieJar<'_>) -> Html {
    let snap = fleet.0.snapshot();
    render(&LoginPage {
        base: base(&snap, None),
        login_csrf: auth.login_csrf(jar),
    })
}

/// Login form fields.
#[derive(Debug, FromForm)]
pub struct LoginForm<'r> {
    username: &'r str,
    password: &'r str,
    csrf_token: &'r str,
}

/// Checks the login.
#[post("/login", data = "<form>")]
pub async fn login(
    form: Result<Form<LoginForm<'_>>, Errors<'_>>,
    fleet: &State<FleetState>,
    auth: &State<Auth>,
    jar: &CookieJar<'_>,
    remote: Option<std::net::SocketAddr>,
) -> Result<Redirect, Custom<Html>> {
    let snap = fleet.0.snapshot();
    let page = |status: Status, msg: &str| {
        let mut b = base(&snap, None);
        b.flash = msg.to_owned();
        b.flash_kind = "error";
        Custom(
            status,
            render(&LoginPage {
                base: b,
                login_csrf: auth.login_csrf(jar),
            }),
        )
    };
    // The TCP peer: no header a client sets can pick the address counted.
    let ip = remote.map(|a| a.ip());
    if auth.blocked(ip) {
        return Err(page(
            Status::TooManyRequests,
            "Too many failed logins from your address. Wait five minutes and try again.",
        ));
    }
    let form = match form {
        Ok(f) => f,
        Err(e) => {
            return Err(page(
                e.status(),
                &format!("The login form is incomplete: {e}"),
            ))
        }
    };
    if !auth::login_csrf_ok(jar, form.csrf_token) {
        return Err(page(
            Status::Forbidden,
            "The form expired (missing or wrong CSRF token). Log in again.",
        ));
    }
    match auth.attempt(ip, form.username, form.password).await {
        auth::Attempt::Right => {
            auth.login(jar);
            Ok(Redirect::to("/"))
        }
        auth::Attempt::Wrong => Err(page(Status::Unauthorized, "Wrong user or password.")),
        auth::Attempt::Blocked => Err(page(
            Status::TooManyRequests,
            "Too many failed logins from your address. Wait five minutes and try again.",
        )),
        auth::Attempt::Busy => Err(page(
            Status::TooManyRequests,
            "The gateway is checking too many logins at once. Try again in a few seconds.",
        )),
    }
}

/// CSRF-checked form with only a token.
#[derive(Debug, FromForm)]
pub struct TokenForm<'r> {
    csrf_token: &'r str,
}

/// Ends the session.
#[post("/logout", data = "<form>")]
pub fn logout(
    user: User,
    form: Form<TokenForm<'_>>,
    auth: &State<Auth>,
    jar: &CookieJar<'_>,
) -> Result<Redirect, Status> {
    if !user.csrf_ok(Some(form.csrf_token)) {
        return Err(Status::Forbidden);
    }
    auth.logout(jar);
    Ok(Redirect::to("/login"))
}

// ---------- overview ----------

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
        reason: w.health.reason().to_owned(),
        capacity,
        running,
        recent,
        started: fmt::opt_time(w.started_at),
        provider: w.capacity_provider.clone(),
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
struct SummaryPage {
    first: usize,
    last: usize,
    rows_html: String,
    overview_json: String,
    workers_json: String,
}

impl Summary {
    /// Page `page` (1-based; out of range is clamped) and its 1-based number.
    fn page(&self, page: Option<usize>) -> (&SummaryPage, usize) {
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
    let nodes = || snap.workers.iter().filter_map(|w| w.node.as_ref());
    // u64: a thousand nodes each claiming u32::MAX slots must not overflow.
    let slots: u64 = nodes().map(|n| u64::from(n.max_concurrent_tasks)).sum();
    let free: u64 = nodes()
        .map(|n| u64::from(n.available_processing_capacity))
        .sum();
    let running = snap
        .workers
        .iter()
        .filter(|w| w.status == "RUNNING")
        .count();
    let healthy = snap
        .workers
        .iter()
        .filter(|w| w.health == crate::model::Health::Ok)
        .count();
    let running_tasks = nodes().map(|n| n.running_tasks.len()).sum();
    let used = slots.saturating_sub(free);
    let total = rows.len();
    let count = total.div_ceil(WORKERS_PER_PAGE).max(1);
    let pages = (0..count)
        .map(|i| {
            let range = i * WORKERS_PER_PAGE..((i + 1) * WORKERS_PER_PAGE).min(total);
            let paging = json!({ "page": i + 1, "pages": count, "per_page": WORKERS_PER_PAGE, "total_workers": total });
            let overview_json = json!({
                "mode": snap.mode, "stack": snap.stack, "taken_at": snap.taken_at, "refresh_ms": snap.refresh_ms,
                "desired_workers": snap.desired_workers, "running_workers": running, "healthy_workers": healthy,
                "slots": slots, "slots_used": used, "running_tasks": running_tasks,
                "broker": snap.broker, "nat": snap.nat, "image": snap.image, "cost": snap.cost,
                "models": snap.models, "workers": &rows[range.clone()], "paging": paging,
            })
            .to_string();
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
struct OverviewPage {
    base: Base,
    snap: Arc<FleetSnapshot>,
    s: Arc<Summary>,
    first: usize,
    last: usize,
    page: usize,
    pages: usize,
}

impl OverviewPage {
    /// This page's worker rows, rendered once per snapshot.
    fn rows_html(&self) -> &str {
        &self.s.pages[self.page - 1].rows_html
    }
}

fn overview_page(
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

// ---------- workers ----------

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

#[derive(Debug, Clone, serde::Serialize)]
struct TaskLine {
    id: String,
    model_class: String,
    method: String,
    status: String,
    worker: String,
    started: String,
    duration: String,
    result: String,
    result_full: String,
}

fn task_line(r: &TaskRow) -> TaskLine {
    TaskLine {
        id: r.task.task_id.clone(),
        model_class: r.task.model_class.clone(),
        method: r.task.method.clone().unwrap_or_default(),
        status: r.task.status.clone(),
        worker: r.worker_id.clone(),
        started: fmt::opt_time(r.task.started),
        duration: fmt::duration(r.task.duration()),
        result: fmt::result_short(r.task.results.as_ref()),
        result_full: fmt::result_full(r.task.results.as_ref()),
    }
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

// ---------- tasks ----------

#[derive(Template)]
#[template(path = "tasks.html")]
struct TasksPage {
    base: Base,
    models: Vec<String>,
    tasks: Vec<TaskLine>,
    form_model: String,
    form_method: String,
    form_construction: String,
    form_method_kwargs: String,
    form_resolver: String,
}

fn tasks_page(snap: &FleetSnapshot, b: Base) -> TasksPage {
    TasksPage {
        base: b,
        models: snap.models.clone(),
        tasks: views::all_tasks(snap).iter().map(task_line).collect(),
        form_model: snap.models.first().cloned().unwrap_or_default(),
        form_method: "go".into(),
        form_construction: "{}".into(),
        form_method_kwargs: "{}".into(),
        form_resolver: "{}".into(),
    }
}

/// Task list and the submit form.
#[get("/tasks")]
pub fn tasks(user: User, fleet: &State<FleetState>) -> Html {
    let snap = fleet.0.snapshot();
    render(&tasks_page(&snap, base(&snap, Some(&user))))
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

fn json_object(field: &str, text: Option<&str>) -> Result<Value, String> {
    let text = text
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("{}");
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(format!(
            "{field} must be a JSON object such as {{\"key\": 1}}"
        )),
        Err(e) => Err(format!("{field} is not valid JSON: {e}")),
    }
}

/// Checks a request against what the workers accept.
pub fn validate(snap: &FleetSnapshot, req: &TaskRequest) -> Result<(), String> {
    if req.model_class.is_empty() {
        return Err("model_class is required".into());
    }
    if !snap.models.is_empty() && !snap.models.contains(&req.model_class) {
        return Err(format!(
            "model_class {:?} is not accepted by the workers; choose one of: {}",
            req.model_class,
            snap.models.join(", ")
        ));
    }
    for (name, v) in [
        ("model_construction_kwargs", &req.model_construction_kwargs),
        ("method_kwargs", &req.method_kwargs),
        ("resolver_context", &req.resolver_context),
    ] {
        if !v.is_object() {
            return Err(format!("{name} must be a JSON object"));
        }
    }
    if let Some(m) = &req.method {
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("method {m:?} is not a Python method name"));
        }
    }
    Ok(())
}

fn dispatch_status(e: &DispatchError) -> Status {
    match e {
        DispatchError::Invalid(_) => Status::BadRequest,
        DispatchError::NoCapacity(_) => Status::ServiceUnavailable,
        DispatchError::Worker(_) => Status::BadGateway,
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
        let mut p = tasks_page(&snap, b);
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
        Ok::<_, String>(TaskRequest {
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
        Err(msg) => return Err(fail(Status::BadRequest, msg, Some(&form))),
    };
    match fleet.0.submit(req).await {
        Ok(d) => Ok(Redirect::to(format!("/tasks/{}", d.task_id))),
        Err(e) => Err(fail(dispatch_status(&e), e.to_string(), Some(&form))),
    }
}

/// Every task as JSON.
#[get("/api/v1/tasks")]
pub fn api_tasks(_user: User, fleet: &State<FleetState>) -> Json<Value> {
    let snap = fleet.0.snapshot();
    Json(json!({ "tasks": views::all_tasks(&snap), "dispatched": snap.dispatched }))
}

fn csrf_header<'r>(req: &'r Request<'_>) -> Option<&'r str> {
    req.headers().get_one("X-CSRF-Token")
}

/// A caller allowed to change things through the API: basic auth, or a
/// session whose `X-CSRF-Token` header matches. Otherwise 401 or 403.
pub struct ApiWriter;

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for ApiWriter {
    type Error = ();
    async fn from_request(req: &'r Request<'_>) -> rocket::request::Outcome<Self, Self::Error> {
        use rocket::request::Outcome;
        match req.guard::<User>().await {
            Outcome::Success(user) if user.csrf_ok(csrf_header(req)) => Outcome::Success(ApiWriter),
            Outcome::Success(_) => Outcome::Error((Status::Forbidden, ())),
            Outcome::Error((status, _)) => Outcome::Error((status, ())),
            Outcome::Forward(s) => Outcome::Forward(s),
        }
    }
}

fn json_body<T>(body: Result<Json<T>, JsonError<'_>>) -> Result<T, ApiResult> {
    match body {
        Ok(Json(v)) => Ok(v),
        Err(JsonError::Io(e))
            if e.to_string().contains("limit") || e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Err(api_error(
                Status::PayloadTooLarge,
                "request body is too large (limit 64 KiB)",
            ))
        }
        Err(JsonError::Io(e)) => Err(api_error(
            Status::BadRequest,
            format!("could not read the body: {e}"),
        )),
        Err(JsonError::Parse(_, e)) => Err(api_error(
            Status::BadRequest,
            format!("invalid JSON body: {e}"),
        )),
    }
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
    if let Err(msg) = validate(&snap, &req) {
        return api_error(Status::BadRequest, msg);
    }
    match fleet.0.submit(req).await {
        Ok(d) => Custom(
            Status::Created,
            Json(
                json!({ "task_id": d.task_id, "worker_id": d.worker_id, "model_class": d.model_class, "links": { "task": format!("/api/v1/tasks/{}", d.task_id), "page": format!("/tasks/{}", d.task_id) } }),
            ),
        ),
        Err(e) => api_error(dispatch_status(&e), e.to_string()),
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
                    status: s.task.status.clone(),
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
pub fn task(user: User, fleet: &State<FleetState>, id: &str) -> Result<Html, Custom<Html>> {
    let snap = fleet.0.snapshot();
    if !views::valid_task_id(id) {
        return Err(Custom(
            Status::BadRequest,
            not_found_page(&snap, &user, "That is not a task id.").1,
        ));
    }
    let Some(d) = views::task_detail(&snap, id) else {
        return Err(not_found_page(&snap, &user, &format!("No worker reports task {id} (yet). Tasks appear within a few seconds of starting; finished tasks stay while their node remembers them.")));
    };
    let (parent, parent_certain, parent_candidates) = match &d.group {
        Some(g) => (
            g.candidates.first().cloned().or(Some(String::new())),
            g.certain,
            g.candidates.clone(),
        ),
        None => (None, false, Vec::new()),
    };
    Ok(render(&TaskPage {
        base: base(&snap, Some(&user)),
        task: task_line(&d.task),
        parent,
        parent_certain,
        parent_candidates,
        groups: d.groups.iter().map(group_view).collect(),
    }))
}

/// One task as JSON, with its subtask groups.
#[get("/api/v1/tasks/<id>")]
pub fn api_task(
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
    views::task_detail(&snap, id)
        .map(Json)
        .ok_or_else(|| api_error(Status::NotFound, format!("no worker reports task {id}")))
}

// ---------- scale, rebuild, events ----------

/// Scale form fields.
#[derive(Debug, FromForm)]
pub struct ScaleForm<'r> {
    #[field(validate = range(0..=1000))]
    workers: u32,
    csrf_token: &'r str,
}

fn flash_overview(
    fleet: &FleetState,
    cache: &SummaryCache,
    user: &User,
    status: Status,
    ok: bool,
    msg: String,
) -> Custom<Html> {
    let snap = fleet.0.snapshot();
    let mut b = base(&snap, Some(user));
    b.flash = msg;
    b.flash_kind = if ok { "ok" } else { "error" };
    Custom(status, render(&overview_page(cache, snap, b, None)))
}

/// Scales from the form.
#[post("/scale", data = "<form>")]
pub async fn scale(
    user: User,
    fleet: &State<FleetState>,
    cache: &State<SummaryCache>,
    form: Result<Form<ScaleForm<'_>>, Errors<'_>>,
) -> Custom<Html> {
    let form = match form {
        Ok(f) => f,
        Err(e) => {
            return flash_overview(
                fleet,
                cache,
                &user,
                Status::BadRequest,
                false,
                format!("workers must be a whole number from 0 to 1000 ({e})"),
            )
        }
    };
    if !user.csrf_ok(Some(form.csrf_token)) {
        return flash_overview(
            fleet,
            cache,
            &user,
            Status::Forbidden,
            false,
            "The form expired (missing or wrong CSRF token). Reload and try again.".into(),
        );
    }
    match fleet.0.scale(form.workers).await {
        Ok(m) => flash_overview(fleet, cache, &user, Status::Ok, true, m),
        Err(m) => flash_overview(fleet, cache, &user, Status::BadGateway, false, m),
    }
}

/// `POST /api/v1/scale` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// Workers wanted, 0 to 1000.
    pub workers: u32,
}

/// Sets the number of workers.
#[post("/api/v1/scale", data = "<body>")]
pub async fn api_scale(
    _writer: ApiWriter,
    fleet: &State<FleetState>,
    body: Result<Json<ScaleRequest>, JsonError<'_>>,
) -> ApiResult {
    let req = match json_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if req.workers > 1000 {
        return api_error(Status::BadRequest, "workers must be from 0 to 1000");
    }
    match fleet.0.scale(req.workers).await {
        Ok(m) => Custom(
            Status::Ok,
            Json(json!({ "workers": req.workers, "message": m })),
        ),
        Err(m) => api_error(Status::BadGateway, m),
    }
}

/// Rebuilds the image from the form.
#[post("/rebuild", data = "<form>")]
pub async fn rebuild(
    user: User,
    fleet: &State<FleetState>,
    cache: &State<SummaryCache>,
    form: Form<TokenForm<'_>>,
) -> Custom<Html> {
    if !user.csrf_ok(Some(form.csrf_token)) {
        return flash_overview(
            fleet,
            cache,
            &user,
            Status::Forbidden,
            false,
            "The form expired (missing or wrong CSRF token). Reload and try again.".into(),
        );
    }
    match fleet.0.rebuild().await {
        Ok(m) => flash_overview(fleet, cache, &user, Status::Ok, true, m),
        Err(m) => flash_overview(fleet, cache, &user, Status::BadGateway, false, m),
    }
}

/// Rebuilds the image.
#[post("/api/v1/rebuild")]
pub async fn api_rebuild(_writer: ApiWriter, fleet: &State<FleetState>) -> ApiResult {
    match fleet.0.rebuild().await {
        Ok(m) => Custom(Status::Ok, Json(json!({ "message": m }))),
        Err(m) => api_error(Status::BadGateway, m),
    }
}

#[derive(Debug, Clone)]
struct EventRow {
    time: String,
    source: String,
    error: bool,
    message: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    base: Base,
    events: Vec<EventRow>,
}

/// The agent's recent actions and errors, newest first.
#[get("/events")]
pub fn events(user: User, fleet: &State<FleetState>) -> Html {
    let snap = fleet.0.snapshot();
    let events = fleet
        .0
        .events()
        .into_iter()
        .rev()
        .map(|e| EventRow {
            time: fmt::time(e.at),
            source: e.source,
            error: e.error,
            message: e.message,
        })
        .collect();
    render(&EventsPage {
        base: base(&snap, Some(&user)),
        events,
    })
}

/// Events as JSON, newest last.
#[get("/api/v1/events")]
pub fn api_events(_user: User, fleet: &State<FleetState>) -> Json<Value> {
    Json(json!({ "events": fleet.0.events() }))
}

// ---------- assets and errors ----------

/// Embedded stylesheet.
#[get("/static/app.css")]
pub fn css() -> (ContentType, &'static str) {
    (ContentType::CSS, include_str!("../assets/app.css"))
}

/// Embedded script.
#[get("/static/app.js")]
pub fn js() -> (ContentType, &'static str) {
    (ContentType::JavaScript, include_str!("../assets/app.js"))
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    base: Base,
    title: String,
    message: String,
    /// Re-fetched live (a GET page whose subject may appear in a moment).
    live: bool,
}

fn not_found_page(snap: &FleetSnapshot, user: &User, msg: &str) -> Custom<Html> {
    Custom(
        Status::NotFound,
        render(&MessagePage {
            base: base(snap, Some(user)),
            title: "Not found".into(),
            message: msg.to_owned(),
            live: true,
        }),
    )
}

fn is_api(req: &Request<'_>) -> bool {
    req.uri().path().starts_with("/api/")
}

/// 401: pages go to the login form, the API answers JSON.
#[catch(401)]
pub fn unauthorized(req: &Request<'_>) -> Result<Redirect, ApiResult> {
    if is_api(req) {
        Err(api_error(
            Status::Unauthorized,
            "log in, or use HTTP basic auth: curl -u fossa:PASSWORD",
        ))
    } else {
        Ok(Redirect::to("/login"))
    }
}

/// 403 for the API: a session call without its CSRF header.
#[catch(403)]
pub fn forbidden(req: &Request<'_>) -> Result<ApiResult, Custom<Html>> {
    if is_api(req) {
        Ok(api_error(
            Status::Forbidden,
            "missing or wrong X-CSRF-Token header (or use basic auth)",
        ))
    } else {
        let snap = FleetSnapshot::default();
        Err(Custom(
            Status::Forbidden,
            render(&MessagePage {
                base: base(&snap, None),
                title: "Forbidden".into(),
                message: "The form expired or came from elsewhere. Reload the page and try again."
                    .into(),
                live: false,
            }),
        ))
    }
}

/// 429 from the auth guard.
#[catch(429)]
pub fn too_many(req: &Request<'_>) -> ApiResult {
    let why = match req.local_cache(|| auth::Denied::TooManyFailures) {
        auth::Denied::Busy => {
            "the gateway is checking too many passwords at once; retry in a few seconds"
        }
        _ => "too many failed logins from your address; wait five minutes",
    };
    api_error(Status::TooManyRequests, why)
}

/// Any other error: JSON for the API, a short page otherwise.
#[catch(default)]
pub fn default_catcher(status: Status, req: &Request<'_>) -> Result<ApiResult, Custom<Html>> {
    let reason = match status.code {
        413 => "the request body is too large".to_owned(),
        422 | 400 => "the request is malformed: check the field names and types".to_owned(),
        404 => format!("no such page: {}", req.uri().path()),
        _ => status.reason().unwrap_or("error").to_lowercase(),
    };
    if is_api(req) {
        Ok(api_error(status, reason))
    } else {
        let snap = FleetSnapshot::default();
        Err(Custom(
            status,
            render(&MessagePage {
                base: base(&snap, None),
                title: status.to_string(),
                message: reason,
                live: false,
            }),
        ))
    }
}
