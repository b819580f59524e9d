//! Property tests of the request parsers and the pages: random task bodies,
//! random task ids in paths and random fleet snapshots (extreme times, junk
//! statuses, subtask-shaped ids, markup in names) get an answer below 500,
//! never a crash, and nothing invalid is dispatched.

use std::sync::Arc;

use fossa_web::model::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rocket::http::{ContentType, Header, Status};
use rocket::local::blocking::Client;
use serde_json::{json, Value};

mod common;

use common::*;

/// A logged-in client and its CSRF token.
fn session() -> (Client, Arc<FakeFleet>, String) {
    let fleet = fake_fleet();
    let c = Client::tracked(fossa_web::build(web_config(), fleet.clone())).unwrap();
    let page = c.get("/login").dispatch().into_string().unwrap();
    let csrf = field(&page, "csrf_token");
    let r = c
        .post("/login")
        .header(ContentType::Form)
        .body(format!(
            "username=fossa&password=correct+horse&csrf_token={csrf}"
        ))
        .dispatch();
    assert_eq!(r.status(), Status::SeeOther);
    drop(r);
    let overview = c.get("/").dispatch().into_string().unwrap();
    let token = field(&overview, "csrf_token");
    (c, fleet, token)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,16}".prop_map(Value::String),
        Just(json!("<script>alert(1)</script>")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies of `POST /api/v1/tasks`: raw bytes, any JSON, and near-valid requests.
fn task_body() -> impl Strategy<Value = Vec<u8>> {
    let field = |name: &'static str| {
        proptest::option::of(json_value()).prop_map(move |v| v.map(|v| (name.to_owned(), v)))
    };
    let near_valid = (
        prop_oneof![
            Just(json!("QuickEtl")),
            Just(json!("Evil<script>alert(1)</script>")),
            json_value(),
        ],
        proptest::option::of(prop_oneof![
            Just(json!("go")),
            Just(json!("go; rm -rf /")),
            json_value()
        ]),
        field("method_kwargs"),
        field("model_construction_kwargs"),
        field("resolver_context"),
        field("surprise"),
    )
        .prop_map(|(class, method, a, b, c, d)| {
            let mut o = serde_json::Map::new();
            o.insert("model_class".into(), class);
            if let Some(m) = method {
                o.insert("method".into(), m);
            }
            for (k, v) in [a, b, c, d].into_iter().flatten() {
                o.insert(k, v);
            }
            serde_json::to_vec(&Value::Object(o)).unwrap()
        });
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        near_valid,
    ]
}

