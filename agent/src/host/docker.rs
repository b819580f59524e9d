//! The Docker engine on this host: one client constructor and one error type
//! for the duties that drive it (the broker container, the worker image).

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
    /// The engine ran the call and reported an error in its stream (a build step, a push).
    #[error("docker {what} failed: {message}")]
    Reported {
        /// Which operation.
        what: &'static str,
        /// The engine's message.
        message: String,
    },
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
