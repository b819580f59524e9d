//! Login, sessions, CSRF and HTTP basic auth.
//!
//! The password is held only as an argon2 hash ([`password`]). A session is
//! a private (encrypted, authenticated) cookie holding its issue time, its
//! generation and the session's CSRF token; it is HttpOnly, Secure (under
//! TLS) and SameSite=Strict. Logging out or changing the password moves the
//! generation on, which ends every older session. The generation is kept on
//! disk with an argon2 hash of the password, so a restart does not bring old
//! sessions back, and a restart with a new password ends them too. Forms carry the CSRF token in
//! a `csrf_token` field; API calls made with the cookie carry it in
//! `X-CSRF-Token`; tokens are compared in constant time. API calls with basic
//! auth need none. Failed logins, by form or basic auth alike, are counted
//! per TCP peer address ([`limiter`]) and answered 429 after
//! [`MAX_FAILURES`] within [`WINDOW`].

pub mod limiter;
pub mod password;
pub mod scraper;
pub mod session_state;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use rocket::http::{Cookie, CookieJar, SameSite, Status};
use rocket::request::{FromRequest, Outcome, Request};
use serde::{Deserialize, Serialize};

use limiter::Limiter;
pub use limiter::{MAX_FAILURES, WINDOW};
use password::Password;
pub use password::{ct_eq, Checked};
use session_state::SessionState;
pub use session_state::SessionStore;

/// The only user.
pub const USER: &str = fossa_contract::names::UI_USER;
/// Session cookie name.
pub const SESSION_COOKIE: &str = "fossa_session";
/// Cookie holding the login form's CSRF token.
pub const LOGIN_CSRF_COOKIE: &str = "fossa_login_csrf";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// What a login attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Right credentials.
    Right,
    /// Wrong credentials (counted).
    Wrong,
    /// Too many failures from this address: 429, nothing checked.
    Blocked,
    /// Too many checks at once: 429, try again in a moment.
    Busy,
}

/// Password, failed-login counters and the session generation.
#[derive(Debug)]
pub struct Auth {
    password: Arc<Password>,
    limiter: Limiter,
    secure_cookies: bool,
    generation: AtomicU64,
    session_file: Option<SessionStore>,
    /// New passwords from the agent (a rotation in SSM), taken at the next request.
    updates: std::sync::Mutex<Option<tokio::sync::watch::Receiver<String>>>,
    /// Logins refused since start: wrong, blocked, busy.
    refused: [AtomicU64; 3],
}

/// What `/metrics` says about logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthStats {
    /// Logins refused since start, for a wrong password or user.
    pub wrong: u64,
    /// ... from an address that failed too often.
    pub blocked: u64,
    /// ... because too many password checks were running or waiting.
    pub busy: u64,
    /// Password checks (argon2) running now.
    pub checks_running: usize,
    /// Password checks waiting for a turn.
    pub checks_waiting: usize,
}

impl Auth {
    /// Hashes `password` (the plain text is not kept). Sessions of another
    /// generation than the one in `session_file` are refused; if the password
    /// is not the one that file last saw, the generation moves on.
    pub fn new(
        password: &str,
        secure_cookies: bool,
        session_file: Option<SessionStore>,
        after_hashing: Option<fn()>,
    ) -> Self {
        let state = session_file
            .as_ref()
            .map(SessionStore::load)
            .unwrap_or_default();
        let changed = state
            .password_hash
            .as_deref()
            .is_some_and(|h| !password::matches(h, password));
        let auth = Auth {
            password: Arc::new(Password::new(password, after_hashing)),
            limiter: Limiter::default(),
            secure_cookies,
            generation: AtomicU64::new(state.generation),
            session_file,
            updates: std::sync::Mutex::new(None),
            refused: Default::default(),
        };
        if changed {
            auth.end_all_sessions();
        } else {
            auth.save(state.generation);
        }
        auth
    }

    /// Takes new passwords from `updates` from now on: the first request after
    /// a new one arrives switches to it and ends every session.
    pub fn follow(&self, updates: tokio::sync::watch::Receiver<String>) {
        *self.updates.lock().expect("lock") = Some(updates);
    }

    /// Applies a password that arrived since the last request.
    fn take_update(&self) {
        let new = {
            let mut guard = self.updates.lock().expect("lock");
            match guard.as_mut() {
                Some(rx) if rx.has_changed().unwrap_or(false) => {
                    Some(rx.borrow_and_update().clone())
                }
                _ => None,
            }
        };
        if let Some(p) = new.filter(|p| !p.is_empty()) {
            self.set_password(&p);
        }
    }

