//! Every resource name, derived from the stack name by one function each.

use std::fmt;
use std::str::FromStr;

/// A validated stack name: 1 to 20 characters of lowercase letters, digits and
/// `-`, starting with a letter. It is embedded in IAM, S3, ECR and ECS names,
/// so it must satisfy the strictest of their rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StackName(String);

/// Why a stack name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid stack name {name:?}: use 1-20 lowercase letters, digits or '-', starting with a letter (e.g. `dev`)")]
pub struct InvalidStackName {
    /// The name as given.
    pub name: String,
}

impl StackName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, InvalidStackName> {
        let ok = (1..=20).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidStackName {
                name: name.to_owned(),
            })
        }
    }

    /// The name itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Prefix shared by most resource names: `fossa-<stack>`.
    pub fn prefix(&self) -> String {
        format!("fossa-{}", self.0)
    }

    /// `Name` tag of the VPC.
    pub fn vpc(&self) -> String {
        format!("{}-vpc", self.prefix())
    }
    /// `Name` tag of the public subnet.
    pub fn public_subnet(&self) -> String {
        format!("{}-public", self.prefix())
    }
    /// `Name` tag of private subnet number `index` (0-based).
    pub fn private_subnet(&self, index: usize) -> String {
        format!("{}-private-{}", self.prefix(), index + 1)
    }
    /// Name of the gateway instance's security group.
    pub fn gateway_security_group(&self) -> String {
        format!("{}-gateway", self.prefix())
    }
    /// Name of the worker tasks' security group.
    pub fn task_security_group(&self) -> String {
        format!("{}-tasks", self.prefix())
    }
    /// `Name` tag of the gateway instance.
    pub fn gateway_instance(&self) -> String {
        format!("{}-gateway", self.prefix())
    }
    /// The gateway's launch template and its Auto Scaling group of one
    /// (which replaces a terminated or failed instance).
    pub fn gateway_group(&self) -> String {
        format!("{}-gateway", self.prefix())
    }
    /// `Name` tag of what outlives the gateway instance: its network
    /// interface (the private routes' target and the broker's address), its
    /// Elastic IP (the UI's address) and its data volume (the state directory).
    pub fn gateway_lasting(&self, what: Lasting) -> String {
        format!("{}-gateway-{}", self.prefix(), what.as_str())
    }
    /// IAM role of the gateway instance.
    pub fn gateway_role(&self) -> String {
        format!("{}-gateway", self.prefix())
    }
    /// Instance profile wrapping [`Self::gateway_role`].
    pub fn instance_profile(&self) -> String {
        format!("{}-gateway", self.prefix())
    }
    /// ECS task execution role (pulls the image, reads the broker secret, writes logs).
    pub fn execution_role(&self) -> String {
        format!("{}-task-execution", self.prefix())
    }
    /// ECS task role of the workers (no permissions by default).
    pub fn task_role(&self) -> String {
        format!("{}-task", self.prefix())
    }
    /// Artifact bucket. Bucket names are global, so the account and region are part of it.
    pub fn bucket(&self, account_id: &str, region: &str) -> String {
        format!("{}-{}-{}", self.prefix(), account_id, region)
    }
    /// ECR repository of the worker image.
    pub fn ecr_repository(&self) -> String {
        format!("{}/worker", self.prefix())
    }
    /// ECS cluster.
    pub fn cluster(&self) -> String {
        self.prefix()
    }
    /// ECS service running the workers.
    pub fn service(&self) -> String {
        format!("{}-workers", self.prefix())
    }
    /// Task definition family of the workers.
    pub fn task_family(&self) -> String {
        format!("{}-worker", self.prefix())
    }
    /// CloudWatch log group of the workers.
    pub fn log_group(&self) -> String {
        format!("/fossa/{}/workers", self.0)
    }
    /// Path under which every SSM parameter of the stack lives, with a trailing `/`.
    pub fn ssm_path(&self) -> String {
        format!("/fossa/{}/", self.0)
    }
    /// Full name of the SSM parameter `key` (see [`crate::ssm`]).
    pub fn ssm_parameter(&self, key: &str) -> String {
        format!("{}{}", self.ssm_path(), key)
    }
}

