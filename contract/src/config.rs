//! Configuration handed from `fossa-bootstrap` to `fossa-agent`.
//!
//! Two documents: the small TOML file user-data writes on the instance
//! ([`AgentToml`]), which names the stack and region, and the JSON document in
//! the SSM parameter `/fossa/<stack>/config` ([`StackConfig`]) with everything
//! `launch` created. Both refuse unknown keys, and parse errors name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::StackName;

/// Default path of the agent's TOML file on the instance.
pub const DEFAULT_AGENT_TOML: &str = "/etc/fossa/agent.toml";
/// Default state directory of the agent (certificate, build cache).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fossa";
/// Default address of the web UI.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:443";

/// `/etc/fossa/agent.toml`, written by user-data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentToml {
    /// The stack this agent serves.
    pub stack: StackName,
    /// AWS region of the stack.
    pub region: String,
    /// Endpoint URL of an AWS API emulator (tests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Where the agent keeps its certificate and caches.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Address of the web UI.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `host:port` of a registry to push the worker image to instead of ECR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Base image of the worker image (default [`crate::names::images::DEFAULT_BASE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    /// Image of the broker container (default [`crate::names::images::DEFAULT_BROKER`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_image: Option<String>,
    /// Address the broker listens on (default: this host's address on the default route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_address: Option<std::net::Ipv4Addr>,
    /// `host:port` the NAT duty's egress self-test connects to
    /// (default: the region's ECR API endpoint on 443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_check: Option<String>,
    /// Which duties run (default: all of `nat`, `broker`, `image`, `cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duties: Option<Vec<Duty>>,
    /// PEM certificate chain for the UI, with [`AgentToml::tls_key`]
    /// (default: a self-signed certificate made on first start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of [`AgentToml::tls_cert`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// How much task history is kept, and how many submissions may wait.
    #[serde(default, skip_serializing_if = "HistoryLimits::is_default")]
    pub history: HistoryLimits,
    /// Where builds and the broker are networked (default: their own bridges).
    #[serde(default, skip_serializing_if = "ContainerNetwork::is_default")]
    pub container_network: ContainerNetwork,
    /// How long AWS calls, builds and pushes may take before they end.
    #[serde(default, skip_serializing_if = "Timeouts::is_default")]
    pub timeouts: Timeouts,
}

/// Autoscaling bounds (`launch --min-workers/--max-workers/--idle-window`,
/// local mode's flags of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// Fewest workers (0: none while idle).
    pub min_workers: u32,
    /// Most workers.
    pub max_workers: u32,
    /// Seconds with nothing running or waiting before the fleet shrinks to the minimum.
    #[serde(default = "default_idle_window")]
    pub idle_window_secs: u64,
}

fn default_idle_window() -> u64 {
    crate::limits::AUTOSCALE_IDLE_WINDOW_SECS
}

/// Autoscaling bounds that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutoscaleError {
    /// The minimum is above the maximum.
    #[error(
        "--min-workers {min} is above --max-workers {max}: give a minimum at or below the maximum"
    )]
    MinAboveMax {
        /// The minimum.
        min: u32,
        /// The maximum.
        max: u32,
    },
    /// The maximum is above what the mode runs.
    #[error(
        "--max-workers {max} is above the {limit} workers this mode runs: ask for {limit} or fewer"
    )]
    AboveLimit {
        /// The maximum asked for.
        max: u32,
        /// The limit.
        limit: u32,
    },
    /// A maximum of 0 would never run anything.
    #[error("--max-workers 0 would never run a task: give at least 1")]
    ZeroMax,
    /// An idle window of 0 would stop workers between two tasks.
    #[error("--idle-window 0 would stop workers between two tasks: give at least 1 second")]
    ZeroWindow,
}

