//! What an attacker would try against the UI: rotating `X-Real-IP` to dodge
//! the login limit, wrong basic-auth passwords in a row, a burst of them in
//! parallel, logging out by link, reading the stack's name before login; and
//! the headers every answer carries.

use std::sync::Arc;

use fossa_web::model::Fleet;
use rocket::http::{ContentType, Header, Status};
use rocket::local::asynchronous::Client;

mod common;

use common::*;

async fn client() -> Client {
    Client::tracked(fossa_web::build(web_config(), fake_fleet()))
        .await
        .unwrap()
}

async fn login_form(c: &Client, from: &str, password: &str, real_ip: &str) -> Status {
    let csrf = login_csrf(c).await;
    c.post("/login")
        .header(ContentType::Form)
        .header(Header::new("X-Real-IP", real_ip.to_owned()))
        .header(Header::new("X-Forwarded-For", real_ip.to_owned()))
        .remote(from.parse().unwrap())
        .body(format!(
            "username=fossa&password={password}&csrf_token={csrf}"
        ))
        .dispatch()
        .await
        .status()
}

#[rocket::async_test]
async fn a_new_x_real_ip_on_every_guess_does_not_reset_the_limit() {
    let c = client().await;
    let mut answers = Vec::new();
    for i in 0..12 {
        answers.push(login_form(&c, "198.51.100.20:4000", "wrong", &format!("10.9.8.{i}")).await);
    }
    assert!(
        answers[..5].iter().all(|s| *s == Status::Unauthorized),
        "{answers:?}"
    );
    assert!(
        answers[5..].iter().all(|s| *s == Status::TooManyRequests),
        "the TCP peer is counted, not the header: {answers:?}"
    );
}

#[rocket::async_test]
async fn wrong_basic_auth_passwords_count_toward_the_same_limit() {
    let c = client().await;
    let from = "198.51.100.21:4000";
    let mut answers = Vec::new();
    for _ in 0..8 {
        let r = c
            .get("/api/v1/workers")
            .remote(from.parse().unwrap())
            .header(basic("wrong password"))
            .dispatch()
            .await;
        answers.push(r.status());
    }
    assert!(
        answers[..5].iter().all(|s| *s == Status::Unauthorized),
        "{answers:?}"
    );
    assert!(
        answers[5..].iter().all(|s| *s == Status::TooManyRequests),
        "{answers:?}"
    );
    let r = c
        .get("/api/v1/workers")
        .remote(from.parse().unwrap())
        .header(basic(PASSWORD))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::TooManyRequests);
    let body = r.into_string().await.unwrap();
    assert!(body.contains("wait five minutes"), "{body}");
    // Form logins from that address are blocked too.
    assert_eq!(
        login_form(&c, from, "correct+horse", from).await,
        Status::TooManyRequests
    );
}

#[rocket::async_test]
async fn a_parallel_burst_of_guesses_gets_no_more_than_the_limit_checked() {
    let c = Arc::new(client().await);
    let mut all = Vec::new();
    for _ in 0..40 {
        let c = c.clone();
        all.push(rocket::tokio::spawn(async move {
            c.get("/api/v1/workers")
                .remote("198.51.100.22:4000".parse().unwrap())
                .header(basic("wrong password"))
                .dispatch()
                .await
                .status()
        }));
    }
    let mut unauthorized = 0;
    for t in all {
        match t.await.unwrap() {
            Status::Unauthorized => unauthorized += 1,
            Status::TooManyRequests => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        unauthorized <= fossa_web::auth::MAX_FAILURES as usize,
        "{unauthorized} guesses were checked"
    );
}

#[rocket::async_test]
async fn every_answer_carries_the_security_headers() {
    let c = client().await;
    for path in ["/login", "/healthz", "/api/v1/workers", "/static/app.css"] {
        let r = c.get(path).dispatch().await;
        let h = r.headers();
        assert_eq!(
            h.get_one("Content-Security-Policy"),
            Some(fossa_web::headers::CSP),
            "{path}"
        );
        assert!(
            h.get_one("Content-Security-Policy")
                .unwrap()
                .contains("default-src 'self'; frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(h.get_one("Referrer-Policy"), Some("no-referrer"), "{path}");
        let store = h.get_one("Cache-Control");
        if path.starts_with("/static/") {
            assert_ne!(store, Some("no-store"), "assets may be cached");
        } else {
            assert_eq!(store, Some("no-store"), "{path}");
        }
    }
    let r = c
        .get("/api/v1/workers")
        .header(basic(PASSWORD))
        .dispatch()
        .await;
    assert_eq!(r.headers().get_one("Cache-Control"), Some("no-store"));
}

#[rocket::async_test]
async fn the_login_page_says_nothing_about_the_stack() {
    let c = client().await;
    let page = login_page(&c).await;
    let snap = fake_fleet().snapshot();
    assert!(!snap.stack.is_empty());
    let leaks = |text: &str| {
        [
            format!("· {}", snap.stack),
            format!("{} ·", snap.mode),
            format!(">{}<", snap.stack),
        ]
        .into_iter()
        .find(|n| text.contains(n.as_str()))
    };
    assert_eq!(leaks(&page), None, "the stack before login:\n{page}");
    assert!(
        !page.contains(snap.mode.as_str()),
        "the mode before login:\n{page}"
    );
    let missing = c.get("/no/such/page").dispatch().await;
    let text = missing.into_string().await.unwrap();
    assert_eq!(leaks(&text), None, "{text}");
}

#[rocket::async_test]
async fn logout_is_post_only_and_ends_every_session() {
    let c = client().await;
    login(&c).await;
    let first = c.cookies().get("fossa_session").unwrap().value().to_owned();
    // A second session (another browser, say).
    let token = login(&c).await;
    let link = c.get("/logout").dispatch().await;
    assert_eq!(link.status(), Status::NotFound, "no logout by link (GET)");
    assert_eq!(
        c.get("/").dispatch().await.status(),
        Status::Ok,
        "GET /logout changed nothing"
    );
    let r = c
        .post("/logout")
        .header(ContentType::Form)
        .body("csrf_token=forged")
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Forbidden, "logout needs its CSRF token");
    let r = c
        .post("/logout")
        .header(ContentType::Form)
        .body(format!("csrf_token={token}"))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::SeeOther);
    assert_eq!(c.get("/").dispatch().await.status(), Status::SeeOther);
    // The first session's cookie, still valid before, is ended too.
    let old = c
        .get("/")
        .cookie(rocket::http::Cookie::new("fossa_session", first))
        .dispatch()
        .await;
    assert_eq!(
        old.status(),
        Status::SeeOther,
        "an older session survived logout"
    );
}