impl fmt::Display for StackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for StackName {
    type Err = InvalidStackName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for StackName {
    type Error = InvalidStackName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<StackName> for String {
    fn from(s: StackName) -> String {
        s.0
    }
}

/// Environment variable that chooses the UI password (else one is generated).
pub const PASSWORD_ENV: &str = "GATEWAY_HTTP_PASSWORD";

/// S3 key of the uploaded agent binary.
pub const AGENT_OBJECT_KEY: &str = "agent/fossa-agent";
/// S3 key of the user's model directory, as a gzipped tarball.
pub const MODELS_OBJECT_KEY: &str = "models/models.tar.gz";
/// Key in the artifact bucket of the lease that decides which agent acts
/// (written only with S3's conditional writes).
pub const LEASE_OBJECT_KEY: &str = "agent/lease.json";
/// The user name of the web UI.
pub const UI_USER: &str = "fossa";
/// The system account the web UI's process runs as on the gateway
/// (user-data makes it); `nobody` where it does not exist.
pub const UI_ACCOUNT: &str = "fossa-ui";
/// The account the web UI's process runs as where [`UI_ACCOUNT`] does not exist.
pub const UI_ACCOUNT_FALLBACK: &str = "nobody";
/// ECS's service-linked role, one per account: ECS makes it on first use
/// only when the caller may create it (CreateCluster API reference), and the
/// gateway role may not, so `launch` makes it; `destroy` leaves it.
pub const ECS_SERVICE_LINKED_ROLE: &str = "AWSServiceRoleForECS";
/// The service principal whose service-linked role that is.
pub const ECS_SERVICE: &str = "ecs.amazonaws.com";
/// The gateway's instance type when `launch` is not given one.
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.small";
/// The task history and queue database, in the agent's state directory.
pub const HISTORY_FILE: &str = "history.sqlite3";
/// The durable RabbitMQ queue Fossa publishes subtasks to (its depth is
/// the autoscaler's first signal).
pub const FOSSA_TASK_QUEUE: &str = "fossa_task_queue";
/// The durable RabbitMQ queue where each worker's node notes every subtask
/// it takes from [`FOSSA_TASK_QUEUE`], in the same transaction as its ack
/// (the generated node module): the gateway reads it, so a subtask taken
/// and lost between two looks at the node is still found and put back.
pub const TAKEN_QUEUE: &str = "fossa_gateway_taken";
/// The durable RabbitMQ queue the gateway puts lost subtasks back on. Every
/// node (the generated node module) takes from it before
/// [`FOSSA_TASK_QUEUE`], so a put-back subtask runs at the next free slot,
/// not behind the task queue's backlog: RabbitMQ cannot put a message at a
/// queue's head, and Fossa declares its queue without priorities.
pub const AGAIN_QUEUE: &str = "fossa_gateway_again";
/// Port the Fossa workers listen on.
pub const FOSSA_PORT: u16 = 2345;
/// Port of the RabbitMQ broker.
pub const BROKER_PORT: u16 = 5672;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_names() {
        for n in ["dev", "a", "prod-2", "abcdefghijklmnopqrst"] {
            assert!(StackName::new(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refuses_bad_names_with_a_hint() {
        for n in [
            "",
            "Dev",
            "1dev",
            "dev_1",
            "dev-",
            "abcdefghijklmnopqrstu",
            "a b",
            "dév",
        ] {
            let e = StackName::new(n).unwrap_err();
            assert!(e.to_string().contains("lowercase"), "{e}");
        }
    }

    #[test]
    fn names_derive_from_the_stack() {
        let s = StackName::new("dev").unwrap();
        assert_eq!(s.ssm_parameter("config"), "/fossa/dev/config");
        assert_eq!(s.ecr_repository(), "fossa-dev/worker");
        assert_eq!(s.cluster(), "fossa-dev");
        assert_eq!(
            s.bucket("123456789012", "eu-west-2"),
            "fossa-dev-123456789012-eu-west-2"
        );
        assert!(s.bucket("123456789012", "ap-southeast-2").len() <= 63);
    }
}

/// The worker container in the task definition.
pub const WORKER_CONTAINER: &str = "fossa";
/// The `awslogs-stream-prefix` of the workers: a task's stream is
/// `<prefix>/<container>/<task id>`.
pub const LOG_STREAM_PREFIX: &str = "fossa";

/// The CloudWatch stream of worker task `task_id`.
pub fn worker_log_stream(task_id: &str) -> String {
    format!("{LOG_STREAM_PREFIX}/{WORKER_CONTAINER}/{task_id}")
}
/// The broker's container on the gateway.
pub const BROKER_CONTAINER: &str = "fossa-broker";
/// The broker's data volume on the gateway.
pub const BROKER_VOLUME: &str = "fossa-broker-data";
/// The header a local worker requires on every request to its Fossa API,
/// holding the token its agent started it with (`FOSSA_API_TOKEN`).
pub const WORKER_TOKEN_HEADER: &str = "x-fossa-token";
/// The environment variable a local worker reads its API token from.
pub const WORKER_TOKEN_ENV: &str = "FOSSA_API_TOKEN";

/// Docker label on the broker container holding the hash of its spec.
pub const SPEC_LABEL: &str = "fossa.spec-hash";

/// Images the agent uses unless `agent.toml` names others: ECR Public's
/// mirror of the official Docker images (no Docker Hub pull limits), pinned.
pub mod images {
    /// Base of the worker image.
    pub const DEFAULT_BASE: &str = "public.ecr.aws/docker/library/python:3.12-slim-bookworm";
    /// The broker.
    pub const DEFAULT_BROKER: &str = "public.ecr.aws/docker/library/rabbitmq:3.13";
}

/// The SHA-256 fingerprint of a certificate (DER), as the agent publishes it
/// in SSM and `launch` and `status` pin it: `AB:CD:…`, 32 bytes.
pub fn tls_fingerprint(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What outlives the gateway instance, each attached by its replacement at
/// boot (user-data), found by the tag `fossa:role` = [`Lasting::role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasting {
    /// The network interface: the private routes' target, the broker's address.
    Interface,
    /// The Elastic IP: the UI's address and the workers' egress.
    Address,
    /// The data volume: the state directory (history, queue, broker data,
    /// TLS key, session key).
    Volume,
}

impl Lasting {
    /// Every kind, in the order `launch` makes them.
    pub const ALL: [Lasting; 3] = [Lasting::Interface, Lasting::Address, Lasting::Volume];

    /// Short name, in `Name` tags.
    pub fn as_str(self) -> &'static str {
        match self {
            Lasting::Interface => "eni",
            Lasting::Address => "eip",
            Lasting::Volume => "data",
        }
    }

    /// The `fossa:role` tag's value.
    pub fn role(self) -> &'static str {
        match self {
            Lasting::Interface => "gateway-interface",
            Lasting::Address => "gateway-address",
            Lasting::Volume => "gateway-data",
        }
    }
}
