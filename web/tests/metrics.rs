//! `/metrics`: behind the API's authentication, and the same figures as the
//! overview's JSON.

use std::sync::Arc;

use rocket::http::Status;
use rocket::local::asynchronous::Client;

mod common;

use common::*;

#[rocket::async_test]
async fn metrics_are_text_promtool_accepts_and_need_the_api_login() {
    let fleet = fake_fleet();
    Arc::make_mut(&mut fleet.snap.lock().unwrap()).workers[1].protected = true;
    let c = Client::tracked(fossa_web::build(web_config(), fleet))
        .await
        .unwrap();
    let r = c.get("/metrics").dispatch().await;
    assert_eq!(r.status(), Status::Unauthorized, "no login, no figures");
    assert!(r.into_string().await.unwrap().contains("curl -u"));
    let r = c.get("/metrics").header(basic("nope")).dispatch().await;
    assert_eq!(r.status(), Status::Unauthorized);

    let r = c.get("/metrics").header(basic(PASSWORD)).dispatch().await;
    assert_eq!(r.status(), Status::Ok);
    assert_eq!(
        r.headers().get_one("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    // promtool checks the text in tests/src/prometheus.rs and tests/tests/local.rs.
    let text = r.into_string().await.unwrap();
    // The same figures as the overview's JSON: one source.
    let o: serde_json::Value = serde_json::from_str(
        &c.get("/api/v1/overview")
            .header(basic(PASSWORD))
            .dispatch()
            .await
            .into_string()
            .await
            .unwrap(),
    )
    .unwrap();
    let sample = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(sample("fossa_task_slots"), o["slots"].as_f64().unwrap());
    assert_eq!(
        sample("fossa_task_slots_busy"),
        o["slots_used"].as_f64().unwrap()
    );
    assert_eq!(
        sample("fossa_tasks_running"),
        o["running_tasks"].as_f64().unwrap()
    );
    assert_eq!(
        sample("fossa_workers_desired"),
        o["desired_workers"].as_f64().unwrap()
    );
    // Added by ARCHITECTURE.md's recipe for a metric: one worker of the
    // three is protected here.
    let protected = o["workers"].as_array().unwrap().iter();
    let protected = protected.filter(|w| w["protected"] == true).count() as f64;
    assert_eq!((sample("fossa_workers_protected"), protected), (1.0, 1.0));
    // The wrong password above, as the refused logins' counter says.
    assert_eq!(
        sample("fossa_logins_refused_total{reason=\"wrong\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(sample("fossa_password_checks{state=\"waiting\"}"), 0.0);
    // Each request counted under its route's template, in a histogram.
    let again = c
        .get("/metrics")
        .header(basic(PASSWORD))
        .dispatch()
        .await
        .into_string()
        .await
        .unwrap();
    let overview = again
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "fossa_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/overview?<page>\"} ",
            )
        })
        .unwrap_or_else(|| panic!("no overview requests counted:\n{again}"));
    assert_eq!(overview, "1");
    assert!(
        again.contains("fossa_http_request_duration_seconds_bucket{method=\"GET\",route=\"/metrics\",le=\"+Inf\"} 3"),
        "three scrapes before this one: 401, 401, 200\n{again}"
    );
    let answering: f64 = text
        .lines()
        .filter(|l| l.starts_with("fossa_workers{state=\"answering\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(answering, o["healthy_workers"].as_f64().unwrap());
}

fn bearer(token: &str) -> rocket::http::Header<'static> {
    rocket::http::Header::new("Authorization", format!("Bearer {token}"))
}

#[rocket::async_test]
async fn the_scrapers_token_opens_metrics_and_nothing_else() {
    let c = Client::tracked(fossa_web::build(web_config(), fake_fleet()))
        .await
        .unwrap();
    let r = c
        .get("/metrics")
        .header(bearer(SCRAPE_TOKEN))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);
    assert!(r.into_string().await.unwrap().contains("fossa_workers{"));
    // The password opens it too; nothing opens it without either.
    let r = c.get("/metrics").header(basic(PASSWORD)).dispatch().await;
    assert_eq!(r.status(), Status::Ok);
    assert_eq!(
        c.get("/metrics").dispatch().await.status(),
        Status::Unauthorized
    );
    // Nothing else: the pages, the API and the actions all refuse the token.
    for path in [
        "/",
        "/api/v1/overview",
        "/api/v1/workers",
        "/tasks",
        "/events",
    ] {
        let r = c.get(path).header(bearer(SCRAPE_TOKEN)).dispatch().await;
        // The API answers 401; a page sends the browser to the login form.
        assert!(
            [Status::Unauthorized, Status::SeeOther].contains(&r.status()),
            "{path}: {}",
            r.status()
        );
    }
    let r = c
        .post("/api/v1/scale")
        .header(bearer(SCRAPE_TOKEN))
        .header(rocket::http::ContentType::JSON)
        .body(r#"{"workers": 0}"#)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Unauthorized, "a scale with the token");
    // The token is not a password either.
    let r = c
        .get("/metrics")
        .header(basic(SCRAPE_TOKEN))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Unauthorized);
    // Wrong tokens count against the address like wrong passwords: once
    // blocked, even the right token gets 429.
    let peer: std::net::SocketAddr = "203.0.113.7:40000".parse().unwrap();
    for _ in 0..fossa_web::auth::MAX_FAILURES {
        let r = c
            .get("/metrics")
            .remote(peer)
            .header(bearer("guess"))
            .dispatch()
            .await;
        assert_eq!(r.status(), Status::Unauthorized);
    }
    let r = c
        .get("/metrics")
        .remote(peer)
        .header(bearer(SCRAPE_TOKEN))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::TooManyRequests);
}
