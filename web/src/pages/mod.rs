//! Pages and the JSON API, one file per page with its `/api/v1/` twin.
//! Every page reads the current snapshot (no network wait). What they share
//! is here: the fleet handle, rendering, the common page fields, the API
//! write guard and JSON body parsing, and the message page.

pub mod assets;
pub mod errors;
pub mod events;
pub mod export;
pub mod fleet;
mod lines;
pub mod login;
pub mod metrics;
pub mod overview;
pub mod queue;
pub mod task;
pub mod tasks;
pub mod workers;

use std::sync::Arc;

use askama::Template;
use rocket::form::FromForm;
use rocket::http::Status;
use rocket::request::Request;
use rocket::response::content::RawHtml;
use rocket::response::status::Custom;
use rocket::serde::json::{Error as JsonError, Json};
use serde_json::{json, Value};

use crate::auth::User;
use crate::model::{Fleet, FleetSnapshot};

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
        mode: known(&snap.mode.to_string()),
        logged_in: user.is_some(),
        csrf: user.map(|u| u.csrf().to_owned()).unwrap_or_default(),
        flash: String::new(),
        flash_kind: "",
    }
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

/// CSRF-checked form with only a token.
#[derive(Debug, FromForm)]
pub struct TokenForm<'r> {
    pub(super) csrf_token: &'r str,
}
