//! The events page and its API twin.

use askama::Template;
use rocket::serde::json::Json;
use rocket::{get, State};
use serde_json::{json, Value};

use super::{base, render, Base, FleetState, Html};
use crate::auth::User;
use crate::fmt;

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
