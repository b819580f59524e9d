//! Keys of the SSM parameters under `/fossa/<stack>/` that carry the hand-over.
//!
//! Use [`crate::StackName::ssm_parameter`] to get a full parameter name.

/// JSON [`crate::config::StackConfig`], written by `fossa-bootstrap`.
pub const CONFIG: &str = "config";
/// UI password (SecureString), written by `fossa-bootstrap`.
pub const UI_PASSWORD: &str = "ui-password";
/// Broker URL with its credentials (SecureString), written by the agent.
pub const BROKER_URL: &str = "broker-url";
/// SHA-256 fingerprint of the agent's TLS certificate, written by the agent.
pub const TLS_FINGERPRINT: &str = "tls-fingerprint";
/// SHA-256 of the uploaded agent binary, written by `fossa-bootstrap`.
pub const AGENT_SHA256: &str = "agent-sha256";
/// The scraper's token (SecureString), which opens `/metrics` and nothing
/// else, written by `fossa-bootstrap`.
pub const METRICS_TOKEN: &str = "metrics-token";

/// Every key above, for listing and tests.
pub const ALL: [&str; 6] = [
    CONFIG,
    UI_PASSWORD,
    BROKER_URL,
    TLS_FINGERPRINT,
    AGENT_SHA256,
    METRICS_TOKEN,
];

/// The keys the agent writes; its role may put no other parameter.
pub const AGENT_WRITES: [&str; 2] = [BROKER_URL, TLS_FINGERPRINT];

/// An SSM parameter as read: its value and its version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parameter {
    /// The value (decrypted when read as a secret).
    pub value: String,
    /// Its version (a rotation or rewrite raises it).
    pub version: i64,
}

/// Reads parameter `name`, decrypting a SecureString when `secret`. A
/// missing parameter is an error (`ParameterNotFound`); see [`read`].
pub async fn get(
    client: &aws_sdk_ssm::Client,
    name: &str,
    secret: bool,
) -> Result<Parameter, crate::aws::AwsError> {
    use crate::aws::AwsResultExt;
    let out = client
        .get_parameter()
        .name(name)
        .with_decryption(secret)
        .send()
        .await
        .aws("ssm:GetParameter", name)?;
    let p = out.parameter();
    Ok(Parameter {
        value: p.and_then(|p| p.value()).unwrap_or_default().to_owned(),
        version: p.map(|p| p.version()).unwrap_or(0),
    })
}

/// [`get`], with a missing parameter as `None`.
pub async fn read(
    client: &aws_sdk_ssm::Client,
    name: &str,
    secret: bool,
) -> Result<Option<Parameter>, crate::aws::AwsError> {
    match get(client, name, secret).await {
        Ok(p) => Ok(Some(p)),
        Err(e) if e.is_code("ParameterNotFound") => Ok(None),
        Err(e) => Err(e),
    }
}
