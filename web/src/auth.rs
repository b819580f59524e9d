//! Login, sessions, CSRF and HTTP basic auth.
//!
//! The password is held only as an argon2 hash. A session is a private
//! (encrypted, authenticated) cookie holding its issue time and the session's
//! CSRF token; it is HttpOnly, Secure (under TLS) and SameSite=Strict. Forms
//! carry the token in a `csrf_token` field; API calls made with the cookie
//! carry it in `X-CSRF-Token`. API calls with basic auth need no token.
//! Failed logins are counted per client address and answered 429 after
//! [`MAX_FAILURES`] within [`WINDOW`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distr::{Alphanumeric, SampleString};
use rocket::http::{Cookie, CookieJar, SameSite, Status};
use rocket::request::{FromRequest, Outcome, Request};
use serde::{Deserialize, Serialize};

/// The only user.
pub const USER: &str = "fossa";
/// Session cookie name.
pub const SESSION_COOKIE: &str = "fossa_session";
/// Cookie holding the login form's CSRF token.
pub const LOGIN_CSRF_COOKIE: &str = "fossa_login_csrf";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins allowed per address within [`WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window failed logins are counted in.
pub const WINDOW: Duration = Duration::from_secs(300);

/// Password hash and failed-login counters.
#[derive(Debug)]
pub struct Auth {
    hash: String,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    secure_cookies: bool,
}

impl Auth {
    /// Hashes `password` (the plain text is not kept).
    pub fn new(password: &str, secure_cookies: bool) -> Self {
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .expect("argon2 hashes any password")
            .to_string();
        Auth {
            hash,
            failures: Mutex::new(HashMap::new()),
            secure_cookies,
        }
    }

    /// Whether `user`/`password` are right.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let parsed = PasswordHash::new(&self.hash).expect("own hash parses");
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && user == USER
    }

    /// Whether `ip` has failed too often recently.
    pub fn blocked(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return false };
        let mut f = self.failures.lock().expect("lock");
        match f.get(&ip) {
            Some((_, first)) if first.elapsed() > WINDOW => {
                f.remove(&ip);
                false
            }
            Some((n, _)) => *n >= MAX_FAILURES,
            None => false,
        }
    }

    /// Counts a failure for `ip`.
    pub fn failed(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            let mut f = self.failures.lock().expect("lock");
            let e = f.entry(ip).or_insert((0, Instant::now()));
            e.0 += 1;
        }
    }

    /// Forgets failures of `ip` after a success.
    pub fn succeeded(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.failures.lock().expect("lock").remove(&ip);
        }
    }

    fn cookie(&self, name: &'static str, value: String) -> Cookie<'static> {
        Cookie::build((name, value))
            .http_only(true)
            .secure(self.secure_cookies)
            .same_site(SameSite::Strict)
            .path("/")
            .build()
    }

    /// Starts a session.
    pub fn login(&self, jar: &CookieJar<'_>) {
        let s = Session {
            iat: now(),
            csrf: token(),
        };
        jar.add_private(self.cookie(SESSION_COOKIE, serde_json::to_string(&s).expect("json")));
        jar.remove_private(Cookie::build(LOGIN_CSRF_COOKIE).path("/").build());
    }

    /// A fresh CSRF token for the login form, also set as a cookie.
    pub fn login_csrf(&self, jar: &CookieJar<'_>) -> String {
        let t = token();
        jar.add_private(self.cookie(LOGIN_CSRF_COOKIE, t.clone()));
        t
    }
}

/// Ends the session.
pub fn logout(jar: &CookieJar<'_>) {
    jar.remove_private(Cookie::build(SESSION_COOKIE).path("/").build());
}

/// Whether the login form's token matches its cookie.
pub fn login_csrf_ok(jar: &CookieJar<'_>, field: &str) -> bool {
    jar.get_private(LOGIN_CSRF_COOKIE)
        .is_some_and(|c| !field.is_empty() && c.value() == field)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    iat: i64,
    csrf: String,
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    /// A browser session; forms and cookie-authenticated API calls must carry this token.
    Session {
        /// The session's CSRF token.
        csrf: String,
    },
    /// HTTP basic auth (scripts); no CSRF token needed.
    Basic,
}

impl User {
    /// The token forms must carry (empty for basic auth).
    pub fn csrf(&self) -> &str {
        match self {
            User::Session { csrf } => csrf,
            User::Basic => "",
        }
    }

    /// Whether a state-changing request carries the right token.
    pub fn csrf_ok(&self, given: Option<&str>) -> bool {
        match self {
            User::Basic => true,
            User::Session { csrf } => given == Some(csrf.as_str()),
        }
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.trim().trim_end_matches('=').bytes() {
        buf = (buf << 6) | T.iter().position(|t| *t == c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

/// Why a request is not authenticated: 401, or 429 when the address is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No or bad credentials.
    Unauthenticated,
    /// Too many failures from this address.
    TooManyFailures,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for User {
    type Error = Denied;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(auth) = req.rocket().state::<Auth>() else {
            return Outcome::Error((Status::InternalServerError, Denied::Unauthenticated));
        };
        if let Some(c) = req.cookies().get_private(SESSION_COOKIE) {
            if let Ok(s) = serde_json::from_str::<Session>(c.value()) {
                if now() - s.iat < SESSION_TTL.as_secs() as i64 {
                    return Outcome::Success(User::Session { csrf: s.csrf });
                }
            }
        }
        if let Some(h) = req.headers().get_one("Authorization") {
            let ip = req.client_ip();
            if auth.blocked(ip) {
                return Outcome::Error((Status::TooManyRequests, Denied::TooManyFailures));
            }
            let creds = h
                .strip_prefix("Basic ")
                .and_then(decode_base64)
                .and_then(|b| String::from_utf8(b).ok());
            if let Some((user, pass)) = creds.as_deref().and_then(|c| c.split_once(':')) {
                let (user, pass) = (user.to_owned(), pass.to_owned());
                let ok = rocket::tokio::task::block_in_place(|| auth.verify(&user, &pass));
                if ok {
                    auth.succeeded(ip);
                    return Outcome::Success(User::Basic);
                }
            }
            auth.failed(ip);
        }
        Outcome::Error((Status::Unauthorized, Denied::Unauthenticated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_right_user_and_password() {
        let a = Auth::new("s3cret", true);
        assert!(a.verify("fossa", "s3cret"));
        assert!(!a.verify("fossa", "S3cret"));
        assert!(!a.verify("admin", "s3cret"));
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn blocks_after_repeated_failures() {
        let a = Auth::new("x", true);
        let ip = Some("203.0.113.9".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert!(!a.blocked(ip));
            a.failed(ip);
        }
        assert!(a.blocked(ip));
        assert!(!a.blocked(Some("203.0.113.10".parse().unwrap())));
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("Zm9zc2E6cHc=").unwrap(), b"fossa:pw");
        assert!(decode_base64("!!").is_none());
    }
}
