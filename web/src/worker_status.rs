//! The statuses a worker's backend reports that the fleet acts on.

/// ECS's statuses of a task on its way out (the task lifecycle:
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-lifecycle-explanation.html>).
/// Such a worker may still run tasks, draining them in its stop window, but
/// it takes no new work.
pub const STOPPING_STATUSES: [&str; 5] = [
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    STOPPED,
    "DELETED",
];

/// The status of a worker that has stopped: nothing answers there.
pub const STOPPED: &str = "STOPPED";