impl Autoscale {
    /// Checks the bounds against the mode's `limit` of workers.
    pub fn check(&self, limit: u32) -> Result<(), AutoscaleError> {
        if self.max_workers == 0 {
            return Err(AutoscaleError::ZeroMax);
        }
        if self.max_workers > limit {
            return Err(AutoscaleError::AboveLimit {
                max: self.max_workers,
                limit,
            });
        }
        if self.min_workers > self.max_workers {
            return Err(AutoscaleError::MinAboveMax {
                min: self.min_workers,
                max: self.max_workers,
            });
        }
        if self.idle_window_secs == 0 {
            return Err(AutoscaleError::ZeroWindow);
        }
        Ok(())
    }
}

pub use crate::history_limits::HistoryLimits;
pub use crate::networks::ContainerNetwork;
pub use crate::timeouts::Timeouts;

/// A duty of the agent's reconcile loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Duty {
    /// iptables NAT for the private subnets.
    Nat,
    /// The RabbitMQ container.
    Broker,
    /// The worker image in ECR.
    Image,
    /// The ECS cluster, task definition and service.
    Cluster,
    /// The agent's own binary: the one `agent-sha256` names, swapped in place.
    Upgrade,
}

impl Duty {
    /// Every duty, in the order they start.
    pub const ALL: [Duty; 5] = [
        Duty::Nat,
        Duty::Broker,
        Duty::Image,
        Duty::Cluster,
        Duty::Upgrade,
    ];

    /// Its name in `agent.toml`, events, status and the API.
    pub fn name(self) -> &'static str {
        match self {
            Duty::Nat => "nat",
            Duty::Broker => "broker",
            Duty::Image => "image",
            Duty::Cluster => "cluster",
            Duty::Upgrade => "upgrade",
        }
    }

    /// Its label on the overview.
    pub fn title(self) -> &'static str {
        match self {
            Duty::Nat => "NAT",
            Duty::Broker => "Broker",
            Duty::Image => "Image",
            Duty::Cluster => "Cluster",
            Duty::Upgrade => "Agent",
        }
    }
}

impl AgentToml {
    /// The duties to run.
    pub fn duties(&self) -> Vec<Duty> {
        self.duties.clone().unwrap_or_else(|| Duty::ALL.to_vec())
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("constant address")
}

/// A configuration document that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema.
    #[error("config file {path} is invalid: {message}. Valid keys: stack, region, endpoint_url, state_dir, listen, registry, base_image, broker_image, broker_address, egress_check, duties, tls_cert, tls_key, container_network, history (max_tasks, max_age_days, queue_max, result_bytes, parent_retries), timeouts (aws_call_secs, image_build_quiet_secs, image_push_quiet_secs)")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// The JSON did not parse or did not match the schema.
    #[error(
        "stack config {what} is invalid: {message}. Re-run `fossa-bootstrap launch` to rewrite it"
    )]
    Json {
        /// Where the document came from.
        what: String,
        /// The parser's message, naming the field.
        message: String,
    },
}

impl AgentToml {
    /// Parses the TOML text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let parsed: Self = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: path.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        if let Some((key, rule)) = parsed.history.problem() {
            return Err(ConfigError::Toml {
                path: path.to_owned(),
                message: format!("[history] {key} {rule}"),
            });
        }
        if parsed.tls_cert.is_some() != parsed.tls_key.is_some() {
            return Err(ConfigError::Toml {
                path: path.to_owned(),
                message: "tls_cert and tls_key go together: give both, or neither for a self-signed certificate".into(),
            });
        }
        Ok(parsed)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Renders the file as user-data writes it.
    pub fn render(&self) -> String {
        toml::to_string(self).expect("AgentToml always serialises")
    }
}

/// One private subnet of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// Subnet id.
    pub id: String,
    /// Its CIDR block.
    pub cidr: String,
    /// Its availability zone.
    pub az: String,
}

