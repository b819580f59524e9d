//! The embedded stylesheet and script.

use rocket::get;
use rocket::http::ContentType;

/// Embedded stylesheet.
#[get("/static/app.css")]
pub fn css() -> (ContentType, &'static str) {
    (ContentType::CSS, include_str!("../../assets/app.css"))
}

/// Embedded script.
#[get("/static/app.js")]
pub fn js() -> (ContentType, &'static str) {
    (ContentType::JavaScript, include_str!("../../assets/app.js"))
}
