//! Command-line interface of `fossa-bootstrap` (parsed in `main.rs`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fossa_contract::aws::AwsSettings;
use fossa_contract::StackName;
use ipnet::Ipv4Net;

/// Creates and destroys a fossa-gateway stack on AWS.
#[derive(Debug, Parser)]
#[command(name = "fossa-bootstrap", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the VPC, the gateway instance and what it needs (idempotent: re-run to finish or check).
    Launch(LaunchArgs),
    /// Print every resource and IAM document `launch` would make, without changing anything.
    Plan(PlanArgs),
    /// Show each resource of the stack and the agent's health.
    Status(StatusArgs),
    /// Delete everything tagged with the stack, in dependency order.
    Destroy(DestroyArgs),
    /// Print the web UI password from SSM, or rotate it (`--rotate`); with
    /// `--metrics-token`, the scraper's token instead.
    Password(PasswordArgs),
    /// Set the number of workers; the agent applies it to the service.
    Scale(ScaleArgs),
}

/// `password` arguments.
#[derive(Debug, Clone, Args)]
pub struct PasswordArgs {
    /// Stack and AWS settings.
    #[command(flatten)]
    pub stack: StackArgs,
    /// Store a new password (GATEWAY_HTTP_PASSWORD, or a generated one, printed): the agent
    /// switches to it within 15 s and every open session ends.
    #[arg(long)]
    pub rotate: bool,
    /// The scraper's token (it opens /metrics and nothing else) instead of
    /// the UI password: printed, or with --rotate replaced by a new one.
    #[arg(long)]
    pub metrics_token: bool,
}

/// `scale` arguments.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Stack and AWS settings.
    #[command(flatten)]
    pub stack: StackArgs,
    /// Number of Fossa workers.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=fossa_contract::limits::MAX_WORKERS as i64))]
    pub workers: u32,
    /// Return once the setting is stored instead of waiting for the service to take it.
    #[arg(long)]
    pub no_wait: bool,
}

/// Which stack, and where and as whom to call AWS.
#[derive(Debug, Clone, Args)]
pub struct StackArgs {
    /// Stack name: every resource is named and tagged with it.
    #[arg(long, default_value = "dev")]
    pub stack: StackName,
    /// AWS region (default: the SDK chain, e.g. AWS_REGION or the profile's region).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile (default: AWS_PROFILE or `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// AWS API endpoint, e.g. an emulator (also AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

impl StackArgs {
    /// The AWS part of these arguments.
    pub fn aws(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
            call_timeout: None,
        }
    }
}

/// `launch` arguments.
#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    /// Stack and AWS settings.
    #[command(flatten)]
    pub stack: StackArgs,
    /// CIDR block of the VPC (a /16 to /22; subnets are its 2nd to 4th /24).
    #[arg(long, default_value = "192.168.0.0/16", value_name = "CIDR")]
    pub vpc_cidr: Ipv4Net,
    /// EC2 instance type of the gateway (Graviton types such as t4g.small get an arm64 AMI).
    #[arg(long, default_value = fossa_contract::names::DEFAULT_INSTANCE_TYPE)]
    pub instance_type: String,
    /// AMI of the gateway (default: the latest Amazon Linux 2023 from SSM public parameters).
    #[arg(long)]
    pub ami: Option<String>,
    /// Who may reach the web UI on 443 (default: the rule a re-run finds, or your public IP as /32).
    #[arg(long, value_name = "CIDR")]
    pub allow_cidr: Option<Ipv4Net>,
    /// Let the running agent take an older `fossa-agent` than its own (this
    /// launch only): it never downgrades itself otherwise.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Allow `--allow-cidr 0.0.0.0/0`, or any range wider than a /8: the UI open to the whole internet or a large share of it.
    #[arg(long)]
    pub allow_anywhere: bool,
    /// The fossa-agent binary to install: a static Linux build for the instance's architecture
    /// (default: `fossa-agent` next to this program).
    #[arg(long, value_name = "PATH")]
    pub agent_binary: Option<PathBuf>,
    /// A directory of Aye-Aye models to bake into the worker image.
    #[arg(long, value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// Number of Fossa workers (default: what the stack has, or 4 for a new one).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=fossa_contract::limits::MAX_WORKERS as i64))]
    pub workers: Option<u32>,
    /// Autoscale: start workers as work waits, up to this many (kept from the stack when not given).
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub max_workers: Option<u32>,
    /// Autoscale: the fewest workers kept (0: none while idle; default 0).
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub min_workers: Option<u32>,
    /// Autoscale: seconds with nothing running or waiting before the fleet
    /// shrinks to the minimum (default 900).
    #[arg(long, value_name = "SECS")]
    pub idle_window: Option<u64>,
    /// Turn autoscaling off: run the fixed number of --workers.
    #[arg(long, conflicts_with_all = ["max_workers", "min_workers", "idle_window"])]
    pub no_autoscale: bool,
    /// Run the workers beyond the first on Fargate Spot (3 of every 4, at
    /// about a third of the price; ECS may interrupt them). Kept from the stack when not given.
    #[arg(long, conflicts_with = "no_spot")]
    pub spot: bool,
    /// Run every worker on on-demand Fargate (undoes --spot).
    #[arg(long)]
    pub no_spot: bool,
    /// CPU units of each worker task, 256 = 1/4 vCPU (default: what the stack has, or 256).
    #[arg(long)]
    pub cpu: Option<u32>,
    /// Memory of each worker task in MiB (default: what the stack has, or 512).
    #[arg(long)]
    pub memory: Option<u32>,
    /// Return once the instance is started instead of following the agent
    /// until every duty is done and every worker answers.
    #[arg(long)]
    pub no_wait: bool,
    /// Reach the agent's UI here instead of the instance's public IP while
    /// following it (an SSM port-forwarding session, say): HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub ui_address: Option<String>,
    /// How long to follow the agent before giving up and naming what is not done.
    #[arg(long, value_name = "SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub wait_timeout: u64,
}

/// Output format of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for people.
    Text,
    /// JSON for scripts.
    Json,
}

/// `plan` arguments: the same as `launch`, plus the output format.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// What `launch` would be given.
    #[command(flatten)]
    pub launch: LaunchArgs,
    /// Output format: `json` gives one object per resource (kind, name, detail, policy).
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

/// `status` arguments.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Stack and AWS settings.
    #[command(flatten)]
    pub stack: StackArgs,
    /// Reach the agent's UI here instead of the instance's public IP (an SSM
    /// port-forwarding session, say): HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub ui_address: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

/// `destroy` arguments.
#[derive(Debug, Clone, Args)]
pub struct DestroyArgs {
    /// Stack and AWS settings.
    #[command(flatten)]
    pub stack: StackArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}
