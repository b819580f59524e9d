//! What the benchmarks share: a logged-in session and percentiles.

use rocket::local::asynchronous::Client;

/// Times `n` refreshes of `fleet`, in milliseconds, sorted.
pub async fn timed_refreshes(fleet: &fossa_agent::fleet::FleetModel, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        fleet.refresh().await;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

/// The UI's configuration the benches serve with: loopback, no TLS, the
/// password `bench-password`, and `scrape_token` for `/metrics`.
pub fn web_config(scrape_token: Option<&str>) -> fossa_web::WebConfig {
    fossa_web::WebConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        password: "bench-password".into(),
        cookie_key: vec![1; 64],
        tls: None,
        session_state_file: None,
        after_hashing: None,
        password_updates: None,
        scrape_token: scrape_token.map(str::to_owned),
        scrape_token_updates: None,
    }
}

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
