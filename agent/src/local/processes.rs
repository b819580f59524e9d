//! The process launcher of local mode's [`Pool`](super::pool::Pool): each
//! worker is a Fossa node in a process group of its own on a loopback port,
//! run by the Python that local mode prepared.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;
use tokio::sync::Mutex;

use super::pool::{Launcher, Rebuilt};
use super::python::list_models;
use crate::fleet::logs::LocalLogs;
use crate::host::procs::{spawn_group, stop_group, Group};
use crate::Error;

/// What local workers are started with.
#[derive(Clone)]
pub struct WorkerSpec {
    /// Python that imports Fossa.
    pub python: PathBuf,
    /// The generated node module.
    pub module: PathBuf,
    /// The models directory.
    pub models_dir: PathBuf,
    /// Broker URL (secret; passed in the environment only).
    pub broker_url: String,
    /// The token each worker requires on its Fossa API (secret; in the
    /// environment only, which the node module clears once read).
    pub api_token: String,
    /// The state directory's marker (`leftovers`), so a later start finds these workers if this run is killed.
    pub state_marker: String,
    /// Where each worker's temporary files go (`TMPDIR`, a folder per
    /// worker, emptied at each start): Fossa's multiprocessing leaves its
    /// `pymp-*` folders behind when a worker is killed, here and not in /tmp.
    pub scratch: PathBuf,
}

impl std::fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSpec")
            .field("module", &self.module)
            .field("models_dir", &self.models_dir)
            .finish_non_exhaustive()
    }
}

/// Starts workers as process groups.
pub struct Processes {
    spec: WorkerSpec,
    running: Mutex<HashMap<u32, Group>>,
}

impl Processes {
    /// A launcher of `spec`'s workers.
    pub fn new(spec: WorkerSpec) -> Self {
        Processes {
            spec,
            running: Mutex::new(HashMap::new()),
        }
    }
}

/// Copies each line `pipe` gives to `logs` as worker `id`'s, until it closes.
pub(super) fn follow_lines(
    pipe: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    logs: &LocalLogs,
    id: String,
) {
    let logs = logs.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            logs.push(&id, &line);
        }
    });
}

#[async_trait]
impl Launcher for Processes {
    fn name(&self, index: u32) -> String {
        format!("worker local-{index}")
    }

    async fn launch(&self, index: u32, port: u16, logs: &LocalLogs) -> Result<(), Error> {
        let tmp = self.spec.scratch.join(format!("local-{index}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
        let mut group = spawn_group(
            Command::new(&self.spec.python)
                .arg(&self.spec.module)
                .env("TMPDIR", &tmp)
                .env("RABBITMQ_URL", &self.spec.broker_url)
                .env("FOSSA_HTTP_PORT", port.to_string())
                .env("FOSSA_BIND_ADDRESS", "127.0.0.1")
                .env(
                    fossa_contract::names::WORKER_TOKEN_ENV,
                    &self.spec.api_token,
                )
                .env("FOSSA_MODELS_DIR", &self.spec.models_dir)
                .env("PYTHONUNBUFFERED", "1")
                .env(super::leftovers::STATE_ENV, &self.spec.state_marker)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| {
            let python = self.spec.python.display();
            Error::io(format!("cannot start a Fossa worker with {python}"), e)
        })?;
        // Its output goes to the ring the UI reads and the rotated file,
        // line by line, until the process closes it.
        let id = format!("local-{index}");
        if let Some(o) = group.child.stdout.take() {
            follow_lines(Box::new(o), logs, id.clone());
        }
        if let Some(e) = group.child.stderr.take() {
            follow_lines(Box::new(e), logs, id);
        }
        self.running.lock().await.insert(index, group);
        Ok(())
    }

    async fn ended(&self, index: u32) -> Option<String> {
        let mut running = self.running.lock().await;
        let Some(group) = running.get_mut(&index) else {
            return Some("is not running".into());
        };
        let Ok(Some(status)) = group.child.try_wait() else {
            return None;
        };
        // Whatever the dead leader left in its group would hold the port.
        stop_group(group, Duration::from_millis(500)).await;
        running.remove(&index);
        Some(format!("exited ({status})"))
    }

    async fn stop(&self, index: u32) {
        let group = self.running.lock().await.remove(&index);
        if let Some(mut g) = group {
            stop_group(&mut g, Duration::from_secs(5)).await;
        }
    }

    async fn rebuild(&self) -> Result<Rebuilt, Error> {
        let models =
            list_models(&self.spec.python, &self.spec.module, &self.spec.models_dir).await?;
        Ok(Rebuilt {
            what: format!("models {}", models.join(", ")),
            models,
            restart: true,
        })
    }

    async fn describe(&self) -> String {
        format!(
            "local Python with {}, models from {}",
            crate::fossa::FOSSA_REQUIREMENT,
            self.spec.models_dir.display()
        )
    }
}
