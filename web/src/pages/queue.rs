//! A queued submission: where it is (`/queue/<id>`, `/api/v1/queue/<id>`) and its cancel.

use askama::Template;
use rocket::form::Form;
use rocket::http::Status;
use rocket::response::status::Custom;
use rocket::response::Redirect;
use rocket::serde::json::Json;
use rocket::{delete, get, post, State};
use serde_json::json;

use super::lines::{queue_line, QueueLine};
use super::{
    api_error, base, not_found_page, render, ApiResult, ApiWriter, Base, FleetState, Html,
};
use crate::auth::User;
use crate::model::QueueState;

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
