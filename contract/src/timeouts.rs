//! `[timeouts]` in `agent.toml`: how long the agent waits on what it does
//! not control (AWS, the image build, the registry) before it gives up,
//! says so in a red line naming the call, and tries again. The defaults
//! are in [`crate::limits`]; a gateway on a slow link may raise them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[timeouts]` in `agent.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// An AWS call with its retries.
    pub aws_call_secs: u64,
    /// An image build without a line of output.
    pub image_build_quiet_secs: u64,
    /// An image push without a progress message.
    pub image_push_quiet_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        use crate::limits;
        Timeouts {
            aws_call_secs: limits::AWS_CALL_SECS,
            image_build_quiet_secs: limits::IMAGE_BUILD_QUIET_SECS,
            image_push_quiet_secs: limits::IMAGE_PUSH_QUIET_SECS,
        }
    }
}

impl Timeouts {
    pub(crate) fn is_default(&self) -> bool {
        *self == Timeouts::default()
    }

    /// An AWS call's limit.
    pub fn aws_call(&self) -> Duration {
        Duration::from_secs(self.aws_call_secs.max(1))
    }

    /// How long a build may be quiet.
    pub fn build_quiet(&self) -> Duration {
        Duration::from_secs(self.image_build_quiet_secs.max(1))
    }

    /// How long a push may be quiet.
    pub fn push_quiet(&self) -> Duration {
        Duration::from_secs(self.image_push_quiet_secs.max(1))
    }
}
