//! Local mode's workers: Fossa nodes as process groups on free loopback
//! ports, supervised and restarted, scaled by starting and stopping them.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;
use tokio::sync::Mutex;

use super::other;
use super::python::list_models;
use super::slots::{check_scale, local, move_if_taken, Protection, Slot};
use crate::events::Events;
use crate::fleet::logs::LocalLogs;
use crate::fleet::{BackendError, WorkerBackend, WorkerRef};
use crate::host::procs::{spawn_group, stop_group, Group};
use crate::Error;
use fossa_contract::unix_now as now;
use fossa_web::model::{LogLine, LogQuery, Mode};

struct LocalWorker {
    slot: Slot,
    child: Group,
}

impl AsRef<Slot> for LocalWorker {
    fn as_ref(&self) -> &Slot {
        &self.slot
    }
}

impl AsMut<Slot> for LocalWorker {
    fn as_mut(&mut self) -> &mut Slot {
        &mut self.slot
    }
}

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
    /// Where worker logs go.
    pub logs: PathBuf,
    /// The state directory's marker (`leftovers`), so a later start finds these workers if this run is killed.
    pub state_marker: String,
    /// Ports no worker gets (the UI's).
    pub reserved_ports: Vec<u16>,
}

impl std::fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSpec")
            .field("module", &self.module)
            .field("models_dir", &self.models_dir)
            .finish_non_exhaustive()
    }
}

/// Fossa nodes as local processes, supervised.
pub struct LocalBackend {
    spec: WorkerSpec,
    workers: Mutex<Vec<LocalWorker>>,
    desired: AtomicU32,
    models: StdMutex<Vec<String>>,
    events: Events,
    logs: LocalLogs,
    protection: Protection,
}

impl LocalBackend {
    /// Starts `n` workers.
    pub async fn start(
        spec: WorkerSpec,
        n: u32,
        models: Vec<String>,
        events: Events,
    ) -> Result<Arc<Self>, Error> {
        std::fs::create_dir_all(&spec.logs)
            .map_err(|e| other(format!("cannot create {}: {e}", spec.logs.display())))?;
        let mut secrets = vec![spec.broker_url.clone()];
        secrets.extend(crate::duties::broker::parse_url(&spec.broker_url).map(|(c, _)| c.password));
        let logs = LocalLogs::new(spec.logs.clone(), secrets);
        let b = Arc::new(LocalBackend {
            logs,
            spec,
            workers: Mutex::new(Vec::new()),
            desired: AtomicU32::new(n),
            models: StdMutex::new(models),
            events,
            protection: Protection::default(),
        });
        b.converge().await?;
        Ok(b)
    }

