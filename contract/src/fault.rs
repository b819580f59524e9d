//! Fault injection for the reliability suite: `FOSSA_FAULT_EXIT_AT=<point>`
//! makes the process die abruptly (exit 137, as if killed) at that named
//! point, so tests can prove that a re-run or a restart finishes the job and
//! makes nothing twice. Unset (as it always is in production), it does nothing.
//!
//! The points: `fossa-bootstrap` has `step-N`, after its N-th step; the agent
//! has the names in [`Point::AGENT`], each between two writes that a crash
//! could separate.

/// The environment variable.
pub const EXIT_AT: &str = "FOSSA_FAULT_EXIT_AT";

/// A named point where a crash could separate two writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Image duty: the repository exists, its lifecycle policy not yet.
    EcrRepositoryCreated,
    /// Image duty: the image is pushed, nothing uses it yet.
    ImagePushed,
    /// Broker duty: the credentials are stored, no container yet.
    BrokerUrlStored,
    /// Broker duty: the container exists, not started.
    BrokerContainerCreated,
    /// Cluster duty: the log group exists, its retention not yet set.
    LogGroupCreated,
    /// Cluster duty: a revision is registered, the service does not use it yet.
    TaskDefinitionRegistered,
    /// `fossa-bootstrap`: after its N-th step.
    Step(usize),
}

impl Point {
    /// The agent's points, in the order a fresh stack reaches them per duty.
    pub const AGENT: [Point; 6] = [
        Point::EcrRepositoryCreated,
        Point::ImagePushed,
        Point::BrokerUrlStored,
        Point::BrokerContainerCreated,
        Point::LogGroupCreated,
        Point::TaskDefinitionRegistered,
    ];

    /// Its name in `FOSSA_FAULT_EXIT_AT`.
    pub fn name(self) -> String {
        match self {
            Point::EcrRepositoryCreated => "ecr-repository-created".into(),
            Point::ImagePushed => "image-pushed".into(),
            Point::BrokerUrlStored => "broker-url-stored".into(),
            Point::BrokerContainerCreated => "broker-container-created".into(),
            Point::LogGroupCreated => "log-group-created".into(),
            Point::TaskDefinitionRegistered => "task-definition-registered".into(),
            Point::Step(n) => format!("step-{n}"),
        }
    }
}

/// Exits with 137 when `FOSSA_FAULT_EXIT_AT` names `point`.
pub fn exit_at(point: Point) {
    if let Ok(v) = std::env::var(EXIT_AT) {
        let name = point.name();
        if v == name {
            eprintln!("fault injection: exiting at {name}");
            std::process::exit(137);
        }
    }
}
