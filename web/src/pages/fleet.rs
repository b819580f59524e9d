//! What changes the fleet: scale and rebuild, as forms and API calls.

use rocket::form::{Errors, Form, FromForm};
use rocket::http::Status;
use rocket::response::status::Custom;
use rocket::serde::json::{Error as JsonError, Json};
use rocket::{delete, get, post, State};
use serde::Deserialize;
use serde_json::json;

use super::{
    api_error, base, json_body, render, ApiResult, ApiWriter, FleetState, Html, TokenForm,
};
use crate::auth::User;
use crate::model::ControlError;
use fossa_contract::config::Autoscale;
use fossa_contract::limits::MAX_WORKERS;

use super::overview::{overview_page, SummaryCache};

/// Scale form fields.
#[derive(Debug, FromForm)]
pub struct ScaleForm<'r> {
    #[field(validate = range(0..=MAX_WORKERS as isize))]
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

/// The overview again, saying the form's CSRF token was missing or wrong.
fn form_expired(fleet: &FleetState, cache: &SummaryCache, user: &User) -> Custom<Html> {
    flash_overview(
        fleet,
        cache,
        user,
        Status::Forbidden,
        false,
        "The form expired (missing or wrong CSRF token). Reload and try again.".into(),
    )
}

/// The overview again, saying what is wrong with the form's fields.
fn bad_form(fleet: &FleetState, cache: &SummaryCache, user: &User, msg: String) -> Custom<Html> {
    flash_overview(fleet, cache, user, Status::BadRequest, false, msg)
}

/// The overview again, with what a scale or rebuild did or why it was not done.
fn flash_outcome(
    fleet: &FleetState,
    cache: &SummaryCache,
    user: &User,
    done: Result<String, ControlError>,
) -> Custom<Html> {
    match done {
        Ok(m) => flash_overview(fleet, cache, user, Status::Ok, true, m),
        Err(e) => flash_overview(fleet, cache, user, status_of(&e), false, e.message()),
    }
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
            return bad_form(
                fleet,
                cache,
                &user,
                format!("workers must be a whole number from 0 to {MAX_WORKERS} ({e})"),
            )
        }
    };
    if !user.csrf_ok(Some(form.csrf_token)) {
        return form_expired(fleet, cache, &user);
    }
    let done = fleet.0.scale(form.workers).await;
    flash_outcome(fleet, cache, &user, done)
}

/// `POST /api/v1/scale` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// Workers wanted, 0 to [`MAX_WORKERS`].
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
    if req.workers > MAX_WORKERS {
        return api_error(
            Status::BadRequest,
            format!("workers must be from 0 to {MAX_WORKERS}"),
        );
    }
    match fleet.0.scale(req.workers).await {
        Ok(m) => Custom(
            Status::Ok,
            Json(json!({ "workers": req.workers, "message": m })),
        ),
        Err(e) => api_error(status_of(&e), e.message()),
    }
}

/// The HTTP status of a failed scale or rebuild.
fn status_of(e: &ControlError) -> Status {
    match e {
        ControlError::Invalid(_) => Status::BadRequest,
        ControlError::Failed(_) => Status::BadGateway,
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
        return form_expired(fleet, cache, &user);
    }
    let done = fleet.0.rebuild().await;
    flash_outcome(fleet, cache, &user, done)
}

/// Rebuilds the image.
#[post("/api/v1/rebuild")]
pub async fn api_rebuild(_writer: ApiWriter, fleet: &State<FleetState>) -> ApiResult {
    match fleet.0.rebuild().await {
        Ok(m) => Custom(Status::Ok, Json(json!({ "message": m }))),
        Err(e) => api_error(status_of(&e), e.message()),
    }
}

/// Autoscale form fields.
#[derive(Debug, FromForm)]
pub struct AutoscaleForm<'r> {
    #[field(validate = range(0..=MAX_WORKERS as isize))]
    min_workers: u32,
    #[field(validate = range(0..=MAX_WORKERS as isize))]
    max_workers: u32,
    #[field(validate = range(1..))]
    idle_window_secs: u64,
    csrf_token: &'r str,
}

/// Turns autoscaling on (or changes its bounds) from the form.
#[post("/autoscale", data = "<form>")]
pub async fn autoscale(
    user: User,
    fleet: &State<FleetState>,
    cache: &State<SummaryCache>,
    form: Result<Form<AutoscaleForm<'_>>, Errors<'_>>,
) -> Custom<Html> {
    let form = match form {
        Ok(f) => f,
        Err(e) => {
            return bad_form(
                fleet,
                cache,
                &user,
                format!(
                    "the minimum and maximum must be whole numbers from 0 to {MAX_WORKERS}, and the idle window at least 1 second ({e})"
                ),
            )
        }
    };
    if !user.csrf_ok(Some(form.csrf_token)) {
        return form_expired(fleet, cache, &user);
    }
    let done = fleet
        .0
        .set_autoscale(Some(Autoscale {
            min_workers: form.min_workers,
            max_workers: form.max_workers,
            idle_window_secs: form.idle_window_secs,
        }))
        .await;
    flash_outcome(fleet, cache, &user, done)
}

/// Turns autoscaling off from the form: the current count stays.
#[post("/autoscale/off", data = "<form>")]
pub async fn autoscale_off(
    user: User,
    fleet: &State<FleetState>,
    cache: &State<SummaryCache>,
    form: Form<TokenForm<'_>>,
) -> Custom<Html> {
    if !user.csrf_ok(Some(form.csrf_token)) {
        return form_expired(fleet, cache, &user);
    }
    let done = fleet.0.set_autoscale(None).await;
    flash_outcome(fleet, cache, &user, done)
}

/// Autoscaling's bounds (`{"autoscale": null}` when off).
#[get("/api/v1/autoscale")]
pub async fn api_autoscale(_user: User, fleet: &State<FleetState>) -> ApiResult {
    Custom(
        Status::Ok,
        Json(json!({ "autoscale": fleet.0.snapshot().autoscale })),
    )
}

/// Turns autoscaling on or sets its bounds: `{"min_workers": 0,
/// "max_workers": 8, "idle_window_secs": 900}` (the window may be left out).
#[post("/api/v1/autoscale", data = "<body>")]
pub async fn api_set_autoscale(
    _writer: ApiWriter,
    fleet: &State<FleetState>,
    body: Result<Json<Autoscale>, JsonError<'_>>,
) -> ApiResult {
    let a = match json_body(body) {
        Ok(a) => a,
        Err(e) => return e,
    };
    match fleet.0.set_autoscale(Some(a)).await {
        Ok(m) => Custom(Status::Ok, Json(json!({ "autoscale": a, "message": m }))),
        Err(e) => api_error(status_of(&e), e.message()),
    }
}

/// Turns autoscaling off; the current count stays.
#[delete("/api/v1/autoscale")]
pub async fn api_autoscale_off(_writer: ApiWriter, fleet: &State<FleetState>) -> ApiResult {
    match fleet.0.set_autoscale(None).await {
        Ok(m) => Custom(Status::Ok, Json(json!({ "autoscale": null, "message": m }))),
        Err(e) => api_error(status_of(&e), e.message()),
    }
}
