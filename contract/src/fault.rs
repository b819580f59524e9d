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
    /// Upgrade duty: the new binary is downloaded, checked and staged; `current` still names the old one.
    UpgradeStaged,
    /// Upgrade duty: `current` names the new binary; the old agent still runs.
    UpgradeSwapped,
    /// The agent, just before it tells systemd it is ready. Written
    /// `before-ready:<sha prefix>`, it fires only in the binary whose SHA-256
    /// starts with that prefix (an upgrade that never becomes ready).
    BeforeReady,
    /// Fleet: a queued task is marked as being sent to a worker; the request has not left.
    QueueSending,
    /// Fleet: the worker accepted a queued task; the queue does not know yet.
    QueueSent,
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

    /// The upgrade duty's points, in order (the systemd test crashes at each).
    pub const UPGRADE: [Point; 2] = [Point::UpgradeStaged, Point::UpgradeSwapped];

    /// The queue's points: a crash at each must dispatch nothing twice.
    pub const QUEUE: [Point; 2] = [Point::QueueSending, Point::QueueSent];

    /// Its name in `FOSSA_FAULT_EXIT_AT`.
    pub fn name(self) -> String {
        match self {
            Point::EcrRepositoryCreated => "ecr-repository-created".into(),
            Point::ImagePushed => "image-pushed".into(),
            Point::BrokerUrlStored => "broker-url-stored".into(),
            Point::BrokerContainerCreated => "broker-container-created".into(),
            Point::LogGroupCreated => "log-group-created".into(),
            Point::TaskDefinitionRegistered => "task-definition-registered".into(),
            Point::UpgradeStaged => "upgrade-staged".into(),
            Point::UpgradeSwapped => "upgrade-swapped".into(),
            Point::BeforeReady => "before-ready".into(),
            Point::QueueSending => "queue-sending".into(),
            Point::QueueSent => "queue-sent".into(),
            Point::Step(n) => format!("step-{n}"),
        }
    }
}

/// Exits with 137 when `FOSSA_FAULT_EXIT_AT` names `point`, or names it
/// with `:<prefix>` and `sha256` (this binary's) starts with that prefix.
pub fn exit_at_in(point: Point, sha256: &str) {
    if let Ok(v) = std::env::var(EXIT_AT) {
        let name = point.name();
        if v.split_once(':').is_some_and(|(n, prefix)| {
            n == name && !prefix.is_empty() && sha256.starts_with(prefix)
        }) {
            eprintln!("fault injection: exiting at {v}");
            std::process::exit(137);
        }
    }
    exit_at(point);
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

/// The environment variable naming a loop to wedge: `fleet` blocks the
/// fleet poller's thread for ever at its round (a deadlock, as a bug would),
/// so the watchdog's restart can be shown.
pub const FREEZE: &str = "FOSSA_FAULT_FREEZE";

/// Blocks this thread for ever when `FOSSA_FAULT_FREEZE` names `what`.
pub fn freeze_at(what: &str) {
    if std::env::var(FREEZE).is_ok_and(|v| v == what) {
        eprintln!("fault injection: the {what} loop freezes");
        loop {
            std::thread::park();
        }
    }
}
