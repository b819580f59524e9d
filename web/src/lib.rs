//! The gateway's web UI and JSON API (rocket 0.5, TLS).
//!
//! It depends only on plain data and the [`model::Fleet`] trait handed in by
//! the agent, not on AWS: the fleet poller's snapshot, a dispatcher, a scaler.
//! Templates, styles and scripts are compiled into the binary.

pub mod auth;
pub mod charts;
pub mod counts;
pub mod fmt;
pub mod headers;
pub mod metrics;
pub mod model;
pub mod nat;
pub mod pages;
pub mod privsep;
pub mod tally;
pub mod task;
pub mod timing;
pub mod views;
pub mod worker_status;

use std::net::SocketAddr;
use std::sync::Arc;

use rocket::data::{Limits, ToByteUnit};
pub use rocket::Shutdown;
use rocket::{catchers, routes, Build, Rocket};

/// How to serve the UI.
#[derive(Clone)]
pub struct WebConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The UI password (hashed on start; the plain text is not kept).
    pub password: String,
    /// Random bytes for private cookies, at least 32 (kept on disk so sessions survive restarts).
    pub cookie_key: Vec<u8>,
    /// PEM certificate and key; `None` serves plain HTTP (tests only).
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Where the session generation is kept, so sessions ended by a logout
    /// or a new password stay ended across restarts (`None`: in memory).
    pub session_state_file: Option<auth::SessionStore>,
    /// Runs when the last password check of a burst ends (the agent returns
    /// argon2's memory to the system there).
    pub after_hashing: Option<fn()>,
    /// New passwords (the agent sends one when the SSM parameter is rotated):
    /// the next request switches to it and every session ends.
    pub password_updates: Option<tokio::sync::watch::Receiver<String>>,
    /// The scraper's token, which opens `/metrics` and nothing else
    /// (`None`: only the UI's login does).
    pub scrape_token: Option<String>,
    /// New scraper tokens (a rotation in SSM).
    pub scrape_token_updates: Option<tokio::sync::watch::Receiver<String>>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Largest form body accepted.
pub const FORM_LIMIT_KIB: u64 = 16;
/// Largest JSON body accepted.
pub const JSON_LIMIT_KIB: u64 = 64;

/// One line explaining why rocket could not start.
pub fn explain(e: &rocket::Error) -> String {
    match e.kind() {
        rocket::error::ErrorKind::Bind(io) => {
            format!("cannot listen: {io} (is the address in use or the port privileged?)")
        }
        rocket::error::ErrorKind::Io(io) => io.to_string(),
        rocket::error::ErrorKind::Config(f) => format!("bad configuration: {f}"),
        other => other.to_string(),
    }
}

/// The rocket instance serving `fleet`.
pub fn build(config: WebConfig, fleet: Arc<dyn model::Fleet>) -> Rocket<Build> {
    let limits = Limits::default()
        .limit("form", FORM_LIMIT_KIB.kibibytes())
        .limit("data-form", FORM_LIMIT_KIB.kibibytes())
        .limit("json", JSON_LIMIT_KIB.kibibytes())
        .limit("string", FORM_LIMIT_KIB.kibibytes())
        .limit("bytes", FORM_LIMIT_KIB.kibibytes());
    let mut figment = rocket::Config::figment()
        .merge(("address", config.listen.ip()))
        .merge(("port", config.listen.port()))
        .merge((
            "secret_key",
            hex::encode(&config.cookie_key[..config.cookie_key.len().min(32)]),
        ))
        .merge(("limits", limits))
        .merge(("ident", "fossa-gateway"))
        // Rate limits key on the TCP peer; a client header must not pick it.
        .merge(("ip_header", false))
        .merge(("cli_colors", false))
        .merge(("log_level", "critical"))
        .merge(("shutdown.ctrlc", false))
        .merge(("shutdown.signals", Vec::<String>::new()))
        .merge(("shutdown.grace", 2))
        .merge(("shutdown.mercy", 2));
    if let Some((cert, key)) = &config.tls {
        figment = figment.merge(("tls", rocket::config::TlsConfig::from_bytes(cert, key)));
    }
    let auth = auth::Auth::new(
        &config.password,
        config.tls.is_some(),
        config.session_state_file.clone(),
        config.after_hashing,
    );
    if let Some(updates) = config.password_updates.clone() {
        auth.follow(updates);
    }
    let times = Arc::new(timing::RequestTimes::default());
    rocket::custom(figment)
        .attach(headers::SecurityHeaders)
        .attach(timing::RequestTimer(times.clone()))
        .manage(times)
        .manage(auth)
        .manage(auth::scraper::ScrapeToken::new(
            config.scrape_token.as_deref(),
            config.scrape_token_updates.clone(),
        ))
        .manage(pages::FleetState(fleet))
        .manage(pages::overview::SummaryCache::default())
        .mount(
            "/",
            routes![
                pages::login::healthz,
                pages::login::login_page,
                pages::login::login,
                pages::login::logout,
                pages::overview::overview,
                pages::overview::api_overview,
                pages::workers::api_workers,
                pages::workers::worker,
                pages::workers::api_worker,
                pages::workers::api_logs,
                pages::workers::logs_text,
                pages::tasks::tasks,
                pages::tasks::submit,
                pages::tasks::api_tasks,
                pages::export::export,
                pages::tasks::api_submit,
                pages::queue::api_queued,
                pages::queue::api_cancel,
                pages::queue::queued,
                pages::queue::cancel,
                pages::task::task,
                pages::task::api_task,
                pages::fleet::scale,
                pages::fleet::api_scale,
                pages::fleet::autoscale,
                pages::fleet::autoscale_off,
                pages::fleet::api_autoscale,
                pages::fleet::api_set_autoscale,
                pages::fleet::api_autoscale_off,
                pages::fleet::rebuild,
                pages::fleet::api_rebuild,
                pages::events::events,
                pages::events::api_events,
                pages::metrics::metrics,
                pages::assets::css,
                pages::assets::js,
            ],
        )
        .register(
            "/",
            catchers![
                pages::errors::unauthorized,
                pages::errors::forbidden,
                pages::errors::too_many,
                pages::errors::default_catcher
            ],
        )
}
