//! Security headers on every response: a content security policy that allows
//! only the gateway's own scripts and styles and no framing, no referrer, no
//! MIME sniffing, and `no-store` on everything but the embedded assets (the
//! pages and the API hold the fleet's data).

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::Header;
use rocket::{Request, Response};

/// The content security policy.
pub const CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The fairing that sets them.
#[derive(Debug, Clone, Copy)]
pub struct SecurityHeaders;

#[rocket::async_trait]
impl Fairing for SecurityHeaders {
    fn info(&self) -> Info {
        Info {
            name: "security headers",
            kind: Kind::Response,
        }
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        res.set_header(Header::new("Content-Security-Policy", CSP));
        res.set_header(Header::new("Referrer-Policy", "no-referrer"));
        res.set_header(Header::new("X-Content-Type-Options", "nosniff"));
        res.set_header(Header::new("X-Frame-Options", "DENY"));
        if !req.uri().path().starts_with("/static/") {
            res.set_header(Header::new("Cache-Control", "no-store"));
        }
    }
}
