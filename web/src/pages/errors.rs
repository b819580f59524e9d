//! Catchers: 401 to the login form, 403, 429 and the rest, as JSON under
//! `/api/` and as a short page elsewhere.

use rocket::catch;
use rocket::http::Status;
use rocket::request::Request;
use rocket::response::status::Custom;
use rocket::response::Redirect;

use super::{api_error, base, render, ApiResult, Html, MessagePage};
use crate::auth::{self};
use crate::model::FleetSnapshot;

fn is_api(req: &Request<'_>) -> bool {
    let path = req.uri().path();
    path.starts_with("/api/") || path == "/metrics"
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
