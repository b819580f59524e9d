//! The scraper's token: a second, read-only credential that opens
//! `/metrics` and nothing else (`Authorization: Bearer <token>`), so a
//! monitoring system never holds the UI password. The agent keeps it in
//! SSM like the password (`metrics-token`) or, in local mode, in the state
//! directory, and sends a rotated one here. Only its SHA-256 is held.
//! Wrong tokens count against the address like wrong passwords.

use std::sync::Mutex;

use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{ct_eq, Attempt, Auth, Denied, User};

/// The token's hash, and where rotated ones arrive.
#[derive(Debug, Default)]
pub struct ScrapeToken {
    digest: Mutex<Option<[u8; 32]>>,
    updates: Mutex<Option<watch::Receiver<String>>>,
}

fn digest(token: &str) -> Option<[u8; 32]> {
    (!token.is_empty()).then(|| Sha256::digest(token.as_bytes()).into())
}

impl ScrapeToken {
    /// `token` (none: only the UI's login opens `/metrics`), then each one
    /// sent on `updates`.
    pub fn new(token: Option<&str>, updates: Option<watch::Receiver<String>>) -> Self {
        ScrapeToken {
            digest: Mutex::new(token.and_then(digest)),
            updates: Mutex::new(updates),
        }
    }

    /// Whether `given` is the token now.
    pub fn matches(&self, given: &str) -> bool {
        let mut d = self.digest.lock().expect("lock");
        if let Some(rx) = self.updates.lock().expect("lock").as_mut() {
            if rx.has_changed().unwrap_or(false) {
                *d = digest(&rx.borrow_and_update());
            }
        }
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        d.as_ref().is_some_and(|d| ct_eq(d, &given))
    }
}

/// Who may read `/metrics`: the scraper with its token, or the UI's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scraper {
    /// `Authorization: Bearer` with the scraper's token.
    Token,
    /// A session or basic auth, as for the API.
    User(User),
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Scraper {
    type Error = Denied;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let bearer = req
            .headers()
            .get_one("Authorization")
            .and_then(|h| h.strip_prefix("Bearer "));
        let Some(given) = bearer else {
            return User::from_request(req).await.map(Scraper::User);
        };
        let (Some(auth), Some(token)) = (
            req.rocket().state::<Auth>(),
            req.rocket().state::<ScrapeToken>(),
        ) else {
            return Outcome::Error((Status::InternalServerError, Denied::Unauthenticated));
        };
        let ip = req.remote().map(|a| a.ip());
        let right = !auth.blocked(ip) && token.matches(given.trim());
        let (status, denied) = match auth.token_attempt(ip, right) {
            Attempt::Right => return Outcome::Success(Scraper::Token),
            Attempt::Blocked => (Status::TooManyRequests, Denied::TooManyFailures),
            _ => (Status::Unauthorized, Denied::Unauthenticated),
        };
        req.local_cache(|| denied);
        Outcome::Error((status, denied))
    }
}
