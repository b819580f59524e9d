//! `[history]` in `agent.toml`: what the agent keeps of the task history,
//! how many submissions may wait, and how often a lost task is sent again.

use serde::{Deserialize, Serialize};

/// `[history]` in `agent.toml`: the task history's retention and the queue's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryLimits {
    /// Most tasks and subtasks kept; the oldest go first.
    pub max_tasks: u32,
    /// Finished tasks older than this many days are deleted.
    pub max_age_days: u32,
    /// Most submissions waiting for a free slot; one more gets HTTP 429.
    pub queue_max: u32,
    /// Bytes of a task's result payload kept; the rest is cut, with a note.
    pub result_bytes: usize,
    /// Times a task the gateway sent is submitted again when it is lost
    /// with its node (0: off, 1: once).
    pub parent_retries: u32,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        use crate::limits;
        HistoryLimits {
            max_tasks: limits::HISTORY_MAX_TASKS,
            max_age_days: limits::HISTORY_MAX_AGE_DAYS,
            queue_max: limits::QUEUE_MAX,
            result_bytes: limits::RESULT_BYTES,
            parent_retries: limits::PARENT_RETRIES,
        }
    }
}

impl HistoryLimits {
    pub(crate) fn is_default(&self) -> bool {
        *self == HistoryLimits::default()
    }

    /// The first limit that cannot work, as `(key, what it must be)`.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if self.max_tasks == 0 {
            return Some(("max_tasks", "must be at least 1"));
        }
        if self.max_age_days == 0 {
            return Some(("max_age_days", "must be at least 1"));
        }
        if self.result_bytes < 256 {
            return Some(("result_bytes", "must be at least 256"));
        }
        None
    }
}
