//! The Docker engine on this host: one client constructor and one error type
//! for the duties that drive it (the broker container, the worker image).

use std::time::Duration;

use bollard::Docker;

/// A Docker call that failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine could not be reached or refused the call.
    #[error("docker {what} failed")]
    Call {
        /// Which operation.
        what: &'static str,
        /// What bollard reported.
        #[source]
        source: bollard::errors::Error,
    },
    /// A streamed operation made no progress for too long; it was abandoned.
    #[error("docker {what} made no progress for {quiet:?} and was abandoned (the registry, the network or the engine stopped answering; it is tried again)")]
    Quiet {
        /// Which operation.
        what: &'static str,
        /// How long it was quiet.
        quiet: Duration,
    },
    /// The engine ran the call and reported an error in its stream (a build step, a push).
    #[error("docker {what} failed: {message}")]
    Reported {
        /// Which operation.
        what: &'static str,
        /// The engine's message.
        message: String,
    },
}

/// The next message of the streamed operation `what` (a build, a push),
/// or an error when the engine says nothing for `quiet`: a registry that
/// took the connection and stopped answering never holds a duty for ever.
/// Dropping the stream closes the request, and the engine cancels the work.
pub async fn next_within<S, T>(
    stream: &mut S,
    what: &'static str,
    quiet: Duration,
) -> Result<Option<T>, DockerError>
where
    S: futures::Stream<Item = Result<T, bollard::errors::Error>> + Unpin,
{
    use futures::StreamExt;
    match tokio::time::timeout(quiet, stream.next()).await {
        Err(_) => Err(DockerError::Quiet { what, quiet }),
        Ok(None) => Ok(None),
        Ok(Some(r)) => r.map(Some).map_err(call(what)),
    }
}

/// Runs `cmd` in `container` and returns what it printed on standard
/// output, within `limit` (a command that does not end is `Quiet`). A
/// non-zero exit is [`DockerError::Reported`] with what it printed.
pub async fn exec_output(
    docker: &Docker,
    container: &str,
    cmd: &[&str],
    limit: Duration,
) -> Result<String, DockerError> {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    use futures::StreamExt;
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(call("exec"))?;
    let run = async {
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&exec.id, None)
            .await
            .map_err(call("exec"))?
        {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(call("exec"))? {
                    bollard::container::LogOutput::StdOut { message } => {
                        stdout.push_str(&String::from_utf8_lossy(&message))
                    }
                    other => stderr.push_str(&other.to_string()),
                }
            }
        }
        let code = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(call("exec"))?
            .exit_code;
        match code {
            Some(0) => Ok(stdout),
            _ => Err(DockerError::Reported {
                what: "exec",
                message: format!(
                    "{} exited {}: {}",
                    cmd.join(" "),
                    code.map_or("without a code".to_owned(), |c| c.to_string()),
                    stderr.trim()
                ),
            }),
        }
    };
    tokio::time::timeout(limit, run)
        .await
        .unwrap_or(Err(DockerError::Quiet {
            what: "exec",
            quiet: limit,
        }))
}

/// Maps a bollard error of the operation `what`.
pub fn call(what: &'static str) -> impl Fn(bollard::errors::Error) -> DockerError {
    move |source| DockerError::Call { what, source }
}

/// Docker client on the local socket, with the API version the engine speaks.
pub async fn connect() -> Result<Docker, DockerError> {
    let d = Docker::connect_with_local_defaults().map_err(call("connect"))?;
    d.negotiate_version()
        .await
        .map_err(call("version negotiation"))
}

/// The bridge option naming a network's Linux bridge.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// Whether `found` is `net` as [`ensure_network`] makes it: the bridge name
/// and the subnet the NAT duty's rules are written for.
fn network_matches(
    found: &bollard::models::NetworkInspect,
    net: &fossa_contract::networks::BridgeNetwork,
) -> bool {
    let bridge = found
        .options
        .as_ref()
        .and_then(|o| o.get(BRIDGE_NAME_OPTION))
        .map(String::as_str);
    let subnet = net.subnet().to_string();
    let subnets: Vec<&str> = found
        .ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.subnet.as_deref())
        .collect();
    bridge == Some(net.bridge) && subnets == [subnet.as_str()]
}

/// Makes Docker's network `net` exist as the contract says: a bridge named
/// `net.bridge` on `net.subnet()`. One made otherwise (by hand, or by an
/// older agent) is removed and made again; removing it fails while a
/// container is attached, and the error says so.
pub async fn ensure_network(
    docker: &Docker,
    net: &fossa_contract::networks::BridgeNetwork,
) -> Result<(), DockerError> {
    use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
    match docker.inspect_network(net.name, None).await {
        Ok(found) if network_matches(&found, net) => return Ok(()),
        Ok(_) => docker
            .remove_network(net.name)
            .await
            .map_err(call("remove a network made otherwise"))?,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(call("network inspect")(e)),
    }
    let request = NetworkCreateRequest {
        name: net.name.to_owned(),
        driver: Some("bridge".to_owned()),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(net.subnet().to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        options: Some(std::collections::HashMap::from([(
            BRIDGE_NAME_OPTION.to_owned(),
            net.bridge.to_owned(),
        )])),
        labels: Some(std::collections::HashMap::from([(
            "fossa.role".to_owned(),
            net.name.to_owned(),
        )])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => Ok(()),
        // Made meanwhile by a concurrent duty (the broker's and the image's
        // run side by side): the same network.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(e) => Err(call("network create")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_quiet_past_its_limit_ends_naming_the_operation() {
        let mut quiet = futures::stream::pending::<Result<u8, bollard::errors::Error>>();
        let e = next_within(&mut quiet, "push", Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("docker push made no progress for 50ms and was abandoned"),
            "{e}"
        );
        let mut talking = futures::stream::iter([Ok::<u8, bollard::errors::Error>(1)]);
        let d = Duration::from_millis(50);
        assert_eq!(next_within(&mut talking, "push", d).await.unwrap(), Some(1));
        assert_eq!(next_within(&mut talking, "push", d).await.unwrap(), None);
    }
}
