//! `/metrics`: the fleet's figures for Prometheus (`crate::metrics`), behind
//! the same authentication as the API, or the scraper's token.

use rocket::http::ContentType;
use rocket::{get, State};

use super::FleetState;
use crate::auth::scraper::Scraper;

/// The Prometheus text format of the current snapshot.
#[get("/metrics")]
pub fn metrics(
    _who: Scraper,
    fleet: &State<FleetState>,
    auth: &State<crate::auth::Auth>,
    times: &State<std::sync::Arc<crate::timing::RequestTimes>>,
) -> (ContentType, String) {
    let snap = fleet.0.snapshot();
    let mut families = crate::metrics::families(&snap, fossa_contract::unix_now());
    families.extend(crate::metrics::auth_families(&auth.stats()));
    families.push(times.family());
    let text = crate::metrics::render(&families);
    let ct =
        ContentType::parse_flexible(crate::metrics::CONTENT_TYPE).unwrap_or(ContentType::Plain);
    (ct, text)
}