    /// Checks a login from `ip`: blocked addresses are not checked, the
    /// attempt is counted as a failure before it is, and a success forgets
    /// the address.
    pub async fn attempt(&self, ip: Option<IpAddr>, user: &str, password: &str) -> Attempt {
        let a = self.check_attempt(ip, user, password).await;
        let refused = match a {
            Attempt::Right => None,
            Attempt::Wrong => Some(0),
            Attempt::Blocked => Some(1),
            Attempt::Busy => Some(2),
        };
        if let Some(i) = refused {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
        a
    }

    /// Logins refused since start, and the password checks now.
    pub fn stats(&self) -> AuthStats {
        let n = |i: usize| self.refused[i].load(Ordering::Relaxed);
        let (checks_running, checks_waiting) = self.password.checks();
        AuthStats {
            wrong: n(0),
            blocked: n(1),
            busy: n(2),
            checks_running,
            checks_waiting,
        }
    }

    /// [`Auth::attempt`] before it is counted.
    async fn check_attempt(&self, ip: Option<IpAddr>, user: &str, password: &str) -> Attempt {
        self.take_update();
        if self.limiter.blocked(ip) {
            return Attempt::Blocked;
        }
        if user == USER && self.password.remembered(user, password) {
            self.limiter.succeeded(ip);
            return Attempt::Right;
        }
        if !self.limiter.begin(ip) {
            return Attempt::Blocked;
        }
        match self.password.check(user, password, USER).await {
            Checked::Right => {
                self.limiter.succeeded(ip);
                Attempt::Right
            }
            Checked::Wrong => Attempt::Wrong,
            Checked::Busy => Attempt::Busy,
        }
    }

    /// A scraper's token from `ip`, checked by the caller (`right`): counted
    /// as a login is, so a wrong token blocks its address like a wrong
    /// password, and a blocked address is not told whether it was right.
    pub fn token_attempt(&self, ip: Option<IpAddr>, right: bool) -> Attempt {
        let a = if self.limiter.blocked(ip) || !self.limiter.begin(ip) {
            Attempt::Blocked
        } else if right {
            self.limiter.succeeded(ip);
            Attempt::Right
        } else {
            Attempt::Wrong
        };
        match a {
            Attempt::Wrong => self.refused[0].fetch_add(1, Ordering::Relaxed),
            Attempt::Blocked => self.refused[1].fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        a
    }

    /// Whether `ip` has failed too often recently.
    pub fn blocked(&self, ip: Option<IpAddr>) -> bool {
        self.limiter.blocked(ip)
    }

    /// A new password: every session ends, remembered credentials are forgotten.
    pub fn set_password(&self, password: &str) {
        self.password.set(password);
        self.end_all_sessions();
    }

    /// Moves the generation on: every session issued before now is refused.
    pub fn end_all_sessions(&self) {
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.save(g);
    }

    fn save(&self, generation: u64) {
        let Some(store) = &self.session_file else {
            return;
        };
        let state = SessionState {
            generation,
            password_hash: Some(self.password.phc()),
        };
        store.save(&state);
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
            generation: self.generation.load(Ordering::SeqCst),
            csrf: token(),
        };
        jar.add_private(self.cookie(SESSION_COOKIE, serde_json::to_string(&s).expect("json")));
        jar.remove_private(Cookie::build(LOGIN_CSRF_COOKIE).path("/").build());
    }

    /// Ends this session and every other one.
    pub fn logout(&self, jar: &CookieJar<'_>) {
        self.end_all_sessions();
        jar.remove_private(Cookie::build(SESSION_COOKIE).path("/").build());
    }

    /// A fresh CSRF token for the login form, also set as a cookie.
    pub fn login_csrf(&self, jar: &CookieJar<'_>) -> String {
        let t = token();
        jar.add_private(self.cookie(LOGIN_CSRF_COOKIE, t.clone()));
        t
    }

    fn session(&self, jar: &CookieJar<'_>) -> Option<Session> {
        self.take_update();
        let c = jar.get_private(SESSION_COOKIE)?;
        let s = serde_json::from_str::<Session>(c.value()).ok()?;
        let fresh = now() - s.iat < SESSION_TTL.as_secs() as i64;
        (fresh && s.generation == self.generation.load(Ordering::SeqCst)).then_some(s)
    }
}

/// Whether the login form's token matches its cookie.
pub fn login_csrf_ok(jar: &CookieJar<'_>, field: &str) -> bool {
    jar.get_private(LOGIN_CSRF_COOKIE)
        .is_some_and(|c| !field.is_empty() && ct_eq(c.value().as_bytes(), field.as_bytes()))
}

use fossa_contract::unix_now as now;

fn token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    iat: i64,
    #[serde(default)]
    generation: u64,
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
            User::Session { csrf } => {
                given.is_some_and(|g| !csrf.is_empty() && ct_eq(g.as_bytes(), csrf.as_bytes()))
            }
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
    /// Too many password checks at once.
    Busy,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for User {
    type Error = Denied;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(auth) = req.rocket().state::<Auth>() else {
            return Outcome::Error((Status::InternalServerError, Denied::Unauthenticated));
        };
        if let Some(s) = auth.session(req.cookies()) {
            return Outcome::Success(User::Session { csrf: s.csrf });
        }
        if let Some(h) = req.headers().get_one("Authorization") {
            // The TCP peer: rocket's ip_header is off, so no header can pick it.
            let ip = req.remote().map(|a| a.ip());
            let creds = h
                .strip_prefix("Basic ")
                .and_then(decode_base64)
                .and_then(|b| String::from_utf8(b).ok());
            let (user, pass) = creds
                .as_deref()
                .and_then(|c| c.split_once(':'))
                .unwrap_or(("", ""));
            let (status, denied) = match auth.attempt(ip, user, pass).await {
                Attempt::Right => return Outcome::Success(User::Basic),
                Attempt::Wrong => (Status::Unauthorized, Denied::Unauthenticated),
                Attempt::Blocked => (Status::TooManyRequests, Denied::TooManyFailures),
                Attempt::Busy => (Status::TooManyRequests, Denied::Busy),
            };
            // The 429 catcher words its answer from this.
            req.local_cache(|| denied);
            return Outcome::Error((status, denied));
        }
        Outcome::Error((Status::Unauthorized, Denied::Unauthenticated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attempts_are_counted_first_and_a_success_forgets_them() {
        let a = Auth::new("correct horse battery", true, None, None);
        let ip = Some("203.0.113.9".parse().unwrap());
        assert_eq!(a.attempt(ip, USER, "wrong").await, Attempt::Wrong);
        assert_eq!(
            a.attempt(ip, USER, "correct horse battery").await,
            Attempt::Right
        );
        for _ in 0..MAX_FAILURES {
            assert_eq!(a.attempt(ip, USER, "wrong").await, Attempt::Wrong);
        }
        assert_eq!(
            a.attempt(ip, USER, "correct horse battery").await,
            Attempt::Blocked,
            "a blocked address gets no answer about the password"
        );
        assert!(!format!("{a:?}").contains("horse"));
    }

    #[test]
    fn the_generation_survives_a_restart_and_a_new_password_moves_it() {
        let dir = std::env::temp_dir().join(format!("fossa-gen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("session-state");
        let a = Auth::new(
            "correct horse battery",
            true,
            Some(file.clone().into()),
            None,
        );
        let gen = |a: &Auth| a.generation.load(Ordering::SeqCst);
        let first = gen(&a);
        a.end_all_sessions();
        a.set_password("another long password");
        assert_eq!(gen(&a), first + 2);
        let b = Auth::new(
            "another long password",
            true,
            Some(file.clone().into()),
            None,
        );
        assert_eq!(
            gen(&b),
            first + 2,
            "a restart with the same password keeps sessions"
        );
        let c = Auth::new(
            "a third long password",
            true,
            Some(file.clone().into()),
            None,
        );
        assert_eq!(
            gen(&c),
            first + 3,
            "a restart with a new password ends them"
        );
        let text = std::fs::read_to_string(&file).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the owner's only: {mode:o}");
        assert!(
            !text.contains("third"),
            "only the argon2 hash is kept: {text}"
        );
        std::fs::write(&file, "7").unwrap();
        let d = Auth::new(
            "a third long password",
            true,
            Some(file.clone().into()),
            None,
        );
        assert_eq!(gen(&d), 7, "the first format is read");
        // A damaged or deleted file does not bring back generation 0 (the
        // sessions before the first logout): it starts past every count.
        for damage in [Some("{\"generation\": tru"), None] {
            match damage {
                Some(text) => std::fs::write(&file, text).unwrap(),
                None => std::fs::remove_file(&file).unwrap(),
            }
            let e = Auth::new(
                "a third long password",
                true,
                Some(file.clone().into()),
                None,
            );
            assert!(gen(&e) > 1_000_000_000, "{damage:?}: {}", gen(&e));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("Zm9zc2E6cHc=").unwrap(), b"fossa:pw");
        assert!(decode_base64("!!").is_none());
    }
}
