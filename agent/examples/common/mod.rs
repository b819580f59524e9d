//! What the benchmarks share: a logged-in session and percentiles.

use rocket::local::asynchronous::Client;

/// The `p` percentile (0..=1) of sorted figures.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Logs in with the password `bench-password`; returns the session cookie.
pub async fn login(client: &Client) -> rocket::http::Cookie<'static> {
    let page = client.get("/login").dispatch().await;
    let csrf_cookie = page.cookies().get_private("fossa_login_csrf");
    let html = page.into_string().await.unwrap_or_default();
    let at = html
        .find("name=\"csrf_token\" value=\"")
        .expect("login form")
        + 25;
    let token = &html[at..at + html[at..].find('"').unwrap()];
    let mut req = client
        .post("/login")
        .header(rocket::http::ContentType::Form)
        .body(format!(
            "username=fossa&password=bench-password&csrf_token={token}"
        ));
    if let Some(c) = csrf_cookie {
        req = req.private_cookie(c);
    }
    let r = req.dispatch().await;
    r.cookies().get_private("fossa_session").expect("logged in")
}
