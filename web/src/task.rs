//! A task as the agent and the UI share it: what a Fossa node reports
//! ([`FossaTask`]), where it ran ([`TaskRow`]) and its [`TaskStatus`]. This
//! module is below both the snapshot ([`crate::model`]) and the views
//! derived from it ([`crate::views`]), and imports neither.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Where a task is. Fossa reports the first four; the gateway marks the
/// others. Serialised as the lower-case word (the history database, the API).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TaskStatus {
    /// Running on its node.
    Running,
    /// Finished well.
    Complete,
    /// Finished with an error.
    Failed,
    /// Fossa said nothing of it (or said `unknown`); also: the agent stopped
    /// while sending it, so it may or may not have reached the worker.
    #[default]
    Unknown,
    /// Sent to a node, not listed by it yet (Fossa's governor takes it off
    /// an internal queue a moment after accepting it).
    Dispatched,
    /// Was running on a worker that stopped reporting it (the worker
    /// restarted or is gone).
    Lost,
    /// The workers refused it (a class they do not accept, a bad body).
    Refused,
    /// A word this gateway does not know (a newer Fossa), kept as it was said.
    Other(String),
}

impl TaskStatus {
    /// Every status the gateway knows, in the order the history filter offers them.
    pub const KNOWN: [TaskStatus; 7] = [
        TaskStatus::Running,
        TaskStatus::Complete,
        TaskStatus::Failed,
        TaskStatus::Dispatched,
        TaskStatus::Lost,
        TaskStatus::Unknown,
        TaskStatus::Refused,
    ];

    /// The word, as Fossa and the API say it.
    pub fn as_str(&self) -> &str {
        match self {
            TaskStatus::Running => "running",
            TaskStatus::Complete => "complete",
            TaskStatus::Failed => "failed",
            TaskStatus::Unknown => "unknown",
            TaskStatus::Dispatched => "dispatched",
            TaskStatus::Lost => "lost",
            TaskStatus::Refused => "refused",
            TaskStatus::Other(s) => s,
        }
    }

    /// The status a word names (an unknown word is kept as [`TaskStatus::Other`]).
    pub fn parse(s: &str) -> Self {
        TaskStatus::KNOWN
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or_else(|| TaskStatus::Other(s.to_owned()))
    }

    /// Whether it is final: a later, older observation must not overwrite it.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskStatus::Complete
                | TaskStatus::Failed
                | TaskStatus::Lost
                | TaskStatus::Unknown
                | TaskStatus::Refused
        )
    }
}

impl From<&str> for TaskStatus {
    fn from(s: &str) -> Self {
        TaskStatus::parse(s)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TaskStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(TaskStatus::parse(&s))
    }
}

/// What a lost subtask's reason says when the gateway put it back on the
/// broker's queue: it will run again, so its parent is not stuck for it.
pub const PUT_BACK: &str = "put back on the queue";

/// One Fossa task as a node reports it (`running_tasks` / `recent_completed_tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FossaTask {
    /// Task id; a subtask's is `"{pool_id}:{n}::{reply_to}"`.
    pub task_id: String,
    /// Model class name.
    #[serde(default)]
    pub model_class: String,
    /// Method run.
    #[serde(default)]
    pub method: Option<String>,
    /// Method kwargs.
    #[serde(default)]
    pub method_kwargs: Value,
    /// Where it is.
    #[serde(default)]
    pub status: TaskStatus,
    /// Start time, seconds since the epoch (parsed from Fossa's HTTP date).
    #[serde(default)]
    pub started: Option<i64>,
    /// End time, seconds since the epoch.
    #[serde(default)]
    pub finished: Option<i64>,
    /// `{"type": "TaskComplete"|"TaskFailed", "payload": …}` once finished.
    #[serde(default)]
    pub results: Option<Value>,
    /// For a running subtask, what else its node lists of its definition
    /// (`resolver_context`, `model_construction_kwargs`,
    /// `partition_initialise_kwargs`): with the fields above, enough to put
    /// it back on the broker's queue if its worker dies. Null otherwise;
    /// never stored in the history.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub spec: Value,
}

impl FossaTask {
    /// For a subtask id `"{pool_id}:{n}::{reply_to}"`: `(pool_id, n, reply_to)`.
    pub fn subtask_parts(&self) -> Option<(&str, u32, &str)> {
        let (corr, reply_to) = self.task_id.split_once("::")?;
        let (pool, n) = corr.rsplit_once(':')?;
        Some((pool, n.parse().ok()?, reply_to))
    }

    /// Duration in seconds, when both ends are known.
    pub fn duration(&self) -> Option<i64> {
        self.finished?.checked_sub(self.started?)
    }
}

/// A task and where it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    /// The task.
    #[serde(flatten)]
    pub task: FossaTask,
    /// Worker id.
    pub worker_id: String,
    /// Worker address.
    pub worker_address: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_words_are_kept() {
        for s in TaskStatus::KNOWN {
            assert_eq!(TaskStatus::parse(s.as_str()), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<TaskStatus>(&json).unwrap(), s);
        }
        let other = TaskStatus::parse("paused");
        assert_eq!(other, TaskStatus::Other("paused".into()));
        assert_eq!(serde_json::to_string(&other).unwrap(), "\"paused\"");
        assert!(!other.is_final());
        assert!(TaskStatus::Lost.is_final() && !TaskStatus::Running.is_final());
    }

    #[test]
    fn a_task_without_a_status_is_unknown() {
        let t: FossaTask = serde_json::from_str(r#"{"task_id":"a"}"#).unwrap();
        assert_eq!(t.status, TaskStatus::Unknown);
    }
}
