//! The container launcher of local mode's [`Pool`](super::pool::Pool)
//! (`--containers`): each worker is a container of the worker image, built
//! by the image duty's own code from the models directory, on this machine's
//! Docker, so a user tries exactly what Fargate will run. The containers use
//! the host network bound to 127.0.0.1 and local mode's broker; their output
//! is followed into the pool's logs; they are removed when local mode stops.

use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::Mutex;

use super::pool::{Launcher, Rebuilt};
use crate::duties::image;
use crate::events::Events;
use crate::fleet::logs::LocalLogs;
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
    /// The token each worker requires on its Fossa API (a secret: in the
    /// containers' environment only).
    pub api_token: String,
}

/// Starts workers as containers of the worker image.
pub struct Containers {
    docker: Docker,
    spec: ContainerSpec,
    events: Events,
    image: Mutex<String>,
    prefix: String,
}

impl Containers {
    /// Builds the image (or finds it): the launcher and the model classes in it.
    pub async fn new(spec: ContainerSpec, events: Events) -> Result<(Self, Vec<String>), Error> {
        let docker = crate::host::docker::connect()
            .await
            .map_err(|source| Error::Docker {
                hint: "cannot use Docker: is it running, and may this user use it? (or set DOCKER_HOST)",
                source,
            })?;
        let built = build(&docker, &spec, &events).await?;
        let c = Containers {
            docker,
            image: Mutex::new(built.reference),
            events,
            prefix: format!("fossa-local-{}", std::process::id()),
            spec,
        };
        Ok((c, built.models))
    }

    fn container(&self, index: u32) -> String {
        format!("{}-{index}", self.prefix)
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

    /// Copies the container's output, line by line, to `logs` as worker
    /// `id`'s, until the container is gone.
    fn follow(&self, name: &str, logs: &LocalLogs, id: String) {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut stream = Box::pin(self.docker.logs(name, Some(options)));
        let logs = logs.clone();
        tokio::spawn(async move {
            let mut partial: HashMap<bool, Vec<u8>> = HashMap::new();
            while let Some(Ok(out)) = stream.next().await {
                let err = matches!(out, bollard::container::LogOutput::StdErr { .. });
                let buf = partial.entry(err).or_default();
                buf.extend_from_slice(out.as_ref());
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    logs.push(
                        &id,
                        String::from_utf8_lossy(&line[..nl]).trim_end_matches('\r'),
                    );
                }
            }
            for (_, rest) in partial {
                if !rest.is_empty() {
                    logs.push(&id, &String::from_utf8_lossy(&rest));
                }
            }
        });
    }
}

#[async_trait]
impl Launcher for Containers {
    fn name(&self, index: u32) -> String {
        format!("container {} of local-{index}", self.container(index))
    }

    async fn launch(&self, index: u32, port: u16, logs: &LocalLogs) -> Result<(), Error> {
        let name = self.container(index);
        self.remove(&name).await;
        let body = ContainerCreateBody {
            image: Some(self.image.lock().await.clone()),
            env: Some(vec![
                format!("RABBITMQ_URL={}", self.spec.broker_url),
                format!("FOSSA_HTTP_PORT={port}"),
                "FOSSA_BIND_ADDRESS=127.0.0.1".into(),
                format!(
                    "{}={}",
                    fossa_contract::names::WORKER_TOKEN_ENV,
                    self.spec.api_token
                ),
                "PYTHONUNBUFFERED=1".into(),
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
        let docker_err = |source| Error::Docker {
            hint: "cannot run a worker container",
            source,
        };
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
        self.follow(&name, logs, format!("local-{index}"));
        Ok(())
    }

    async fn ended(&self, index: u32) -> Option<String> {
        let state = self
            .docker
            .inspect_container(&self.container(index), None)
            .await
            .ok()
            .and_then(|c| c.state);
        match state {
            Some(s) if s.running == Some(true) => None,
            Some(s) => Some(match s.exit_code {
                Some(code) => format!("stopped (exit code {code})"),
                None => "stopped".into(),
            }),
            None => Some("is gone".into()),
        }
    }

    async fn stop(&self, index: u32) {
        self.remove(&self.container(index)).await;
    }

    async fn rebuild(&self) -> Result<Rebuilt, Error> {
        let built = build(&self.docker, &self.spec, &self.events).await?;
        let mut image = self.image.lock().await;
        let restart = *image != built.reference;
        *image = built.reference.clone();
        Ok(Rebuilt {
            models: built.models,
            restart,
            what: built.reference,
        })
    }

    async fn describe(&self) -> String {
        format!(
            "worker image {} (the image duty's build), models from {}",
            self.image.lock().await,
            self.spec.models_dir.display()
        )
    }
}

/// The worker image of `spec`'s models, built or found.
async fn build(
    docker: &Docker,
    spec: &ContainerSpec,
    events: &Events,
) -> Result<image::Built, Error> {
    let models = image::read_models_dir(&spec.models_dir)?;
    eprintln!(
        "building the worker image from {} on {} (the first build installs Fossa with pip)…",
        spec.models_dir.display(),
        spec.base
    );
    Ok(image::build_local(docker, &spec.base, &models, events).await?)
}
