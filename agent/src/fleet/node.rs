//! A small client for a Fossa node's HTTP API: `node_info`, bounded and
//! parsed strictly, and task submission.

use std::time::Duration;

use fossa_web::model::{FossaTask, NodeInfo, TaskStatus};
use serde_json::Value;

/// Why a node's answer was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// No answer within the timeout.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// Could not connect.
    #[error("cannot connect: {0}")]
    Unreachable(String),
    /// An HTTP error status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// Not the JSON expected.
    #[error("unexpected answer: {0}")]
    Garbage(String),
}

/// Largest node_info body accepted.
pub const MAX_NODE_INFO_BYTES: usize = 4 * 1024 * 1024;

/// The latest time a node may report: 9999-12-31 23:59:59 UTC. Anything past
/// it (or before 1970) is garbage and is treated as unknown.
const LATEST_DATE: i64 = 253_402_300_799;

fn parse_date(v: &Value) -> Option<i64> {
    let secs = match v {
        Value::String(s) => httpdate::parse_http_date(s)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64),
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64),
        _ => None,
    }?;
    (0..=LATEST_DATE).contains(&secs).then_some(secs)
}

/// The JSON size of `v` (its text, as the history would store it).
fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// Parses one task dict as Fossa writes it. `method_kwargs` (and a running
/// subtask's definition) over [`fossa_contract::limits::NODE_KWARGS_MAX_BYTES`]
/// is replaced by a note saying so.
pub fn parse_task(v: &Value) -> Option<FossaTask> {
    let o = v.as_object()?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let max = fossa_contract::limits::NODE_KWARGS_MAX_BYTES;
    let kwargs = o.get("method_kwargs").cloned().unwrap_or(Value::Null);
    let kwargs_len = json_len(&kwargs);
    let method_kwargs = if kwargs_len > max {
        serde_json::json!({"_cut": format!("method_kwargs of {kwargs_len} bytes, over the {max} the gateway keeps")})
    } else {
        kwargs
    };
    let spec = subtask_spec(o);
    // A definition the gateway cannot keep whole cannot be sent again.
    let spec = if kwargs_len > max || json_len(&spec) > max {
        Value::Null
    } else {
        spec
    };
    Some(FossaTask {
        task_id: s("task_id")?,
        model_class: s("model_class").unwrap_or_default(),
        method: s("method"),
        method_kwargs,
        status: s("status")
            .map(|st| TaskStatus::parse(&st))
            .unwrap_or_default(),
        started: o.get("started").and_then(parse_date),
        finished: o.get("finished").and_then(parse_date),
        results: o.get("results").cloned().filter(|r| !r.is_null()),
        spec,
    })
}

/// What a running subtask's dict holds beyond [`FossaTask`]'s fields, for
/// putting it back on the queue (`Null` for anything else).
fn subtask_spec(o: &serde_json::Map<String, Value>) -> Value {
    let running = o.get("status").and_then(Value::as_str) == Some("running");
    let subtask = o
        .get("task_id")
        .and_then(Value::as_str)
        .is_some_and(|id| id.contains("::"));
    if !(running && subtask) {
        return Value::Null;
    }
    let mut spec = serde_json::Map::new();
    for k in [
        "resolver_context",
        "model_construction_kwargs",
        "partition_initialise_kwargs",
    ] {
        spec.insert(k.to_owned(), o.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(spec)
}

/// A task list of a node's answer, read without keeping more than
/// [`fossa_contract::limits::NODE_TASKS_MAX`] entries: the tail is skipped
/// as it is parsed, never built.
#[derive(Default)]
enum TaskList {
    #[default]
    Absent,
    Entries(Vec<Value>),
    NotAList,
}

impl<'de> serde::Deserialize<'de> for TaskList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TaskList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of tasks")
            }
            fn visit_unit<E>(self) -> Result<TaskList, E> {
                Ok(TaskList::Absent)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TaskList, A::Error> {
                let max = fossa_contract::limits::NODE_TASKS_MAX;
                let mut out = Vec::new();
                while out.len() < max {
                    match seq.next_element::<Value>()? {
                        Some(v) => out.push(v),
                        None => return Ok(TaskList::Entries(out)),
                    }
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TaskList::Entries(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TaskList, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TaskList::NotAList)
            }
            fn visit_bool<E>(self, _: bool) -> Result<TaskList, E> {
                Ok(TaskList::NotAList)
            }
            fn visit_i64<E>(self, _: i64) -> Result<TaskList, E> {
                Ok(TaskList::NotAList)
            }
            fn visit_u64<E>(self, _: u64) -> Result<TaskList, E> {
                Ok(TaskList::NotAList)
            }
            fn visit_f64<E>(self, _: f64) -> Result<TaskList, E> {
                Ok(TaskList::NotAList)
            }
            fn visit_str<E>(self, _: &str) -> Result<TaskList, E> {
                Ok(TaskList::NotAList)
            }
        }
        d.deserialize_any(V)
    }
}

