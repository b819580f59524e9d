//! Tasks: the list with its filters and the queue, and submitting (form and API).

use askama::Template;
use rocket::form::{Errors, Form, FromForm};
use rocket::http::Status;
use rocket::response::status::Custom;
use rocket::response::Redirect;
use rocket::serde::json::{Error as JsonError, Json};
use rocket::{get, post, State};
use serde_json::{json, Value};

use super::lines::{queue_line, task_line, QueueLine, TaskLine};
use super::{api_error, base, json_body, render, ApiResult, ApiWriter, Base, FleetState, Html};
use crate::auth::User;
use crate::model::TaskStatus;
use crate::model::{
    DispatchError, FleetSnapshot, HistoryPage, HistoryQuery, Submitted, TaskRequest,
};

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
pub(super) struct Filters {
    model: Option<String>,
    status: Option<String>,
    before: Option<i64>,
    parents: bool,
}

/// A history filter that is not a name.
#[derive(Debug, thiserror::Error)]
#[error("{field} must be a name of letters, digits and _ (at most 200)")]
pub(super) struct BadFilter {
    field: &'static str,
}

impl Filters {
    pub(super) fn new(
        model: Option<&str>,
        status: Option<&str>,
        before: Option<i64>,
        parents: Option<bool>,
    ) -> Result<Filters, BadFilter> {
        let clean = |field: &'static str, v: Option<&str>| -> Result<Option<String>, BadFilter> {
            match v.map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v)
                    if v.len() <= 200
                        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    Ok(Some(v.to_owned()))
                }
                Some(_) => Err(BadFilter { field }),
            }
        };
        Ok(Filters {
            model: clean("model", model)?,
            status: clean("status", status)?,
            before,
            parents: parents.unwrap_or(false),
        })
    }

    pub(super) fn query(&self, limit: u32) -> HistoryQuery {
        HistoryQuery {
            model: self.model.clone(),
            status: self.status.clone(),
            before: self.before,
            limit,
            parents_only: self.parents,
        }
    }

    /// The filters as a query string (without the cursor).
    pub(super) fn encoded(&self) -> String {
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
            b.flash = e.to_string();
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
        Err(e) => return api_error(Status::BadRequest, e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
