//! Local mode with `--containers`: the workers are containers of the worker
//! image, built by the image duty's own code from the models directory, on
//! this machine's Docker, so a user tries exactly what Fargate will run. They
//! use the host network bound to 127.0.0.1 and local mode's broker; they are
//! supervised, scaled and rebuilt like the process workers, and removed when
//! local mode stops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex as StdMutex;

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use fossa_contract::unix_now as now;
use fossa_web::model::Mode;
use tokio::sync::Mutex;

use super::slots::{check_scale, local, move_if_taken, Protection, Slot};
use crate::duties::image;
use crate::events::Events;
use crate::fleet::{BackendError, WorkerBackend, WorkerRef};
use crate::host::docker::call;
use crate::Error;

/// Label on every container local mode starts, with its process id.
const LABEL: &str = "fossa.local";

/// What the containers are made from and connected to.
#[derive(Clone)]
pub struct ContainerSpec {
    /// Base image of the worker image.
    pub base: String,
    /// The models directory.
    pub models_dir: PathBuf,
    /// Broker URL (a secret: in the containers' environment only).
    pub broker_url: String,
    /// Ports no worker gets (the UI's).
    pub reserved_ports: Vec<u16>,
}

/// Fossa nodes as containers of the worker image.
pub struct ContainerBackend {
    docker: Docker,
    spec: ContainerSpec,
    image: Mutex<String>,
    models: StdMutex<Vec<String>>,
    desired: AtomicU32,
    workers: Mutex<Vec<Slot>>,
    events: Events,
    prefix: String,
    protection: Protection,
}

fn image_error(e: image::ImageError) -> Error {
    Error::Other(fossa_contract::aws::chain(&e))
}

impl ContainerBackend {
    /// Builds the image (or finds it) and starts `n` containers of it.
    pub async fn start(
        spec: ContainerSpec,
        n: u32,
        events: Events,
    ) -> Result<std::sync::Arc<Self>, Error> {
        let docker = crate::host::docker::connect().await.map_err(|e| {
            Error::Other(format!(
                "{}: is Docker running, and may this user use it? (or set DOCKER_HOST)",
                fossa_contract::aws::chain(&e)
            ))
        })?;
        let built = build(&docker, &spec, &events).await?;
        let b = std::sync::Arc::new(ContainerBackend {
            docker,
            image: Mutex::new(built.reference),
            models: StdMutex::new(built.models),
            desired: AtomicU32::new(n),
            workers: Mutex::new(Vec::new()),
            events,
            prefix: format!("fossa-local-{}", std::process::id()),
            spec,
            protection: Protection::default(),
        });
        b.converge().await?;
        Ok(b)
    }

    /// The worker image in use.
    pub async fn image(&self) -> String {
        self.image.lock().await.clone()
    }

    fn name(&self, index: u32) -> String {
        format!("{}-{index}", self.prefix)
    }

