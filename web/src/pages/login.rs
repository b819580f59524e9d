//! The only pages without a login: `/healthz` and the login form; and logout.

use askama::Template;
use rocket::form::{Errors, Form, FromForm};
use rocket::http::{CookieJar, Status};
use rocket::response::status::Custom;
use rocket::response::Redirect;
use rocket::serde::json::Json;
use rocket::{get, post, State};
use serde_json::{json, Value};

use super::{base, render, Base, FleetState, Html, TokenForm};
use crate::auth::{self, Auth, User};

/// The only unauthenticated route; says nothing secret: whether the agent
/// is alive, which agent binary answers (its version and SHA-256, which
/// `launch` itself published in SSM, so an upgrade can be followed without
/// a login), and its duties' liveness: the names of those stuck on a step,
/// and how old the fleet's last poll is. A poll older than
/// [`fossa_contract::limits::POLLER_STALE_SECS`] (the poller stopped
/// making progress) answers 503 `stale`; a stuck duty answers 200
/// `degraded`, naming it.
#[get("/healthz")]
pub fn healthz(fleet: &State<FleetState>) -> Custom<Json<Value>> {
    let snap = fleet.0.snapshot();
    let hung: Vec<&str> = snap
        .components
        .iter()
        .filter(|c| c.detail.starts_with("stuck:"))
        .map(|c| c.name.as_str())
        .collect();
    // Before the first poll there is nothing to be late with.
    let age = (snap.taken_at > 0).then(|| (fossa_contract::unix_now() - snap.taken_at).max(0));
    let stale = age.is_some_and(|a| a > fossa_contract::limits::POLLER_STALE_SECS);
    let (code, status) = match (stale, hung.is_empty()) {
        (true, _) => (Status::ServiceUnavailable, "stale"),
        (false, false) => (Status::Ok, "degraded"),
        (false, true) => (Status::Ok, "ok"),
    };
    let mut v = json!({ "status": status, "hung": hung, "poll_age_secs": age });
    if let Some(a) = &snap.agent {
        v["version"] = json!(a.version);
        v["sha256"] = json!(a.sha256);
    }
    Custom(code, Json(v))
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
