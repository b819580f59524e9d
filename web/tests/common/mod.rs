//! What the web tests share: an in-memory fleet, a snapshot with tricky
//! content, the web config and small request helpers.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use fossa_web::model::*;
use rocket::http::Header;
use serde_json::json;

pub const PASSWORD: &str = "correct horse";
/// The scraper's token of [`web_config`].
pub const SCRAPE_TOKEN: &str = "scraper-token-0123456789abcdefghij";

pub struct FakeFleet {
    pub snap: Mutex<Arc<FleetSnapshot>>,
    pub submitted: Mutex<Vec<TaskRequest>>,
    /// The log reads asked of the fleet: worker and query.
    pub log_reads: Mutex<Vec<(String, LogQuery)>>,
}

#[rocket::async_trait]
impl Fleet for FakeFleet {
    fn snapshot(&self) -> Arc<FleetSnapshot> {
        self.snap.lock().unwrap().clone()
    }
    fn events(&self) -> Vec<Event> {
        vec![Event {
            at: 1_700_000_000,
            source: "nat".into(),
            error: true,
            message: "<b>boom</b>".into(),
        }]
    }
    async fn submit(&self, request: TaskRequest) -> Result<Submitted, DispatchError> {
        self.submitted.lock().unwrap().push(request.clone());
        // `method` picks the outcome: "queue" waits, "full" finds the queue full.
        match request.method.as_deref() {
            Some("queue") => Ok(Submitted::Queued(Queued {
                id: 7,
                position: 3,
                model_class: request.model_class,
                method: request.method,
                enqueued_at: 0,
                sending_to: None,
            })),
            Some("full") => Err(DispatchError::QueueFull(
                "the gateway's queue is full".into(),
            )),
            _ => Ok(Submitted::Dispatched(Dispatched {
                task_id: "newtask".into(),
                worker_id: "w1".into(),
                model_class: request.model_class,
                at: 0,
            })),
        }
    }
    async fn scale(&self, workers: u32) -> Result<String, ControlError> {
        let mut s = (**self.snap.lock().unwrap()).clone();
        s.desired_workers = workers;
        *self.snap.lock().unwrap() = Arc::new(s);
        Ok(format!("scaled to {workers}"))
    }
    async fn logs(&self, worker: &str, query: LogQuery) -> Result<Vec<LogLine>, ControlError> {
        self.log_reads
            .lock()
            .unwrap()
            .push((worker.to_owned(), query));
        Ok(Vec::new())
    }
    async fn rebuild(&self) -> Result<String, ControlError> {
        Ok("rebuilding".into())
    }
    async fn set_autoscale(
        &self,
        a: Option<fossa_contract::config::Autoscale>,
    ) -> Result<String, ControlError> {
        if let Some(a) = &a {
            a.check(fossa_contract::limits::MAX_WORKERS)
                .map_err(|e| ControlError::Invalid(e.to_string()))?;
        }
        let mut s = (**self.snap.lock().unwrap()).clone();
        s.autoscale = a;
        *self.snap.lock().unwrap() = Arc::new(s);
        Ok("autoscaling set".into())
    }
}

pub fn task(id: &str, class: &str, status: &str, started: i64, finished: Option<i64>) -> FossaTask {
    FossaTask {
        task_id: id.into(),
        model_class: class.into(),
        method: Some("go".into()),
        method_kwargs: json!({}),
        status: status.into(),
        started: Some(started),
        finished,
        results: finished.map(|_| json!({"type": "TaskComplete", "payload": {"n": 1}})),
        spec: Default::default(),
    }
}

pub fn worker(id: &str, tasks: Vec<FossaTask>) -> Worker {
    Worker {
        id: id.into(),
        address: format!("10.0.0.{}:2345", id.len()),
        status: "RUNNING".into(),
        health: Health::Ok,
        started_at: Some(1_700_000_000),
        capacity_provider: "FARGATE".into(),
        node: Some(NodeInfo {
            node_ident: id.into(),
            max_concurrent_tasks: 4,
            available_processing_capacity: 3,
            running_tasks: vec![],
            recent_completed_tasks: tasks,
        }),
        poll_ms: Some(3),
        protected: false,
        stopped_reason: None,
    }
}