/// The JSON document in `/fossa/<stack>/config`: what `launch` created and how
/// the workers should run.
///
/// Unlike `agent.toml`, which people write, this document is written by
/// `launch` and read by whichever agent runs: a newer `launch` adds fields an
/// older agent does not know, and that agent must still start (its upgrade
/// duty is what brings the newer agent). So unknown fields are ignored here,
/// and a missing or wrong-typed known field is still refused by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackConfig {
    /// Schema version of this document.
    pub version: u32,
    /// The stack.
    pub stack: StackName,
    /// AWS region.
    pub region: String,
    /// AWS account id.
    pub account_id: String,
    /// VPC id.
    pub vpc_id: String,
    /// VPC CIDR block.
    pub vpc_cidr: String,
    /// Public subnet (the gateway's).
    pub public_subnet: Subnet,
    /// Private subnets (the workers').
    pub private_subnets: Vec<Subnet>,
    /// Security group of the gateway instance.
    pub gateway_security_group: String,
    /// Security group of the worker tasks.
    pub task_security_group: String,
    /// ARN of the ECS task execution role.
    pub execution_role_arn: String,
    /// ARN of the ECS task role.
    pub task_role_arn: String,
    /// Artifact bucket.
    pub bucket: String,
    /// Whether the bucket holds a models tarball at [`crate::names::MODELS_OBJECT_KEY`].
    pub has_models: bool,
    /// Desired number of workers.
    pub workers: u32,
    /// Task CPU units.
    pub cpu: u32,
    /// Task memory in MiB.
    pub memory: u32,
    /// Set by `destroy` before it deletes anything: the agent stops making
    /// AWS resources, so what destroy deletes stays deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub destroying: bool,
    /// The gateway's instance type, for the cost figures (older configs lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Autoscaling between a minimum and a maximum of workers (none: the
    /// fixed count in `workers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
    /// Workers beyond the first on Fargate Spot ([`StackConfig::capacity_strategy`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spot: bool,
    /// The uploaded agent may be older than the running one (`launch
    /// --allow-downgrade`, for this launch only): an agent never downgrades
    /// itself otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_agent_downgrade: bool,
    /// The SHA-256 of the models tarball `launch` uploaded: the agent builds
    /// only from an archive with this hash, so whoever can write the bucket
    /// but not this parameter cannot put code into the workers. `None` on a
    /// stack launched before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_sha256: Option<String>,
}

/// One capacity provider's share of the worker tasks: an item of the
/// service's `capacityProviderStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityShare {
    /// `FARGATE` or `FARGATE_SPOT`.
    pub provider: &'static str,
    /// Tasks placed here before any weight applies.
    pub base: u32,
    /// Its share of the tasks beyond the bases.
    pub weight: u32,
}

/// The service's capacity provider strategy: every worker on Fargate,
/// or with `spot`, Fargate with base [`SPOT_ON_DEMAND_BASE`] and weight
/// 1, and Fargate Spot with weight [`SPOT_WEIGHT`].
pub fn capacity_strategy(spot: bool) -> Vec<CapacityShare> {
    let fargate = CapacityShare {
        provider: FARGATE,
        base: 0,
        weight: 1,
    };
    if !spot {
        return vec![fargate];
    }
    vec![
        CapacityShare {
            base: SPOT_ON_DEMAND_BASE,
            ..fargate
        },
        CapacityShare {
            provider: FARGATE_SPOT,
            base: 0,
            weight: SPOT_WEIGHT,
        },
    ]
}

/// How many of `workers` tasks the strategy puts on Fargate Spot: bases
/// first, then each task where its provider's share stays lowest, the
/// heavier weight on a tie (the Fargate emulator places them the same way).
pub fn spot_share(spot: bool, workers: u32) -> u32 {
    let shares = capacity_strategy(spot);
    let mut placed = vec![0u32; shares.len()];
    for _ in 0..workers {
        let i = (0..shares.len())
            .find(|&i| placed[i] < shares[i].base)
            .unwrap_or_else(|| {
                (0..shares.len())
                    .filter(|&i| shares[i].weight > 0)
                    .min_by(|&a, &b| {
                        // The share each would have with this task.
                        let share = |i: usize| {
                            f64::from(placed[i].saturating_sub(shares[i].base) + 1)
                                / f64::from(shares[i].weight)
                        };
                        // On a tie, the heavier weight.
                        share(a)
                            .total_cmp(&share(b))
                            .then(shares[b].weight.cmp(&shares[a].weight))
                    })
                    .expect("a weighted provider")
            });
        placed[i] += 1;
    }
    shares
        .iter()
        .zip(placed)
        .filter(|(s, _)| s.provider == FARGATE_SPOT)
        .map(|(_, n)| n)
        .sum()
}

