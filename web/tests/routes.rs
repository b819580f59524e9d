//! Route tests with rocket's local client over an in-memory fleet: login,
//! sessions, CSRF, basic auth, rate limiting, limits, escaping and every page.

use std::sync::Arc;

use fossa_web::model::*;
use rocket::http::{ContentType, Header, Status};
use rocket::local::asynchronous::{Client, LocalResponse};
use serde_json::{json, Value};

mod common;

use common::*;

async fn client() -> (Client, Arc<FakeFleet>) {
    let fleet = fake_fleet();
    (
        Client::tracked(fossa_web::build(web_config(), fleet.clone()))
            .await
            .unwrap(),
        fleet,
    )
}

/// The page at `path`, as the logged-in client gets it.
async fn html_of(c: &Client, path: &str) -> String {
    c.get(path).dispatch().await.into_string().await.unwrap()
}

async fn json_of(r: LocalResponse<'_>) -> Value {
    serde_json::from_str(&r.into_string().await.unwrap()).unwrap()
}

#[rocket::async_test]
async fn healthz_is_open_and_says_only_which_agent_answers_and_its_liveness() {
    let fleet = fake_fleet();
    let set = |f: &dyn Fn(&mut FleetSnapshot)| f(Arc::make_mut(&mut fleet.snap.lock().unwrap()));
    set(&|s| s.taken_at = fossa_contract::unix_now() - 1);
    let c = Client::tracked(fossa_web::build(web_config(), fleet.clone()))
        .await
        .unwrap();
    let r = c.get("/healthz").dispatch().await;
    assert_eq!(r.status(), Status::Ok);
    let v = json_of(r).await;
    assert_eq!(v["status"], "ok", "{v}");
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert!(
        keys.iter().all(|k| {
            ["status", "version", "sha256", "hung", "poll_age_secs"].contains(&k.as_str())
        }),
        "{v}"
    );
    assert!(v["sha256"].is_string() && v["version"].is_string(), "{v}");
    // A duty stuck on a step: still 200, degraded, naming it.
    set(&|s| s.components[2].detail = "stuck: no result for 2700 s".into());
    let v = json_of(c.get("/healthz").dispatch().await).await;
    assert_eq!(
        (v["status"].as_str(), &v["hung"]),
        (Some("degraded"), &serde_json::json!(["image"]))
    );
    // The poller frozen: 503.
    set(&|s| s.taken_at = fossa_contract::unix_now() - 600);
    let r = c.get("/healthz").dispatch().await;
    assert_eq!(r.status(), Status::ServiceUnavailable);
    assert_eq!(json_of(r).await["status"], "stale");
}

#[rocket::async_test]
async fn pages_need_a_login_and_the_api_says_401() {
    let (c, _) = client().await;
    for page in ["/", "/tasks", "/tasks/parent1", "/workers/w1", "/events"] {
        let r = c.get(page).dispatch().await;
        assert_eq!(r.status(), Status::SeeOther, "{page}");
        assert_eq!(r.headers().get_one("Location"), Some("/login"));
    }
    for api in [
        "/api/v1/workers",
        "/api/v1/tasks",
        "/api/v1/overview",
        "/api/v1/events",
        "/metrics",
    ] {
        let r = c.get(api).dispatch().await;
        assert_eq!(r.status(), Status::Unauthorized, "{api}");
        assert!(
            r.headers().get_one("WWW-Authenticate").is_none(),
            "no browser prompt"
        );
        assert!(json_of(r).await["error"]
            .as_str()
            .unwrap()
            .contains("curl -u"));
    }
    let r = c
        .post("/api/v1/tasks")
        .header(ContentType::JSON)
        .body(r#"{"model_class":"QuickEtl"}"#)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Unauthorized);
}

#[rocket::async_test]
async fn login_sets_a_strict_secure_http_only_session_and_logout_ends_it() {
    let (c, _) = client().await;
    let page = login_page(&c).await;
    assert!(page.contains("name=\"username\"") && page.contains("name=\"password\""));
    let csrf = field(&page, "csrf_token");
    let r = form_post(
        &c,
        "/login",
        format!("username=fossa&password=correct+horse&csrf_token={csrf}"),
    )
    .await;
    assert_eq!(r.status(), Status::SeeOther);
    let set = r
        .headers()
        .get("Set-Cookie")
        .find(|h| h.starts_with("fossa_session="))
        .unwrap()
        .to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set.contains(flag), "{set}");
    }
    let overview = c.get("/").dispatch().await;
    assert_eq!(overview.status(), Status::Ok);
    let html = overview.into_string().await.unwrap();
    let token = field(&html, "csrf_token");
    let r = form_post(&c, "/logout", format!("csrf_token={token}")).await;
    assert_eq!(r.status(), Status::SeeOther);
    assert_eq!(c.get("/").dispatch().await.status(), Status::SeeOther);
}

