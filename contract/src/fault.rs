//! Fault injection for the reliability suite: `FOSSA_FAULT_EXIT_AT=<point>`
//! makes the process die abruptly (exit 137, as if killed) at that named
//! point, so tests can prove that a re-run or a restart finishes the job and
//! makes nothing twice. Unset (as it always is in production), it does nothing.
//!
//! The points: `fossa-bootstrap` has `step-N`, after its N-th step; the agent
//! has the names in [`AGENT_POINTS`], each between two writes that a crash
//! could separate.

/// The environment variable.
pub const EXIT_AT: &str = "FOSSA_FAULT_EXIT_AT";

/// The agent's points, in the order a fresh stack reaches them per duty.
pub const AGENT_POINTS: [&str; 6] = [
    // image duty: the repository exists, its lifecycle policy not yet.
    "ecr-repository-created",
    // image duty: the image is pushed, nothing uses it yet.
    "image-pushed",
    // broker duty: the credentials are stored, no container yet.
    "broker-url-stored",
    // broker duty: the container exists, not started.
    "broker-container-created",
    // cluster duty: the log group exists, its retention not yet set.
    "log-group-created",
    // cluster duty: a revision is registered, the service does not use it yet.
    "task-definition-registered",
];

/// Exits with 137 when `FOSSA_FAULT_EXIT_AT` names `point`.
pub fn exit_at(point: &str) {
    if std::env::var(EXIT_AT).is_ok_and(|v| v == point) {
        eprintln!("fault injection: exiting at {point}");
        std::process::exit(137);
    }
}