/// The Fargate vCPU a stack's most workers need against the account's quota.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{workers} workers of {cpu} CPU units need {need} vCPU of {what} while a deployment replaces them (ECS runs up to {} % of the tasks then), and this account's quota in {region} is {quota} vCPU (Service Quotas, code {code}): ask AWS for an increase in the Service Quotas console, or give a lower --max-workers, --workers or --cpu", crate::addresses::DEPLOYMENT_MAX_PERCENT
)]
pub struct QuotaError {
    /// The most workers the stack may run.
    pub workers: u32,
    /// CPU units of each.
    pub cpu: u32,
    /// `Fargate On-Demand` or `Fargate Spot`.
    pub what: &'static str,
    /// vCPU needed.
    pub need: f64,
    /// The account's quota.
    pub quota: f64,
    /// The quota's code.
    pub code: &'static str,
    /// The region.
    pub region: String,
}

/// Checks that `workers` tasks of `cpu` units, placed as `spot` places them,
/// fit the account's Fargate On-Demand and Spot vCPU quotas where known,
/// with a deployment's surge: while one replaces the tasks, old and new run
/// together (`addresses::with_surge`), and a surge beyond the quota leaves
/// the deployment waiting for room that never comes.
pub fn check_fargate_quota(
    workers: u32,
    cpu: u32,
    spot: bool,
    on_demand_quota: Option<f64>,
    spot_quota: Option<f64>,
    region: &str,
) -> Result<(), QuotaError> {
    let tasks = crate::addresses::with_surge(workers);
    let on_spot = spot_share(spot, tasks);
    let vcpu = |n: u32| f64::from(n) * f64::from(cpu) / 1024.0;
    let checks = [
        (
            "Fargate On-Demand",
            vcpu(tasks - on_spot),
            on_demand_quota,
            crate::limits::FARGATE_ON_DEMAND_VCPU_QUOTA,
        ),
        (
            "Fargate Spot",
            vcpu(on_spot),
            spot_quota,
            crate::limits::FARGATE_SPOT_VCPU_QUOTA,
        ),
    ];
    for (what, need, quota, code) in checks {
        if let Some(quota) = quota.filter(|q| need > *q) {
            return Err(QuotaError {
                workers,
                cpu,
                what,
                need,
                quota,
                code,
                region: region.to_owned(),
            });
        }
    }
    Ok(())
}

/// The on-demand Fargate capacity provider.
pub const FARGATE: &str = "FARGATE";
/// The Spot Fargate capacity provider.
pub const FARGATE_SPOT: &str = "FARGATE_SPOT";
/// With `--spot`: the first worker runs on Fargate, so one survives a wave
/// of Spot interruptions ...
pub const SPOT_ON_DEMAND_BASE: u32 = 1;
/// ... and of the rest, this many on Fargate Spot for each on Fargate.
pub const SPOT_WEIGHT: u32 = 3;

/// Current [`StackConfig::version`].
pub const STACK_CONFIG_VERSION: u32 = 1;

impl StackConfig {
    /// Parses the JSON document; `what` names its source for the error.
    pub fn parse(what: &str, json: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(json).map_err(|e| ConfigError::Json {
            what: what.to_owned(),
            message: e.to_string(),
        })
    }

    /// The most workers this stack runs: the Fargate limit, or fewer where
    /// its private subnets hold fewer with a deployment's surge (an older
    /// stack's /24s hold 251).
    pub fn most_workers(&self) -> u32 {
        let subnets: Vec<ipnet::Ipv4Net> = self
            .private_subnets
            .iter()
            .filter_map(|s| s.cidr.parse().ok())
            .collect();
        if subnets.is_empty() {
            return crate::limits::MAX_WORKERS;
        }
        crate::addresses::most_workers(&subnets).min(crate::limits::MAX_WORKERS)
    }

