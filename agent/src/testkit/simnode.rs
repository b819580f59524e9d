//! Simulated Fossa nodes on loopback for tests and benchmarks: each answers
//! `node_info` after a delay, or misbehaves on purpose (hangs, 500, garbage,
//! truncated or huge bodies), so the fleet model can be measured and its
//! handling of bad workers proven without real nodes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How a simulated node answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// A valid node_info after the delay.
    Ok(Duration),
    /// Accepts and never answers.
    Hang,
    /// HTTP 500.
    Error500,
    /// 200 with a body that is not JSON.
    Garbage,
    /// Announces 1000 bytes, sends a few and closes.
    Truncated,
    /// A valid-looking but 8 MiB body.
    Huge,
    /// node_info says 4 free slots, but task submissions get 503 (at capacity).
    Busy,
    /// node_info says 1 free slot; a task submission is accepted as task `accepted-1`.
    Accepting,
    /// A node_info just under the 4 MiB bound listing as many (short) running
    /// tasks as fit: about 260,000.
    Flood,
    /// A node_info just under the 4 MiB bound whose one running subtask has
    /// method_kwargs of nearly 4 MiB.
    HeavyKwargs,
}

/// The body of [`Behaviour::Flood`], built once, and how many tasks it lists.
pub fn flood_body() -> &'static (String, usize) {
    static BODY: std::sync::OnceLock<(String, usize)> = std::sync::OnceLock::new();
    BODY.get_or_init(|| {
        let max = crate::fleet::node::MAX_NODE_INFO_BYTES - 1024;
        let head = r#"{"node_info":{"node_ident":"flood","max_concurrent_tasks":4,"available_processing_capacity":0},"recent_completed_tasks":[],"running_tasks":["#;
        let mut body = String::with_capacity(max + 64);
        body.push_str(head);
        let mut n = 0;
        loop {
            let t = format!(r#"{{"task_id":"{n}"}}"#);
            if body.len() + t.len() + 3 > max {
                break;
            }
            if n > 0 {
                body.push(',');
            }
            body.push_str(&t);
            n += 1;
        }
        body.push_str("]}");
        (body, n)
    })
}

/// The body of [`Behaviour::HeavyKwargs`], built once.
pub fn heavy_kwargs_body() -> &'static str {
    static BODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BODY.get_or_init(|| {
        let pad = "k".repeat(crate::fleet::node::MAX_NODE_INFO_BYTES - 2048);
        format!(
            r#"{{"node_info":{{"node_ident":"heavy","max_concurrent_tasks":4,"available_processing_capacity":3}},"recent_completed_tasks":[],"running_tasks":[{{"task_id":"p:1::r","status":"running","model_class":"QuickPartitionedEtl","method":"partition_subtask","method_kwargs":{{"pad":"{pad}"}},"resolver_context":{{}},"model_construction_kwargs":{{}},"partition_initialise_kwargs":{{}}}}]}}"#
        )
    })
}

const NODE_INFO: &str = r#"{"node_info":{"node_ident":"sim","max_concurrent_tasks":4,"available_processing_capacity":4},"running_tasks":[],"recent_completed_tasks":[]}"#;

/// Starts a node on `ip` (any port); returns its address. It runs until the runtime ends.
pub async fn start(ip: &str, behaviour: Behaviour) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let is_post = buf[..n].starts_with(b"POST ");
                let reply: Vec<u8> = match behaviour {
                    Behaviour::Busy | Behaviour::Accepting if !is_post => {
                        let free = if behaviour == Behaviour::Busy { 4 } else { 1 };
                        let body = NODE_INFO.replace("\"available_processing_capacity\":4", &format!("\"available_processing_capacity\":{free}"));
                        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).into_bytes()
                    }
                    Behaviour::Busy => b"HTTP/1.1 503 SERVICE UNAVAILABLE\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy".to_vec(),
                    Behaviour::Accepting => {
                        let body = r#"{"task_id":"accepted-1","governor_accepted_ident":"x","_metadata":{}}"#;
                        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).into_bytes()
                    }
                    Behaviour::Ok(delay) => {
                        tokio::time::sleep(delay).await;
                        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{NODE_INFO}", NODE_INFO.len()).into_bytes()
                    }
                    Behaviour::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    Behaviour::Error500 => b"HTTP/1.1 500 INTERNAL SERVER ERROR\r\ncontent-length: 5\r\nconnection: close\r\n\r\noops!".to_vec(),
                    Behaviour::Garbage => b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\n<html>hi!".to_vec(),
                    Behaviour::Truncated => b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n{\"node_in".to_vec(),
                    Behaviour::Flood => {
                        let body = &flood_body().0;
                        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).into_bytes()
                    }
                    Behaviour::HeavyKwargs => {
                        let body = heavy_kwargs_body();
                        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).into_bytes()
                    }
                    Behaviour::Huge => {
                        let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(8 << 20));
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).into_bytes()
                    }
                };
                let _ = sock.write_all(&reply).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// A backend over a fixed list of addresses.
pub struct StaticBackend {
    /// The workers.
    pub workers: Vec<crate::fleet::WorkerRef>,
    /// Their output, if the test keeps any.
    pub logs: Option<crate::fleet::logs::LocalLogs>,
}

impl StaticBackend {
    /// Workers `sim-1…` at `addrs`.
    pub fn new(addrs: &[SocketAddr]) -> Self {
        let workers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| crate::fleet::WorkerRef {
                id: format!("sim-{}", i + 1),
                address: a.to_string(),
                status: "RUNNING".into(),
                started_at: None,
                capacity_provider: "FARGATE".into(),
                protected: false,
                stopped_reason: None,
            })
            .collect();
        StaticBackend {
            workers,
            logs: None,
        }
    }
}

#[async_trait::async_trait]
impl crate::fleet::WorkerBackend for StaticBackend {
    fn mode(&self) -> fossa_web::model::Mode {
        fossa_web::model::Mode::Fargate
    }
    async fn list(&self) -> Result<Vec<crate::fleet::WorkerRef>, crate::fleet::BackendError> {
        Ok(self.workers.clone())
    }
    fn desired(&self) -> u32 {
        self.workers.len() as u32
    }
    async fn scale(&self, _workers: u32) -> Result<String, crate::fleet::BackendError> {
        Err(crate::fleet::BackendError::TooMany {
            mode: fossa_web::model::Mode::Fargate,
            max: self.workers.len() as u32,
        })
    }
    async fn rebuild(&self) -> Result<String, crate::fleet::BackendError> {
        Ok("nothing to rebuild: a static fleet has no image".into())
    }
    fn models(&self) -> Vec<String> {
        vec!["QuickPartitionedEtl".into()]
    }
    async fn logs(
        &self,
        id: &str,
        q: &fossa_web::model::LogQuery,
    ) -> Result<Vec<fossa_web::model::LogLine>, crate::fleet::BackendError> {
        Ok(self
            .logs
            .as_ref()
            .map(|l| l.query(id, q))
            .unwrap_or_default())
    }
}
