//! Tasks: the list with the submit form, submitting (form and API), and a
//! task's page with its subtasks grouped under it.

use askama::Template;
use rocket::form::{Errors, Form, FromForm};
use rocket::http::Status;
use rocket::response::status::Custom;
use rocket::response::Redirect;
use rocket::serde::json::{Error as JsonError, Json};
use rocket::{get, post, State};
use serde_json::{json, Value};

use super::{
    api_error, base, json_body, not_found_page, render, ApiResult, ApiWriter, Base, FleetState,
    Html,
};
use crate::auth::User;
use crate::fmt;
use crate::model::{DispatchError, FleetSnapshot, TaskRequest};
use crate::views::{self, TaskRow};

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
        status: r.task.status.clone(),
        worker: r.worker_id.clone(),
        started: fmt::opt_time(r.task.started),
        duration: fmt::duration(r.task.duration()),
        result: fmt::result_short(r.task.results.as_ref()),
        result_full: fmt::result_full(r.task.results.as_ref()),
    }
}

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
