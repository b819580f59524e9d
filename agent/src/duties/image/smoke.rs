//! The smoke test before a push: the built image runs its node module once
//! with `--list-models`, without a network, and must list the model classes
//! the sources define. A model that does not import (a syntax error, a
//! missing dependency) is caught here, with the file and line, before any
//! worker gets the image.

use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use super::ImageError;
use crate::fossa::{python_error_summary, NODE_MODULE};
use crate::host::docker::call;

/// How long the node module may take to list its models.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs `reference` with `--list-models`; `Ok` when it lists every class in `expected`.
pub async fn check(
    docker: &Docker,
    reference: &str,
    expected: &[String],
) -> Result<(), ImageError> {
    let name = format!("fossa-smoke-{:016x}", rand::random::<u64>());
    let body = ContainerCreateBody {
        image: Some(reference.to_owned()),
        cmd: Some(vec![
            "python".into(),
            format!("/app/{NODE_MODULE}"),
            "--list-models".into(),
        ]),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .map_err(call("create the smoke-test container"))?;
    let result = run(docker, &name, reference, expected).await;
    let _ = docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    result
}

async fn run(
    docker: &Docker,
    name: &str,
    reference: &str,
    expected: &[String],
) -> Result<(), ImageError> {
    docker
        .start_container(name, None)
        .await
        .map_err(call("start the smoke-test container"))?;
    let wait = async {
        let mut s = docker.wait_container(name, None);
        match s.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(call("wait for the smoke-test container")(e)),
            None => Ok(-1),
        }
    };
    let code = tokio::time::timeout(LIMIT, wait)
        .await
        .map_err(|_| ImageError::Smoke {
            reference: reference.to_owned(),
            problem: format!("--list-models did not finish within {} s", LIMIT.as_secs()),
        })??;
    let (mut out, mut err) = (String::new(), String::new());
    let mut logs = docker.logs(
        name,
        Some(
            LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build(),
        ),
    );
    while let Some(Ok(chunk)) = logs.next().await {
        match chunk {
            bollard::container::LogOutput::StdErr { message } => {
                err.push_str(&String::from_utf8_lossy(&message))
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let smoke = |problem: String| ImageError::Smoke {
        reference: reference.to_owned(),
        problem,
    };
    if code != 0 {
        return Err(smoke(python_error_summary(&err)));
    }
    let listed: Vec<String> = serde_json::from_str(out.trim()).map_err(|_| {
        smoke(format!(
            "--list-models printed no JSON list: {}",
            out.trim()
        ))
    })?;
    let missing: Vec<&String> = expected.iter().filter(|c| !listed.contains(c)).collect();
    if !missing.is_empty() || listed.is_empty() {
        return Err(smoke(format!(
            "the node lists {listed:?}, but the model files define {expected:?}"
        )));
    }
    Ok(())
}