#[test]
fn any_task_body_is_answered_below_500_and_only_valid_ones_are_dispatched() {
    let (c, fleet, token) = session();
    let mut runner = TestRunner::new(Config::with_cases(400));
    runner
        .run(&task_body(), |body| {
            let r = c
                .post("/api/v1/tasks")
                .header(ContentType::JSON)
                .header(Header::new("X-CSRF-Token", token.clone()))
                .body(&body)
                .dispatch();
            let status = r.status();
            let text = r.into_string().unwrap_or_default();
            prop_assert!(
                status.code < 500,
                "{} for {:?}",
                status,
                String::from_utf8_lossy(&body)
            );
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status == Status::Created {
                prop_assert!(v["task_id"].is_string(), "{}", text);
            } else {
                prop_assert!(
                    v["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{}: {}",
                    status,
                    text
                );
            }
            Ok(())
        })
        .unwrap();
    let models = snapshot().models;
    for req in fleet.submitted.lock().unwrap().iter() {
        assert!(models.contains(&req.model_class), "{req:?}");
        for kwargs in [
            &req.method_kwargs,
            &req.model_construction_kwargs,
            &req.resolver_context,
        ] {
            assert!(kwargs.is_object(), "{req:?}");
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn any_task_id_in_a_path_is_answered_cleanly() {
    let (c, _, _) = session();
    let ids = prop_oneof![
        "\\PC{1,40}",
        "[a-z]{5}:[0-9]{1,3}::amq\\.gen-[A-Za-z0-9_]{1,12}",
        Just("../../etc/passwd".to_owned()),
        Just("<script>".to_owned()),
    ];
    let mut runner = TestRunner::new(Config::with_cases(300));
    runner
        .run(&ids, |id| {
            let enc = percent_encode(&id);
            for path in [format!("/tasks/{enc}"), format!("/api/v1/tasks/{enc}")] {
                let r = c.get(path.as_str()).dispatch();
                let status = r.status();
                prop_assert!(
                    [Status::Ok, Status::BadRequest, Status::NotFound].contains(&status),
                    "{} for {}",
                    status,
                    path
                );
                let html = r.content_type() == Some(ContentType::HTML);
                let body = r.into_string().unwrap_or_default();
                prop_assert!(
                    !(html && body.contains("<script>")),
                    "{} echoes markup",
                    path
                );
            }
            Ok(())
        })
        .unwrap();
}

fn fossa_task() -> impl Strategy<Value = FossaTask> {
    let time = prop_oneof![
        Just(None),
        (1_700_000_000i64..1_700_000_100).prop_map(Some),
        any::<i64>().prop_map(Some),
    ];
    (
        prop_oneof![
            "[a-c]{1}",
            "p[ab]:[0-9]::amq\\.q[12]",
            "\\PC{0,12}",
            Just("<b>x</b>:1::q".to_owned()),
        ],
        prop_oneof![Just("QuickEtl".to_owned()), "\\PC{0,8}"],
        proptest::sample::select(vec!["running", "complete", "failed", "unknown", "<i>"]),
        time.clone(),
        time,
        proptest::option::of(json_value()),
        proptest::option::of("\\PC{0,8}"),
    )
        .prop_map(
            |(task_id, model_class, status, started, finished, results, method)| FossaTask {
                task_id,
                model_class,
                method,
                method_kwargs: Value::Null,
                status: status.into(),
                started,
                finished,
                results,
                spec: Default::default(),
            },
        )
}

fn fleet_snapshot() -> impl Strategy<Value = FleetSnapshot> {
    let health = prop_oneof![
        Just(Health::Ok),
        "\\PC{0,12}".prop_map(Health::Timeout),
        "\\PC{0,12}".prop_map(Health::Garbage),
        "\\PC{0,12}".prop_map(Health::Unreachable),
    ];
    let worker = (
        "[a-z<>&\"]{1,6}",
        health,
        proptest::collection::vec(fossa_task(), 0..5),
        proptest::collection::vec(fossa_task(), 0..5),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(id, health, running, done, max, free, has_node)| Worker {
            health,
            node: has_node.then(|| NodeInfo {
                node_ident: id.clone(),
                max_concurrent_tasks: max,
                available_processing_capacity: free,
                running_tasks: running,
                recent_completed_tasks: done,
            }),
            ..worker(&id, vec![])
        });
    (
        proptest::collection::vec(worker, 0..4),
        any::<u32>(),
        any::<i64>(),
    )
        .prop_map(|(workers, desired, taken_at)| FleetSnapshot {
            workers,
            desired_workers: desired,
            taken_at,
            ..snapshot()
        })
}

#[test]
fn any_fleet_snapshot_renders_every_page() {
    let (c, fleet, _) = session();
    let mut runner = TestRunner::new(Config::with_cases(200));
    runner
        .run(&fleet_snapshot(), |snap| {
            let mut paths: Vec<String> = [
                "/",
                "/tasks",
                "/events",
                "/api/v1/overview",
                "/api/v1/workers",
                "/api/v1/tasks",
            ]
            .map(str::to_owned)
            .to_vec();
            for w in &snap.workers {
                paths.push(format!("/workers/{}", percent_encode(&w.id)));
                for t in w.node.iter().flat_map(|n| {
                    n.running_tasks
                        .iter()
                        .chain(n.recent_completed_tasks.iter())
                }) {
                    paths.push(format!("/tasks/{}", percent_encode(&t.task_id)));
                    paths.push(format!("/api/v1/tasks/{}", percent_encode(&t.task_id)));
                }
            }
            *fleet.snap.lock().unwrap() = Arc::new(snap);
            for path in paths {
                let r = c.get(path.as_str()).dispatch();
                let status = r.status();
                prop_assert!(status.code < 500, "{} for {}", status, path);
                if r.content_type() == Some(ContentType::HTML) {
                    let body = r.into_string().unwrap_or_default();
                    prop_assert!(!body.contains("<script>"), "{} echoes markup", path);
                    prop_assert!(!body.contains("<b>x</b>"), "{} echoes markup", path);
                }
            }
            Ok(())
        })
        .unwrap();
}