pub fn snapshot() -> FleetSnapshot {
    FleetSnapshot {
        mode: fossa_web::model::Mode::Fargate,
        stack: "dev".into(),
        taken_at: 1_700_000_100,
        refresh_ms: 12,
        workers: vec![
            worker(
                "w1",
                vec![
                    task("parent1", "QuickEtl", "complete", 100, Some(130)),
                    task("pool:0::amq.q", "QuickEtl", "complete", 105, Some(110)),
                ],
            ),
            worker(
                "w2",
                vec![task(
                    "pool:1::amq.q",
                    "QuickEtl",
                    "complete",
                    106,
                    Some(111),
                )],
            ),
            Worker {
                health: Health::Timeout("no answer within 2000 ms".into()),
                node: None,
                ..worker("w3<script>", vec![])
            },
        ],
        desired_workers: 3,
        models: vec!["QuickEtl".into(), "Evil<script>alert(1)</script>".into()],
        autoscale: None,
        components: [
            ("broker", "Broker", true, "RabbitMQ at 10.0.1.5:5672"),
            ("nat", "NAT", true, "NAT verified"),
            ("image", "Image", false, "building"),
            ("cluster", "Cluster", false, "waiting for the worker image"),
        ]
        .into_iter()
        .map(|(name, title, ok, detail)| Component {
            name: name.into(),
            title: title.into(),
            ok,
            detail: detail.into(),
            last_ok_at: ok.then_some(1_700_000_090),
            failures: u32::from(!ok),
        })
        .collect(),
        cost: Some(Cost {
            stack_hourly: 0.06,
            nat_gateway_hourly: 0.045,
            basis: "list prices".into(),
            ..Default::default()
        }),
        dispatched: vec![],
        slots: vec![
            SlotSample {
                at: 1_700_000_000,
                used: 1,
                total: 8,
            },
            SlotSample {
                at: 1_700_000_030,
                used: 5,
                total: 8,
            },
        ],
        queue: vec![Queued {
            id: 9,
            position: 1,
            model_class: "<QueuedEtl>".into(),
            method: None,
            enqueued_at: 1_700_000_000,
            sending_to: None,
        }],
        agent: Some(AgentInfo {
            version: "9.9.9".into(),
            sha256: "ab".repeat(32),
            replaced: None,
        }),
        broker_waiting: Some(2),
        nat: None,
        tally: Default::default(),
    }
}

/// The web config of the tests: a fresh self-signed certificate, [`PASSWORD`].
pub fn web_config() -> fossa_web::WebConfig {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    fossa_web::WebConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        password: PASSWORD.into(),
        cookie_key: vec![7; 64],
        tls: Some((cert.pem().into_bytes(), key.serialize_pem().into_bytes())),
        session_state_file: None,
        after_hashing: None,
        password_updates: None,
        scrape_token: Some(SCRAPE_TOKEN.into()),
        scrape_token_updates: None,
    }
}

/// A fleet holding [`snapshot`].
pub fn fake_fleet() -> Arc<FakeFleet> {
    Arc::new(FakeFleet {
        snap: Mutex::new(Arc::new(snapshot())),
        submitted: Mutex::new(vec![]),
        log_reads: Mutex::new(vec![]),
    })
}

pub fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

pub fn basic(password: &str) -> Header<'static> {
    let raw = format!("fossa:{password}");
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    Header::new("Authorization", format!("Basic {out}"))
}

/// POSTs JSON `body` to `path` with basic auth (the API as a script calls it).
pub async fn api_post<'c>(
    c: &'c rocket::local::asynchronous::Client,
    path: &str,
    body: impl AsRef<str>,
) -> rocket::local::asynchronous::LocalResponse<'c> {
    c.post(path.to_owned())
        .header(basic(PASSWORD))
        .header(rocket::http::ContentType::JSON)
        .body(body.as_ref())
        .dispatch()
        .await
}

/// POSTs form `body` to `path` with the session `c` holds (a page's form).
pub async fn form_post<'c>(
    c: &'c rocket::local::asynchronous::Client,
    path: &str,
    body: impl AsRef<str>,
) -> rocket::local::asynchronous::LocalResponse<'c> {
    c.post(path.to_owned())
        .header(rocket::http::ContentType::Form)
        .body(body.as_ref())
        .dispatch()
        .await
}

/// The login page's HTML (its CSRF cookie now in `c`'s jar).
pub async fn login_page(c: &rocket::local::asynchronous::Client) -> String {
    c.get("/login")
        .dispatch()
        .await
        .into_string()
        .await
        .unwrap()
}

/// The login form's CSRF token (its cookie now in `c`'s jar).
pub async fn login_csrf(c: &rocket::local::asynchronous::Client) -> String {
    field(&login_page(c).await, "csrf_token")
}

/// Logs `c` in with [`PASSWORD`] and returns the session's CSRF token.
pub async fn login(c: &rocket::local::asynchronous::Client) -> String {
    let csrf = login_csrf(c).await;
    let r = c
        .post("/login")
        .header(rocket::http::ContentType::Form)
        .body(format!(
            "username=fossa&password=correct+horse&csrf_token={csrf}"
        ))
        .remote("203.0.113.1:5000".parse().unwrap())
        .dispatch()
        .await;
    assert_eq!(r.status(), rocket::http::Status::SeeOther);
    let overview = c.get("/").dispatch().await.into_string().await.unwrap();
    field(&overview, "csrf_token")
}