/// The parts of a node's answer the gateway reads; anything else is
/// skipped as it is parsed.
#[derive(serde::Deserialize)]
struct RawNodeInfo {
    #[serde(default)]
    node_info: Option<Value>,
    #[serde(default)]
    running_tasks: TaskList,
    #[serde(default)]
    recent_completed_tasks: TaskList,
}

/// Parses `/api/0.01/node_info`.
pub fn parse_node_info(body: &[u8]) -> Result<NodeInfo, NodeError> {
    let raw: RawNodeInfo = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => NodeError::Garbage("no node_info object".into()),
        _ => NodeError::Garbage(format!("not JSON ({e})")),
    })?;
    let info = raw
        .node_info
        .as_ref()
        .and_then(Value::as_object)
        .ok_or_else(|| NodeError::Garbage("no node_info object".into()))?;
    let num = |k: &str| {
        info.get(k)
            .and_then(Value::as_u64)
            .map(|n| n.min(u64::from(u32::MAX)) as u32)
            .ok_or_else(|| NodeError::Garbage(format!("node_info.{k} is missing or not a number")))
    };
    let tasks = |k: &str, list: TaskList| -> Result<Vec<FossaTask>, NodeError> {
        match list {
            TaskList::Absent => Ok(Vec::new()),
            // A node runs a few tasks at once; a list past the bound is a
            // worker misbehaving, and its tail was not kept.
            TaskList::Entries(a) => Ok(a.iter().filter_map(parse_task).collect()),
            TaskList::NotAList => Err(NodeError::Garbage(format!("{k} is not a list"))),
        }
    };
    Ok(NodeInfo {
        node_ident: info
            .get("node_ident")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        max_concurrent_tasks: num("max_concurrent_tasks")?,
        available_processing_capacity: num("available_processing_capacity")?,
        running_tasks: tasks("running_tasks", raw.running_tasks)?,
        recent_completed_tasks: tasks("recent_completed_tasks", raw.recent_completed_tasks)?,
    })
}

/// A client for Fossa nodes' HTTP API.
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    timeout: Duration,
    /// Permits to read and parse a large answer (see
    /// [`fossa_contract::limits::NODE_LARGE_BODY_BYTES`]).
    large: std::sync::Arc<tokio::sync::Semaphore>,
    /// Sent in [`fossa_contract::names::WORKER_TOKEN_HEADER`] to every worker.
    token: Option<reqwest::header::HeaderValue>,
}

