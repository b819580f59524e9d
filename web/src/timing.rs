//! How long the UI's requests take, by route: a fairing notes when each
//! request came and counts its duration when the response leaves, under the
//! route's template (`/tasks/<id>`, never the path itself, so the series
//! stay few), for `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::{Data, Request, Response};

use crate::metrics::{Family, Histogram};

/// Durations by method and route template.
#[derive(Debug, Default)]
pub struct RequestTimes(Mutex<BTreeMap<(String, String), Histogram>>);

impl RequestTimes {
    fn observe(&self, method: String, route: String, secs: f64) {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        m.entry((method, route)).or_default().observe(secs);
    }

    /// The family `/metrics` serves.
    pub fn family(&self) -> Family {
        let m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut f = Family::histogram(
            "fossa_http_request_duration_seconds",
            "How long the UI and API took to answer, by method and route.",
        );
        for ((method, route), h) in m.iter() {
            f = f.observed(&[("method", method), ("route", route)], h);
        }
        f
    }
}

/// The fairing that fills [`RequestTimes`].
#[derive(Debug, Clone)]
pub struct RequestTimer(pub Arc<RequestTimes>);

/// When this request came (kept in the request's local cache).
struct Started(Option<Instant>);

#[rocket::async_trait]
impl Fairing for RequestTimer {
    fn info(&self) -> Info {
        Info {
            name: "request timer",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        req.local_cache(|| Started(Some(Instant::now())));
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, _: &mut Response<'r>) {
        let Some(started) = req.local_cache(|| Started(None)).0 else {
            return;
        };
        let route = req
            .route()
            .map_or_else(|| "unmatched".to_owned(), |r| r.uri.to_string());
        self.0.observe(
            req.method().to_string(),
            route,
            started.elapsed().as_secs_f64(),
        );
    }
}