#[rocket::async_test]
async fn login_needs_its_csrf_token_and_failures_are_rate_limited() {
    let (c, _) = client().await;
    let r = form_post(
        &c,
        "/login",
        "username=fossa&password=correct+horse&csrf_token=forged",
    )
    .await;
    assert_eq!(r.status(), Status::Forbidden);
    let from = "198.51.100.7:4000".parse().unwrap();
    for _ in 0..5 {
        let csrf = login_csrf(&c).await;
        let r = c
            .post("/login")
            .header(ContentType::Form)
            .remote(from)
            .body(format!("username=fossa&password=wrong&csrf_token={csrf}"))
            .dispatch()
            .await;
        assert_eq!(r.status(), Status::Unauthorized);
    }
    let csrf = login_csrf(&c).await;
    let r = c
        .post("/login")
        .header(ContentType::Form)
        .remote(from)
        .body(format!(
            "username=fossa&password=correct+horse&csrf_token={csrf}"
        ))
        .dispatch()
        .await;
    assert_eq!(
        r.status(),
        Status::TooManyRequests,
        "blocked even with the right password"
    );
    let r = c
        .get("/api/v1/workers")
        .remote(from)
        .header(basic(PASSWORD))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::TooManyRequests);
    let r = c
        .get("/api/v1/workers")
        .remote("198.51.100.8:4000".parse().unwrap())
        .header(basic(PASSWORD))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok, "another address is not affected");
}

#[rocket::async_test]
async fn basic_auth_works_for_the_api_without_csrf() {
    let (c, fleet) = client().await;
    let r = c
        .get("/api/v1/workers")
        .header(basic("nope"))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Unauthorized);
    let r = c
        .get("/api/v1/workers")
        .header(basic(PASSWORD))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);
    let v = json_of(r).await;
    assert_eq!(v["workers"].as_array().unwrap().len(), 3);
    assert!(v["workers"][0]["address"]
        .as_str()
        .unwrap()
        .ends_with(":2345"));
    let r = api_post(
        &c,
        "/api/v1/tasks",
        r#"{"model_class":"QuickEtl","method_kwargs":{"a":1}}"#,
    )
    .await;
    assert_eq!(r.status(), Status::Created);
    let v = json_of(r).await;
    assert_eq!(v["task_id"], "newtask");
    assert_eq!(v["links"]["page"], "/tasks/newtask");
    assert_eq!(
        fleet.submitted.lock().unwrap()[0].method_kwargs,
        json!({"a": 1})
    );
    let r = api_post(&c, "/api/v1/scale", r#"{"workers":7}"#).await;
    assert_eq!(r.status(), Status::Ok);
    assert_eq!(fleet.snapshot().desired_workers, 7);
}