/// A node's answer: its status, its bytes, and the permit it holds while
/// it is large.
struct Answer {
    status: u16,
    body: Vec<u8>,
    large: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl NodeClient {
    /// A client whose every request times out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A worker's answer never sends the gateway elsewhere: a
            // redirect would make it fetch (or re-POST a task body to) any
            // address a worker names, from inside the VPC.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(2)
            .build()
            .expect("reqwest client builds");
        NodeClient {
            http,
            timeout,
            large: std::sync::Arc::new(tokio::sync::Semaphore::new(
                fossa_contract::limits::NODE_LARGE_BODIES_AT_ONCE,
            )),
            token: None,
        }
    }

    /// The same client, sending `token` to every worker (never logged).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token
            .and_then(|t| reqwest::header::HeaderValue::from_str(&t).ok())
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        self
    }

    fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.with_header(self.http.get(url))
    }

    fn post(&self, url: String) -> reqwest::RequestBuilder {
        self.with_header(self.http.post(url))
    }

    fn with_header(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.header(fossa_contract::names::WORKER_TOKEN_HEADER, t.clone()),
            None => r,
        }
    }

    fn map_err(&self, e: reqwest::Error) -> NodeError {
        if e.is_timeout() {
            NodeError::Timeout(self.timeout.as_millis() as u64)
        } else if e.is_connect() {
            NodeError::Unreachable(e.to_string())
        } else {
            NodeError::Garbage(e.to_string())
        }
    }

    async fn body(&self, resp: reqwest::Response) -> Result<Answer, NodeError> {
        let status = resp.status().as_u16();
        if resp
            .content_length()
            .is_some_and(|l| l as usize > MAX_NODE_INFO_BYTES)
        {
            return Err(NodeError::Garbage(format!(
                "body of {} bytes is too large",
                resp.content_length().unwrap_or(0)
            )));
        }
        let mut resp = resp;
        let mut body = Vec::new();
        let mut large = None;
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.map_err(e))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_NODE_INFO_BYTES {
                return Err(NodeError::Garbage(format!(
                    "body larger than {MAX_NODE_INFO_BYTES} bytes"
                )));
            }
            if large.is_none() && body.len() > fossa_contract::limits::NODE_LARGE_BODY_BYTES {
                large = Some(
                    self.large
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed"),
                );
            }
        }
        Ok(Answer {
            status,
            body,
            large,
        })
    }

    /// `GET /api/0.01/node_info` of the node at `address` (`ip:port`).
    pub async fn node_info(&self, address: &str) -> Result<NodeInfo, NodeError> {
        let resp = self
            .get(format!("http://{address}/api/0.01/node_info"))
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let Answer {
            status,
            body,
            large,
        } = self.body(resp).await?;
        if status != 200 {
            return Err(NodeError::Status {
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            });
        }
        match large {
            None => parse_node_info(&body),
            // Parsing megabytes takes a while: not on the runtime's threads,
            // and still under the permit.
            Some(permit) => tokio::task::spawn_blocking(move || {
                let parsed = parse_node_info(&body);
                drop(permit);
                parsed
            })
            .await
            .unwrap_or_else(|e| Err(NodeError::Garbage(format!("parsing failed: {e}")))),
        }
    }

    /// `POST /api/0.01/task`; returns the task id, or the status and body of a refusal.
    pub async fn submit(&self, address: &str, body: &Value) -> Result<String, NodeError> {
        let resp = self
            .post(format!("http://{address}/api/0.01/task"))
            .json(body)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let Answer {
            status,
            body: bytes,
            ..
        } = self.body(resp).await?;
        if status != 200 {
            return Err(NodeError::Status {
                status,
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned(),
            });
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| NodeError::Garbage(format!("not JSON ({e})")))?;
        v.get("task_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| NodeError::Garbage("no task_id in the answer".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker answering every request with a redirect to `target`, and
    /// the number of connections `target` then gets.
    #[tokio::test]
    async fn a_workers_redirect_is_not_followed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_addr = target.local_addr().unwrap();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((_s, _)) = target.accept().await {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let worker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let worker_addr = worker.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = worker.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{target_addr}/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        let c = NodeClient::new(Duration::from_secs(2));
        let addr = worker_addr.to_string();
        let submitted = c
            .submit(&addr, &serde_json::json!({"model_class": "M"}))
            .await;
        assert!(
            matches!(submitted, Err(NodeError::Status { status: 307, .. })),
            "{submitted:?}"
        );
        let info = c.node_info(&addr).await;
        assert!(
            matches!(info, Err(NodeError::Status { status: 307, .. })),
            "{info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing reached the target"
        );
    }

    #[test]
    fn parses_fossa_node_info() {
        let body = br#"{"node_info":{"node_ident":"n1","max_concurrent_tasks":4,"available_processing_capacity":3},
            "running_tasks":[{"task_id":"abc","model_class":"Etl","method":"go","status":"running","started":"Wed, 25 Nov 2026 05:00:00 GMT"}],
            "recent_completed_tasks":[{"task_id":"p:1::amq.x","model_class":"Etl","status":"complete","started":"Wed, 25 Nov 2026 05:00:00 GMT","finished":"Wed, 25 Nov 2026 05:00:03 GMT","results":{"type":"TaskComplete","payload":{}}}]}"#;
        let n = parse_node_info(body).unwrap();
        assert_eq!(n.available_processing_capacity, 3);
        assert_eq!(n.running_tasks[0].task_id, "abc");
        assert_eq!(n.recent_completed_tasks[0].duration(), Some(3));
    }

    #[test]
    fn task_lists_that_are_not_lists_are_refused_and_extra_keys_skipped() {
        let info = r#""node_info":{"max_concurrent_tasks":4,"available_processing_capacity":4}"#;
        for (list, what) in [
            (r#"{"a":[1,2]}"#, "running_tasks is not a list"),
            ("\"x\"", "running_tasks is not a list"),
            ("7", "running_tasks is not a list"),
        ] {
            let body = format!(r#"{{{info},"running_tasks":{list}}}"#);
            assert_eq!(
                parse_node_info(body.as_bytes()).unwrap_err(),
                NodeError::Garbage(what.into())
            );
        }
        let body = format!(r#"{{{info},"running_tasks":null,"other":{{"deep":[1,{{"x":2}}]}}}}"#);
        assert!(parse_node_info(body.as_bytes())
            .unwrap()
            .running_tasks
            .is_empty());
        assert_eq!(
            parse_node_info(b"[1]").unwrap_err(),
            NodeError::Garbage("no node_info object".into())
        );
        assert!(matches!(
            parse_node_info(b"{\"node_info\":"),
            Err(NodeError::Garbage(m)) if m.starts_with("not JSON")
        ));
    }

    #[test]
    fn a_node_listing_too_much_is_read_within_bounds() {
        let many: Vec<Value> = (0..300_000)
            .map(|i| serde_json::json!({"task_id": format!("t{i}"), "status": "running"}))
            .collect();
        let big = serde_json::json!({"blob": "x".repeat(4 * 1024 * 1024)});
        let body = serde_json::json!({
            "node_info": {"max_concurrent_tasks": 4, "available_processing_capacity": 0},
            "running_tasks": many,
            "recent_completed_tasks": [{"task_id": "p:0::q", "status": "running", "method_kwargs": big,
                                        "resolver_context": {}}],
        });
        let n = parse_node_info(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(
            n.running_tasks.len(),
            fossa_contract::limits::NODE_TASKS_MAX
        );
        let t = &n.recent_completed_tasks[0];
        assert!(
            t.method_kwargs["_cut"]
                .as_str()
                .unwrap()
                .contains("over the"),
            "{}",
            t.method_kwargs
        );
        assert!(
            t.spec.is_null(),
            "a definition not kept whole is not sent again"
        );
    }

    #[test]
    fn garbage_is_named() {
        for (body, needle) in [
            (&b"<html>"[..], "not JSON"),
            (b"{}", "no node_info"),
            (br#"{"node_info":{"max_concurrent_tasks":"x"}}"#, "max_concurrent_tasks"),
            (br#"{"node_info":{"max_concurrent_tasks":1,"available_processing_capacity":1},"running_tasks":5}"#, "not a list"),
        ] {
            let e = parse_node_info(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: no node_info body makes the parser or the views built
    //! from it panic: random bytes, and JSON of node_info's shape with wrong
    //! types, extreme numbers and dates in every field.
    use super::*;
    use fossa_web::model::{FleetSnapshot, Health, Worker};
    use proptest::prelude::*;
    use serde_json::json;

    fn junk() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "\\PC{0,12}".prop_map(Value::String),
            Just(json!([1, "a"])),
            Just(json!({"a": 1})),
        ]
    }

    fn date() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!("Wed, 25 Nov 2026 05:00:00 GMT")),
            Just(json!("Fri, 31 Dec 9999 23:59:59 GMT")),
            Just(json!("Thu, 01 Jan 1970 00:00:00 GMT")),
            Just(json!(1e300)),
            Just(json!(-1e300)),
            Just(json!(i64::MAX)),
            Just(json!(i64::MIN)),
            junk(),
        ]
    }

    fn task() -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                "[a-e]".prop_map(Value::String),
                "p[ab]:[0-9]::amq\\.q[12]".prop_map(Value::String),
                junk()
            ],
            prop_oneof![Just(json!("Etl")), junk()],
            prop_oneof![Just(json!("running")), Just(json!("complete")), junk()],
            date(),
            date(),
            junk(),
        )
            .prop_map(|(id, class, status, started, finished, results)| {
                json!({"task_id": id, "model_class": class, "status": status,
                       "started": started, "finished": finished, "results": results})
            })
    }

    fn node_info() -> impl Strategy<Value = Value> {
        let tasks = prop_oneof![
            proptest::collection::vec(task(), 0..6).prop_map(Value::Array),
            junk()
        ];
        let number = prop_oneof![any::<u64>().prop_map(|n| json!(n)), junk()];
        (tasks.clone(), tasks, number.clone(), number, junk()).prop_map(
            |(running, done, max, free, ident)| {
                json!({"node_info": {"node_ident": ident, "max_concurrent_tasks": max,
                        "available_processing_capacity": free},
                       "running_tasks": running, "recent_completed_tasks": done})
            },
        )
    }

    fn views_of(info: NodeInfo) {
        let snap = FleetSnapshot {
            workers: vec![Worker {
                id: "w".into(),
                address: "127.0.0.1:1".into(),
                status: "RUNNING".into(),
                health: Health::Ok,
                started_at: None,
                capacity_provider: "local".into(),
                node: Some(info),
                poll_ms: None,
                protected: false,
                stopped_reason: None,
            }],
            ..Default::default()
        };
        let tasks = snap.tasks();
        fossa_web::views::groups(&tasks);
        for t in &tasks {
            fossa_web::views::task_detail(&snap, &t.task.task_id);
            fossa_web::fmt::duration(t.task.duration());
            fossa_web::fmt::opt_time(t.task.started);
            fossa_web::fmt::result_short(t.task.results.as_ref());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn random_bytes_are_garbage_not_a_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(info) = parse_node_info(&body) {
                views_of(info);
            }
        }

        #[test]
        fn node_info_shaped_json_parses_or_is_garbage(v in node_info()) {
            match parse_node_info(&serde_json::to_vec(&v).unwrap()) {
                Ok(info) => {
                    for t in info.running_tasks.iter().chain(&info.recent_completed_tasks) {
                        for d in [t.started, t.finished].into_iter().flatten() {
                            prop_assert!((0..=LATEST_DATE).contains(&d));
                        }
                    }
                    views_of(info);
                }
                Err(e) => prop_assert!(matches!(e, NodeError::Garbage(_))),
            }
        }
    }
}
