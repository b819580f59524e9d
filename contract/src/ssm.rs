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

/// Every key above, for listing and tests.
pub const ALL: [&str; 5] = [
    CONFIG,
    UI_PASSWORD,
    BROKER_URL,
    TLS_FINGERPRINT,
    AGENT_SHA256,
];

/// The keys the agent writes; its role may put no other parameter.
pub const AGENT_WRITES: [&str; 2] = [BROKER_URL, TLS_FINGERPRINT];