#[rocket::async_test]
async fn session_api_calls_need_the_csrf_header() {
    let (c, fleet) = client().await;
    let token = login(&c).await;
    let r = c
        .post("/api/v1/tasks")
        .header(ContentType::JSON)
        .body(r#"{"model_class":"QuickEtl"}"#)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Forbidden);
    let r = c
        .post("/api/v1/tasks")
        .header(ContentType::JSON)
        .header(Header::new("X-CSRF-Token", token))
        .body(r#"{"model_class":"QuickEtl"}"#)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Created);
    assert_eq!(fleet.submitted.lock().unwrap().len(), 1);
}

#[rocket::async_test]
async fn bad_bodies_get_clear_4xx_answers() {
    let (c, fleet) = client().await;
    let cases: &[(&str, Status, &str)] = &[
        ("{", Status::BadRequest, "invalid JSON"),
        (r#"{"model_class": 5}"#, Status::BadRequest, "invalid type"),
        (
            r#"{"method_kwargs": {}}"#,
            Status::BadRequest,
            "model_class",
        ),
        (
            r#"{"model_class":"QuickEtl","kwargs":{}}"#,
            Status::BadRequest,
            "kwargs",
        ),
        (
            r#"{"model_class":"QuickEtl","method_kwargs":[1]}"#,
            Status::BadRequest,
            "method_kwargs",
        ),
        (
            r#"{"model_class":"Nope"}"#,
            Status::BadRequest,
            "choose one of",
        ),
        (
            r#"{"model_class":"QuickEtl","method":"go; rm -rf /"}"#,
            Status::BadRequest,
            "method",
        ),
    ];
    for (body, status, needle) in cases {
        let r = api_post(&c, "/api/v1/tasks", *body).await;
        assert_eq!(r.status(), *status, "{body}");
        let v = json_of(r).await;
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    let huge = format!(
        r#"{{"model_class":"QuickEtl","method_kwargs":{{"x":"{}"}}}}"#,
        "a".repeat(200 * 1024)
    );
    let r = api_post(&c, "/api/v1/tasks", huge).await;
    assert_eq!(r.status(), Status::PayloadTooLarge);
    for body in [
        r#"{"workers":-1}"#,
        r#"{"workers":5000}"#,
        r#"{"workers":"3"}"#,
    ] {
        let r = api_post(&c, "/api/v1/scale", body).await;
        assert_eq!(r.status(), Status::BadRequest, "{body}");
    }
    for id in ["..%2F..%2Fetc%2Fpasswd", "%3Cscript%3E", "a%20b"] {
        let r = c
            .get(format!("/api/v1/tasks/{id}"))
            .header(basic(PASSWORD))
            .dispatch()
            .await;
        assert_eq!(r.status(), Status::BadRequest, "{id}");
    }
    assert!(
        fleet.submitted.lock().unwrap().is_empty(),
        "nothing bad was dispatched"
    );
}

#[rocket::async_test]
async fn forms_check_csrf_and_fields() {
    let (c, fleet) = client().await;
    let token = login(&c).await;
    let r = form_post(&c, "/tasks", "model_class=QuickEtl&csrf_token=wrong").await;
    assert_eq!(r.status(), Status::Forbidden);
    let r = form_post(
        &c,
        "/tasks",
        format!("model_class=QuickEtl&method_kwargs=%7Bbad&csrf_token={token}"),
    )
    .await;
    assert_eq!(r.status(), Status::BadRequest);
    let html = r.into_string().await.unwrap();
    assert!(
        html.contains("method_kwargs is not valid JSON"),
        "the error names the field"
    );
    assert!(html.contains("{bad"), "what the user typed is kept");
    let r = form_post(&c, "/tasks", format!("model_class=QuickEtl&method=go&method_kwargs=%7B%22n%22%3A2%7D&resolver_context=&model_construction_kwargs=%7B%7D&csrf_token={token}")).await;
    assert_eq!(r.status(), Status::SeeOther);
    assert_eq!(r.headers().get_one("Location"), Some("/tasks/newtask"));
    assert_eq!(
        fleet.submitted.lock().unwrap()[0].method_kwargs,
        json!({"n": 2})
    );
    let r = form_post(&c, "/scale", format!("workers=abc&csrf_token={token}")).await;
    assert_eq!(r.status(), Status::BadRequest);
    let r = form_post(&c, "/scale", format!("workers=5&csrf_token={token}")).await;
    assert_eq!(r.status(), Status::Ok);
    assert_eq!(fleet.snapshot().desired_workers, 5);
    let big = format!(
        "model_class=QuickEtl&method_kwargs={}&csrf_token={token}",
        "a".repeat(64 * 1024)
    );
    let r = form_post(&c, "/tasks", big).await;
    assert_eq!(r.status(), Status::PayloadTooLarge);
}

#[rocket::async_test]
async fn every_page_renders_and_escapes_what_it_shows() {
    let (c, _) = client().await;
    login(&c).await;
    for page in [
        "/",
        "/tasks",
        "/tasks/parent1",
        "/tasks/pool:1::amq.q",
        "/workers/w1",
        "/events",
    ] {
        let r = c.get(page).dispatch().await;
        assert_eq!(r.status(), Status::Ok, "{page}");
        let html = r.into_string().await.unwrap();
        assert!(
            !html.contains("<script>alert"),
            "{page} shows raw HTML from data"
        );
        assert!(!html.contains("<b>boom"), "{page}");
        assert!(
            !html.contains("https://") && !html.contains("http://"),
            "{page}: no external assets"
        );
        assert!(!html.contains(PASSWORD));
    }
    let overview = c.get("/").dispatch().await.into_string().await.unwrap();
    assert!(
        overview.contains("w3&#60;script&#62;") || overview.contains("w3&lt;script&gt;"),
        "escaped worker id"
    );
    assert!(overview.contains("timeout"));
    for line in [
        r#"data-duty="cluster"><b>Cluster</b> waiting for the worker image"#,
        r#"class="comp ok" data-duty="nat"><b>NAT</b> NAT verified"#,
    ] {
        assert!(overview.contains(line), "{line}");
    }
    let parent = html_of(&c, "/tasks/parent1").await;
    assert!(
        parent.contains("pool:0") && parent.contains("pool:1"),
        "subtasks grouped under the parent"
    );
    let sub = c
        .get("/tasks/pool:1::amq.q")
        .dispatch()
        .await
        .into_string()
        .await
        .unwrap();
    assert!(sub.contains("Spawned by") && sub.contains("parent1"));
    assert_eq!(
        c.get("/tasks/unknown").dispatch().await.status(),
        Status::NotFound
    );
    assert_eq!(
        c.get("/workers/unknown").dispatch().await.status(),
        Status::NotFound
    );
    let css = c.get("/static/app.css").dispatch().await;
    assert_eq!(css.content_type(), Some(ContentType::CSS));
}

#[rocket::async_test]
async fn a_wide_task_shows_the_output_of_its_first_workers_and_names_the_rest() {
    let (c, fleet) = client().await;
    login(&c).await;
    let extra = fossa_contract::limits::TASK_LOG_WORKERS + 3;
    let mut s = snapshot();
    s.workers = std::iter::once(worker(
        "w1",
        vec![task("wide", "WideEtl", "complete", 100, Some(200))],
    ))
    .chain((0..extra).map(|i| {
        worker(
            &format!("v{i}"),
            vec![task(
                &format!("wp:{i}::amq.q"),
                "WideEtl",
                "complete",
                110,
                Some(120),
            )],
        )
    }))
    .collect();
    *fleet.snap.lock().unwrap() = Arc::new(s);
    let html = html_of(&c, "/tasks/wide").await;
    assert!(
        html.contains(&format!("{extra} subtasks on {extra} worker(s)")),
        "{html}"
    );
    assert_eq!(
        html.matches("<details class=\"log\"").count(),
        fossa_contract::limits::TASK_LOG_WORKERS,
        "{html}"
    );
    assert!(
        html.contains("The output of 4 more worker(s) is on their own pages"),
        "the task's own worker and 11 of its subtasks' shown, 4 named: {html}"
    );
    assert!(
        html.contains("<a href=\"/workers/w1\">w1</a> · 0 lines"),
        "its own worker first"
    );
    // A finished task's window is closed (it can be kept long); a running
    // one's stays open, so every refresh asks the same and can share a read.
    let reads = std::mem::take(&mut *fleet.log_reads.lock().unwrap());
    assert_eq!(reads.len(), fossa_contract::limits::TASK_LOG_WORKERS);
    assert!(
        reads
            .iter()
            .all(|(_, q)| q.since_ms == Some(99_000) && q.until_ms == Some(201_000)),
        "{reads:?}"
    );
    let mut s = (**fleet.snap.lock().unwrap()).clone();
    s.workers[0] = worker("w1", vec![task("wide", "WideEtl", "running", 100, None)]);
    *fleet.snap.lock().unwrap() = Arc::new(s);
    html_of(&c, "/tasks/wide").await;
    html_of(&c, "/tasks/wide").await;
    let reads = std::mem::take(&mut *fleet.log_reads.lock().unwrap());
    assert!(
        reads
            .iter()
            .all(|(_, q)| q.until_ms.is_none() && q == &reads[0].1),
        "{reads:?}"
    );
}

#[rocket::async_test]
async fn json_twins_answer_for_each_page() {
    let (c, _) = client().await;
    let v = json_of(
        c.get("/api/v1/overview")
            .header(basic(PASSWORD))
            .dispatch()
            .await,
    )
    .await;
    assert_eq!(v["running_workers"], 3);
    assert_eq!(v["healthy_workers"], 2);
    assert_eq!(v["cost"]["nat_gateway_hourly"], 0.045);
    // Every duty's component, under its name, the cluster too.
    for (duty, ok) in [
        ("broker", true),
        ("nat", true),
        ("image", false),
        ("cluster", false),
    ] {
        assert_eq!(v[duty]["ok"], ok, "{duty}: {v}");
    }
    assert_eq!(v["cluster"]["detail"], "waiting for the worker image");
    assert_eq!(v["duties"][3]["name"], "cluster", "in start order");
    assert_eq!(v["agent"]["version"], "9.9.9");
    let v = json_of(
        c.get("/api/v1/tasks/parent1")
            .header(basic(PASSWORD))
            .dispatch()
            .await,
    )
    .await;
    assert_eq!(v["groups"][0]["subtasks"].as_array().unwrap().len(), 2);
    assert_eq!(v["groups"][0]["certain"], true);
    let v = json_of(
        c.get("/api/v1/workers/w2")
            .header(basic(PASSWORD))
            .dispatch()
            .await,
    )
    .await;
    assert_eq!(v["node"]["available_processing_capacity"], 3);
    let v = json_of(
        c.get("/api/v1/events")
            .header(basic(PASSWORD))
            .dispatch()
            .await,
    )
    .await;
    assert_eq!(v["events"][0]["source"], "nat");
}

#[rocket::async_test]
async fn many_workers_are_paged_on_the_overview_and_in_the_api() {
    let (c, fleet) = client().await;
    login(&c).await;
    let mut snap = snapshot();
    snap.workers = (1..=250)
        .map(|i| worker(&format!("w{i:03}"), vec![]))
        .collect();
    *fleet.snap.lock().unwrap() = Arc::new(snap);
    let page = |n: &str| {
        let c = &c;
        let path = format!("/{n}");
        async move { c.get(path).dispatch().await.into_string().await.unwrap() }
    };
    let first = page("").await;
    assert!(first.contains("w001") && first.contains("w100") && !first.contains("w101"));
    assert!(first.contains("Workers 1–100 of 250"), "{first}");
    assert!(first.contains("href=\"/?page=2\""));
    let third = page("?page=3").await;
    assert!(third.contains("w201") && third.contains("w250") && !third.contains("w200"));
    assert!(third.contains("Workers 201–250 of 250"));
    // Out of range is clamped; junk is the first page.
    assert!(page("?page=99").await.contains("Workers 201–250 of 250"));
    assert!(page("?page=0").await.contains("Workers 1–100 of 250"));
    assert!(page("?page=abc").await.contains("Workers 1–100 of 250"));
    for (path, key) in [
        ("/api/v1/workers?page=2", "workers"),
        ("/api/v1/overview?page=2", "workers"),
    ] {
        let v = json_of(c.get(path).header(basic(PASSWORD)).dispatch().await).await;
        let ws = v[key].as_array().unwrap();
        assert_eq!(ws.len(), 100, "{path}");
        assert_eq!(ws[0]["id"], "w101", "{path}");
        assert_eq!(v["paging"]["pages"], 3);
        assert_eq!(v["paging"]["total_workers"], 250);
    }
}

#[rocket::async_test]
async fn busy_slots_queue_with_202_and_a_full_queue_says_429() {
    let (c, _) = client().await;
    let r = api_post(
        &c,
        "/api/v1/tasks",
        r#"{"model_class":"QuickEtl","method":"queue"}"#,
    )
    .await;
    assert_eq!(r.status(), Status::Accepted);
    let v = json_of(r).await;
    assert_eq!(v["queued"]["position"], 3);
    assert_eq!(v["links"]["queue"], "/api/v1/queue/7");
    assert!(v["message"].as_str().unwrap().contains("position 3"), "{v}");
    let r = api_post(
        &c,
        "/api/v1/tasks",
        r#"{"model_class":"QuickEtl","method":"full"}"#,
    )
    .await;
    assert_eq!(r.status(), Status::TooManyRequests);
    assert!(json_of(r).await["error"].as_str().unwrap().contains("full"));
    // The form goes to the queued task's page.
    let token = login(&c).await;
    let r = form_post(
        &c,
        "/tasks",
        format!("model_class=QuickEtl&method=queue&csrf_token={token}"),
    )
    .await;
    assert_eq!(r.status(), Status::SeeOther);
    assert_eq!(r.headers().get_one("Location"), Some("/queue/7"));
    // The tasks page lists the snapshot's queue, escaped.
    let html = c
        .get("/tasks")
        .dispatch()
        .await
        .into_string()
        .await
        .unwrap();
    assert!(html.contains("1 waiting for a free slot"), "{html}");
    assert!(
        html.contains("&#60;QueuedEtl&#62;") && !html.contains("<QueuedEtl>"),
        "{html}"
    );
}

#[rocket::async_test]
async fn history_filters_are_checked_and_exports_stream_csv_and_json() {
    let (c, _) = client().await;
    for bad in [
        "/api/v1/tasks?status=%3Cb%3E",
        "/api/v1/tasks?limit=0",
        "/api/v1/tasks?limit=10001",
        "/api/v1/tasks/export?format=xml",
    ] {
        let r = c.get(bad).header(basic(PASSWORD)).dispatch().await;
        assert_eq!(r.status(), Status::BadRequest, "{bad}");
        let v = json_of(r).await;
        assert!(!v["error"].as_str().unwrap().is_empty(), "{bad}: {v}");
    }
    let r = c
        .get("/api/v1/tasks?status=complete&model=QuickEtl")
        .header(basic(PASSWORD))
        .dispatch()
        .await;
    let v = json_of(r).await;
    let rows = v["tasks"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows
        .iter()
        .all(|t| t["status"] == "complete" && t["model_class"] == "QuickEtl"));
    let r = c
        .get("/api/v1/tasks/export?format=csv&model=QuickEtl")
        .header(basic(PASSWORD))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);
    assert_eq!(r.content_type(), Some(ContentType::CSV));
    assert!(r
        .headers()
        .get_one("Content-Disposition")
        .unwrap()
        .contains("fossa-tasks.csv"));
    let csv = r.into_string().await.unwrap();
    assert!(csv.starts_with("task_id,"));
    assert!(csv.contains("\"parent1\""), "{csv}");
    let r = c
        .get("/api/v1/tasks/export?format=json")
        .header(basic(PASSWORD))
        .dispatch()
        .await;
    let all: Vec<Value> = serde_json::from_str(&r.into_string().await.unwrap()).unwrap();
    assert!(!all.is_empty());
}

#[rocket::async_test]
async fn autoscaling_is_set_from_the_form_and_the_api_and_checked() {
    let (c, fleet) = client().await;
    let token = login(&c).await;
    // The overview offers it while off.
    let page = c.get("/").dispatch().await.into_string().await.unwrap();
    assert!(page.contains("action=\"/autoscale\""), "{page}");
    let r = form_post(
        &c,
        "/autoscale",
        format!("min_workers=0&max_workers=8&idle_window_secs=600&csrf_token={token}"),
    )
    .await;
    assert_eq!(r.status(), Status::Ok);
    let page = r.into_string().await.unwrap();
    assert!(page.contains("autoscaling (idle window 600 s)"), "{page}");
    let on = fleet.snapshot().autoscale.unwrap();
    assert_eq!((on.min_workers, on.max_workers), (0, 8));
    // Without the token, or with bad numbers, nothing changes.
    for (body, status) in [
        (
            "min_workers=1&max_workers=2&idle_window_secs=5&csrf_token=x".to_owned(),
            Status::Forbidden,
        ),
        (
            format!("min_workers=a&max_workers=2&idle_window_secs=5&csrf_token={token}"),
            Status::BadRequest,
        ),
        (
            format!("min_workers=0&max_workers=2&idle_window_secs=0&csrf_token={token}"),
            Status::BadRequest,
        ),
        (
            format!("min_workers=3&max_workers=2&idle_window_secs=5&csrf_token={token}"),
            Status::BadRequest,
        ),
    ] {
        let r = form_post(&c, "/autoscale", body.clone()).await;
        assert_eq!(r.status(), status, "{body}");
        assert_eq!(fleet.snapshot().autoscale, Some(on), "{body}");
    }
    // The API: a session needs the CSRF header.
    let r = c
        .post("/api/v1/autoscale")
        .header(ContentType::JSON)
        .body(r#"{"min_workers":1,"max_workers":2}"#)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Forbidden);
    let r = c
        .post("/api/v1/autoscale")
        .header(Header::new("X-CSRF-Token", token.clone()))
        .header(ContentType::JSON)
        .body(r#"{"min_workers":1,"max_workers":2}"#)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);
    let v = json_of(r).await;
    assert_eq!(
        v["autoscale"]["idle_window_secs"], 900,
        "the default window"
    );
    let r = c
        .get("/api/v1/autoscale")
        .header(basic(PASSWORD))
        .dispatch()
        .await;
    assert_eq!(json_of(r).await["autoscale"]["max_workers"], 2);
    let r = c
        .delete("/api/v1/autoscale")
        .header(Header::new("X-CSRF-Token", token.clone()))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);
    assert_eq!(fleet.snapshot().autoscale, None);
}

#[rocket::async_test]
async fn the_overview_says_when_the_gateway_was_replaced() {
    let fleet = fake_fleet();
    let c = Client::tracked(fossa_web::build(web_config(), fleet.clone()))
        .await
        .unwrap();
    login(&c).await;
    let page = c.get("/").dispatch().await.into_string().await.unwrap();
    assert!(
        !page.contains("took over from"),
        "no line before a replacement"
    );
    {
        let mut snap = fleet.snap.lock().unwrap();
        let s = Arc::make_mut(&mut snap);
        s.agent.as_mut().unwrap().replaced = Some(fossa_web::model::Replacement {
            previous: "i-0old<script>".into(),
            current: "i-0new".into(),
            at: "2026-12-06T05:00:00Z".into(),
        });
    }
    let page = c.get("/").dispatch().await.into_string().await.unwrap();
    assert!(
        page.contains(
            "this instance (i-0new) took over from i-0old&#60;script&#62; at 2026-12-06T05:00:00Z"
        ),
        "{page}"
    );
}