    async fn spawn(&self, index: u32, port: u16) -> Result<(), Error> {
        let name = self.name(index);
        self.remove(&name).await;
        let body = ContainerCreateBody {
            image: Some(self.image().await),
            env: Some(vec![
                format!("RABBITMQ_URL={}", self.spec.broker_url),
                format!("FOSSA_HTTP_PORT={port}"),
                "FOSSA_BIND_ADDRESS=127.0.0.1".into(),
            ]),
            labels: Some(HashMap::from([(
                LABEL.to_owned(),
                std::process::id().to_string(),
            )])),
            host_config: Some(HostConfig {
                network_mode: Some("host".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let docker_err = |e| Error::Other(fossa_contract::aws::chain(&e));
        self.docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(call("create a worker container"))
            .map_err(docker_err)?;
        self.docker
            .start_container(&name, None)
            .await
            .map_err(call("start a worker container"))
            .map_err(docker_err)?;
        Ok(())
    }

    async fn remove(&self, name: &str) {
        let _ = self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
    }

    /// Starts or removes containers until there are as many as desired.
    async fn converge(&self) -> Result<(), Error> {
        let want = self.desired.load(Ordering::SeqCst) as usize;
        let mut ws = self.workers.lock().await;
        while ws.len() < want {
            let slot = Slot::next(&self.spec.reserved_ports, ws.iter())?;
            self.spawn(slot.index, slot.port).await?;
            self.events.push(
                "workers",
                false,
                format!(
                    "started container {} on 127.0.0.1:{}",
                    self.name(slot.index),
                    slot.port
                ),
            );
            ws.push(slot);
        }
        ws.sort_by_key(|w| w.index);
        self.shrink(&mut ws, want).await;
        Ok(())
    }

    /// Removes idle containers until `want` run; busy ones stay until idle.
    async fn shrink(&self, ws: &mut Vec<Slot>, want: usize) {
        let indexes: Vec<u32> = ws.iter().map(|w| w.index).collect();
        for index in self.protection.to_stop(&indexes, want) {
            ws.retain(|w| w.index != index);
            self.remove(&self.name(index)).await;
            self.events.push(
                "workers",
                false,
                format!("removed container {} (idle)", self.name(index)),
            );
        }
        let indexes: Vec<u32> = ws.iter().map(|w| w.index).collect();
        if let Some(note) = self.protection.kept_note(&indexes, want) {
            self.events.push("workers", false, note);
        }
    }

    /// Removes the containers kept above the wanted count once they are idle.
    async fn shrink_kept(&self) {
        let want = self.desired.load(Ordering::SeqCst) as usize;
        let mut ws = self.workers.lock().await;
        if ws.len() > want {
            self.shrink(&mut ws, want).await;
        }
    }

    /// Starts again the containers that stopped; reports each.
    pub async fn supervise_once(&self) {
        let mut ws = self.workers.lock().await;
        for i in 0..ws.len() {
            let name = self.name(ws[i].index);
            let running = self
                .docker
                .inspect_container(&name, None)
                .await
                .ok()
                .and_then(|c| c.state.and_then(|s| s.running))
                == Some(true);
            if running {
                continue;
            }
            let moved = move_if_taken(&self.spec.reserved_ports, &mut ws, i);
            ws[i].restarts += 1;
            self.events.push(
                "workers",
                true,
                format!(
                    "container {name} stopped; starting it again (restart {}){moved}",
                    ws[i].restarts
                ),
            );
            match self.spawn(ws[i].index, ws[i].port).await {
                Ok(()) => ws[i].started_at = now(),
                Err(e) => self
                    .events
                    .push("workers", true, format!("cannot restart {name}: {e}")),
            }
        }
    }

    /// One look of the supervisor: restarts what stopped, then stops the
    /// workers kept above the wanted count once they are idle.
    pub async fn supervise(&self) {
        self.supervise_once().await;
        self.shrink_kept().await;
    }

    /// Removes every container.
    pub async fn stop_all(&self) {
        let mut ws = self.workers.lock().await;
        for w in ws.drain(..) {
            self.remove(&self.name(w.index)).await;
        }
    }
}

/// The worker image of `spec`'s models, built or found.
async fn build(
    docker: &Docker,
    spec: &ContainerSpec,
    events: &Events,
) -> Result<image::Built, Error> {
    let models = image::read_models_dir(&spec.models_dir).map_err(image_error)?;
    eprintln!(
        "building the worker image from {} on {} (the first build installs Fossa with pip)…",
        spec.models_dir.display(),
        spec.base
    );
    image::build_local(docker, &spec.base, &models, events)
        .await
        .map_err(image_error)
}

#[async_trait]
impl WorkerBackend for ContainerBackend {
    fn mode(&self) -> Mode {
        Mode::Local
    }

    async fn list(&self) -> Result<Vec<WorkerRef>, BackendError> {
        let ws = self.workers.lock().await;
        Ok(ws
            .iter()
            .map(|w| WorkerRef {
                protected: self.protection.has(w.index),
                ..w.worker_ref()
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
            .map_err(local("cannot start the containers"))?;
        Ok(format!(
            "scaled local containers from {before} to {workers}"
        ))
    }

    async fn rebuild(&self) -> Result<String, BackendError> {
        let built = build(&self.docker, &self.spec, &self.events)
            .await
            .map_err(local("cannot build the worker image"))?;
        let same = *self.image.lock().await == built.reference;
        *self.models.lock().expect("lock") = built.models.clone();
        if same {
            return Ok(format!("{} is up to date", built.reference));
        }
        *self.image.lock().await = built.reference.clone();
        self.stop_all().await;
        self.converge()
            .await
            .map_err(local("cannot start the containers"))?;
        Ok(format!(
            "restarted {} containers on {}",
            self.desired(),
            built.reference
        ))
    }

    fn models(&self) -> Vec<String> {
        self.models.lock().expect("lock").clone()
    }
}