    /// Workers of a new stack unless `launch --workers` says otherwise.
    pub const DEFAULT_WORKERS: u32 = 4;
    /// CPU units of a worker task unless `launch --cpu` says otherwise.
    pub const DEFAULT_CPU: u32 = 256;
    /// MiB of a worker task unless `launch --memory` says otherwise.
    pub const DEFAULT_MEMORY: u32 = 512;

    /// The service's capacity provider strategy ([`capacity_strategy`]).
    pub fn capacity_strategy(&self) -> Vec<CapacityShare> {
        capacity_strategy(self.spot)
    }

    /// How many of `workers` tasks run on Fargate Spot ([`spot_share`]).
    pub fn spot_share(&self, workers: u32) -> u32 {
        spot_share(self.spot, workers)
    }

    /// Private subnet CIDRs, which the NAT serves.
    pub fn private_cidrs(&self) -> Vec<String> {
        self.private_subnets
            .iter()
            .map(|s| s.cidr.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_agent_toml_shows_the_default_images() {
        let example = include_str!("../../systemd/agent.toml.example");
        for image in [
            crate::names::images::DEFAULT_BASE,
            crate::names::images::DEFAULT_BROKER,
        ] {
            assert!(example.contains(image), "{image}");
        }
    }

    #[test]
    fn a_duty_s_name_is_its_name_in_agent_toml() {
        for d in Duty::ALL {
            assert_eq!(serde_json::to_value(d).unwrap(), d.name());
        }
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        let e = AgentToml::parse(
            Path::new("a.toml"),
            "stack = \"dev\"\nregion = \"eu-west-2\"\ntls_cert = \"/etc/c.pem\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("give both"), "{e}");
        let ok = AgentToml::parse(
            Path::new("a.toml"),
            "stack = \"dev\"\nregion = \"eu-west-2\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\n",
        )
        .unwrap();
        assert_eq!(ok.tls_key.as_deref(), Some(Path::new("/k")));
    }

    #[test]
    fn minimal_toml_gets_defaults() {
        let t = AgentToml::parse(
            Path::new("a.toml"),
            "stack = \"dev\"\nregion = \"eu-west-2\"\n",
        )
        .unwrap();
        assert_eq!(t.listen.port(), 443);
        assert_eq!(t.state_dir, PathBuf::from("/var/lib/fossa"));
        let again = AgentToml::parse(Path::new("a.toml"), &t.render()).unwrap();
        assert_eq!(t, again);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = AgentToml::parse(
            Path::new("a.toml"),
            "stack = \"dev\"\nregion = \"x\"\nlisten_port = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("listen_port"), "{e}");
        assert!(e.contains("Valid keys"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = AgentToml::parse(Path::new("a.toml"), "stack = \"Dev\"\nregion = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid stack name"), "{e}");
        let e = AgentToml::parse(
            Path::new("a.toml"),
            "stack = \"dev\"\nregion = \"x\"\nlisten = \"nope\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("listen"), "{e}");
        let e = AgentToml::parse(Path::new("a.toml"), "stack = \"dev\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("region"), "{e}");
    }

    #[test]
    fn stack_config_names_bad_field() {
        let e = StackConfig::parse("/fossa/dev/config", "{\"version\":1,\"bogus\":2}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field"), "{e}");
        assert!(e.contains("fossa-bootstrap launch"), "{e}");
        let e = StackConfig::parse("/fossa/dev/config", "{\"version\":\"one\"}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("version") || e.contains("invalid type"), "{e}");
    }

    fn sample_stack_config() -> StackConfig {
        let subnet = |id: &str, cidr: &str| Subnet {
            id: id.into(),
            cidr: cidr.into(),
            az: "eu-west-2a".into(),
        };
        StackConfig {
            version: STACK_CONFIG_VERSION,
            stack: "dev".parse().unwrap(),
            region: "eu-west-2".into(),
            account_id: "123456789012".into(),
            vpc_id: "vpc-1".into(),
            vpc_cidr: "192.168.0.0/16".into(),
            public_subnet: subnet("subnet-1", "192.168.1.0/24"),
            private_subnets: vec![subnet("subnet-2", "192.168.2.0/24")],
            gateway_security_group: "sg-1".into(),
            task_security_group: "sg-2".into(),
            execution_role_arn: "arn:aws:iam::123456789012:role/x".into(),
            task_role_arn: "arn:aws:iam::123456789012:role/y".into(),
            bucket: "b".into(),
            has_models: false,
            workers: 4,
            cpu: 256,
            memory: 512,
            destroying: false,
            instance_type: Some("t3.small".into()),
            spot: false,
            allow_agent_downgrade: false,
            models_sha256: None,
            autoscale: Some(Autoscale {
                min_workers: 0,
                max_workers: 8,
                idle_window_secs: 900,
            }),
        }
    }

    #[test]
    fn a_field_from_a_newer_launch_does_not_stop_this_agent() {
        let mut v = serde_json::to_value(sample_stack_config()).unwrap();
        v["placement"] = serde_json::json!({"base": 1, "weight": 4});
        let back = StackConfig::parse("/fossa/dev/config", &v.to_string()).unwrap();
        assert_eq!(back, sample_stack_config());
    }

    #[test]
    fn spot_keeps_the_first_worker_on_fargate_and_weights_the_rest() {
        let mut c = sample_stack_config();
        assert_eq!(
            c.capacity_strategy(),
            [CapacityShare {
                provider: FARGATE,
                base: 0,
                weight: 1
            }]
        );
        assert_eq!(c.spot_share(4), 0);
        // Older configs have no `spot`: off.
        let mut v = serde_json::to_value(&c).unwrap();
        v.as_object_mut().unwrap().remove("spot");
        assert!(!StackConfig::parse("x", &v.to_string()).unwrap().spot);
        c.spot = true;
        assert_eq!(
            c.capacity_strategy(),
            [
                CapacityShare {
                    provider: FARGATE,
                    base: 1,
                    weight: 1
                },
                CapacityShare {
                    provider: FARGATE_SPOT,
                    base: 0,
                    weight: 3
                },
            ]
        );
        let spot: Vec<u32> = (0..=9).map(|n| c.spot_share(n)).collect();
        assert_eq!(spot, [0, 0, 1, 2, 3, 3, 4, 5, 6, 6]);
    }

    #[test]
    fn an_older_stacks_slash_24s_bound_its_most_workers() {
        let subnet = |cidr: &str| Subnet {
            id: "s".into(),
            cidr: cidr.into(),
            az: "a".into(),
        };
        let mut c = sample_stack_config();
        c.private_subnets = vec![subnet("192.168.2.0/24"), subnet("192.168.3.0/24")];
        assert_eq!(c.most_workers(), 251);
        c.private_subnets = vec![subnet("192.168.4.0/22"), subnet("192.168.8.0/22")];
        assert_eq!(c.most_workers(), crate::limits::MAX_WORKERS);
    }

    #[test]
    fn the_most_workers_must_fit_the_fargate_vcpu_quotas_with_a_deployments_surge() {
        // 4 workers of 1 vCPU on-demand, 8 tasks while a deployment replaces
        // them, against a new account's 6.
        let e = check_fargate_quota(4, 1024, false, Some(6.0), Some(6.0), "eu-west-2").unwrap_err();
        assert_eq!(
            e.to_string(),
            "4 workers of 1024 CPU units need 8 vCPU of Fargate On-Demand while a deployment replaces them (ECS runs up to 200 % of the tasks then), and this account's quota in eu-west-2 is 6 vCPU (Service Quotas, code L-3032A538): ask AWS for an increase in the Service Quotas console, or give a lower --max-workers, --workers or --cpu"
        );
        assert!(check_fargate_quota(3, 1024, false, Some(6.0), Some(6.0), "r").is_ok());
        // With Spot, 8 tasks: 2 on-demand and 6 on Spot: both fit.
        assert!(check_fargate_quota(4, 1024, true, Some(6.0), Some(6.0), "r").is_ok());
        // 5 with Spot, 10 tasks: 3 on-demand, 7 on Spot, over its quota.
        let e = check_fargate_quota(5, 1024, true, Some(6.0), Some(6.0), "r").unwrap_err();
        assert_eq!((e.what, e.need), ("Fargate Spot", 7.0));
        // Unknown quotas are not checked; quarter-vCPU tasks count as such.
        assert!(check_fargate_quota(1000, 4096, false, None, None, "r").is_ok());
        assert!(check_fargate_quota(12, 256, false, Some(6.0), None, "r").is_ok());
        assert!(check_fargate_quota(13, 256, false, Some(6.0), None, "r").is_err());
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: no text makes the parsers panic, every refusal is one
    //! line naming the file, and every valid file survives render → parse.
    use super::*;
    use proptest::prelude::*;

    const KEYS: [&str; 13] = [
        "stack",
        "region",
        "endpoint_url",
        "state_dir",
        "listen",
        "registry",
        "base_image",
        "broker_image",
        "broker_address",
        "egress_check",
        "duties",
        "tls_cert",
        "bogus",
    ];

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,20}".prop_map(|s| format!("{s:?}")),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("true".to_owned()),
            Just(r#"["nat", "cluster"]"#.to_owned()),
            Just(r#"["nat", "teleport"]"#.to_owned()),
            Just("[1, 2]".to_owned()),
            Just("{ a = 1 }".to_owned()),
            Just(r#""127.0.0.1:8443""#.to_owned()),
            Just(r#""10.0.0.1""#.to_owned()),
            "\\PC{0,10}",
        ]
    }

    fn check_refusal(text: &str) -> Result<(), TestCaseError> {
        if let Err(e) = AgentToml::parse(Path::new("agent.toml"), text) {
            let m = e.to_string();
            prop_assert!(m.contains("agent.toml"), "{}", m);
            prop_assert!(!m.contains('\n'), "{}", m);
        }
        Ok(())
    }

    fn agent_toml() -> impl Strategy<Value = AgentToml> {
        (
            "[a-z][a-z0-9-]{0,12}"
                .prop_filter_map("a valid stack name", |s| StackName::new(&s).ok()),
            "[a-z]{2}-[a-z]{4,9}-[1-9]",
            proptest::option::of("\\PC{0,30}"),
            "\\PC{1,30}",
            any::<std::net::SocketAddrV4>().prop_map(SocketAddr::V4),
            proptest::option::of("\\PC{0,30}"),
            proptest::option::of(any::<std::net::Ipv4Addr>()),
            proptest::option::of(proptest::sample::subsequence(Duty::ALL.to_vec(), 0..=4)),
        )
            .prop_map(
                |(
                    stack,
                    region,
                    endpoint_url,
                    state_dir,
                    listen,
                    registry,
                    broker_address,
                    duties,
                )| {
                    AgentToml {
                        stack,
                        region,
                        endpoint_url,
                        state_dir: PathBuf::from(state_dir),
                        listen,
                        registry: registry.clone(),
                        base_image: registry.clone(),
                        broker_image: None,
                        broker_address,
                        egress_check: registry,
                        duties,
                        tls_cert: None,
                        tls_key: None,
                        history: Default::default(),
                        container_network: Default::default(),
                        timeouts: Default::default(),
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_text_is_parsed_or_refused_in_one_line(text in "\\PC{0,200}") {
            check_refusal(&text)?;
        }

        #[test]
        fn any_set_of_keys_and_values_is_parsed_or_refused_in_one_line(
            lines in proptest::collection::vec((proptest::sample::select(KEYS.to_vec()), value()), 0..8)
        ) {
            let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            check_refusal(&text)?;
        }

        #[test]
        fn every_valid_agent_toml_survives_render_and_parse(t in agent_toml()) {
            let back = AgentToml::parse(Path::new("agent.toml"), &t.render()).unwrap();
            prop_assert_eq!(back, t);
        }

        #[test]
        fn any_stack_config_text_is_parsed_or_refused(text in "\\PC{0,300}") {
            if let Err(e) = StackConfig::parse("/fossa/x/config", &text) {
                prop_assert!(e.to_string().contains("/fossa/x/config"));
            }
        }
    }
}