    fn spawn(&self, index: u32, port: u16) -> Result<Group, Error> {
        let mut group = spawn_group(
            Command::new(&self.spec.python)
                .arg(&self.spec.module)
                .env("RABBITMQ_URL", &self.spec.broker_url)
                .env("FOSSA_HTTP_PORT", port.to_string())
                .env("FOSSA_BIND_ADDRESS", "127.0.0.1")
                .env("FOSSA_MODELS_DIR", &self.spec.models_dir)
                .env("PYTHONUNBUFFERED", "1")
                .env(super::leftovers::STATE_ENV, &self.spec.state_marker)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| {
            other(format!(
                "cannot start a Fossa worker with {}: {e}",
                self.spec.python.display()
            ))
        })?;
        // Its output goes to the ring the UI reads and the rotated file,
        // line by line, until the process closes it.
        let id = format!("local-{index}");
        let out = group
            .child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
        let err = group
            .child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
        for pipe in [out, err].into_iter().flatten() {
            let (logs, id) = (self.logs.clone(), id.clone());
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.push(&id, &line);
                }
            });
        }
        Ok(group)
    }

    /// A free loopback port that is not reserved and no other worker has.
    /// Starts or stops workers until there are as many as desired.
    async fn converge(&self) -> Result<(), Error> {
        let want = self.desired.load(Ordering::SeqCst) as usize;
        let mut ws = self.workers.lock().await;
        while ws.len() < want {
            let slot = Slot::next(&self.spec.reserved_ports, ws.iter().map(AsRef::as_ref))?;
            let child = self.spawn(slot.index, slot.port)?;
            self.events.push(
                "workers",
                false,
                format!(
                    "started worker local-{} on 127.0.0.1:{}",
                    slot.index, slot.port
                ),
            );
            ws.push(LocalWorker { slot, child });
        }
        ws.sort_by_key(|w| w.slot.index);
        self.shrink(&mut ws, want).await;
        Ok(())
    }

    /// Stops idle workers until `want` run; busy ones stay until idle.
    async fn shrink(&self, ws: &mut Vec<LocalWorker>, want: usize) {
        let indexes: Vec<u32> = ws.iter().map(|w| w.slot.index).collect();
        for index in self.protection.to_stop(&indexes, want) {
            let Some(at) = ws.iter().position(|w| w.slot.index == index) else {
                continue;
            };
            let mut w = ws.remove(at);
            stop_group(&mut w.child, Duration::from_secs(5)).await;
            self.events.push(
                "workers",
                false,
                format!("stopped worker local-{index} (idle)"),
            );
        }
        let indexes: Vec<u32> = ws.iter().map(|w| w.slot.index).collect();
        if let Some(note) = self.protection.kept_note(&indexes, want) {
            self.events.push("workers", false, note);
        }
    }

    /// Restarts workers whose process ended; reports each.
    pub async fn supervise_once(&self) {
        let mut ws = self.workers.lock().await;
        for i in 0..ws.len() {
            let Ok(Some(status)) = ws[i].child.child.try_wait() else {
                continue;
            };
            // Whatever the dead leader left in its group would hold the port.
            stop_group(&mut ws[i].child, Duration::from_millis(500)).await;
            let moved = move_if_taken(&self.spec.reserved_ports, &mut ws, i);
            let w = &mut ws[i];
            w.slot.restarts += 1;
            self.events.push(
                "workers",
                true,
                format!(
                    "worker local-{} exited ({status}); restarting it (restart {}){moved}",
                    w.slot.index, w.slot.restarts
                ),
            );
            match self.spawn(w.slot.index, w.slot.port) {
                Ok(child) => {
                    w.child = child;
                    w.slot.started_at = now();
                }
                Err(e) => self.events.push(
                    "workers",
                    true,
                    format!("cannot restart local-{}: {e}", w.slot.index),
                ),
            }
        }
    }

    /// Stops the workers kept above the wanted count once they are idle.
    async fn shrink_kept(&self) {
        let want = self.desired.load(Ordering::SeqCst) as usize;
        let mut ws = self.workers.lock().await;
        if ws.len() > want {
            self.shrink(&mut ws, want).await;
        }
    }

    /// One look of the supervisor: restarts what exited, then stops the
    /// workers kept above the wanted count once they are idle.
    pub async fn supervise(&self) {
        self.supervise_once().await;
        self.shrink_kept().await;
    }

    /// Stops every worker.
    pub async fn stop_all(&self) {
        let mut ws = self.workers.lock().await;
        let stops = ws
            .iter_mut()
            .map(|w| stop_group(&mut w.child, Duration::from_secs(5)));
        futures::future::join_all(stops).await;
        ws.clear();
    }
}

#[async_trait]
impl WorkerBackend for LocalBackend {
    fn mode(&self) -> Mode {
        Mode::Local
    }

    async fn list(&self) -> Result<Vec<WorkerRef>, BackendError> {
        let ws = self.workers.lock().await;
        Ok(ws
            .iter()
            .map(|w| WorkerRef {
                protected: self.protection.has(w.slot.index),
                ..w.slot.worker_ref()
            })
            .collect())
    }

    async fn protect(&self, busy: &[String], idle: &[String]) -> Result<(), BackendError> {
        self.protection.set(busy, idle);
        Ok(())
    }

    fn desired(&self) -> u32 {
        self.desired.load(Ordering::SeqCst)
    }

    async fn scale(&self, workers: u32) -> Result<String, BackendError> {
        check_scale(workers)?;
        let before = self.desired.swap(workers, Ordering::SeqCst);
        self.converge()
            .await
            .map_err(local("cannot start the workers"))?;
        Ok(format!("scaled local workers from {before} to {workers}"))
    }

    async fn rebuild(&self) -> Result<String, BackendError> {
        let n = self.desired.load(Ordering::SeqCst);
        let models = list_models(&self.spec.python, &self.spec.module, &self.spec.models_dir)
            .await
            .map_err(local("cannot list the models"))?;
        *self.models.lock().expect("lock") = models.clone();
        self.stop_all().await;
        self.converge()
            .await
            .map_err(local("cannot restart the workers"))?;
        Ok(format!(
            "restarted {n} local workers with models {}",
            models.join(", ")
        ))
    }

    fn models(&self) -> Vec<String> {
        self.models.lock().expect("lock").clone()
    }

    async fn logs(&self, id: &str, query: &LogQuery) -> Result<Vec<LogLine>, BackendError> {
        Ok(self.logs.query(id, query))
    }

    async fn broker_waiting(&self) -> Option<u32> {
        crate::fleet::backend::broker_waiting_at(&self.spec.broker_url).await
    }
}

// ---------- the command ----------
